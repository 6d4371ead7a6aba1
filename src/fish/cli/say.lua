-- fish-audio say TEXT [-o FILE|-] [--voice ID | --ref AUDIO --ref-text TEXT ...]
--                     [--format F] [--model M] [--speed X]
-- Writes FILE atomically (fish's out=), or streams the audio to stdout as it
-- arrives (-o -), so it can be piped into a player.
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local progress = require("fish.cli.progress")
local session = require("fish.cli.session")
local speech = require("fish.cli.speech")

local say = {}

local options = {
  { "output", short = "o", value = "FILE",
    help = "write the audio to FILE (replaced only when complete), or '-' to stream it to stdout as it "
      .. "arrives [default: stdout, unless stdout is a terminal]" },
}
for _, option in ipairs(speech.OPTIONS) do options[#options + 1] = option end
options[#options + 1] = progress.OPTION
options[#options + 1] = args.API_KEY_FILE
options[#options + 1] = args.HELP

say.spec = {
  name = "say",
  usage = "TEXT [-o FILE|-] [--voice ID | --ref AUDIO --ref-text TEXT ...] [options]",
  summary = "Speak TEXT and write the audio to a file, or stream it to stdout.",
  positionals = { { "TEXT", "what to say" } },
  min = 1, max = 1,
  options = options,
  notes = {
    "Without --format, the format comes from FILE's extension (.mp3 .wav .pcm .opus), else mp3.",
    "",
    "examples:",
    "  fish-audio say 'Hello there' --voice 8f3c0d... -o hello.mp3",
    "  fish-audio say 'Hello there' --ref me.wav --ref-text 'What me.wav says.' -o - | mpv -",
  },
}

function say.run(parsed)
  local o = parsed.options
  local text = parsed.positionals[1]
  if not text:match("%S") then failure.usage("say: TEXT is empty") end
  local output = speech.output("say", o, speech.FORMATS)
  local source = speech.default_voice(o)
  local client = session.client(o)
  local request = speech.request(text, source, o, speech.file_cache())
  -- Long references take a while to send: show it (nothing for short ones).
  local shown = progress.command_upload(o, source.refs and speech.describe_refs(source.refs) or "the request")
  request.on_progress = shown:callback()

  if output == "-" then
    local stdout = io.stdout
    request.on_chunk = function(bytes)
      local ok, why = stdout:write(bytes)
      if ok then ok, why = stdout:flush() end
      -- The reader went away (a player closed): stop the transfer too.
      if not ok then failure.api("cannot write the audio to stdout: " .. tostring(why)) end
    end
    local total, message = failure.protect(client.convert, request)
    shown:finish()
    if not total then failure.api(message) end
    return 0
  end
  request.out = output
  local path, size = failure.protect(client.convert, request)
  shown:finish()
  if not path then failure.api(size) end
  io.stderr:write(("fish-audio: wrote %s (%d bytes)\n"):format(path, size))
  return 0
end

return say
