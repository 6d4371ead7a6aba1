-- POST /v1/tts: the request schema and its msgpack encoding. Field order,
-- types and what is sent follow protocol-decisions.md: only the fields the
-- caller set (plus text), in the Python SDK's order, floats as float64, ints
-- as the shortest int, text as str and reference audio as bin.
local core = require("fish.core")
local file = require("fish.file")
local util = require("fish.util")

local tts = {}

local FORMATS = { wav = true, pcm = true, mp3 = true, opus = true }
local LATENCIES = { low = true, normal = true, balanced = true }

-- Wire fields in the order they are written.
local FIELDS = {
  { "text", "text" },
  { "chunk_length", "int" },
  { "format", "enum", FORMATS },
  { "sample_rate", "int" },
  { "mp3_bitrate", "int" },
  { "opus_bitrate", "int" },
  { "references", "references" },
  { "reference_id", "reference_id" },
  { "normalize", "bool" },
  { "latency", "enum", LATENCIES },
  { "prosody", "prosody" },
  { "top_p", "float" },
  { "temperature", "float" },
  { "max_new_tokens", "int" },
  { "repetition_penalty", "float" },
  { "min_chunk_length", "int" },
  { "condition_on_previous_chunks", "bool" },
  { "early_stop_threshold", "float" },
  -- Documented by the API but absent from the Python SDK: after its fields.
  { "features", "strings" },
}

