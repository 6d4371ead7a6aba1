-- fish.convert end to end against the bundled local server: audio comes
-- back, streams, lands in files, and the bytes on the wire match the contract.
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")
local read_file, write_file, files_like, tmpdir = files.read, files.write, files.entries, files.tmpdir

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"

-- Files in `dir` whose names start with `prefix` (temporary files included).
local function u32le(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end

describe("fish.convert", function()
  local srv, client, dir

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    require("support.files").remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  describe("speaks", function()
    it("returns WAV audio for a one-shot clone from reference bytes", function()
      local ref = read_file(REFERENCE_WAV)
      local audio, _, err = client.convert({
        text = "Hello there",
        format = "wav",
        references = { { audio = ref, text = "a reference" } },
      })
      assert.is_nil(err)
      assert.equal("RIFF", audio:sub(1, 4))
      assert.equal("WAVE", audio:sub(9, 12))
      assert.equal(#audio - 8, u32le(audio, 5))
    end)

    it("reads reference audio from fish.file(path)", function()
      local audio = assert(client.convert({
        text = "From a file",
        references = { { audio = fish.file(REFERENCE_WAV), text = "a reference" } },
      }))
      assert.is_true(#audio > 0)
      local sent = srv:last_request("/v1/tts")
      assert.equal(server.base64_decode(sent.msgpack.references[1].audio["$bin"]), read_file(REFERENCE_WAV))
    end)

    it("speaks in a saved voice by reference_id", function()
      local audio = assert(client.convert({ text = "Saved voice", reference_id = "seed-voice-1", format = "pcm" }))
      assert.is_true(#audio > 0)
      assert.equal("seed-voice-1", srv:last_request("/v1/tts").msgpack.reference_id)
    end)

    it("returns longer audio for longer text", function()
      local short = assert(client.convert({ text = "Hi there", format = "pcm" }))
      local long = assert(client.convert({ text = string.rep("Hi there ", 20), format = "pcm" }))
      assert.is_true(#long > #short * 5)
    end)

    it("raises a clear error for a missing reference file", function()
      assert.has_error(function() fish.file(dir .. "/nope.wav") end)
      local ok, err = pcall(fish.file, dir .. "/nope.wav")
      assert.is_false(ok)
      assert.matches("fish.file: cannot use .*nope.wav", err)
    end)
  end)

  describe("out = path", function()
    it("streams audio into the file and returns its path and size", function()
      local target = dir .. "/speech.mp3"
      local path, size = client.convert({ text = "Into a file", format = "mp3", out = target })
      assert.equal(target, path)
      local data = read_file(target)
      assert.equal(#data, size)
      assert.is_true(size > 0)
      assert.same({ "speech.mp3" }, files_like(dir, "speech.mp3"))
    end)

    it("leaves no file when the call fails mid-body", function()
      local target = dir .. "/broken.wav"
      srv:fault("/v1/tts", { reset = "mid_body", after_bytes = 20000 })
      local path, _, err = client.convert({ text = string.rep("long text ", 30), format = "wav", out = target })
      assert.is_nil(path)
      assert.equal("network", err.kind)
      assert.same({}, files_like(dir, "broken.wav"))
    end)

    it("leaves an existing file untouched when the call fails", function()
      local target = dir .. "/keep.wav"
      write_file(target, "old audio")
      srv:fault("/v1/tts", { reset = "mid_body", after_bytes = 20000 })
      local path, _, err = client.convert({ text = string.rep("long text ", 30), format = "wav", out = target })
      assert.is_nil(path)
      assert.is_not_nil(err)
      assert.equal("old audio", read_file(target))
      assert.same({ "keep.wav" }, files_like(dir, "keep.wav"))
    end)

    it("replaces an existing file on success", function()
      local target = dir .. "/replace.wav"
      write_file(target, "old audio")
      assert(client.convert({ text = "New audio", format = "wav", out = target }))
      assert.equal("RIFF", read_file(target):sub(1, 4))
    end)
  end)

  describe("on_chunk", function()
    it("receives the first chunk before the server's pause ends", function()
      srv:fault("/v1/tts", { pause_after_first = 0.5 })
      local chunks, first_at = {}, nil
      local started = core.now()
      local total = assert(client.convert({
        text = string.rep("streaming ", 40),
        format = "wav",
        on_chunk = function(bytes)
          first_at = first_at or core.now()
          chunks[#chunks + 1] = bytes
        end,
      }))
      local finished = core.now()
      assert.is_true(#chunks >= 2)
      assert.equal(total, #table.concat(chunks))
      assert.equal("RIFF", chunks[1]:sub(1, 4))
      -- The first chunk arrived, then the server paused 0.5 s before the rest.
      assert.is_true(finished - first_at >= 0.4, ("first chunk %.3fs after start, done %.3fs later")
        :format(first_at - started, finished - first_at))
    end)
  end)

  describe("on the wire", function()
    it("sends msgpack with auth, user agent and the default model", function()
      assert(client.convert({ text = "Wire check" }))
      local sent = srv:last_request("/v1/tts")
      assert.equal("POST", sent.method)
      assert.equal("application/msgpack", sent.headers["content-type"])
      assert.equal("Bearer " .. srv.api_key, sent.headers["authorization"])
      assert.equal("s2-pro", sent.headers["model"])
      local lua = type(jit) == "table" and jit.version or _VERSION
      assert.equal(("fish-lua/%s (%s; libcurl/%s)"):format(fish.VERSION, lua, core.curl_version()), sent.headers["user-agent"])
      assert.matches("^fish%-lua/%d+%.%d+%.%d+ %(", sent.headers["user-agent"])
      assert.same({ text = "Wire check" }, sent.msgpack)
    end)

    it("takes the model from the client, the call, or omits it with false", function()
      local other = fish.new({ api_key = srv.api_key, base_url = srv.url, model = "s1" })
      assert(other.convert({ text = "client model" }))
      assert.equal("s1", srv:last_request("/v1/tts").headers["model"])
      assert(other.convert({ text = "call model", model = "s2.1-pro-free" }))
      assert.equal("s2.1-pro-free", srv:last_request("/v1/tts").headers["model"])
      assert(other.convert({ text = "no model", model = false }))
      assert.is_nil(srv:last_request("/v1/tts").headers["model"])
      other.close()
    end)

    it("sends reference audio as bin and its text as str", function()
      assert(client.convert({ text = "Hello", references = { { audio = "\1\2\3", text = "ref" } } }))
      local body = server.body(srv:last_request("/v1/tts"))
      assert.truthy(body:find(server.unhex("91" .. "82" .. "a5617564696f" .. "c403010203" .. "a474657874" .. "a3726566"), 1, true))
    end)

    it("sends floats as float64 even when whole, and ints as the shortest int", function()
      assert(client.convert({ text = "Hi", temperature = 1, top_p = 0.5, chunk_length = 200, prosody = { speed = 1 } }))
      local hex = server.hex(server.body(srv:last_request("/v1/tts")))
      assert.truthy(hex:find(server.hex("temperature") .. "cb3ff0000000000000", 1, true))
      assert.truthy(hex:find(server.hex("top_p") .. "cb3fe0000000000000", 1, true))
      assert.truthy(hex:find(server.hex("chunk_length") .. "ccc8", 1, true))
      assert.truthy(hex:find(server.hex("speed") .. "cb3ff0000000000000", 1, true))
    end)

    it("sends no field the caller did not set", function()
      assert(client.convert({ text = "Only text and format", format = "wav" }))
      assert.same({ text = "Only text and format", format = "wav" }, srv:last_request("/v1/tts").msgpack)
    end)

    it("places extra fields after the known ones, sorted by key", function()
      assert(client.convert({ text = "Hi", format = "pcm", extra = { zeta = 1, alpha = "a" } }))
      local hex = server.hex(server.body(srv:last_request("/v1/tts")))
      local expect = "84" .. "a474657874a24869" .. "a6666f726d6174a370636d" .. "a5616c706861a161" .. "a47a65746101"
      assert.equal(expect, hex)
    end)

    -- fish-api.md, Appendix A: the Python SDK's bytes, when its defaults are set explicitly.
    local PY_DEFAULTS = {
      chunk_length = 200, format = "mp3", mp3_bitrate = 128, opus_bitrate = 32, references = {},
      normalize = true, latency = "balanced", top_p = 0.7, temperature = 0.7, max_new_tokens = 1024,
      repetition_penalty = 1.2, min_chunk_length = 50, condition_on_previous_chunks = true,
      early_stop_threshold = 1.0,
    }
    local function with_defaults(fields)
      local args = {}
      for k, v in pairs(PY_DEFAULTS) do args[k] = v end
      for k, v in pairs(fields) do args[k] = v end
      return args
    end
    local GOLDEN = {
      {
        "text=Hello",
        {},
        "8fa474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e63657390a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
      },
      {
        "reference_id=abc, speed=1.5",
        -- The server knows no voice "abc" and answers 400; the bytes it got still count.
        { reference_id = "abc", prosody = { speed = 1.5, volume = 0.0 } },
        "de0011a474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e63657390ac7265666572656e63655f6964a3616263a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a770726f736f647982a57370656564cb3ff8000000000000a6766f6c756d65cb0000000000000000a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
      },
      {
        "one reference",
        { references = { { audio = "\1\2\3", text = "ref" } } },
        "8fa474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e6365739182a5617564696fc403010203a474657874a3726566a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
      },
    }
    for _, case in ipairs(GOLDEN) do
      it("reproduces the Python SDK's bytes: " .. case[1], function()
        local fields = { text = "Hello" }
        for k, v in pairs(case[2]) do fields[k] = v end
        client.convert(with_defaults(fields))
        local hex = server.hex(server.body(srv:last_request("/v1/tts")))
        assert.equal(case[3], hex)
      end)
    end
  end)

  describe("errors", function()
    it("raises at once, naming the field, for bad arguments", function()
      local cases = {
        { {}, "field 'text' is required" },
        { { text = 42 }, "field 'text' must be a string" },
        { { text = "" }, "field 'text' must not be empty" },
        { { text = "x", refrence_id = "v" }, "unknown field 'refrence_id' %(did you mean 'reference_id'%?%)" },
        { { text = "x", format = "flac" }, "field 'format' must be one of" },
        { { text = "x", chunk_length = 1.5 }, "field 'chunk_length' must be an integer" },
        { { text = "x", temperature = "hot" }, "field 'temperature' must be a number" },
        { { text = "x", references = { { audio = 1, text = "t" } } }, "field 'references%[1%]%.audio' must be bytes" },
        { { text = "x", references = { { audio = "a" } } }, "field 'references%[1%]%.text'" },
        { { text = "x", prosody = { speed = "fast" } }, "field 'prosody.speed' must be a finite number" },
        { { text = "x", on_chunk = "f" }, "field 'on_chunk' must be a function" },
        { { text = "x", model = 3 }, "field 'model' must be a string" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.convert, case[1])
        assert.is_false(ok)
        assert.matches("fish.convert: " .. case[2], err)
      end
      assert.has_error(function() client.convert("text") end)
      assert.equal(0, #srv:requests())
    end)

    it("returns an auth error for a wrong key, with the body and no key in tostring", function()
      local secret = "wrong-key-" .. ("s3cr3t"):rep(3)
      local bad = fish.new({ api_key = secret, base_url = srv.url })
      local audio, _, err = bad.convert({ text = "Hi" })
      assert.is_nil(audio)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal("No permission -- see authorization schemes", err.body)
      local line = tostring(err)
      assert.is_nil(line:find("\n"))
      assert.is_nil(line:find(secret, 1, true))
      assert.matches("HTTP 401", line)
      assert.is_nil(tostring(bad):find(secret, 1, true))
      bad.close()
    end)

    it("parses a 422 validation list into the message", function()
      local audio, _, err = client.convert({ text = "Hi", temperature = 5 })
      assert.is_nil(audio)
      assert.equal("http", err.kind)
      assert.equal(422, err.status)
      assert.matches("temperature", err.message)
      assert.is_table(err.json)
    end)

    it("parses a JSON {status, message} body", function()
      local audio, _, err = client.convert({ text = "Hi", reference_id = "no-such-voice" })
      assert.is_nil(audio)
      assert.equal(400, err.status)
      assert.equal("http", err.kind)
      assert.is_string(err.message)
      assert.is_nil(err.message:find("{", 1, true))
    end)

    it("returns a network error when the connection is refused", function()
      local dead = fish.new({ api_key = "k", base_url = "http://127.0.0.1:1", retries = 0 })
      local audio, _, err = dead.convert({ text = "Hi" })
      assert.is_nil(audio)
      assert.equal("network", err.kind)
      assert.equal("connect", err.cause)
      dead.close()
    end)

    it("returns a timeout error when no response comes in time", function()
      srv:fault("/v1/tts", { slow_headers = 3 })
      local audio, _, err = client.convert({ text = "Hi", first_byte_timeout = 0.5 })
      assert.is_nil(audio)
      assert.equal("timeout", err.kind)
      assert.equal("first_byte", err.timeout)
    end)

    it("treats a 200 with an empty body as an error", function()
      srv:fault("/v1/tts", { empty_body = true })
      local audio, _, err = client.convert({ text = "Hi" })
      assert.is_nil(audio)
      assert.equal("invalid_response", err.kind)
      assert.equal(200, err.status)
    end)
  end)
end)

describe("clients", function()
  it("refuses to start without an API key, before any network", function()
    local ok, err = pcall(fish.new, { api_key = "", base_url = "http://127.0.0.1:1" })
    assert.is_false(ok)
    assert.matches("no API key", err)
  end)

  it("rejects unknown options by name", function()
    local ok, err = pcall(fish.new, { api_key = "k", base_ulr = "x" })
    assert.is_false(ok)
    assert.matches("unknown field 'base_ulr'", err)
  end)

  it("supports client:convert as well as client.convert", function()
    local srv = server.start()
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url })
    assert.is_string(c:convert({ text = "colon call", format = "pcm" }))
    assert.is_string(c.convert({ text = "dot call", format = "pcm" }))
    c.close()
    local ok, err = pcall(c.convert, { text = "closed" })
    assert.is_false(ok)
    assert.matches("closed", err)
    srv:stop()
  end)

  -- Lua's collector walks every loaded function each cycle, so a script
  -- that only converts must not carry the rest of the API (client.lua,
  -- EXTENSIONS). A fresh interpreter: busted has loaded everything here.
  it("loads the voice, ASR, account and live code only on the first call into each", function()
    local srv = server.start()
    local script = os.tmpname()
    write_file(script, [[
      local fish = require("fish")
      local function loaded()
        local t = {}
        for _, m in ipairs({ "fish.voices", "fish.asr", "fish.account", "fish.live" }) do
          t[#t + 1] = package.loaded[m] and m or "-"
        end
        return table.concat(t, " ")
      end
      local c = fish.new({ api_key = os.getenv("FISH_API_KEY"), base_url = os.getenv("FISH_BASE_URL"), retries = 0 })
      assert(c.convert({ text = "only this", format = "pcm" }))
      print("convert: " .. loaded())
      local page = assert(c.voices:list())
      assert(type(page.items) == "table", "voices.list gave no items")
      print("voices.list: " .. loaded())
      assert(fish.account:credits())
      assert(fish.account.credits())
      print("fish.account.credits: " .. loaded())
    ]])
    local lua = require("support.abi").interpreter
    local out = files.capture(("FISH_API_KEY=%s FISH_BASE_URL=%s %s %s 2>&1"):format(
      server.shell_quote(srv.api_key), server.shell_quote(srv.url), lua, script))
    os.remove(script)
    srv:stop()
    assert.equal(table.concat({
      "convert: - - - -",
      "voices.list: fish.voices - - -",
      "fish.account.credits: fish.voices - fish.account -",
    }, "\n") .. "\n", out)
  end)

  -- The names are listed twice on purpose (client.lua must know them without
  -- loading the module): a call in a module's `calls` but not in the list
  -- would be unreachable.
  it("lists every call each lazily loaded module offers, and only those", function()
    for _, extension in ipairs(require("fish.client").EXTENSIONS) do
      local offered = {}
      for name in pairs(require(extension.module).calls) do offered[#offered + 1] = name end
      local listed = {}
      for i, name in ipairs(extension.calls) do listed[i] = name end
      table.sort(offered)
      table.sort(listed)
      assert.same(offered, listed, extension.module)
    end
  end)

  it("configures the module-level client from FISH_API_KEY and FISH_BASE_URL", function()
    local srv = server.start()
    local script = os.tmpname()
    write_file(script, [[
      local fish = require("fish")
      local audio = assert(fish.convert{ text = "from the environment", format = "pcm" })
      io.write(#audio > 0 and "ok" or "empty")
    ]])
    local lua = require("support.abi").interpreter
    local cmd = ("FISH_API_KEY=%s FISH_BASE_URL=%s %s %s"):format(
      server.shell_quote(srv.api_key), server.shell_quote(srv.url), lua, script)
    local pipe = io.popen(cmd)
    local out = pipe:read("*a")
    pipe:close()
    os.remove(script)
    assert.equal("ok", out)
    local sent = srv:last_request("/v1/tts")
    assert.equal("Bearer " .. srv.api_key, sent.headers["authorization"])
    srv:stop()
  end)
end)
