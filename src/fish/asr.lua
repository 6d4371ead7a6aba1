-- Speech to text: POST /v1/asr with the msgpack body the Python SDK sends,
-- {audio: bin, ignore_timestamps: bool[, language: str]}.
local core = require("fish.core")
local file = require("fish.file")
local util = require("fish.util")

local asr = {}

local FIELDS = { "audio", "language", "timestamps", "on_progress" }

local function fail(field, message)
  util.raise(("fish.asr.transcribe: field '%s' %s"):format(field, message))
end

function asr.encode(args)
  util.check_fields("fish.asr.transcribe", args, FIELDS)
  local audio = args.audio
  if not file.is(audio) and (type(audio) ~= "string" or audio == "") then
    fail("audio", "must be bytes (a non-empty string) or fish.file(path)")
  end
  if args.language ~= nil and type(args.language) ~= "string" then fail("language", "must be a string") end
  if args.timestamps ~= nil and type(args.timestamps) ~= "boolean" then fail("timestamps", "must be a boolean") end
  if args.on_progress ~= nil and type(args.on_progress) ~= "function" then fail("on_progress", "must be a function") end
  local w = core.mp_writer()
  w:map(args.language and 3 or 2)
  w:str("audio")
  if file.is(audio) then
    file.check(audio, "fish.asr.transcribe", "audio")
    local ok, why = w:bin_file_ref(audio.path, audio.size)
    if not ok then fail("audio", why) end
  else
    w:bin(audio)
  end
  -- Timestamps are on unless turned off, as in the Python SDK.
  w:str("ignore_timestamps"):bool(args.timestamps == false)
  if args.language then w:str("language"):str(args.language) end
  -- The writer is the body: core.request sends it as it stands.
  return w
end

local function transcribe(state, args)
  state:check_open("fish.asr.transcribe")
  local body = asr.encode(args)
  local result, err = state:send_json({
    method = "POST",
    path = "/v1/asr",
    headers = { "Content-Type: application/msgpack" },
    body = body,
  }, args, "fish.asr.transcribe")
  body:close() -- the call is over: free the body now, not at the next collection
  return result, err
end

-- The calls a client offers under client.asr (client.lua, EXTENSIONS).
asr.calls = { transcribe = transcribe }

return asr
