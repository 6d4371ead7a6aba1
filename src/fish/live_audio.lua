-- What fish.live does to the audio it receives before the caller sees it:
-- whole PCM samples, and word timings made absolute.
--
-- PCM: the server cuts its audio messages where it likes, so a message may
-- end in the middle of a 16-bit sample. A player fed such a block (LÖVE's
-- SoundData, a ring buffer of int16) would shift every later sample by one
-- byte and play noise, so the odd byte waits for the next block.
--
-- Timings: /v1/tts/live/with-timestamp sends, with an audio message, an
-- `alignment` snapshot { audio_duration, segments = { {text, start, end} } }
-- whose times count from the start of the message's chunk, and that chunk's
-- place in the whole audio, `chunk_audio_offset_sec`. A word's time in the
-- session's audio is their sum (live-tts.md §1.1).
local live_audio = {}

-- Fish's PCM: signed 16-bit little-endian, mono.
live_audio.PCM_BITS = 16
live_audio.PCM_CHANNELS = 1
live_audio.PCM_FRAME = 2
-- The API's sample rate when the request sets none.
live_audio.DEFAULT_RATE = 44100

local Carry = {}
Carry.__index = Carry

-- A carry for one session's PCM stream.
function live_audio.pcm_carry()
  return setmetatable({ held = "" }, Carry)
end

-- The whole frames of (what was held) .. bytes; the rest is held for the
-- next call. Returns "" when nothing whole has come yet.
function Carry:take(bytes)
  local all = self.held .. bytes
  local whole = #all - #all % live_audio.PCM_FRAME
  self.held = all:sub(whole + 1)
  return all:sub(1, whole)
end

-- Bytes held back that no later block completed (the stream ended there).
function Carry:dangling()
  return #self.held
end

local function number_or(v, default)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return default
end

-- The words of an alignment snapshot in absolute seconds: a list of
-- { text =, start =, ["end"] = }, or nil when the snapshot is not one (the
-- wire's null, or a shape we do not know: timings are an extra, and a
-- strange one must not end the audio).
function live_audio.absolute_words(alignment, offset)
  if type(alignment) ~= "table" then return nil end
  local segments = alignment.segments
  if type(segments) ~= "table" then return nil end
  offset = number_or(offset, 0)
  local words = {}
  for _, segment in ipairs(segments) do
    if type(segment) == "table" then
      local start = number_or(segment.start, nil)
      local stop = number_or(segment["end"], start)
      if start then
        words[#words + 1] = {
          text = type(segment.text) == "string" and segment.text or "",
          start = offset + start,
          ["end"] = offset + (stop or start),
        }
      end
    end
  end
  return words
end

return live_audio
