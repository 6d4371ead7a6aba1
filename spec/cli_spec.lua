-- fish-audio, the command-line tool, run as a user runs it: as a process
-- (src/bin/fish-audio under this ABI's interpreter, and once from a
-- `make install` prefix), against the local server, for every command. The
-- batch part covers a 200-row manifest, Ctrl-C and kill -9 halfway and the
-- reruns after them, changed rows, 429 storms, bad manifests and the
-- progress display.
local cjson = require("cjson")
local server = require("support.server")
local files = require("support.files")
local abi = require("support.abi")
local timing = require("support.timing")

local q = files.quote
local ROOT = server.ROOT
local SCRIPT = ROOT .. "/src/bin/fish-audio"
local REFERENCE_WAV = ROOT .. "/examples/reference.wav"
-- The server's MP3 stand-in is whole 417-byte frames (128 kbps, 44.1 kHz):
-- a cut-off file would show as a size that is not a multiple.
local MP3_FRAME = 417

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- Variables of the caller's environment that would change what the child
-- does.
local UNSET = "-u FISH_API_KEY -u FISH_BASE_URL -u FISH_AUDIO_PROGRESS -u LUA_INIT"

-- The command line for `fish-audio argv...`; env: extra variables (false
-- leaves one out, e.g. FISH_API_KEY = false).
local function command_line(srv, argv, env)
  local vars = {
    LUA_PATH = ROOT .. "/src/?.lua;" .. ROOT .. "/src/?/init.lua;;",
    LUA_CPATH = abi.cpath .. ";;",
    FISH_API_KEY = srv and srv.api_key or nil,
    FISH_BASE_URL = srv and srv.url or nil,
  }
  for k, v in pairs(env or {}) do vars[k] = v or nil end
  local names = {}
  for k in pairs(vars) do names[#names + 1] = k end
  table.sort(names)
  local parts = { "env", UNSET }
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. q(vars[k]) end
  parts[#parts + 1] = abi.interpreter
  parts[#parts + 1] = q(SCRIPT)
  for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

local scratch -- a directory for the outputs of runs

-- Run to completion: exit code, stdout, stderr.
local function run(srv, argv, env, cwd)
  local out, err = scratch .. "/stdout", scratch .. "/stderr"
  local cmd = command_line(srv, argv, env) .. " >" .. q(out) .. " 2>" .. q(err) .. " </dev/null"
  if cwd then cmd = "cd " .. q(cwd) .. " && " .. cmd end
  local pipe = io.popen("sh -c " .. q(cmd) .. "; echo \"exit=$?\"")
  local status = pipe:read("*a")
  pipe:close()
  return tonumber(status:match("exit=(%d+)")), files.read(out) or "", files.read(err) or ""
end

-- Start in the background: { pid =, wait = function(timeout) -> code, stderr = path }.
local background_count = 0
local function start(srv, argv, env)
  background_count = background_count + 1
  local base = ("%s/bg%d"):format(scratch, background_count)
  local pid_file, rc_file = base .. ".pid", base .. ".rc"
  local job = command_line(srv, argv, env) .. " >" .. q(base .. ".out") .. " 2>" .. q(base .. ".err") .. " </dev/null"
  local script = job .. " & echo $! >" .. q(pid_file) .. "; wait $!; echo $? >" .. q(rc_file)
  os.execute("sh -c " .. q(script) .. " >/dev/null 2>&1 &")
  local pid
  for _ = 1, 200 do
    pid = (files.read(pid_file) or ""):match("%d+")
    if pid then break end
    sleep(0.02)
  end
  assert(pid, "the background fish-audio did not start")
  return {
    pid = pid,
    stderr = base .. ".err",
    wait = function(timeout)
      for _ = 1, math.floor((timeout or 60) / 0.05) do
        local code = (files.read(rc_file) or ""):match("%d+")
        if code then return tonumber(code) end
        sleep(0.05)
      end
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      error("fish-audio did not exit in time")
    end,
  }
end

local function lines(text)
  local found = {}
  for line in text:gmatch("[^\n]+") do found[#found + 1] = line end
  return found
end

local function read_report(path)
  local rows = {}
  for _, line in ipairs(lines(files.read(path) or "")) do rows[#rows + 1] = cjson.decode(line) end
  return rows
end

local function by_status(report)
  local count = {}
  for _, row in ipairs(report) do count[row.status] = (count[row.status] or 0) + 1 end
  return count
end

local function entries_like(dir, pattern)
  local found = {}
  if not files.exists(dir) then return found end
  for _, name in ipairs(files.entries(dir)) do
    if name:match(pattern) then found[#found + 1] = name end
  end
  return found
end

local function audio_files(dir) return entries_like(dir, "%.mp3$") end
local function part_files(dir) return entries_like(dir, "%.part$") end

local function tts_requests(srv)
  return srv:requests_for("POST", "/v1/tts")
end

-- Requests 1..n pass as usual; the next 16 (one --jobs 16 wave) send 2000
-- bytes of audio and stall: the batch cannot finish, and a signal sent once
-- *.part files show up lands while files are being written.
local function stall_after(srv, n)
  srv:fault("/v1/tts", { delay = 0 }, { times = n })
  srv:fault("/v1/tts", { stall_body = 20, after_bytes = 2000 }, { times = 16 })
end

-- Wait until `dir` holds a temp file.
local function wait_for_part(dir)
  for _ = 1, 600 do
    if #part_files(dir) > 0 then return true end
    sleep(0.025)
  end
  return false
end

-- A CSV manifest of n rows, "row<i>" saying "Line <i>." in the seed voice.
local function write_manifest(path, n, edit)
  local out = { "id,text,voice" }
  for i = 1, n do
    local row = { id = "row" .. i, text = "Line " .. i .. ".", voice = "seed-voice-1" }
    if edit then edit(i, row) end
    out[#out + 1] = ('%s,"%s",%s'):format(row.id, row.text, row.voice)
  end
  files.write(path, table.concat(out, "\n") .. "\n")
end

-- The texts of the TTS requests from index `from` on.
local function texts_since(srv, from)
  local texts = {}
  local all = tts_requests(srv)
  for i = from + 1, #all do
    local body = all[i].msgpack
    if type(body) == "table" then texts[#texts + 1] = body.text end
  end
  return texts
end

describe("fish-audio", function()
  local srv

  setup(function()
    srv = server.start({ train_delay = 0.4 })
    scratch = files.tmpdir()
  end)

  teardown(function()
    srv:stop()
    files.remove_tree(scratch)
  end)

  before_each(function()
    srv:reset()
  end)

  describe("installed", function()
    it("make install puts bin/fish-audio under PREFIX, for this Lua, runnable without LUA_PATH", function()
      local prefix = scratch .. "/prefix"
      local ok, out = files.run(("env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s -C %s install LUA=%s PREFIX=%s")
        :format(q(ROOT), abi.lua, q(prefix)))
      assert.is_true(ok, out)
      local bin = prefix .. "/bin/fish-audio"
      local first = (files.read(bin) or ""):match("^[^\n]*")
      assert.equals("#!/usr/bin/env " .. abi.lua, first)
      for _, name in ipairs(files.entries(ROOT .. "/src/fish/cli")) do
        assert.is_true(files.exists(prefix .. "/share/lua/" .. abi.version .. "/fish/cli/" .. name), name)
      end
      -- Through its shebang, from elsewhere, with no Lua paths set.
      local unset = "-u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_2 -u LUA_CPATH_5_2 -u LUA_PATH_5_3 -u LUA_CPATH_5_3 "
        .. "-u LUA_PATH_5_4 -u LUA_CPATH_5_4"
      ok, out = files.run(("cd / && env %s %s FISH_API_KEY=%s FISH_BASE_URL=%s %s credits")
        :format(UNSET, unset, q(srv.api_key), q(srv.url), q(bin)))
      assert.is_true(ok, out)
      assert.matches("credit: 10%.00", out)
    end)
  end)

  describe("help and usage", function()
    -- The flags the issue names, per command; each must be in its --help.
    local FLAGS = {
      say = { "-o", "--output", "--voice", "--ref", "--ref-text", "--format", "--model", "--speed", "--progress",
              "--api-key-file" },
      batch = { "--out", "--jobs", "--voice", "--ref", "--ref-text", "--format", "--model", "--speed", "--report",
                "--retries", "--dry-run", "--progress", "--api-key-file" },
      transcribe = { "--language", "--json", "--progress", "--api-key-file" },
      credits = { "--json", "--api-key-file" },
      ["voices list"] = { "--json", "--library", "--title", "--tag", "--limit" },
      ["voices get"] = { "--json" },
      ["voices create"] = { "--title", "--text", "--wait", "--visibility", "--cover", "--timeout", "--interval",
                            "--progress" },
      ["voices update"] = { "--title", "--description", "--visibility", "--tag", "--cover" },
      ["voices delete"] = { "--api-key-file" },
      ["voices wait"] = { "--timeout", "--interval" },
    }

    it("--help lists every command, and says how keys, servers and exit codes work", function()
      local code, out = run(nil, { "--help" })
      assert.equals(0, code)
      for _, name in ipairs({ "say", "live", "voices", "batch", "transcribe", "credits" }) do
        assert.matches("\n  " .. name .. " ", out, 1, true)
      end
      -- The flags fish-audio itself takes, besides the commands'.
      for _, flag in ipairs({ "-h, --help", "--version" }) do assert.truthy(out:find("  " .. flag .. " ", 1, true), flag) end
      for _, word in ipairs({ "FISH_API_KEY", "FISH_BASE_URL", "FISH_AUDIO_PROGRESS", "--api-key-file" }) do
        assert.truthy(out:find(word, 1, true), word)
      end
      assert.is_nil(out:find("fish say", 1, true), "the command is fish-audio, never fish")
    end)

    it("<command> --help documents every flag the command accepts", function()
      local main = require("fish.cli.main")
      local voices = require("fish.cli.voices")
      for name, expected in pairs(FLAGS) do
        local argv = {}
        for word in name:gmatch("%S+") do argv[#argv + 1] = word end
        argv[#argv + 1] = "--help"
        local code, out = run(nil, argv)
        assert.equals(0, code, name)
        assert.matches("usage: fish%-audio " .. name:gsub("%-", "%%-"), out)
        for _, flag in ipairs(expected) do
          assert.truthy(out:find(flag .. " ", 1, true) or out:find(flag .. ",", 1, true), name .. ": " .. flag)
        end
        -- And every option the parser knows (the same table drives both).
        local spec = name:match("^voices (%a+)$") and voices.commands[name:match("^voices (%a+)$")]
          or require("fish.cli." .. name).spec
        for _, option in ipairs(spec.options) do
          assert.truthy(out:find("--" .. option[1], 1, true), name .. ": --" .. option[1])
        end
      end
      assert.same({ "say", "live", "voices", "batch", "transcribe", "credits" }, main.COMMANDS)
      local code, out = run(nil, { "voices", "--help" })
      assert.equals(0, code)
      for _, sub in ipairs({ "list", "get", "create", "update", "delete", "wait" }) do
        assert.truthy(out:find("\n  " .. sub .. " ", 1, true), sub)
      end
    end)

    it("usage errors exit 2 with one line on stderr", function()
      local cases = {
        { {}, "usage: fish%-audio" },
        { { "frobnicate" }, "unknown command 'frobnicate'" },
        { { "say" }, "say: missing TEXT" },
        { { "say", "hi", "--speed", "fast" }, "%-%-speed needs a number" },
        { { "say", "hi", "--speed", "3" }, "%-%-speed must be at most 2" },
        { { "say", "hi", "--format", "flac" }, "%-%-format must be one of mp3, wav, pcm, opus" },
        { { "say", "hi", "--bogus" }, "unknown option '%-%-bogus'" },
        { { "say", "hi", "--ref", REFERENCE_WAV }, "each %-%-ref needs its %-%-ref%-text" },
        { { "say", "hi", "--voice", "v", "--ref", REFERENCE_WAV, "--ref-text", "t" }, "%-%-voice or %-%-ref, not both" },
        { { "batch", "m.csv" }, "%-%-out DIR is required" },
        { { "transcribe", "/nonexistent.wav" }, "/nonexistent%.wav is not a readable file" },
        { { "voices" }, "voices: which command%?" },
        { { "say", "hi", "--voice", "v", "-o", "/nonexistent/x.mp3" },
          "fish%-audio: say: %-o /nonexistent/x%.mp3: no such directory: /nonexistent\n$" },
        { { "say", "hi", "--voice", "v", "-o", scratch }, "say: %-o .*: is a directory\n$" },
      }
      for _, case in ipairs(cases) do
        local code, _, err = run(srv, case[1])
        assert.equals(2, code, table.concat(case[1], " ") .. ": " .. err)
        assert.matches(case[2], err)
      end
      assert.equals(0, #tts_requests(srv))
    end)

    it("takes the key from FISH_API_KEY or --api-key-file, never from a flag", function()
      local code, _, err = run(srv, { "credits", "--api-key", srv.api_key })
      assert.equals(2, code)
      assert.matches("there is no %-%-api%-key", err)
      assert.matches("FISH_API_KEY", err)
      assert.is_nil(err:find(srv.api_key, 1, true), "the key is echoed back")

      code, _, err = run(srv, { "credits" }, { FISH_API_KEY = false })
      assert.equals(2, code)
      assert.matches("no API key: set FISH_API_KEY, or pass %-%-api%-key%-file FILE", err)

      local key_file = scratch .. "/key"
      files.write(key_file, srv.api_key .. "\n")
      local out
      code, out = run(srv, { "credits", "--api-key-file", key_file }, { FISH_API_KEY = false })
      assert.equals(0, code)
      assert.matches("credit: 10%.00", out)
      assert.equals("Bearer " .. srv.api_key, srv:last_request().headers.authorization)

      -- A pipe works as the key file (<(pass show fish), /dev/stdin): its
      -- first line is read; a directory does not.
      local piped = io.popen("printf '%s\\n' " .. q(srv.api_key) .. " | "
        .. command_line(srv, { "credits", "--api-key-file", "/dev/stdin" }, { FISH_API_KEY = false })
        .. " 2>&1; echo \"exit=$?\"")
      local piped_out = piped:read("*a")
      piped:close()
      assert.matches("credit: 10%.00", piped_out)
      assert.matches("exit=0", piped_out)
      code, _, err = run(srv, { "credits", "--api-key-file", scratch }, { FISH_API_KEY = false })
      assert.equals(2, code)
      assert.matches("cannot read the API key file", err)

      -- A bad variable is named as the user set it, not as fish.new's option.
      code, _, err = run(srv, { "credits" }, { FISH_BASE_URL = "notaurl" })
      assert.equals(2, code)
      assert.matches("^fish%-audio: FISH_BASE_URL must", err)
      code, _, err = run(srv, { "credits" }, { FISH_API_KEY = "sekrit-KEY\r42" })
      assert.equals(2, code)
      assert.matches("^fish%-audio: FISH_API_KEY must not contain CR", err)
      assert.is_nil(err:find("sekrit", 1, true))

      -- A wrong key is the API's answer: exit 1, one line, no key in it.
      code, _, err = run(srv, { "credits" }, { FISH_API_KEY = "wrong-key-123456" })
      assert.equals(1, code)
      assert.matches("^fish%-audio: fish%.account%.credits: HTTP 401", err)
      assert.equals(1, #lines(err))
      assert.is_nil(err:find("wrong-key-123456", 1, true))
    end)
  end)

  describe("say", function()
    it("writes a file, taking the format from its extension", function()
      local path = scratch .. "/hello.wav"
      local code, _, err = run(srv, { "say", "Hello there", "--voice", "seed-voice-1", "-o", path,
                                      "--speed", "1.5", "--model", "s1" })
      assert.equals(0, code, err)
      assert.matches("wrote .*hello%.wav %(%d+ bytes%)", err)
      assert.equals("RIFF", files.read(path):sub(1, 4))
      assert.same({}, part_files(scratch))
      local sent = srv:last_request("/v1/tts")
      assert.equals("Hello there", sent.msgpack.text)
      assert.equals("wav", sent.msgpack.format)
      assert.equals("seed-voice-1", sent.msgpack.reference_id)
      assert.equals(1.5, sent.msgpack.prosody.speed)
      assert.equals("s1", sent.headers.model)
    end)

    it("streams to stdout with -o -, cloning from --ref and --ref-text", function()
      local code, out, err = run(srv, { "say", "Streamed words.", "-o", "-", "--format", "wav",
                                        "--ref", REFERENCE_WAV, "--ref-text", "The reference transcript." })
      assert.equals(0, code, err)
      assert.equals("RIFF", out:sub(1, 4))
      assert.equals("", err)
      local sent = srv:last_request("/v1/tts")
      local ref = sent.msgpack.references[1]
      assert.equals("The reference transcript.", ref.text)
      assert.equals(files.read(REFERENCE_WAV), server.base64_decode(ref.audio["$bin"]))
    end)

    it("pipes into another program as the audio arrives", function()
      local out = scratch .. "/piped.mp3"
      local cmd = command_line(srv, { "say", "Into a pipe.", "--voice", "seed-voice-1" }) .. " | cat >" .. q(out)
      local status = os.execute(cmd)
      assert.is_true(status == true or status == 0)
      local bytes = files.read(out)
      assert.is_true(#bytes > 0 and #bytes % MP3_FRAME == 0, "size " .. #bytes)
    end)

    -- A player that quits: the next write fails (fish-audio ignores
    -- SIGPIPE), so the command says so in one line and exits 1, instead of
    -- dying by the signal (exit 141) with nothing said.
    it("exits 1 with one line when the reader of stdout goes away", function()
      local long = string.rep("A sentence to speak. ", 100)
      local err = scratch .. "/gone.err"
      local cmd = command_line(srv, { "say", long, "--voice", "seed-voice-1", "-o", "-" }) .. " 2>" .. q(err)
        .. " </dev/null | head -c 10 >/dev/null; echo \"exit=${PIPESTATUS[0]}\""
      local pipe = io.popen("bash -c " .. q(cmd))
      local status = pipe:read("*a")
      pipe:close()
      assert.equals("exit=1", status:match("exit=%d+"))
      assert.equals("fish-audio: cannot write the audio to stdout: Broken pipe\n", files.read(err))
    end)

    local has_script = os.execute("command -v script >/dev/null 2>&1")
    local it_tty = (has_script == true or has_script == 0) and it or pending
    it_tty("say and live refuse to write audio to a terminal (script(1) gives stdout one): exit 2, nothing sent",
      function()
        local before = #tts_requests(srv)
        for _, argv in ipairs({ { "say", "Hi", "--voice", "seed-voice-1" }, { "live", "--voice", "seed-voice-1" } }) do
          local cmd = command_line(srv, argv) .. "; echo exit=$?"
          local pipe = io.popen("script -qec " .. q(cmd) .. " /dev/null </dev/null 2>&1")
          local text = pipe:read("*a")
          pipe:close()
          assert.matches(argv[1] .. ": stdout is a terminal: pass %-o FILE, or pipe stdout into a player "
            .. "%(%-o %- writes to the terminal anyway%)",
            text)
          assert.matches("exit=2", text)
        end
        assert.equals(before, #tts_requests(srv))
      end)

    it("reports an API failure in one line with exit 1, leaving no file", function()
      local path = scratch .. "/never.mp3"
      local code, _, err = run(srv, { "say", "Hi", "--voice", "no-such-voice", "-o", path })
      assert.equals(1, code)
      assert.equals("fish-audio: fish.convert: HTTP 400 bad_request: Reference not found\n", err)
      assert.is_false(files.exists(path))
      assert.same({}, part_files(scratch))
    end)
  end)

  describe("voices", function()
    it("create --wait shows each training state, then list, get, update, wait and delete", function()
      local _
      local code, out, err = run(srv, { "voices", "create", "--title", "CLI voice", REFERENCE_WAV,
                                        "--text", "The reference transcript.", "--tag", "cli", "--wait",
                                        "--interval", "0.05" })
      assert.equals(0, code, err)
      local id = out:match("^(%x+)\n$")
      assert.truthy(id, out)
      for _, state in ipairs({ "created", "training", "trained" }) do
        assert.matches("voice " .. id .. ": " .. state .. "\n", err, 1, true)
      end
      local created = srv:requests_for("POST", "/model")[1]
      local names = {}
      for _, part in ipairs(created.parts) do names[part.name] = true end
      assert.is_true(names.voices and names.texts and names.title and true)

      code, out = run(srv, { "voices", "list" })
      assert.equals(0, code)
      assert.matches("^ID%s+STATE%s+VISIBILITY%s+TITLE\n", out)
      assert.matches(id .. "%s+trained%s+private%s+CLI voice\n", out)
      assert.is_nil(out:find("seed-voice-1", 1, true), "list shows your own voices unless --library")

      code, out = run(srv, { "voices", "list", "--json", "--library" })
      assert.equals(0, code)
      local ids = {}
      for _, line in ipairs(lines(out)) do ids[cjson.decode(line).id] = true end
      assert.is_true(ids[id] and ids["seed-voice-1"])

      code, out = run(srv, { "voices", "get", id, "--json" })
      assert.equals(0, code)
      assert.equals("CLI voice", cjson.decode(out).title)

      code, _, err = run(srv, { "voices", "update", id, "--title", "Renamed", "--tag", "a", "--tag", "b" })
      assert.equals(0, code, err)
      code, out = run(srv, { "voices", "get", id })
      assert.equals(0, code)
      assert.matches("title:%s+Renamed\n", out)
      assert.matches("tags:%s+a, b\n", out)

      code, out = run(srv, { "voices", "wait", id })
      assert.equals(0, code)
      assert.equals(id .. "\n", out)

      code, _, err = run(srv, { "voices", "delete", id })
      assert.equals(0, code, err)
      code, _, err = run(srv, { "voices", "get", id })
      assert.equals(1, code)
      assert.matches("HTTP 404", err)
    end)

    it("wait exits 1 when training fails", function()
      local code, out = run(srv, { "voices", "create", "--title", "Doomed", REFERENCE_WAV })
      assert.equals(0, code)
      local id = out:match("%x+")
      srv:fail_voice(id)
      local _, err
      code, _, err = run(srv, { "voices", "wait", id, "--interval", "0.05" })
      assert.equals(1, code)
      assert.matches("voice " .. id .. " failed training", err)
    end)
  end)

  describe("transcribe and credits", function()
    it("transcribe prints the text, or segments, or JSON", function()
      local code, out = run(srv, { "transcribe", REFERENCE_WAV, "--language", "en" })
      assert.equals(0, code)
      assert.equals("hello from the local fish server\n", out)
      assert.equals("en", srv:last_request("/v1/asr").msgpack.language)
      code, out = run(srv, { "transcribe", REFERENCE_WAV, "--timestamps" })
      assert.equals(0, code)
      assert.matches("^%[%d+%.%d%d%-%d+%.%d%d%] %S", out)
      code, out = run(srv, { "transcribe", REFERENCE_WAV, "--json" })
      assert.equals(0, code)
      assert.equals("hello from the local fish server", cjson.decode(out).text)
    end)

    it("show a long upload's progress: plain lines off a terminal, a bar, or nothing", function()
      local big = scratch .. "/long.wav"
      local _
      files.write(big, string.rep("\0\1", 2 * 1024 * 1024)) -- 4 MiB
      -- Off a terminal: plain lines, the last one when everything is sent.
      local code, out, err = run(srv, { "transcribe", big })
      assert.equals(0, code, err)
      assert.equals("hello from the local fish server\n", out)
      assert.matches("fish%-audio: uploading long%.wav: [%d.]+ %a+ of 4%.0 MiB %d+%%\n", err)
      assert.matches("fish%-audio: uploaded long%.wav: 4%.0 MiB in [%d.]+s; waiting for the answer\n", err)
      assert.is_nil(err:find("\r", 1, true))
      -- A bar, redrawn in place, and the line given back at the end.
      code, _, err = run(srv, { "transcribe", big, "--progress", "bar" })
      assert.equals(0, code, err)
      assert.matches("\ruploading long%.wav: [%d.]+ %a+ of 4%.0 MiB %[[#-]+%] %d+%%", err)
      assert.matches("\ruploaded long%.wav: 4%.0 MiB in [%d.]+s; waiting for the answer\27%[K\n$", err)
      code, _, err = run(srv, { "transcribe", big }, { FISH_AUDIO_PROGRESS = "none" })
      assert.equals(0, code)
      assert.equals("", err)
      -- The other long uploads: voice samples, and say's references.
      code, _, err = run(srv, { "voices", "create", "--title", "long", big, REFERENCE_WAV })
      assert.equals(0, code, err)
      assert.matches("uploaded 2 samples: 4%.2 MiB in", err)
      code, _, err = run(srv, { "say", "long", "--ref", big, "--ref-text", "hi", "-o", scratch .. "/long.mp3" })
      assert.equals(0, code, err)
      assert.matches("uploaded long%.wav: 4%.0 MiB in", err)
      -- A short upload ends before a display would help.
      code, _, err = run(srv, { "transcribe", REFERENCE_WAV })
      assert.equals(0, code)
      assert.equals("", err)
    end)

    it("credits prints the credit, or JSON", function()
      local code, out = run(srv, { "credits" })
      assert.equals(0, code)
      assert.equals("credit: 10.00\n", out)
      code, out = run(srv, { "credits", "--json" })
      assert.equals(0, code)
      assert.equals("10.00", cjson.decode(out).credit)
    end)
  end)

  describe("batch", function()
    local dir, manifest

    before_each(function()
      dir = files.tmpdir()
      manifest = dir .. "/lines.csv"
    end)

    after_each(function()
      files.remove_tree(dir)
    end)

    -- fish-audio batch <manifest> --out <out> [extra], --jobs 16 unless extra says.
    local function batch(out, extra, env)
      local argv = { "batch", manifest, "--out", out }
      local jobs = false
      for _, a in ipairs(extra or {}) do
        argv[#argv + 1] = a
        jobs = jobs or a == "--jobs"
      end
      if not jobs then
        argv[#argv + 1] = "--jobs"
        argv[#argv + 1] = "16"
      end
      return run(srv, argv, env)
    end

    it("voices a 200-row manifest with 16 at once, then a rerun skips every row", function()
      srv:config({ tts_delay = 0.02 })
      write_manifest(manifest, 200)
      local out = dir .. "/audio"
      local code, _, err = batch(out)
      assert.equals(0, code, err)
      assert.equals(200, #audio_files(out))
      assert.same({}, part_files(out))
      local report = read_report(out .. "/report.jsonl")
      assert.equals(200, #report)
      assert.same({ ok = 200 }, by_status(report))
      local seen = {}
      for _, row in ipairs(report) do
        assert.is_nil(seen[row.id], "twice in the report: " .. row.id)
        seen[row.id] = true
        assert.equals(files.size(out .. "/" .. row.id .. ".mp3"), row.bytes)
      end
      assert.equals(200, #tts_requests(srv))
      local stats = srv:stats()
      assert.is_true(stats.max_concurrent_tts <= 16, "more than --jobs at once: " .. stats.max_concurrent_tts)
      timing.check(stats.max_concurrent_tts >= 8, "hardly concurrent: " .. stats.max_concurrent_tts)
      -- Plain lines off a terminal (stderr is a file here).
      assert.matches("%[200/200%] ok row%d+", err)
      assert.matches("200 rows: 200 voiced, 0 skipped, 0 failed", err)
      assert.is_false(files.exists(out .. "/.fish-audio.lock"))

      code, _, err = batch(out)
      assert.equals(0, code, err)
      assert.equals(200, #tts_requests(srv), "a rerun sent requests again")
      assert.same({ skipped = 200 }, by_status(read_report(out .. "/report.jsonl")))
    end)

    it("voices a changed row again, and only that one", function()
      write_manifest(manifest, 20)
      local out = dir .. "/audio"
      assert.equals(0, (batch(out)))
      local before = #tts_requests(srv)
      write_manifest(manifest, 20, function(i, row)
        if i == 7 then row.text = "Line seven, rewritten." end
        if i == 9 then row.voice = "" end -- no voice column: the default below
      end)
      local code, _, err = batch(out, { "--voice", "seed-voice-1" })
      assert.equals(0, code, err)
      -- Row 9 asks for the same voice through --voice: the same request.
      assert.same({ "Line seven, rewritten." }, texts_since(srv, before))
      local report = read_report(out .. "/report.jsonl")
      assert.same({ ok = 1, skipped = 19 }, by_status(report))

      -- Another voice for row 3 (a one-shot reference): voiced again.
      write_manifest(manifest, 20, function(i, row)
        if i == 7 then row.text = "Line seven, rewritten." end
      end)
      local text = files.read(manifest):gsub('row3,"Line 3%.",seed%-voice%-1', 'row3,"Line 3.",,ref.wav,Its words.')
      text = text:gsub("^id,text,voice\n", "id,text,voice,ref,ref_text\n"):gsub("(seed%-voice%-1)\n", "%1,,\n")
      files.write(manifest, text)
      os.execute("cp " .. q(REFERENCE_WAV) .. " " .. q(dir .. "/ref.wav"))
      before = #tts_requests(srv)
      code, _, err = batch(out)
      assert.equals(0, code, err)
      assert.same({ "Line 3." }, texts_since(srv, before))
      assert.equals("Its words.", tts_requests(srv)[before + 1].msgpack.references[1].text)
    end)

    it("takes JSON Lines with a reference per row", function()
      manifest = dir .. "/lines.jsonl"
      os.execute("cp " .. q(REFERENCE_WAV) .. " " .. q(dir .. "/me.wav"))
      files.write(manifest, table.concat({
        '{"id": "a", "text": "First.", "ref": "me.wav", "ref_text": "Me speaking."}',
        "",
        '{"id": "b", "text": "Second.", "voice": "seed-voice-1"}',
      }, "\n"))
      local out = dir .. "/audio"
      local code, _, err = batch(out, { "--report", dir .. "/r.jsonl", "--format", "wav" })
      assert.equals(0, code, err)
      assert.same({ "a.wav", "b.wav" }, entries_like(out, "%.wav$"))
      assert.same({ ok = 2 }, by_status(read_report(dir .. "/r.jsonl")))
      local sent = {}
      for _, r in ipairs(tts_requests(srv)) do sent[r.msgpack.text] = r.msgpack end
      assert.equals("Me speaking.", sent["First."].references[1].text)
      assert.equals("seed-voice-1", sent["Second."].reference_id)
    end)

    it("Ctrl-C halfway leaves no partial file; the rerun finishes the rest, nothing twice", function()
      srv:config({ tts_delay = 0.02 })
      write_manifest(manifest, 200)
      stall_after(srv, 48)
      local out = dir .. "/audio"
      local job = start(srv, { "batch", manifest, "--out", out, "--jobs", "16" })
      assert.is_true(wait_for_part(out), "no temp file before the interrupt")
      os.execute("kill -INT " .. job.pid)
      local code = job.wait(30)
      srv:control("DELETE", "/_test/faults")
      local err = files.read(job.stderr)
      assert.equals(130, code, err)
      assert.matches("interrupted: %d+ rows left; run the same command again to continue", err)
      local done = audio_files(out)
      assert.is_true(#done > 0 and #done <= 48, #done .. " files")
      -- The transfers in flight were canceled, and fish removed their temp files.
      assert.same({}, part_files(out))
      -- Every file is complete: whole frames, and the size the report gives.
      -- (LuaJIT may stop a task between the rename and the report line: such
      -- a file is whole all the same, and the rerun keeps it.)
      local size_of = {}
      for _, row in ipairs(read_report(out .. "/report.jsonl")) do
        if row.status == "ok" then size_of[row.id .. ".mp3"] = row.bytes end
      end
      for _, name in ipairs(done) do
        local size = files.size(out .. "/" .. name)
        assert.is_true(size > 0 and size % MP3_FRAME == 0, name .. " is cut off")
        if size_of[name] then assert.equals(size_of[name], size, name) end
      end

      local before = #tts_requests(srv)
      local _, again
      code, _, again = batch(out)
      assert.equals(0, code, again)
      assert.equals(200, #audio_files(out))
      assert.same({}, part_files(out))
      assert.equals(200 - #done, #tts_requests(srv) - before, "the rerun voiced finished rows again")
      local report = read_report(out .. "/report.jsonl")
      assert.equals(200, #report)
      assert.same({ ok = 200 - #done, skipped = #done }, by_status(report))
    end)

    it("kill -9 halfway leaves only *.part files, which the rerun removes and never counts as done", function()
      srv:config({ tts_delay = 0.02 })
      write_manifest(manifest, 200)
      stall_after(srv, 32)
      local out = dir .. "/audio"
      local job = start(srv, { "batch", manifest, "--out", out, "--jobs", "16" })
      assert.is_true(wait_for_part(out), "no temp file before the kill")
      -- Let the other stalled transfers open their temp files too.
      sleep(0.2)
      os.execute("kill -KILL " .. job.pid)
      assert.equals(137, job.wait(30))
      srv:control("DELETE", "/_test/faults")
      local parts = part_files(out)
      assert.is_true(#parts > 0, "no temp file at the kill")
      for _, name in ipairs(parts) do assert.matches("^row%d+%.mp3%.%x+%-%d+%.part$", name) end
      local done = audio_files(out)
      for _, name in ipairs(done) do
        assert.equals(0, files.size(out .. "/" .. name) % MP3_FRAME, name .. " is cut off")
      end
      -- A stale temp file of a row that is not done yet.
      files.write(out .. "/row200.mp3.deadbeef-1.part", "half")

      local before = #tts_requests(srv)
      local code, _, err = batch(out)
      assert.equals(0, code, err)
      assert.matches("removed %d+ partial file", err)
      assert.same({}, part_files(out))
      assert.equals(200, #audio_files(out))
      assert.is_false(files.exists(out .. "/.fish-audio.lock"))
      assert.equals(200 - #done, #tts_requests(srv) - before)
      local finished = {}
      for _, name in ipairs(done) do finished["row" .. name:match("^row(%d+)") ] = true end
      for _, text in ipairs(texts_since(srv, before)) do
        assert.is_nil(finished["row" .. text:match("^Line (%d+)")], "voiced twice: " .. text)
      end
      assert.same({ ok = 200 - #done, skipped = #done }, by_status(read_report(out .. "/report.jsonl")))
    end)

    it("rides out a 429 storm: backs off for Retry-After, halves its jobs, raises them again", function()
      srv:config({ tts_delay = 0.02 })
      write_manifest(manifest, 200)
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "1" } }, { times = 24 })
      local out = dir .. "/audio"
      local code, _, err = batch(out)
      assert.equals(0, code, err)
      assert.equals(200, #audio_files(out))
      local report = read_report(out .. "/report.jsonl")
      assert.same({ ok = 200 }, by_status(report))
      local retried = 0
      for _, row in ipairs(report) do
        if row.attempts > 1 then retried = retried + 1 end
      end
      assert.is_true(retried >= 16, retried .. " rows retried")
      assert.equals(224, #tts_requests(srv))
      assert.matches("rate limited %(HTTP 429%): waiting 1%.0s, jobs 16 %-> 8", err)
      assert.matches("jobs 8 %-> 4", err)
      assert.matches("jobs 4 %-> 5\n", err)
      assert.matches("jobs 15 %-> 16\n", err)
      -- Nothing new within Retry-After of the first 429.
      local times = {}
      for _, r in ipairs(tts_requests(srv)) do times[#times + 1] = r.t end
      table.sort(times)
      for _, t in ipairs(times) do
        local since = t - times[1]
        timing.check(since < 0.3 or since > 0.9, ("a request %.2fs after the first 429"):format(since))
      end
    end)

    it("refuses a bad manifest before any request, naming the line, row and reason", function()
      local out = dir .. "/audio"
      local cases = {
        { "id,txt,voice\na,hi,v\n", { "lines%.csv:1: unknown column 'txt'", "lines%.csv:1: missing column 'text'" } },
        { "id,text\na,hi\n", { "lines%.csv:1: missing column 'voice' or 'ref'" } },
        { "id,text,voice\na,hi,v\nb,yo,v\na,again,v\n", { "lines%.csv:4: row 3: duplicate id 'a' %(first on line 2%)" } },
        { "id,text,voice\na,hi,v\nb, ,v\n", { "lines%.csv:3: row 2: empty text" } },
        { "id,text,voice\n,hi,v\n", { "lines%.csv:2: row 1: missing id" } },
        { "id,text,voice\n../x,hi,v\n", { "row 1: id '%.%./x' may hold only" } },
        { "id,text,ref\na,hi,nope.wav\n", { "row 1: has 'ref' but no 'ref_text'", "nope%.wav is not a readable file" } },
        { 'id,text,voice\na,"unclosed,v\n', { "lines%.csv:2: a quoted field is never closed" } },
        { "id,text,voice\na,hi\n", { "lines%.csv:2: row 1: has 2 fields, the header has 3" } },
      }
      for _, case in ipairs(cases) do
        files.write(manifest, case[1])
        local code, _, err = batch(out)
        assert.equals(2, code, case[1] .. err)
        for _, pattern in ipairs(case[2]) do assert.matches(pattern, err) end
        assert.matches("manifest refused: nothing was sent", err)
      end
      assert.equals(0, #tts_requests(srv))
      assert.is_false(files.exists(out), "the output directory was made for a refused manifest")
    end)

    it("exits 3 when some rows fail, with each failure in the report", function()
      files.write(manifest, "id,text,voice\na,Fine.,seed-voice-1\nb,Doomed.,no-such-voice\nc,Fine too.,seed-voice-1\n")
      local out = dir .. "/audio"
      local code, _, err = batch(out)
      assert.equals(3, code, err)
      assert.matches("1 of 3 rows failed; see " .. out:gsub("%p", "%%%0") .. "/report%.jsonl", err)
      local failed
      for _, row in ipairs(read_report(out .. "/report.jsonl")) do
        if row.status == "failed" then failed = row end
      end
      assert.equals("b", failed.id)
      assert.equals(3, failed.line)
      assert.same({ kind = "http", status = 400,
                    message = "fish.convert: HTTP 400 bad_request: Reference not found" }, failed.error)
      assert.same({ "a.mp3", "c.mp3" }, audio_files(out))
    end)

    it("stops at a wrong key with exit 1 instead of failing every row", function()
      write_manifest(manifest, 50)
      local code, _, err = batch(dir .. "/audio", { "--jobs", "2" }, { FISH_API_KEY = "wrong-key-123456" })
      assert.equals(1, code)
      assert.matches("batch stopped: fish%.convert: HTTP 401", err)
      assert.is_true(#tts_requests(srv) <= 2, #tts_requests(srv) .. " requests")
      local report = read_report(dir .. "/audio/report.jsonl")
      assert.equals(50, #report)
    end)

    it("--dry-run counts rows and characters and shows the credit, voicing nothing", function()
      write_manifest(manifest, 10)
      local out = dir .. "/audio"
      assert.equals(0, (batch(out)))
      write_manifest(manifest, 12, function(i, row)
        if i == 2 then row.text = "Zwei, größer." end
      end)
      local before = #tts_requests(srv)
      local code, stdout = batch(out, { "--dry-run" })
      assert.equals(0, code)
      assert.matches("rows: 12 %(3 to voice, 9 already done%)", stdout)
      -- "Zwei, größer." is 13 characters (15 bytes); "Line 11." and "Line 12." 8 each.
      assert.matches("characters: 29 to voice", stdout)
      assert.matches("credit: 10%.00", stdout)
      assert.equals(before, #tts_requests(srv))
      assert.equals(10, #audio_files(out))
    end)

    it("draws a progress bar on a terminal, at most 10 times a second", function()
      srv:config({ tts_delay = 0.05 })
      write_manifest(manifest, 100)
      local out = dir .. "/audio"
      local started = os.time()
      local code, _, err = batch(out, { "--jobs", "4" }, { FISH_AUDIO_PROGRESS = "bar" })
      local elapsed = os.time() - started + 1
      assert.equals(0, code, err)
      local draws = select(2, err:gsub("\r", ""))
      assert.is_true(draws >= 2, err)
      timing.check(draws <= elapsed * 10 + 12, draws .. " draws in about " .. elapsed .. " s")
      assert.matches("100/100 rows %[####################%]", err)
      assert.matches("rows/s", err)
      assert.matches("ETA %d+:%d%d", err)
      assert.is_nil(err:find("] ok row", 1, true), "plain lines under the bar")

      -- FISH_AUDIO_PROGRESS=none: only the failures would show.
      files.remove_tree(out)
      code, _, err = batch(out, {}, { FISH_AUDIO_PROGRESS = "none" })
      assert.equals(0, code)
      assert.equals("", err)
    end)

    it("counts the bytes rows send while they run, from fish's on_progress", function()
      local big = dir .. "/long.wav"
      files.write(big, string.rep("\0\1", 1024 * 1024)) -- 2 MiB, sent by each row
      write_manifest(manifest, 5, function(_, row) row.voice = "" end)
      local code, _, err = batch(dir .. "/audio", { "--ref", big, "--ref-text", "hi" }, { FISH_AUDIO_PROGRESS = "bar" })
      assert.equals(0, code, err)
      assert.matches("5/5 rows %[####################%]  [%d.]+ %a+  sent 10%.0 MiB", err)
    end)

    local has_script = os.execute("command -v script >/dev/null 2>&1")
    local it_tty = (has_script == true or has_script == 0) and it or pending
    it_tty("picks the bar by itself when stderr is a terminal (script(1) gives it one)", function()
      write_manifest(manifest, 10)
      local out = dir .. "/audio"
      local cmd = command_line(srv, { "batch", manifest, "--out", out })
      local pipe = io.popen("script -qec " .. q(cmd) .. " /dev/null </dev/null 2>&1")
      local text = pipe:read("*a")
      pipe:close()
      assert.matches("10/10 rows %[", text)
      assert.equals(10, #audio_files(out))
    end)
  end)
end)
