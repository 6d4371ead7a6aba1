-- The batch manifest: which lines to voice, read and checked whole before
-- any request is sent (and billed).
--
-- CSV with a header row, or JSON Lines (one object per line); the columns
-- (keys) are:
--   id        names the output file, DIR/<id>.<format>; unique
--   text      what to say; not empty
--   voice     a voice id (reference_id), or
--   ref       a reference audio file (relative to the manifest's directory)
--   ref_text  and its transcript
-- voice / ref may be left out where --voice or --ref gives a default.
--
-- manifest.load(path, defaults) -> rows, format, or raises a usage failure
-- listing the problems, each with its line and row number.
local csv = require("fish.cli.csv")
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local json = require("fish.json")

local manifest = {}

manifest.COLUMNS = { "id", "text", "voice", "ref", "ref_text" }
local KNOWN = {}
for _, name in ipairs(manifest.COLUMNS) do KNOWN[name] = true end

local MAX_PROBLEMS = 10
local MAX_ID = 128

-- Which reader: by extension, else by the first character (JSON Lines
-- start with "{").
function manifest.format_of(path, text)
  local ext = path:lower():match("%.(%w+)$")
  if ext == "csv" then return "csv" end
  if ext == "jsonl" or ext == "ndjson" then return "jsonl" end
  return text:match("^%s*{") and "jsonl" or "csv"
end

-- Records as { line =, number =, values = { column = text } }, or a
-- problem list.
local function read_csv(text, problems)
  local records, bad_line, why = csv.parse(text)
  if not records then
    problems[#problems + 1] = { line = bad_line, message = why }
    return {}
  end
  if #records == 0 then return {} end
  local header = table.remove(records, 1)
  local names, seen = {}, {}
  for i, name in ipairs(header.fields) do
    name = name:match("^%s*(.-)%s*$")
    if not KNOWN[name] then
      problems[#problems + 1] = { line = header.line, message = ("unknown column '%s' (the columns are %s)")
        :format(name, table.concat(manifest.COLUMNS, ", ")) }
    elseif seen[name] then
      problems[#problems + 1] = { line = header.line, message = ("column '%s' appears twice"):format(name) }
    end
    seen[name], names[i] = true, name
  end
  for _, required in ipairs({ "id", "text" }) do
    if not seen[required] then
      problems[#problems + 1] = { line = header.line, message = ("missing column '%s'"):format(required) }
    end
  end
  local rows = {}
  for n, record in ipairs(records) do
    if #record.fields ~= #names then
      problems[#problems + 1] = { line = record.line, number = n, message = ("has %d fields, the header has %d")
        :format(#record.fields, #names) }
    end
    local values = {}
    for i, name in ipairs(names) do
      local v = record.fields[i]
      if v ~= nil and v ~= "" then values[name] = v end
    end
    rows[#rows + 1] = { line = record.line, number = n, values = values }
  end
  return rows, seen
end

local function read_jsonl(text, problems)
  local rows, seen = {}, {}
  local line, n = 0, 0
  for raw in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line + 1
    if line == 1 and raw:sub(1, 3) == "\239\187\191" then raw = raw:sub(4) end
    if raw:match("%S") then
      n = n + 1
      local object = json.decode(raw)
      if type(object) ~= "table" or (next(object) ~= nil and object[1] ~= nil) then
        problems[#problems + 1] = { line = line, number = n, message = "is not a JSON object" }
      else
        local values = {}
        for key, v in pairs(object) do
          if not KNOWN[key] then
            problems[#problems + 1] = { line = line, number = n, message = ("unknown field '%s' (the fields are %s)")
              :format(tostring(key), table.concat(manifest.COLUMNS, ", ")) }
          elseif key == "id" and type(v) == "number" and v == math.floor(v) then
            values.id = ("%d"):format(v)
          elseif type(v) ~= "string" then
            problems[#problems + 1] = { line = line, number = n, message = ("field '%s' must be a string"):format(key) }
          elseif v ~= "" then
            values[key] = v
          end
          seen[key] = true
        end
        rows[#rows + 1] = { line = line, number = n, values = values }
      end
    end
  end
  return rows, seen
end

-- An id names a file in DIR: no separators, no leading dot (hidden files,
-- "..") or dash (options to other tools), nothing a shell or a file system
-- would read differently.
local function id_problem(id)
  if #id > MAX_ID then return ("id is longer than %d characters"):format(MAX_ID) end
  if not id:match("^[%w_][%w._-]*$") then
    return ("id '%s' may hold only letters, digits, '.', '_' and '-', and must not start with '.' or '-'")
      :format(id)
  end
end

-- manifest.load(path, defaults): defaults = { voice = id } or { refs = {...} }
-- or {}. Rows come back in manifest order:
--   { line, number, id, text, voice = id | nil, ref = path | nil, ref_text = text | nil }
function manifest.load(path, defaults)
  local text = fs.is_file(path) and fs.read(path)
  if not text then failure.usage(("cannot read the manifest %s"):format(path)) end
  local format = manifest.format_of(path, text)
  local problems = {}
  local read = format == "csv" and read_csv or read_jsonl
  local records, columns = read(text, problems)
  columns = columns or {}
  local has_default = defaults.voice ~= nil or defaults.refs ~= nil
  local base = fs.dirname(path)

  local function problem(record, message)
    problems[#problems + 1] = { line = record.line, number = record.number, message = message }
  end

  if #problems == 0 and not has_default and not columns.voice and not columns.ref then
    problems[#problems + 1] = { line = 1, message = "missing column 'voice' or 'ref' (or pass --voice ID, or "
      .. "--ref AUDIO --ref-text TEXT, for every row)" }
  end

  local rows, first_line_of, file_ok = {}, {}, {}
  for _, record in ipairs(records) do
    local v = record.values
    -- Names and paths never mean their surrounding blanks (a spreadsheet's
    -- "a, b" export); the text and transcript are sent as written.
    for _, name in ipairs({ "id", "voice", "ref" }) do
      if v[name] then
        v[name] = v[name]:match("^%s*(.-)%s*$")
        if v[name] == "" then v[name] = nil end
      end
    end
    if not v.id then
      problem(record, "missing id")
    else
      local bad = id_problem(v.id)
      if bad then problem(record, bad) end
      -- Compared without case: on a case-insensitive disk (macOS,
      -- Windows) "A" and "a" would be one file.
      local key = v.id:lower()
      if first_line_of[key] then
        problem(record, ("duplicate id '%s' (first on line %d)"):format(v.id, first_line_of[key]))
      else
        first_line_of[key] = record.line
      end
    end
    if not v.text or not v.text:match("%S") then problem(record, "empty text") end
    if v.voice and v.ref then problem(record, "has both 'voice' and 'ref': give one") end
    if v.ref and not v.ref_text then
      problem(record, "has 'ref' but no 'ref_text' (the transcript of the reference)")
    end
    if v.ref_text and not v.ref then problem(record, "has 'ref_text' but no 'ref'") end
    if not v.voice and not v.ref and not has_default and (columns.voice or columns.ref) then
      problem(record, "no voice: fill in 'voice' or 'ref', or pass --voice / --ref")
    end
    local ref = v.ref and fs.join(base, v.ref)
    if ref and file_ok[ref] == nil then file_ok[ref] = fs.is_file(ref) end
    if ref and not file_ok[ref] then problem(record, ("ref %s is not a readable file"):format(ref)) end
    rows[#rows + 1] = {
      line = record.line, number = record.number, id = v.id, text = v.text,
      voice = v.voice, ref = ref, ref_text = v.ref_text,
    }
  end
  if #records == 0 and #problems == 0 then problems[1] = { line = 1, message = "no rows" } end

  if #problems > 0 then
    for i, p in ipairs(problems) do p.order = i end
    table.sort(problems, function(a, b)
      if a.line ~= b.line then return a.line < b.line end
      return a.order < b.order
    end)
    local lines = {}
    for i = 1, math.min(#problems, MAX_PROBLEMS) do
      local p = problems[i]
      local where = p.number and (" row %d:"):format(p.number) or ""
      lines[i] = ("%s:%d:%s %s"):format(path, p.line, where, p.message)
    end
    if #problems > MAX_PROBLEMS then
      lines[#lines + 1] = ("%s: and %d more problems"):format(path, #problems - MAX_PROBLEMS)
    end
    lines[#lines + 1] = "manifest refused: nothing was sent"
    failure.usage(table.concat(lines, "\n"))
  end
  return rows, format
end

return manifest
