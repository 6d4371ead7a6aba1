-- Command-line parsing for fish-audio. A command describes its flags once,
-- as data; the same description parses argv and writes `--help`, so the
-- help can never miss a flag the parser accepts.
--
--   local spec = {
--     name = "say", summary = "...", usage = "TEXT [options]",
--     positionals = { { "TEXT", "the text to speak" } }, min = 1, max = 1,
--     options = {
--       { "output", short = "o", value = "FILE", help = "..." },
--       { "ref", value = "AUDIO", many = true, help = "..." },
--       { "jobs", value = "N", type = "integer", min = 1, default = 4, help = "..." },
--       { "json", help = "..." },                       -- no value: a switch
--     },
--   }
--   local parsed = args.parse(spec, argv)  -- { options = {...}, positionals = {...} }
--
-- Mistakes raise a usage error (fish.cli.failure), which exits with 2.
local failure = require("fish.cli.failure")

local args = {}

-- Flags every command takes.
args.HELP = { "help", short = "h", help = "show this help and exit" }
args.API_KEY_FILE = {
  "api-key-file", value = "FILE",
  help = "read the API key from FILE (first line) instead of FISH_API_KEY",
}

local function option_name(option)
  return "--" .. option[1]
end

-- "output" -> "output", "ref-text" -> "ref_text": the key in parsed.options.
local function key_of(option)
  return (option[1]:gsub("%-", "_"))
end

local function find_option(spec, name, short)
  for _, option in ipairs(spec.options) do
    if (short and option.short == name) or (not short and option[1] == name) then return option end
  end
end

local function usage_error(spec, message)
  failure.usage(("%s: %s (see fish-audio %s --help)"):format(spec.name, message, spec.name))
end

-- A value given on the command line, converted and checked by the option's
-- type: "number", "integer" or a list of choices.
local function convert(spec, option, text)
  local name = option_name(option)
  if option.choices then
    for _, choice in ipairs(option.choices) do
      if text == choice then return text end
    end
    usage_error(spec, ("%s must be one of %s, got '%s'"):format(name, table.concat(option.choices, ", "), text))
  end
  if option.type == "number" or option.type == "integer" then
    local n = tonumber(text)
    if not n or n ~= n or n == math.huge or n == -math.huge then
      usage_error(spec, ("%s needs a number, got '%s'"):format(name, text))
    end
    if option.type == "integer" and n ~= math.floor(n) then
      usage_error(spec, ("%s needs a whole number, got '%s'"):format(name, text))
    end
    if option.min and n < option.min then usage_error(spec, ("%s must be at least %s"):format(name, option.min)) end
    if option.max and n > option.max then usage_error(spec, ("%s must be at most %s"):format(name, option.max)) end
    if option.type == "integer" then n = math.floor(n) end
    return n
  end
  return text
end

