-- The Lua half of spec/fuzz/args_fuzz.c: a stub transport under the real
-- fish modules, a bytecode that turns fuzz input into a Lua value, and the
-- rule for what fish.convert and voices.create may do with that value.
--
-- Loaded once per process by the C harness with
--   (root, real_core, scratch_dir, userdata, light_null, light_ptr)
-- and returns check, tools. check(bytes) -> nil when fish behaved, else a
-- description of the finding (the C side prints it and aborts, so libFuzzer
-- keeps the input); tools serve spec/fuzz/args_tool.lua.
local root, real, scratch, userdata, light_null, light_ptr = ...

package.path = root .. "/src/?.lua;" .. root .. "/src/?/init.lua;" .. package.path

-- ---- the stub transport ------------------------------------------------------
-- fish.core is the real C core (msgpack writer, clock, header checks in C),
-- except that requests never reach libcurl's multi handle: a stub engine
-- finishes every request on its second perform with a canned 200.

local TTS_BODY = "RIFF\36\0\0\0WAVEfmt \16\0\0\0\1\0\1\0\68\172\0\0\136\88\1\0\2\0\16\0data\0\0\0\0"
local JSON_BODY = '{"_id":"fuzz-voice","title":"t","state":"created","visibility":"private"}'

local Request = {}
Request.__index = Request
Request.__name = "fish.request (fuzz stub)"

local function stub_fail(message)
  -- A table, not a string: the harness reports any non-string error as a
  -- finding, and these are calls the real C would reject or mishandle.
  error({ stub = message })
end

local function open(r, method)
  if getmetatable(r) ~= Request then stub_fail(method .. " called on a non-request") end
  if r.st == "closed" then stub_fail(method .. " called on a closed request (the C raises)") end
  return r
end

local next_id = 0
local function new_request(opts)
  -- The real constructor checks every option in C (URL, header lines, body,
  -- mime parts, sink) and builds the curl handle; nothing is sent until an
  -- engine adds it, so build it and close it again.
  local real_request = real.request(opts)
  real_request:close()
  local url = opts.url
  return setmetatable({
    st = "idle",
    sink = opts.sink or "buffer",
    path = opts.path,
    body = url:find("/v1/tts", 1, true) and TTS_BODY or JSON_BODY,
    content_type = url:find("/v1/tts", 1, true) and "audio/wav" or "application/json",
    max_bytes = opts.max_bytes,
    delivered = 0,
    started = 0,
    ticks = 0,
  }, Request)
end

