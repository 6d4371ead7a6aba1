-- fish-audio live, run as a user runs it: the command as a process
-- (src/bin/fish-audio under this ABI's interpreter) against the local
-- server, its stdin a FIFO this spec writes lines into with pauses, the way
-- an LLM or a person produces them.
local server = require("support.server")
local files = require("support.files")
local abi = require("support.abi")

local q = files.quote
local ROOT = server.ROOT
local SCRIPT = ROOT .. "/src/bin/fish-audio"
-- The server's MP3 stand-in is whole 417-byte frames.
local MP3_FRAME = 417

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- PCM bytes the server makes for one flushed line: 0.05 s a character, at
-- least 0.2 s, 16-bit mono at 44.1 kHz.
local function pcm_bytes(text)
  return math.floor(math.max(0.2, 0.05 * #text) * 44100 + 0.5) * 2
end

-- Poll `check` until it returns a true value (or `seconds` pass); returns
-- that value. A deadline for a condition, not a timing check.
local function eventually(check, seconds)
  for _ = 1, math.floor((seconds or 20) / 0.02) do
    local v = check()
    if v then return v end
    sleep(0.02)
  end
  return check()
end

local scratch

local function command_line(srv, argv, env)
  local vars = {
    LUA_PATH = ROOT .. "/src/?.lua;" .. ROOT .. "/src/?/init.lua;;",
    LUA_CPATH = abi.cpath .. ";;",
    FISH_API_KEY = srv.api_key,
    FISH_BASE_URL = srv.url,
  }
  for k, v in pairs(env or {}) do vars[k] = v end
  local parts = { "env -u FISH_API_KEY -u FISH_BASE_URL -u LUA_INIT" }
  for k, v in pairs(vars) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = abi.interpreter
  parts[#parts + 1] = q(SCRIPT)
  for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

-- Run with `input` on stdin, to the end: exit code, stdout, stderr.
local function run(srv, argv, input, env)
  local inp, out, err = scratch .. "/in", scratch .. "/stdout", scratch .. "/stderr"
  files.write(inp, input or "")
  local pipe = io.popen(command_line(srv, argv, env) .. " <" .. q(inp) .. " >" .. q(out) .. " 2>" .. q(err)
    .. "; echo \"exit=$?\"")
  local status = pipe:read("*a")
  pipe:close()
  return tonumber(status:match("exit=(%d+)")), files.read(out) or "", files.read(err) or ""
end

-- Start in the background, stdin a FIFO: { write(line), close(), pid,
-- wait() -> code, out = stdout's path, err = stderr's path }.
local started = 0
local function start(srv, argv, env)
  started = started + 1
  local base = ("%s/live%d"):format(scratch, started)
  local fifo = base .. ".fifo"
  assert(os.execute("mkfifo " .. q(fifo)))
  local job = command_line(srv, argv, env) .. " <" .. q(fifo) .. " >" .. q(base .. ".out") .. " 2>" .. q(base .. ".err")
  os.execute("sh -c " .. q(job .. " & echo $! >" .. q(base .. ".pid") .. "; wait $!; echo $? >" .. q(base .. ".rc"))
    .. " >/dev/null 2>&1 &")
  local input = assert(io.open(fifo, "w")) -- opens once the command's shell opens the other end
  local pid = eventually(function() return (files.read(base .. ".pid") or ""):match("%d+") end)
  assert(pid, "fish-audio live did not start")
  local p = { pid = pid, out = base .. ".out", err = base .. ".err" }
  function p.write(line)
    input:write(line, "\n")
    input:flush()
  end
  function p.close()
    if input then input:close() end
    input = nil
  end
  function p.wait(seconds)
    local code = eventually(function() return tonumber((files.read(base .. ".rc") or ""):match("%d+")) end, seconds)
    if not code then
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      error("fish-audio live did not exit in time; stderr: " .. (files.read(p.err) or ""))
    end
    p.close()
    return code
  end
  return p
end

local function part_files(dir)
  local found = {}
  for _, name in ipairs(files.entries(dir)) do
    if name:match("%.part$") then found[#found + 1] = name end
  end
  return found
end

-- The client events of the recorded live sessions: { "start", "text:Hi", "flush", ... } each.
-- `wait` (default 5 s): first wait until no session is open; 0 looks now.
local function session_events(srv, wait)
  local list = {}
  for _, s in ipairs(srv:live_sessions({ wait = wait or 5 })) do
    local events = {}
    for _, e in ipairs(s.events) do
      events[#events + 1] = e.event == "text" and ("text:" .. tostring(e.text)) or e.event
    end
    list[#list + 1] = { events = events, record = s }
  end
  return list
end

describe("fish-audio live", function()
  local srv

  setup(function()
    srv = server.start()
    scratch = files.tmpdir()
  end)

  teardown(function()
    srv:stop()
    files.remove_tree(scratch)
  end)

  before_each(function()
    srv:reset()
  end)

  it("streams each line's audio to stdout (-o -) before the next line is written", function()
    local first, second = "The first line, said at once.", "A second one."
    local p = start(srv, { "live", "-o", "-", "--format", "pcm", "--voice", "seed-voice-1" })
    p.write(first)
    -- All of line 1's audio reaches stdout while stdin is still open and
    -- line 2 unwritten.
    local size = eventually(function()
      local n = files.size(p.out) or 0
      return n >= pcm_bytes(first) and n
    end)
    assert.equals(pcm_bytes(first), size)
    local so_far = session_events(srv, 0)
    assert.equals(1, #so_far)
    assert.same({ "start", "text:" .. first, "flush" }, so_far[1].events)
    assert.is_false(so_far[1].record.ended)
    p.write("")   -- a blank line is skipped
    p.write(second)
    p.close()
    assert.equals(0, p.wait())
    assert.equals("", files.read(p.err))
    assert.equals(pcm_bytes(first) + pcm_bytes(second), files.size(p.out))
    local sessions = session_events(srv)
    assert.equals(1, #sessions)
    assert.same({ "start", "text:" .. first, "flush", "text:" .. second, "flush", "stop" }, sessions[1].events)
    local start_event = sessions[1].record.events[1]
    assert.equals("pcm", start_event.request.format)
    assert.equals("seed-voice-1", start_event.request.reference_id)
    assert.equals("/v1/tts/live", sessions[1].record.path)
  end)

  it("exits 1 with one line when the reader of stdout goes away, while stdin is still open", function()
    local err = scratch .. "/gone.err"
    local lines = "for i in 1 2 3 4 5 6 7 8; do echo \"Line number $i is spoken.\"; sleep 0.3; done"
    local cmd = "(" .. lines .. ") | " .. command_line(srv, { "live", "-o", "-", "--format", "pcm", "--voice",
      "seed-voice-1" }) .. " 2>" .. q(err) .. " | head -c 100 >/dev/null; echo \"exit=${PIPESTATUS[1]}\""
    local pipe = io.popen("bash -c " .. q(cmd) .. " 2>/dev/null")
    local status = pipe:read("*a")
    pipe:close()
    assert.equals("exit=1", status:match("exit=%d+"))
    assert.equals("fish-audio: cannot write the audio to stdout: Broken pipe\n", files.read(err))
  end)

  it("-o FILE: the audio of line 1 is being written before line 2; FILE appears whole at the end", function()
    local path = scratch .. "/spoken.mp3"
    local p = start(srv, { "live", "-o", path, "--model", "s1", "--speed", "1.5" })
    p.write("Hello from the first line.")
    assert.truthy(eventually(function()
      local parts = part_files(scratch)
      return #parts == 1 and (files.size(scratch .. "/" .. parts[1]) or 0) > 0
    end), "no audio in the temporary file before line 2")
    assert.is_false(files.exists(path))
    p.write("And the second.")
    p.close()
    assert.equals(0, p.wait())
    local size = files.size(path)
    assert.is_true(size > 0 and size % MP3_FRAME == 0, "size " .. tostring(size))
    assert.same({}, part_files(scratch))
    assert.matches("^fish%-audio: wrote .*spoken%.mp3 %(" .. size .. " bytes from 2 lines%)\n$", files.read(p.err))
    local s = session_events(srv)[1]
    assert.same({ "start", "text:Hello from the first line.", "flush", "text:And the second.", "flush", "stop" },
      s.events)
    assert.equals("mp3", s.record.events[1].request.format)
    assert.equals(1.5, s.record.events[1].request.prosody.speed)
    assert.equals("s1", s.record.headers.model)
  end)

  it("Ctrl-C cancels the session: exit 130, no FILE and no temporary file left", function()
    local path = scratch .. "/never.mp3"
    local p = start(srv, { "live", "-o", path })
    p.write("Some words before the interrupt.")
    -- Once the line's audio is being written (the temporary file exists
    -- from the start of the session, empty).
    assert.truthy(eventually(function()
      local parts = part_files(scratch)
      return #parts == 1 and (files.size(scratch .. "/" .. parts[1]) or 0) > 0
    end), "no audio in the temporary file")
    os.execute("kill -INT " .. p.pid)
    assert.equals(130, p.wait())
    assert.equals("fish-audio: interrupted\n", files.read(p.err))
    assert.is_false(files.exists(path))
    assert.same({}, part_files(scratch))
    local s = session_events(srv)[1]
    assert.same({ "start", "text:Some words before the interrupt.", "flush" }, s.events)
    assert.is_true(s.record.ended)
  end)

  it("--timestamps FILE uses /with-timestamp and writes one word a line", function()
    local stamps = scratch .. "/words.tsv"
    local code, out, err = run(srv, { "live", "-o", "-", "--timestamps", stamps },
      "Hello word timings.\nMore words\n")
    assert.equals(0, code, err)
    assert.is_true(#out > 0 and #out % MP3_FRAME == 0)
    local words, last_end = {}, -1
    for start_s, end_s, word in (files.read(stamps) or ""):gmatch("([%d.]+)\t([%d.]+)\t([^\n]*)\n") do
      words[#words + 1] = word
      assert.is_true(tonumber(start_s) >= last_end and tonumber(end_s) > tonumber(start_s), word)
      last_end = tonumber(end_s)
    end
    assert.same({ "Hello", "word", "timings.", "More", "words" }, words)
    assert.equals("/v1/tts/live/with-timestamp", session_events(srv)[1].record.path)
  end)

  it("a refused key exits 1 at once with one clean line, while stdin is still open", function()
    -- The session connects at once, before any line: stdin stays open and
    -- empty, and the command must not wait for its end.
    local p = start(srv, { "live", "-o", "-" }, { FISH_API_KEY = "wrong-key-123456" })
    local code = p.wait(30)
    assert.equals(1, code)
    local err = files.read(p.err)
    assert.matches("^fish%-audio: fish%.live: HTTP 401 unauthorized: [^\n]*\n$", err)
    assert.is_nil(err:find("wrong-key-123456", 1, true))
    assert.equals("", files.read(p.out))
  end)

  it("a connection lost mid-session exits 1 with one line, leaving no FILE", function()
    srv:fault("/v1/tts/live", { drop = "fin", after_audio = 1 })
    local path = scratch .. "/cut.mp3"
    local code, _, err = run(srv, { "live", "-o", path }, "The first words of a long answer.\nMore.\n")
    assert.equals(1, code)
    assert.matches("^fish%-audio: fish%.live: [^\n]*closed[^\n]*\n$", err)
    assert.is_false(files.exists(path))
    assert.same({}, part_files(scratch))
  end)

  it("bad flags and bad input exit 2 with one line naming the flag", function()
    local cases = {
      { { "live", "--bogus" }, "", "live: unknown option '%-%-bogus'" },
      { { "live", "words" }, "", "live: unexpected argument 'words'" },
      { { "live", "--format", "wav" }, "", "%-%-format must be one of mp3, pcm, opus, got 'wav'" },
      { { "live", "-o", scratch .. "/x.wav" }, "", "live audio is a stream and has no WAV format" },
      { { "live", "--speed", "3" }, "", "%-%-speed must be at most 2" },
      { { "live", "--voice", "v", "--ref", ROOT .. "/examples/reference.wav", "--ref-text", "t" }, "",
        "%-%-voice or %-%-ref, not both" },
      { { "live", "-o", "-", "--timestamps", "-" }, "", "%-%-timestamps needs a FILE" },
      -- Checked before the session: the timings are written after it.
      { { "live", "-o", "-", "--timestamps", scratch }, "Hi.\n", "live: %-%-timestamps .*: is a directory" },
      { { "live", "-o", "-", "--timestamps", "/nonexistent/t.txt" }, "Hi.\n",
        "live: %-%-timestamps /nonexistent/t%.txt: no such directory: /nonexistent" },
      { { "live", "-o", "/nonexistent/x.mp3" }, "Hi.\n", "live: %-o /nonexistent/x%.mp3: no such directory" },
      { { "live", "--api-key", "k" }, "", "there is no %-%-api%-key" },
    }
    -- Bad input is found once the session is under way.
    local input_cases = {
      { { "live", "-o", "-" }, "\n  \n", "live: no text on stdin" },
      { { "live", "-o", scratch .. "/bad.mp3" }, "Fine.\n\255 not UTF-8\n", "live: stdin line 2: .*not valid UTF%-8" },
    }
    local function check(case)
      local code, _, err = run(srv, case[1], case[2])
      assert.equals(2, code, table.concat(case[1], " ") .. ": " .. err)
      assert.matches("^fish%-audio: [^\n]*" .. case[3] .. "[^\n]*\n$", err)
    end
    for _, case in ipairs(cases) do check(case) end
    -- Every flag (the --timestamps and -o paths too) was refused before
    -- a session was opened.
    assert.equals(0, #session_events(srv))
    for _, case in ipairs(input_cases) do check(case) end
    assert.same({}, part_files(scratch))
    assert.is_false(files.exists(scratch .. "/bad.mp3"))
  end)

  it("--help documents every flag, and fish-audio --help lists the command", function()
    local code, out = run(srv, { "live", "--help" })
    assert.equals(0, code)
    assert.matches("^usage: fish%-audio live ", out)
    for _, option in ipairs(require("fish.cli.live").spec.options) do
      assert.truthy(out:find("--" .. option[1] .. " ", 1, true) or out:find("--" .. option[1] .. "\n", 1, true),
        option[1])
    end
    for _, flag in ipairs({ "-o", "--voice", "--ref", "--ref-text", "--format", "--model", "--speed",
                            "--timestamps", "--api-key-file" }) do
      assert.truthy(out:find(flag .. " ", 1, true) or out:find(flag .. ",", 1, true), flag)
    end
    code, out = run(srv, { "--help" })
    assert.equals(0, code)
    assert.truthy(out:find("\n  live ", 1, true))
  end)
end)
