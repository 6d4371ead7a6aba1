-- fish-audio transcribe AUDIO [--language L] [--timestamps] [--json]:
-- speech to text. Prints the text (with --timestamps, one segment a line).
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local json = require("fish.json")
local progress = require("fish.cli.progress")
local session = require("fish.cli.session")

local transcribe = {}

transcribe.spec = {
  name = "transcribe",
  usage = "AUDIO [--language L] [--timestamps] [--json] [options]",
  summary = "Transcribe an audio file to text.",
  positionals = { { "AUDIO", "the audio file" } },
  min = 1, max = 1,
  options = {
    { "language", value = "L", help = "the spoken language, e.g. en (a hint; detected when left out)" },
    { "timestamps", help = "print one '[start-end] text' line per segment" },
    { "json", help = "print the whole answer as JSON (text, duration, segments, language)" },
    progress.OPTION,
    args.API_KEY_FILE,
    args.HELP,
  },
}

function transcribe.run(parsed)
  local o = parsed.options
  local path = parsed.positionals[1]
  if not fs.is_file(path) then failure.usage(("transcribe: %s is not a readable file"):format(path)) end
  local client = session.client(o)
  local audio = failure.protect(require("fish").file, path)
  local shown = progress.command_upload(o, path:match("[^/]*$"))
  local result, message = failure.protect(client.asr.transcribe, {
    audio = audio, language = o.language, timestamps = (o.timestamps or o.json) and true or false,
    on_progress = shown:callback(),
  })
  shown:finish()
  if not result then failure.api(message) end
  if o.json then
    io.stdout:write(json.encode(result), "\n")
  elseif o.timestamps and type(result.segments) == "table" and #result.segments > 0 then
    for _, segment in ipairs(result.segments) do
      io.stdout:write(("[%.2f-%.2f] %s\n"):format(tonumber(segment.start) or 0, tonumber(segment["end"]) or 0,
        tostring(segment.text or "")))
    end
  else
    io.stdout:write(tostring(result.text or ""), "\n")
  end
  return 0
end

return transcribe