-- The C writes a file sink at `path`; the stub writes only inside its scratch
-- directory, and elsewhere reports the write failure the C would give.
local function in_scratch(path)
  return type(path) == "string" and path:sub(1, #scratch + 1) == scratch .. "/"
    and not path:find("..", 1, true) and not path:find("\0", 1, true)
end

local function finish(r)
  r.st = "done"
  if r.canceled then return end
  if type(r.max_bytes) == "number" and #r.body > r.max_bytes then
    r.too_large = true
    return
  end
  r.delivered = #r.body
  if r.sink == "file" then
    local f = in_scratch(r.path) and io.open(r.path, "wb")
    if f then
      f:write(r.body)
      f:close()
    else
      r.write_failed = true
    end
    r.body = nil
  end
end

function Request:id() return open(self, "id").id or 0 end
function Request:state() return self.st end
function Request:status()
  open(self, "status")
  return (self.st == "done" and not self.canceled) and 200 or 0
end
function Request:result()
  open(self, "result")
  if self.st ~= "done" then return end
  if self.canceled then return "canceled", "canceled" end
  if self.too_large then return "too_large", "the answer is larger than max_bytes" end
  if self.write_failed then return "write", "cannot write " .. tostring(self.path) .. ": Permission denied" end
  return nil
end
function Request:progress()
  open(self, "progress")
  local first = self.delivered > 0 and self.started or 0
  return self.delivered, self.started, first, self.started
end
function Request:take()
  open(self, "take")
  local body = self.body
  if self.st ~= "done" or not body or body == "" then return end
  self.body = ""
  return body
end
function Request:error_body()
  open(self, "error_body")
  return "", false
end
function Request:header(name)
  open(self, "header")
  if type(name) ~= "string" then stub_fail("header name is a " .. type(name)) end
  if name:lower() == "content-type" then return self.content_type end
end
function Request:cancel()
  open(self, "cancel")
  if self.st == "running" or self.st == "idle" then
    self.st, self.canceled = "done", true
  end
end
-- r:commit(target), as the C: move the finished download into place.
function Request:commit(target)
  open(self, "commit")
  if type(target) ~= "string" then error("bad argument #2 to 'commit' (string expected)") end
  if target:find("\0", 1, true) then error("bad argument #2 to 'commit' (path contains a NUL byte)") end
  if self.sink ~= "file" then error("bad argument #1 to 'commit' (request has no file sink)") end
  if self.st ~= "done" then error("bad argument #1 to 'commit' (request has not finished)") end
  if self.committed then error("bad argument #1 to 'commit' (request was already committed)") end
  if self:result() then return nil, "cannot commit: the transfer did not succeed" end
  local ok, why = os.rename(self.path, target)
  if not ok then return nil, ("cannot move %s to %s: %s"):format(self.path, target, tostring(why)) end
  self.committed = true
  return true
end
-- Closing removes a temporary file that was never committed, as the C does.
function Request:close()
  if self.st ~= "closed" and self.sink == "file" and not self.committed and in_scratch(self.path) then
    os.remove(self.path)
  end
  self.st = "closed"
end
Request.__close = Request.close

local Engine = {}
Engine.__index = Engine

function Engine:add(r)
  open(r, "engine:add")
  if r.st ~= "idle" then stub_fail("engine:add of a request already started") end
  next_id = next_id + 1
  r.id, r.st, r.started = next_id, "running", real.now()
  self.running[r] = true
  return r.id
end
function Engine:perform(finished)
  if type(finished) ~= "table" then stub_fail("engine:perform without a table") end
  local n = 0
  for r in pairs(self.running) do
    if r.st ~= "running" then
      self.running[r] = nil
    else
      r.ticks = r.ticks + 1
      if r.ticks >= 2 then
        finish(r)
        self.running[r] = nil
        finished[#finished + 1] = r.id
      else
        n = n + 1
      end
    end
  end
  return n
end
function Engine.poll(_, seconds)
  -- The C turns seconds into int milliseconds: NaN there is undefined.
  if type(seconds) ~= "number" or seconds ~= seconds then stub_fail("engine:poll(" .. tostring(seconds) .. ")") end
end
function Engine:timeout()
  if next(self.running) then return 0 end
end
-- A blocking call's wait (e:wait in C): perform until the request is over
-- or something else finished; the stub's requests take two performs.
function Engine:wait(r, seconds, first_byte, idle, total, finished, changed)
  open(r, "engine:wait")
  if seconds ~= nil and (type(seconds) ~= "number" or seconds ~= seconds) then
    stub_fail("engine:wait(" .. tostring(seconds) .. ")")
  end
  for _, limit in ipairs({ first_byte or 0, idle or 0, total or 0 }) do
    if type(limit) ~= "number" or limit ~= limit then stub_fail("engine:wait limit " .. tostring(limit)) end
  end
  if type(changed) ~= "table" then stub_fail("engine:wait without a changed table") end
  local running
  repeat
    running = self:perform(finished)
  until r.st ~= "running" or #finished > 0
  return running, self:timeout(), nil
end
function Engine:count()
  local n = 0
  for _ in pairs(self.running) do n = n + 1 end
  return n
end
function Engine.wakeup() end

local core = {}
for k, v in pairs(real) do core[k] = v end
core.request = new_request
core.engine = function()
  return setmetatable({ running = setmetatable({}, { __mode = "k" }) }, Engine)
end
package.loaded["fish.core"] = core

local fish = require("fish")
local client = fish.new({ api_key = "fuzz-key", base_url = "https://fuzz.invalid" })

-- ---- fixtures --------------------------------------------------------------------

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end
write(scratch .. "/voice.wav", TTS_BODY)
write(scratch .. "/empty.wav", "")
write(scratch .. "/cover.png", "\137PNG\r\n\26\n")
os.execute("mkdir -p '" .. scratch .. "/dir'")
-- A fish.file whose file is gone by send time (deleted after fish.file).
write(scratch .. "/vanished.wav", "x")
local vanished = fish.file(scratch .. "/vanished.wav")
os.remove(scratch .. "/vanished.wav")
-- And one whose file grew since.
write(scratch .. "/changed.wav", "x")
local changed = fish.file(scratch .. "/changed.wav")
write(scratch .. "/changed.wav", "xyz")

local FILE_PATHS = {
  scratch .. "/voice.wav", scratch .. "/empty.wav", scratch .. "/cover.png", scratch .. "/dir",
  "/dev/null", scratch .. "/missing.wav", "",
  -- io.open stops at the NUL and opens voice.wav; C must not do the same.
  scratch .. "/voice.wav\0.mp3",
}

-- ---- the bytecode ------------------------------------------------------------------

-- Every option name of fish.convert and voices.create, the nested ones, and
-- a few that neither knows.
local KEYS = {
  "text", "chunk_length", "format", "sample_rate", "mp3_bitrate", "opus_bitrate", "references",
  "reference_id", "normalize", "latency", "prosody", "top_p", "temperature", "max_new_tokens",
  "repetition_penalty", "min_chunk_length", "condition_on_previous_chunks", "early_stop_threshold",
  "features", "model", "extra", "out", "on_chunk", "max_bytes", "proxy",
  "retries", "timeout", "connect_timeout", "first_byte_timeout", "idle_timeout", "cancel",
  "headers", "query", "api_key",
  "audio", "speed", "volume", "normalize_loudness",
  "title", "voices", "texts", "tags", "description", "visibility", "cover_image",
  "enhance_audio_quality", "train_mode", "type", "generate_sample",
  "X-Trace", "traceparent", "Authorization", "content-type", "bad name", "tag", "page",
  "id", "_id", "foo", "", "tex", "referenceid",
  -- Appended, so that the corpus keeps naming the keys it named.
  "on_progress",
}

local STRINGS = {
  "hello", "", "wav", "mp3", "opus", "pcm", "flac", "low", "normal", "balanced",
  "public", "unlist", "private", "s2-pro", "speech-1.5", "fast", "tts",
  "a\0b", "line\r\nX-Injected: 1", "\255\254", "voice-id", ".", "..", "a/b", "%2E",
  scratch .. "/out.wav", scratch .. "/dir", scratch .. "/dir/x.wav", scratch .. "/missing/x.wav",
  "/dev/null", "00-abc-def-01",
}

local INTEGERS = {
  0, 1, -1, 2, 8, 100, 128, 300, 44100, 2147483647, -2147483648, 4294967295, 4294967296,
  9007199254740993, math.maxinteger, math.mininteger,
}

local FLOATS = {
  0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 2.0 ^ 63, -(2.0 ^ 63), 2.0 ^ 53, 1e300, -1e300, 1e-300, 1.5, 3.0, -2.5, 0.7,
}

local FUNCTIONS = {
  function() end,
  function(...) return ... end,
  function() return true end,
}

local NOP, NIL, FALSE, TRUE, SMALL_INT, INT, FLOAT, RAW_STRING, STRING, TABLE, SET_KEY, SET_ANY,
  SET_INDEX, FILE, FUNCTION, USERDATA, TOKEN, DUP, SWAP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
  16, 17, 18
local OPS = 19
local MAX_STACK = 64

-- Deterministic: the same bytes always give the same value, and the decoder
-- itself never raises (fish.file may: that is part of what is checked).
local function decode(bytes)
  local stack, top, pos = {}, 0, 2
  local function byte()
    local b = bytes:byte(pos) or 0
    pos = pos + 1
    return b
  end
  local function pick(list) return list[byte() % #list + 1] end
  local function push(v)
    if top < MAX_STACK then
      top = top + 1
      stack[top] = v
    end
  end
  local function pop()
    if top == 0 then return nil end
    local v = stack[top]
    stack[top] = nil
    top = top - 1
    return v
  end
  while pos <= #bytes do
    local op = byte() % OPS
    if op == NOP then -- luacheck: ignore 542
    elseif op == NIL then push(nil)
    elseif op == FALSE then push(false)
    elseif op == TRUE then push(true)
    elseif op == SMALL_INT then push(byte() - 128)
    elseif op == INT then push(pick(INTEGERS))
    elseif op == FLOAT then push(pick(FLOATS))
    elseif op == RAW_STRING then
      local n = byte() % 24
      push(bytes:sub(pos, pos + n - 1))
      pos = pos + n
    elseif op == STRING then push(pick(STRINGS))
    elseif op == TABLE then push({})
    elseif op == SET_KEY or op == SET_INDEX or op == SET_ANY then
      local key
      if op == SET_KEY then key = pick(KEYS)
      elseif op == SET_INDEX then key = byte() % 8 + 1
      end
      local value = pop()
      if op == SET_ANY then key = pop() end
      local t = stack[top]
      if type(t) == "table" and key ~= nil and key == key then rawset(t, key, value) end
    elseif op == FILE then
      local i = byte() % (#FILE_PATHS + 2)
      push(i == 0 and vanished or FILE_PATHS[i] and fish.file(FILE_PATHS[i]) or changed)
    elseif op == FUNCTION then push(pick(FUNCTIONS))
    elseif op == USERDATA then push(pick({ userdata, light_null, light_ptr }))
    elseif op == TOKEN then
      local token = fish.cancel_token()
      if byte() % 2 == 1 then token:cancel() end
      push(token)
    elseif op == DUP then push(stack[top])
    elseif op == SWAP then
      if top >= 2 then stack[top], stack[top - 1] = stack[top - 1], stack[top] end
    end
  end
  return stack[1]
end

-- ---- the verdict -------------------------------------------------------------------

local CALLS = {
  { "fish.convert", function(v) return fish.convert(v) end },
  { "fish.convert", function(v) return client.convert(v) end },
  { "fish.voices.create", function(v) return fish.voices.create(v) end },
  { "fish.voices.create", function(v) return client.voices.create(v) end },
}

local function describe(v)
  if type(v) == "table" and type(v.stub) == "string" then return "stub: " .. v.stub end
  return type(v) .. ": " .. tostring(v)
end

-- Findings already reported and not fixed yet: each is skipped by its
-- message so the fuzzer can look past it. Remove an entry once it is fixed.
-- (Fixed since, their reproducers kept in the corpus: args/finding-vanished-
-- file, -upload-directory, -out-nul, -file-nul-upload, -file-nul-convert.)
local KNOWN = {}

-- The same, for findings that show in what a call returns, not in a
-- message. (None open: retries = math.maxinteger, which wrapped the attempt
-- count, is refused since retries are capped at 100.)
local function known_value(_)
  return false
end

-- ARGS_FUZZ_STRICT=1 skips nothing: to see which findings are fixed.
if os.getenv("ARGS_FUZZ_STRICT") then
  KNOWN = {}
  known_value = function() return false end
end

local function known(message)
  for _, pattern in ipairs(KNOWN) do
    if message:find(pattern) then return true end
  end
  return false
end

local function judge(name, ok, a, b, c)
  if not ok then
    if type(a) ~= "string" then return "raised a non-string error, " .. describe(a) end
    if known(a) then return nil end
    -- An argument error names the call and points at the caller's line,
    -- never into fish's own files.
    if a:find("[/\\]fish[/\\][%w_]+%.lua:%d+:") then return "error inside fish: " .. a end
    if not (a:find(name, 1, true) or a:find("fish.file", 1, true)) then
      return "error that does not name " .. name .. ": " .. a
    end
    return nil
  end
  if a == nil then
    if type(b) ~= "string" then return "failed with a non-string message, " .. describe(b) end
    if not fish.is_error(c) then return "failed without an error object, " .. describe(c) end
    return nil
  end
  if name == "fish.convert" then
    if type(a) ~= "string" and type(a) ~= "number" then return "convert answered a " .. type(a) end
  elseif type(a) ~= "table" then
    return "voices.create answered a " .. type(a)
  end
  return nil
end

local function check(bytes)
  local call = CALLS[(bytes:byte(1) or 0) % #CALLS + 1]
  local name, fn = call[1], call[2]
  local value
  local ok, a, b, c = pcall(function()
    value = decode(bytes)
    return fn(value)
  end)
  local verdict = judge(name, ok, a, b, c)
  if verdict and known_value(value) then verdict = nil end
  -- For args_tool.lua: what the call did.
  local outcome = not ok and ("raised " .. describe(a))
    or a == nil and ("returned nil, " .. tostring(b))
    or ("returned " .. describe(a))
  os.remove(scratch .. "/out.wav")
  -- Every run frees what it made: libFuzzer runs a leak scan after any
  -- input that ends with more mallocs than frees, and a full collection
  -- here is far cheaper than that scan (it also lets a leak in C show).
  collectgarbage()
  return verdict, outcome
end

-- ---- for people: spec/fuzz/args_tool.lua ---------------------------------------

local tools = {}

local function index_of(list, v)
  for i, x in ipairs(list) do
    if x == v or (x ~= x and v ~= v) then return i end
  end
  error("not in the fuzz dictionary: " .. tostring(v), 3)
end

local function quote(str)
  return '"' .. str:gsub('[%c"\\\128-\255]', function(c)
    return ({ ["\n"] = "\\n", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" })[c] or ("\\%03d"):format(c:byte())
  end) .. '"'
end

local function number_text(v)
  if v ~= v then return "0/0" end
  if v == 1 / 0 then return "1/0" end
  if v == -1 / 0 then return "-1/0" end
  if math.type(v) == "integer" then
    if v == math.mininteger then return "math.mininteger" end
    return tostring(v)
  end
  if v == 0 and 1 / v < 0 then return "-0.0" end
  local text = ("%.17g"):format(v)
  return text:find("[%.eEn]") and text or text .. ".0"
end

-- A decoded value as Lua source, for reports. Shared tables print once and
-- then as <seen>; values only C can make print as <...>.
local function lua_text(v, seen, depth)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return number_text(v) end
  if t == "function" then return ("function() --[[ FUNCTIONS[%d] ]] end"):format(index_of(FUNCTIONS, v)) end
  if v == userdata then return "<full userdata>" end
  if t == "userdata" then return v == light_null and "<light userdata NULL>" or "<light userdata>" end
  if t ~= "table" then return tostring(v) end
  if v == vanished then return "fish.file(" .. quote(v.path) .. ") --[[ deleted since ]]" end
  if v == changed then return "fish.file(" .. quote(v.path) .. ") --[[ grown since ]]" end
  if getmetatable(v) and tostring(v):find("^fish%.file") then return "fish.file(" .. quote(v.path) .. ")" end
  if getmetatable(v) and tostring(v):find("^fish%.cancel_token") then
    return v.canceled and "fish.cancel_token() --[[ canceled ]]" or "fish.cancel_token()"
  end
  if seen[v] then return "<seen>" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) == "number" end
    if type(a) == "number" or type(a) == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts = {}
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. lua_text(k, seen, depth + 1) .. "]")
    parts[#parts + 1] = key .. " = " .. lua_text(v[k], seen, depth + 1)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- What an input does, as Lua: the call and its argument.
function tools.show(bytes)
  local call = CALLS[(bytes:byte(1) or 0) % #CALLS + 1]
  local prefix = ({ "fish.convert", "client.convert", "fish.voices.create", "client.voices.create" })
    [(bytes:byte(1) or 0) % #CALLS + 1]
  local ok, value = pcall(decode, bytes)
  if not ok then return prefix .. "(...) -- decoding raised: " .. tostring(value), call[1] end
  return prefix .. "(" .. lua_text(value, {}, 0) .. ")", call[1]
end

-- Bytes from a readable program, for seeds: assemble(call, { "table",
-- {"str", "hello"}, {"set", "text"} }) with call 1..4 as in CALLS.
function tools.assemble(call, program)
  local out = { string.char(call - 1) }
  local function emit(...) for _, b in ipairs({ ... }) do out[#out + 1] = string.char(b) end end
  for _, step in ipairs(program) do
    if type(step) == "string" then step = { step } end
    local op, arg = step[1], step[2]
    if op == "nil" then emit(NIL)
    elseif op == "false" then emit(FALSE)
    elseif op == "true" then emit(TRUE)
    elseif op == "small" then emit(SMALL_INT, arg + 128)
    elseif op == "int" then emit(INT, index_of(INTEGERS, arg) - 1)
    elseif op == "float" then emit(FLOAT, index_of(FLOATS, arg) - 1)
    elseif op == "raw" then
      emit(RAW_STRING, #arg)
      out[#out + 1] = arg
    elseif op == "str" then emit(STRING, index_of(STRINGS, arg) - 1)
    elseif op == "table" then emit(TABLE)
    elseif op == "set" then emit(SET_KEY, index_of(KEYS, arg) - 1)
    elseif op == "seti" then emit(SET_INDEX, arg - 1)
    elseif op == "setany" then emit(SET_ANY)
    elseif op == "file" then emit(FILE, arg) -- 0: the vanished file, 1..: FILE_PATHS, then the grown one
    elseif op == "fn" then emit(FUNCTION, arg - 1)
    elseif op == "userdata" then emit(USERDATA, arg - 1)
    elseif op == "token" then emit(TOKEN, arg and 1 or 0)
    elseif op == "dup" then emit(DUP)
    elseif op == "swap" then emit(SWAP)
    else error("unknown op " .. tostring(op), 2)
    end
  end
  return table.concat(out)
end

tools.check = check
tools.FILE_PATHS = FILE_PATHS

return check, tools