local function store(spec, parsed, option, value)
  local key = key_of(option)
  if option.many then
    local list = parsed.options[key] or {}
    list[#list + 1] = value
    parsed.options[key] = list
  elseif parsed.given[key] then
    usage_error(spec, option_name(option) .. " is given twice")
  else
    parsed.options[key] = value
  end
  parsed.given[key] = true
end

-- A key on the command line shows up in `ps` and in shell history: there is
-- deliberately no --api-key, and saying why beats "unknown option".
local REFUSED = {
  ["api-key"] = "there is no --api-key: a key on the command line shows in ps and in shell history; "
    .. "set FISH_API_KEY or use --api-key-file FILE",
}

-- args.parse(spec, argv[, first]) -> { options = {...}, positionals = {...}, given = {...} }
-- argv[first .. #argv] are parsed (first defaults to 1). "--" ends the
-- options; "-" alone is a value (stdout / stdin), never an option.
function args.parse(spec, argv, first)
  local parsed = { options = {}, positionals = {}, given = {} }
  local i = first or 1
  local only_positionals = false
  while i <= #argv do
    local word = argv[i]
    if only_positionals or word == "-" or word:sub(1, 1) ~= "-" then
      parsed.positionals[#parsed.positionals + 1] = word
    elseif word == "--" then
      only_positionals = true
    else
      local long, inline = word:match("^%-%-([^=]+)=(.*)$")
      long = long or word:match("^%-%-(.+)$")
      local short
      if not long then
        short = word:match("^%-(.)$")
        if not short then short, inline = word:sub(2, 2), word:sub(3) end -- -oFILE
      end
      if long and REFUSED[long] then usage_error(spec, REFUSED[long]) end
      local option = find_option(spec, long or short, long == nil)
      if not option then usage_error(spec, ("unknown option '%s'"):format(word)) end
      if option.value then
        local value = inline
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then
            usage_error(spec, ("%s needs a value (%s)"):format(option_name(option), option.value))
          end
        end
        store(spec, parsed, option, convert(spec, option, value))
      else
        if inline ~= nil then usage_error(spec, option_name(option) .. " takes no value") end
        store(spec, parsed, option, true)
      end
    end
    i = i + 1
  end
  if parsed.options.help then return parsed end
  for _, option in ipairs(spec.options) do
    local key = key_of(option)
    if parsed.options[key] == nil and option.default ~= nil then parsed.options[key] = option.default end
  end
  local n, min, max = #parsed.positionals, spec.min or 0, spec.max
  if n < min then
    local names = {}
    for k = n + 1, math.min(min, #(spec.positionals or {})) do names[#names + 1] = spec.positionals[k][1] end
    usage_error(spec, "missing " .. (#names > 0 and table.concat(names, ", ") or "arguments"))
  end
  if max and n > max then
    usage_error(spec, ("unexpected argument '%s'"):format(parsed.positionals[max + 1]))
  end
  return parsed
end

-- Wrap `text` to `width` columns, each line after the first indented.
local function wrap(text, width, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n" .. indent)
end

local HELP_WIDTH = 100
local HELP_COLUMN = 28

local function option_label(option)
  local label = option.short and ("-" .. option.short .. ", ") or "    "
  label = label .. option_name(option)
  if option.value then label = label .. " " .. option.value end
  return label
end

local function option_help(option)
  local text = option.help or ""
  if option.choices then text = text .. " (" .. table.concat(option.choices, "|") .. ")" end
  if option.default ~= nil then text = text .. " [default: " .. tostring(option.default) .. "]" end
  if option.many then text = text .. " (may be repeated)" end
  return text
end

-- Rows of "  label   help", the help wrapped and aligned.
function args.rows(rows)
  local out = {}
  local indent = (" "):rep(HELP_COLUMN)
  for _, row in ipairs(rows) do
    local label = "  " .. row[1]
    local pad = #label < HELP_COLUMN and (" "):rep(HELP_COLUMN - #label) or ("\n" .. indent)
    out[#out + 1] = label .. pad .. wrap(row[2], HELP_WIDTH - HELP_COLUMN, indent)
  end
  return table.concat(out, "\n")
end

-- The --help text of a command: usage, summary, arguments, every option,
-- then the command's notes.
function args.help(spec)
  local parts = { ("usage: fish-audio %s %s"):format(spec.name, spec.usage or "[options]"), "",
                  wrap(spec.summary, HELP_WIDTH, "") }
  if spec.positionals and #spec.positionals > 0 then
    parts[#parts + 1] = "\narguments:"
    parts[#parts + 1] = args.rows(spec.positionals)
  end
  local rows = {}
  for _, option in ipairs(spec.options) do rows[#rows + 1] = { option_label(option), option_help(option) } end
  parts[#parts + 1] = "\noptions:"
  parts[#parts + 1] = args.rows(rows)
  if spec.notes then
    parts[#parts + 1] = ""
    for _, note in ipairs(spec.notes) do parts[#parts + 1] = note end
  end
  return table.concat(parts, "\n") .. "\n"
end

return args
