-- fish-audio live [-o FILE|-] [--voice ID | --ref AUDIO --ref-text TEXT ...]
--                 [--format F] [--model M] [--speed X] [--timestamps FILE]
-- Reads text from stdin line by line and speaks each line through
-- fish.live as it arrives: the line as text, then a flush. EOF finishes
-- the session. -o - streams the audio to stdout as it arrives; -o FILE is
-- written through fish's out= (renamed into place when the session ends,
-- never left half-written).
--
-- Waiting on stdin and on the session at once: plain Lua cannot poll
-- stdin, and a blocking read would hold back the audio of the last line
-- until the next one. So a `cat` in the background copies stdin into a
-- private temporary file as it comes, and the command drives the session
-- with fish.step(POLL), reading what the file has gained in between. The
-- session's socket wakes the step at once; a new line waits at most POLL.
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local session = require("fish.cli.session")
local speech = require("fish.cli.speech")

local live = {}

-- Seconds between two looks at stdin's copy while nothing else happens.
local POLL = 0.02

-- Live audio is a stream: no WAV (each flush would need its own header).
live.FORMATS = { "mp3", "pcm", "opus" }

local options = {
  { "output", short = "o", value = "FILE",
    help = "write the audio to FILE (replaced only when the session ends), or '-' to stream it to stdout as "
      .. "it arrives [default: stdout, unless stdout is a terminal]" },
}
for _, option in ipairs(speech.OPTIONS) do
  if option[1] == "format" then
    option = { "format", value = "F", choices = live.FORMATS,
      help = "audio format; from the extension of -o FILE, else mp3 (pcm: 16-bit mono, 44.1 kHz)" }
  end
  options[#options + 1] = option
end
options[#options + 1] = { "timestamps", value = "FILE",
  help = "use /v1/tts/live/with-timestamp and write the word timings to FILE when the session ends, "
    .. "one word a line: start and end in seconds of the audio, then the word, tab-separated" }
options[#options + 1] = args.API_KEY_FILE
options[#options + 1] = args.HELP

live.spec = {
  name = "live",
  usage = "[-o FILE|-] [--voice ID | --ref AUDIO --ref-text TEXT ...] [options] < TEXT",
  summary = "Speak text from stdin line by line as the lines arrive (live TTS), writing the audio to a file "
    .. "or streaming it to stdout.",
  max = 0,
  options = options,
  notes = {
    "Each line is sent as soon as it is read, followed by a flush, so its audio comes back while the next",
    "line is still being written; blank lines are skipped. End of input finishes the session; Ctrl-C",
    "cancels it (no FILE is left).",
    "",
    "examples:",
    "  my-llm --stream | fish-audio live --voice 8f3c0d... -o - | mpv -",
    "  fish-audio live --format pcm -o - < script.txt | aplay -f S16_LE -r 44100 -c 1",
  },
}

-- stdin, copied as it arrives into a temporary file by a background cat
-- (an asynchronous command's stdin is /dev/null unless it is handed one
-- explicitly: hence fd 3). When stdin ends, the shell creates `done`.
local Relay = {}
Relay.__index = Relay

local function start_relay()
  local path = os.tmpname() -- created empty, readable by us only
  local done = path .. ".eof"
  os.remove(done)
  -- (The shell's own stderr goes to /dev/null: no "Terminated" when the
  -- command stops cat before stdin ends.)
  local pipe = io.popen(("exec 2>/dev/null 3<&0; cat <&3 >>%s & echo $!; wait $!; : >%s")
    :format(fs.quote(path), fs.quote(done)), "r")
  local pid = pipe and pipe:read("*l")
  local file = io.open(path, "rb")
  if not (pid and pid:match("^%d+$") and file) then
    if pipe then pipe:close() end
    os.remove(path)
    failure.api("live: cannot read stdin through a temporary file")
  end
  return setmetatable({ path = path, done = done, pipe = pipe, pid = pid, file = file, at = 0, partial = "",
                        ended = false, count = 0 }, Relay)
end

-- The complete lines stdin has gained since the last call, and whether
-- stdin has ended (its last line then counts even without a newline).
function Relay:lines()
  local ended = fs.exists(self.done) -- looked at first: all of stdin is in the file then
  local got = {}
  while true do
    self.file:seek("set", self.at) -- clears the end-of-file mark, so new bytes are seen
    local chunk = self.file:read(65536)
    if not chunk then break end
    self.at = self.at + #chunk
    got[#got + 1] = chunk
  end
  local text = self.partial .. table.concat(got)
  local found = {}
  local start = 1
  while true do
    local nl = text:find("\n", start, true)
    if not nl then break end
    found[#found + 1] = text:sub(start, nl - 1)
    start = nl + 1
  end
  self.partial = text:sub(start)
  if ended and self.partial ~= "" then
    found[#found + 1] = self.partial
    self.partial = ""
  end
  self.ended = ended
  return found, ended
end

function Relay:close()
  if not self.pipe then return end
  if not self.ended then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  self.file:close()
  self.pipe:close()
  self.pipe = nil
  os.remove(self.path)
  os.remove(self.done)
end

local function output_of(o)
  local output = speech.output("live", o, live.FORMATS)
  -- live.FORMATS has no wav, so a .wav FILE set no format.
  if not o.format and output ~= "-" and output:lower():match("%.(%w+)$") == "wav" then
    failure.usage("live: live audio is a stream and has no WAV format: use .mp3, .pcm or .opus, or --format")
  end
  return output
end

-- The words of every chunk, in order, as "start\tend\tword" lines.
local function timings_text(chunks)
  local seqs = {}
  for seq in pairs(chunks) do seqs[#seqs + 1] = seq end
  table.sort(seqs)
  local out = {}
  for _, seq in ipairs(seqs) do
    for _, word in ipairs(chunks[seq]) do
      out[#out + 1] = ("%.3f\t%.3f\t%s\n"):format(word.start or 0, word["end"] or 0, word.text or "")
    end
  end
  return table.concat(out)
end

local function run_session(s, relay, state)
  local fish = require("fish")
  local line_no = 0
  while true do
    local lines, ended = relay:lines()
    for _, line in ipairs(lines) do
      line_no = line_no + 1
      line = line:gsub("\r$", "")
      if line:match("%S") then
        local ok, sent, message = pcall(s.send, line)
        if not ok then failure.usage(("live: stdin line %d: %s"):format(line_no, failure.strip_position(sent))) end
        if sent then sent, message = s.flush() end
        if not sent then failure.api(message) end
        state.lines = state.lines + 1
      end
    end
    if ended then break end
    local phase = s.state()
    if phase == "failed" or phase == "canceled" then break end
    fish.step(POLL)
  end
  if state.lines == 0 and s.state() ~= "failed" then failure.usage("live: no text on stdin") end
  local ok, message = s.finish()
  if not ok then failure.api(message) end
end

function live.run(parsed)
  local o = parsed.options
  local output = output_of(o)
  if o.timestamps == "-" then failure.usage("live: --timestamps needs a FILE (stdout carries no timings)") end
  -- Checked now: the timings are written after the whole session has run.
  local unwritable = o.timestamps and fs.unwritable(o.timestamps)
  if unwritable then failure.usage(("live: --timestamps %s: %s"):format(o.timestamps, unwritable)) end
  local source = speech.default_voice(o)
  local client = session.client(o)
  local request = speech.request(nil, source, o, speech.file_cache())

  local state = { lines = 0, bytes = 0 }
  local stdout = io.stdout
  request.on_audio = function(bytes)
    state.bytes = state.bytes + #bytes
    if output == "-" then
      local ok, why = stdout:write(bytes)
      if ok then ok, why = stdout:flush() end
      -- The reader went away (a player closed): end the session too.
      if not ok then failure.api("cannot write the audio to stdout: " .. tostring(why)) end
    end
  end
  if output ~= "-" then request.out = output end
  local chunks = {}
  if o.timestamps then
    request.timestamps = true
    -- Each snapshot replaces its chunk's words; the chunks follow each other.
    request.on_alignment = function(words, info) chunks[info.chunk_seq or info.chunk_offset or 0] = words end
  end

  local s = failure.protect(client.live, request)
  local relay = start_relay()
  local ok, err = pcall(run_session, s, relay, state)
  -- Whatever ended it (Ctrl-C, a failure, a bad line): nothing half-done is
  -- left behind. cancel() after a finished session changes nothing.
  s.cancel()
  relay:close()
  if not ok then error(err, 0) end
  if o.timestamps then
    local written, why = fs.write_atomic(o.timestamps, timings_text(chunks))
    if not written then failure.api(("cannot write %s: %s"):format(o.timestamps, tostring(why))) end
  end
  if output ~= "-" then
    io.stderr:write(("fish-audio: wrote %s (%d bytes from %d lines)\n"):format(output, state.bytes, state.lines))
  end
  return 0
end

return live
