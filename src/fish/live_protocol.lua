-- The events of live TTS on the wire (fish-api.md §5, live-tts.md §1,
-- protocol-decisions.md "Live TTS"): one msgpack map per binary message.
-- Client to server: start (the /v1/tts request with text = "", written by
-- tts.encode so that its keys and types are those of POST /v1/tts), text,
-- flush, stop. Server to client: audio, finish, error; the rest is ignored.
local core = require("fish.core")
local tts = require("fish.tts")

local live_protocol = {}

-- `request` holds checked /v1/tts fields (tts.check_request), text aside.
function live_protocol.start(request)
  local fields = {}
  for k, v in pairs(request) do fields[k] = v end
  fields.text = ""
  local w = core.mp_writer()
  w:map(2)
  w:str("event")
  w:str("start")
  w:str("request")
  tts.encode(fields, w)
  -- result() reads the bytes of fish.file references in now: a WebSocket
  -- message is sent whole.
  local bytes = w:result()
  w:close()
  return bytes
end

local function simple(name)
  local w = core.mp_writer()
  w:map(1)
  w:str("event")
  w:str(name)
  local bytes = w:result()
  w:close()
  return bytes
end

local FLUSH, STOP = simple("flush"), simple("stop")

function live_protocol.text(text)
  local w = core.mp_writer()
  w:map(2)
  w:str("event")
  w:str("text")
  w:str("text")
  w:str(text)
  local bytes = w:result()
  w:close()
  return bytes
end

function live_protocol.flush() return FLUSH end
function live_protocol.stop() return STOP end

-- The decoder gives msgpack nil as a light userdata (a table cannot hold
-- nil); anything that is not the expected type counts as absent.
local function string_or_nil(v)
  return type(v) == "string" and v or nil
end

local function number_or_nil(v)
  return type(v) == "number" and v == v and v or nil
end

-- One server message as an event:
--   { type = "audio", audio = bytes, alignment = table|nil, chunk_seq =,
--     offset = chunk_audio_offset_sec, time = server ms }
--   { type = "finish", reason = "stop"|"error"|..., message = string|nil }
--   { type = "error", message = string|nil }
--   { type = "other", name = event name } (to be ignored)
-- or nil, why for a message that is not a msgpack map with an event name.
function live_protocol.decode(bytes)
  local map, why = core.mp_decode(bytes)
  if map == nil then return nil, why end
  if type(map) ~= "table" then return nil, "the message is not a msgpack map" end
  local name = map.event
  if type(name) ~= "string" then return nil, "the message has no event name" end
  if name == "audio" then
    local audio = map.audio
    if audio ~= nil and type(audio) ~= "string" then
      if type(audio) ~= "userdata" then return nil, "an audio event's audio is not bytes" end
      audio = nil
    end
    local alignment = map.alignment
    if type(alignment) ~= "table" then alignment = nil end
    return {
      type = "audio",
      audio = audio or "",
      alignment = alignment,
      chunk_seq = number_or_nil(map.chunk_seq),
      offset = number_or_nil(map.chunk_audio_offset_sec),
      time = number_or_nil(map.time),
    }
  end
  if name == "finish" then
    return { type = "finish", reason = string_or_nil(map.reason), message = string_or_nil(map.message) }
  end
  if name == "error" then
    -- Its text is in `error` or in `message`, whichever is a string
    -- (live-tts.md §1.3).
    local message = string_or_nil(map.error) or string_or_nil(map.message)
    if not message and type(map.error) == "table" then message = string_or_nil(map.error.message) end
    return { type = "error", message = message }
  end
  return { type = "other", name = name }
end

return live_protocol