-- Options of fish.convert that shape the call rather than the body.
tts.CALL_OPTIONS = { "model", "extra", "out", "on_chunk", "on_progress", "max_bytes" }
for _, name in ipairs(util.CALL_OPTIONS) do tts.CALL_OPTIONS[#tts.CALL_OPTIONS + 1] = name end

local KNOWN, NAMES = {}, {}
local IS_FIELD = {} -- wire field names
for _, field in ipairs(FIELDS) do
  KNOWN[field[1]] = true
  IS_FIELD[field[1]] = true
  NAMES[#NAMES + 1] = field[1]
end
for _, name in ipairs(tts.CALL_OPTIONS) do
  KNOWN[name] = true
  NAMES[#NAMES + 1] = name
end

-- The /v1/tts fields by name, without the call options: fish.live's start
-- event carries the same request.
tts.REQUEST_FIELDS = {}
for _, field in ipairs(FIELDS) do tts.REQUEST_FIELDS[#tts.REQUEST_FIELDS + 1] = field[1] end

-- The public call whose fields are being checked, for the messages:
-- fish.convert, or fish.live (tts.check_request).
local WHERE = "fish.convert"

local function fail(field, message)
  util.raise(("%s: field '%s' %s"):format(WHERE, field, message))
end

-- ---- checks -------------------------------------------------------------------

local function check_reference(ref, where)
  if type(ref) ~= "table" then fail(where, "must be a table { audio = ..., text = ... }") end
  for k in pairs(ref) do
    if k ~= "audio" and k ~= "text" then fail(where, "has unknown field '" .. tostring(k) .. "'") end
  end
  if type(ref.audio) ~= "string" and not file.is(ref.audio) then
    fail(where .. ".audio", "must be bytes (a string) or fish.file(path)")
  end
  if ref.audio == "" then fail(where .. ".audio", "is empty") end
  if file.is(ref.audio) then file.check(ref.audio, WHERE, where .. ".audio") end
  if type(ref.text) ~= "string" then fail(where .. ".text", "must be the transcript of the audio (a string)") end
  util.check_text(WHERE, where .. ".text", ref.text)
end

-- The length of a list field, which must be a proper sequence: ipairs
-- stops at a hole and # may not, so a list with holes would be checked
-- one way and written another.
local function list_length(name, v)
  return util.sequence_length(WHERE, name, v)
end

-- Values of `extra` go through the generic msgpack writer: only what it can
-- write faithfully, checked here so that an error names the key.
local function check_extra_value(name, v, depth)
  local t = type(v)
  if t == "string" or t == "boolean" then return end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then fail(name, "must be a finite number") end
    return
  end
  if t ~= "table" then fail(name, "must be a string, number, boolean or table, got " .. t) end
  if depth > 16 then fail(name, "nests too deeply") end
  if v[1] ~= nil or next(v) == nil then
    for i = 1, list_length(name, v) do check_extra_value(("%s[%d]"):format(name, i), v[i], depth + 1) end
  else
    for k, x in pairs(v) do
      if type(k) ~= "string" then fail(name, "must use string keys (or be a list), found " .. tostring(k)) end
      check_extra_value(name .. "." .. k, x, depth + 1)
    end
  end
end

-- references = { ref, ... } or, multi-speaker (S2 family), { { ref, ... }, ... }
local function is_speaker_list(refs)
  return type(refs[1]) == "table" and refs[1].audio == nil and refs[1][1] ~= nil
end

local CHECKS = {
  text = function(name, v)
    if type(v) ~= "string" then fail(name, "must be a string") end
    if v == "" then fail(name, "must not be empty") end
    util.check_text(WHERE, name, v)
  end,
  int = function(name, v)
    if not util.is_integer(v) then fail(name, "must be an integer that fits 64 bits, got " .. tostring(v)) end
  end,
  float = function(name, v)
    if type(v) ~= "number" then fail(name, "must be a number, got " .. type(v)) end
    if v ~= v or v == math.huge or v == -math.huge then fail(name, "must be a finite number, got " .. tostring(v)) end
  end,
  bool = function(name, v)
    if type(v) ~= "boolean" then fail(name, "must be a boolean, got " .. type(v)) end
  end,
  enum = function(name, v, allowed)
    if not allowed[v] then
      local list = {}
      for k in pairs(allowed) do list[#list + 1] = k end
      table.sort(list)
      fail(name, ("must be one of %s, got %s"):format(table.concat(list, ", "), tostring(v)))
    end
  end,
  strings = function(name, v)
    if type(v) ~= "table" then fail(name, "must be a list of strings") end
    for i = 1, list_length(name, v) do
      if type(v[i]) ~= "string" then fail(("%s[%d]"):format(name, i), "must be a string") end
    end
  end,
  reference_id = function(name, v)
    if type(v) == "table" then
      local n = list_length(name, v)
      if n == 0 then fail(name, "must not be an empty list") end
      for i = 1, n do
        if type(v[i]) ~= "string" then fail(("%s[%d]"):format(name, i), "must be a string") end
      end
    elseif type(v) ~= "string" then
      fail(name, "must be a voice id string (or a list of them for multi-speaker)")
    end
  end,
  references = function(name, v)
    if type(v) ~= "table" then fail(name, "must be a list of { audio = ..., text = ... }") end
    local n = list_length(name, v)
    if is_speaker_list(v) then
      for i = 1, n do
        local speaker, where = v[i], ("%s[%d]"):format(name, i)
        if type(speaker) ~= "table" then fail(where, "must be a list of references") end
        for j = 1, list_length(where, speaker) do check_reference(speaker[j], ("%s[%d]"):format(where, j)) end
      end
    else
      for i = 1, n do check_reference(v[i], ("%s[%d]"):format(name, i)) end
    end
  end,
  prosody = function(name, v)
    if type(v) ~= "table" then fail(name, "must be a table { speed =, volume = }") end
    for k, x in pairs(v) do
      if k ~= "speed" and k ~= "volume" and k ~= "normalize_loudness" then
        fail(name, "has unknown field '" .. tostring(k) .. "'")
      end
      if k == "normalize_loudness" then
        if type(x) ~= "boolean" then fail(name .. "." .. k, "must be a boolean") end
      elseif type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then
        fail(name .. "." .. k, "must be a finite number")
      end
    end
  end,
}

-- How many wire fields args sets, so that the walks over FIELDS below can
-- stop at the last one set instead of looking up all 19 (most calls set 1
-- to 3). With `known`, a key that is neither a wire field nor known raises,
-- as util.check_known says it.
local function count_fields(args, known)
  local n = 0
  for key in next, args do -- next: args is a plain table, and pairs costs a metamethod look-up
    if IS_FIELD[key] then
      n = n + 1
    elseif known and not known[key] then
      util.check_known(WHERE, args, KNOWN, NAMES)
    end
  end
  return n
end

-- The request fields of `args` (FIELDS, extra, model), `left` of them set.
-- Whoever calls it has refused unknown keys.
local function check_request(args, left)
  local i = 0
  while left > 0 do -- in FIELDS order, so the first bad field is the one reported
    i = i + 1
    local field = FIELDS[i]
    local name = field[1]
    local v = args[name]
    if v ~= nil then
      left = left - 1
      CHECKS[field[2]](name, v, field[3])
    end
  end
  if args.extra ~= nil then
    if type(args.extra) ~= "table" then fail("extra", "must be a table") end
    for key, value in pairs(args.extra) do
      if type(key) ~= "string" then fail("extra", "keys must be strings, found " .. tostring(key)) end
      if KNOWN[key] then fail("extra", "repeats the known field '" .. key .. "': set it directly") end
      check_extra_value("extra." .. key, value, 1)
    end
  end
  if args.model ~= nil and args.model ~= false and type(args.model) ~= "string" then
    fail("model", "must be a string, or false to send no model header")
  end
end

-- fish.live's start request: the same checks as fish.convert's, under its
-- name. `text` is optional there (s.send gives the text).
function tts.check_request(args, fn)
  WHERE = fn
  local ok, why = pcall(check_request, args, count_fields(args))
  WHERE = "fish.convert"
  if not ok then error(why, 0) end
end

-- Returns how many wire fields args sets, for tts.encode.
function tts.check(args)
  util.check_table(WHERE, args)
  local left = count_fields(args, KNOWN)
  if args.text == nil then fail("text", "is required") end
  check_request(args, left)
  if args.out ~= nil then util.check_output_path(WHERE, "out", args.out) end
  if args.on_chunk ~= nil and type(args.on_chunk) ~= "function" then fail("on_chunk", "must be a function") end
  if args.on_progress ~= nil and type(args.on_progress) ~= "function" then fail("on_progress", "must be a function") end
  if args.out and args.on_chunk then fail("out", "cannot be combined with on_chunk") end
  if args.max_bytes ~= nil then util.check_byte_count(WHERE, "max_bytes", args.max_bytes) end
  return left
end

-- ---- encoding -----------------------------------------------------------------

local function write_audio(w, audio, where)
  if file.is(audio) then
    -- Only the header now: the request streams the file's bytes from disk.
    local ok, why = w:bin_file_ref(audio.path, audio.size)
    if not ok then util.raise(("%s: field '%s' %s"):format(WHERE, where, why)) end
  else
    w:bin(audio)
  end
end

local function write_reference(w, ref, where)
  w:map(2)
  w:str("audio")
  write_audio(w, ref.audio, where .. ".audio")
  w:str("text")
  w:str(ref.text)
end

local function write_references(w, refs)
  if is_speaker_list(refs) then
    w:array(#refs)
    for i, speaker in ipairs(refs) do
      w:array(#speaker)
      for j, ref in ipairs(speaker) do write_reference(w, ref, ("references[%d][%d]"):format(i, j)) end
    end
  else
    w:array(#refs)
    for i, ref in ipairs(refs) do write_reference(w, ref, ("references[%d]"):format(i)) end
  end
end

local WRITERS = {
  text = function(w, v) w:str(v) end,
  int = function(w, v) w:int(v) end,
  float = function(w, v) w:float(v) end,
  bool = function(w, v) w:bool(v) end,
  enum = function(w, v) w:str(v) end,
  strings = function(w, v)
    w:array(#v)
    for _, s in ipairs(v) do w:str(s) end
  end,
  reference_id = function(w, v)
    if type(v) == "string" then return w:str(v) end
    w:array(#v)
    for _, id in ipairs(v) do w:str(id) end
  end,
  references = write_references,
  prosody = function(w, v)
    local keys = {}
    for _, k in ipairs({ "speed", "volume", "normalize_loudness" }) do
      if v[k] ~= nil then keys[#keys + 1] = k end
    end
    w:map(#keys)
    for _, k in ipairs(keys) do
      w:str(k)
      if k == "normalize_loudness" then w:bool(v[k]) else w:float(v[k]) end
    end
  end,
}

-- The msgpack body for checked args, as the writer that holds it: core.request
-- sends it without copying it (fish.file references stream from disk), and
-- every retry resends the same bytes. w:result() gives it as a string.
-- With `w`, the request map is written into that writer (fish.live's start
-- event holds it) and `w` is returned. `left`: what tts.check returned for
-- these args, so they are not counted twice.
function tts.encode(args, w, left)
  left = left or count_fields(args)
  -- tts.check has made sure extra's keys are strings.
  local extra_keys = args.extra and util.sorted_keys(args.extra)
  w = w or core.mp_writer()
  w:map(left + (extra_keys and #extra_keys or 0))
  local i = 0
  while left > 0 do
    i = i + 1
    local field = FIELDS[i]
    local name = field[1]
    local v = args[name]
    if v ~= nil then
      left = left - 1
      w:str(name)
      WRITERS[field[2]](w, v)
    end
  end
  if extra_keys then
    for _, key in ipairs(extra_keys) do
      w:str(key)
      w:value(args.extra[key])
    end
  end
  return w
end

return tts
