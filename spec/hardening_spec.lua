-- Regression specs for what a hostile review of the Lua layer found (issue 9):
-- a raising callback that left its transfer running, keys that leaked in
-- escaped form, lists with holes, ignored or unchecked options, and errors
-- that named neither the option nor the field.
local fish = require("fish")
local loop = require("fish.loop")
local voices = require("fish.voices")
local server = require("support.server")
local files = require("support.files")

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"

-- pcall, expecting a raised string that contains every one of `needles`.
local function raises(fn, ...)
  local needles = { ... }
  return function(...)
    local ok, why = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    assert.is_string(why)
    for _, needle in ipairs(needles) do assert.matches(needle, why, 1, true) end
    return why
  end
end

describe("hardening", function()
  local srv, client, dir

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = files.tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    files.remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  describe("a raising callback", function()
    it("cancels and releases its transfer at once when on_chunk raises", function()
      local before = loop.engine():count()
      -- A long answer that trickles: the transfer would run for seconds.
      srv:config({ tts_delay = 0 })
      srv:fault("/v1/tts", { status = 200, big_body = 50 * 1024 * 1024, content_type = "audio/wav" })
      local chunks = 0
      local ok, why = pcall(client.convert, {
        text = "raise", format = "wav",
        on_chunk = function()
          chunks = chunks + 1
          error("listener failed", 0)
        end,
      })
      assert.is_false(ok)
      assert.equal("listener failed", why)
      assert.equal(1, chunks)
      -- Nothing of it still runs, nothing buffers in C.
      assert.equal(before, loop.engine():count())
    end)

    it("releases the transfer when the host's pause function raises", function()
      local before = loop.engine():count()
      srv:config({ tts_delay = 2 })
      local paused = fish.new({
        api_key = srv.api_key, base_url = srv.url, retries = 0,
        pause = function() error("host stopped", 0) end,
      })
      local target = dir .. "/paused.wav"
      local ok, why = pcall(paused.convert, { text = "pause", format = "wav", out = target })
      assert.is_false(ok)
      assert.equal("host stopped", why)
      assert.equal(before, loop.engine():count())
      assert.same({}, files.entries(dir, "paused.wav"))
      paused.close()
    end)

    it("raises inside a task too, and the task's other calls still work", function()
      srv:config({ tts_delay = 0 })
      local task = fish.spawn(function()
        local ok = fish.pcall(client.convert, {
          text = "raise in task", format = "pcm",
          on_chunk = function() fish.sleep(0.01) error("stop", 0) end,
        })
        return ok, assert(client.convert({ text = "after", format = "pcm" }))
      end)
      fish.run()
      local ok, audio = task:wait()
      assert.is_false(ok)
      assert.is_true(#audio > 0)
    end)
  end)

  describe("the API key in errors", function()
    it("is redacted from err.json and err.message when the server JSON-escapes it", function()
      local key = "abc/def-0123456789"
      local c = fish.new({ api_key = key, base_url = srv.url, retries = 0 })
      local escaped = key:gsub("/", "\\/"):gsub("d", "\\u0064")
      srv:fault("/v1/tts", { status = 401, body = '{"message":"bad key ' .. escaped .. '","echo":{"' .. escaped .. '":1}}' })
      local _, message, err = c.convert({ text = "Hi", format = "pcm" })
      assert.equal("auth", err.kind)
      for _, text in ipairs({ message, err.message, err.body, require("fish.json").encode(err.json) }) do
        assert.is_nil(text:find(key, 1, true), text)
        assert.is_nil(text:find("abc\\/", 1, true), text)
        assert.is_nil(text:find("0123456789", 1, true), text)
      end
      assert.equal(1, err.json.echo["<redacted>"])
      c.close()
    end)

    it("is redacted from the body of an invalid_response", function()
      srv:fault("/model/seed-voice-1", { status = 200, body = "not json, key=" .. srv.api_key })
      local _, message, err = client.voices.get("seed-voice-1")
      assert.equal("invalid_response", err.kind)
      assert.is_nil(err.body:find(srv.api_key, 1, true), err.body)
      assert.matches("key=<redacted>", err.body, 1, true)
      assert.is_nil(message:find(srv.api_key, 1, true))
    end)
  end)

  describe("lists", function()
    local ref = { audio = "\1\2\3\4", text = "a transcript" }

    it("refuse holes in references, before any request", function()
      raises(client.convert, "field 'references'", "hole at [1]")({ text = "x", references = { [2] = ref } })
      raises(client.convert, "field 'references'", "hole at [2]")({ text = "x", references = { ref, nil, ref } })
      raises(client.convert, "field 'references'", "keys 1..n")({ text = "x", references = { ref, extra = ref } })
      raises(client.convert, "field 'references[1]'", "hole at [2]")({ text = "x", references = { { ref, nil, ref } } })
      raises(client.convert, "field 'reference_id'", "hole")({ text = "x", reference_id = { "a", nil, "b" } })
      raises(client.convert, "field 'features'", "hole")({ text = "x", features = { nil, "x" } })
      assert.equal(0, #srv:requests())
    end)

    it("refuse holes in voices, texts and tags of voices.create", function()
      local a, b = fish.file(REFERENCE_WAV), fish.file(REFERENCE_WAV)
      raises(client.voices.create, "field 'voices'", "hole at [2]")({ title = "t", voices = { a, nil, b } })
      raises(client.voices.create, "field 'texts'", "hole")({ title = "t", voices = { a }, texts = { nil, "x" } })
      raises(client.voices.create, "field 'tags'", "hole")({ title = "t", voices = { a }, tags = { "x", nil, "y" } })
      raises(client.voices.list, "field 'tags'", "hole")({ tags = { "x", nil, "y" } })
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("options", function()
    it("honours fish.new{ timeout = N }", function()
      srv:config({ tts_delay = 2 })
      local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0, timeout = 0.3 })
      local _, _, err = c.convert({ text = "slow", format = "pcm" })
      assert.equal("timeout", err.kind)
      assert.equal("total", err.timeout)
      c.close()
    end)

    it("treats 0 as 'no limit' for every time limit", function()
      srv:config({ tts_delay = 0.3 })
      local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0,
        connect_timeout = 0, first_byte_timeout = 0, idle_timeout = 0, timeout = 0 })
      assert(c.convert({ text = "no limits", format = "pcm" }))
      assert(client.convert({ text = "no limits", format = "pcm", first_byte_timeout = 0, timeout = 0 }))
      c.close()
    end)

    it("refuses NaN and negative limits, and clamps huge ones", function()
      local nan = 0 / 0
      for _, name in ipairs({ "timeout", "connect_timeout", "first_byte_timeout", "idle_timeout" }) do
        raises(fish.new, "option '" .. name .. "'", "non-negative number")({ api_key = "k", base_url = srv.url, [name] = nan })
        raises(fish.new, "option '" .. name .. "'")({ api_key = "k", base_url = srv.url, [name] = -1 })
        raises(client.convert, "option '" .. name .. "'")({ text = "x", [name] = nan })
      end
      raises(client.voices.wait_trained, "field 'interval'")("id", { interval = nan })
      raises(client.voices.wait_trained, "field 'timeout'")("id", { timeout = nan })
      raises(fish.new, "option 'retries'")({ api_key = "k", base_url = srv.url, retries = nan })
      raises(fish.new, "option 'retries'")({ api_key = "k", base_url = srv.url, retries = math.huge })
      raises(fish.new, "option 'retries'", "from 0 to 100")({ api_key = "k", base_url = srv.url, retries = 2 ^ 53 })
      raises(client.convert, "option 'retries'")({ text = "x", retries = 101 })
      local c = fish.new({ api_key = srv.api_key, base_url = srv.url, connect_timeout = math.huge, timeout = math.huge })
      assert(c.convert({ text = "huge limits", format = "pcm" }))
      c.close()
    end)

    it("accepts only booleans for insecure", function()
      for _, v in ipairs({ "false", 0, "true", 1 }) do
        raises(fish.new, "option 'insecure' must be true or false")({ api_key = "k", base_url = "https://example.com", insecure = v })
      end
      raises(fish.new, "plain http")({ api_key = "k", base_url = "http://example.com", insecure = false })
      assert(fish.new({ api_key = "k", base_url = "http://example.com", insecure = true }))
    end)

    it("checks the types of ca_file, user_agent and api_key", function()
      raises(fish.new, "option 'ca_file'")({ api_key = "k", base_url = srv.url, ca_file = 5 })
      raises(fish.new, "option 'user_agent' must be a string")({ api_key = "k", base_url = srv.url, user_agent = {} })
      raises(fish.new, "option 'api_key' must be a string, got number")({ api_key = 123, base_url = srv.url })
      raises(fish.new, "option 'max_json_bytes'")({ api_key = "k", base_url = srv.url, max_json_bytes = 0 })
    end)

    it("refuses a base_url with a space, a query or a fragment, and accepts an upper-case scheme", function()
      for _, url in ipairs({ "http://127.0.0.1:1/a b", "http://127.0.0.1:1/?x=1", "http://127.0.0.1:1/#top",
        "http://127.0.0.1:1\n", "ftp://127.0.0.1" }) do
        raises(fish.new, "option 'base_url'")({ api_key = "k", base_url = url })
      end
      local upper = srv.url:gsub("^http", "HTTP")
      local c = fish.new({ api_key = srv.api_key, base_url = upper, retries = 0 })
      assert.equal(srv.url, c.base_url)
      assert(c.convert({ text = "upper", format = "pcm" }))
      c.close()
      c = fish.new({ api_key = "k", base_url = "HTTPS://API.Example.com/v2/" })
      assert.equal("https://api.example.com/v2", c.base_url)
    end)

    it("keeps its client alive while a namespace or a call uses it", function()
      local v = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 }).voices
      collectgarbage()
      collectgarbage()
      local page = assert(v.list())
      assert.is_true(#page.items >= 1)
      srv:config({ tts_delay = 0.3 })
      local task = fish.spawn(function()
        return fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 }).convert({ text = "x", format = "pcm" })
      end)
      fish.step(0)
      collectgarbage()
      collectgarbage()
      fish.run()
      local audio, message = task:wait()
      assert.is_string(audio, message)
    end)
  end)

  describe("unclear errors", function()
    it("name the field for integers no integer type holds", function()
      raises(client.convert, "field 'sample_rate'", "64 bits")({ text = "x", sample_rate = 2 ^ 63 })
      raises(client.convert, "field 'sample_rate'")({ text = "x", sample_rate = math.huge })
      raises(client.convert, "field 'sample_rate'")({ text = "x", sample_rate = 0 / 0 })
      raises(client.convert, "field 'temperature'", "finite")({ text = "x", temperature = 0 / 0 })
      raises(client.convert, "field 'prosody.volume'", "finite")({ text = "x", prosody = { volume = math.huge } })
    end)

    it("name extra and the key for bad values inside extra", function()
      raises(client.convert, "field 'extra.hook'", "got function")({ text = "x", extra = { hook = print } })
      raises(client.convert, "field 'extra.deep.list[2]'")({ text = "x", extra = { deep = { list = { 1, print } } } })
      raises(client.convert, "field 'extra.n'", "finite")({ text = "x", extra = { n = 0 / 0 } })
      raises(client.convert, "field 'extra'", "keys must be strings")({ text = "x", extra = { [1] = "x" } })
      assert(client.convert({ text = "x", format = "pcm", extra = { future = { on = true, level = 2, tags = { "a" } } } }))
      assert.equal(0, #srv:requests_for("POST", "/v1/tts") - 1)
    end)

    it("refuse invalid UTF-8 in text before sending", function()
      raises(client.convert, "field 'text'", "not valid UTF-8", "position 3")({ text = "ab\255cd" })
      raises(client.convert, "field 'text'", "UTF-8")({ text = "\237\160\128" }) -- a surrogate
      raises(client.convert, "field 'text'", "UTF-8")({ text = "\192\175" }) -- overlong "/"
      raises(client.convert, "field 'references[1].text'", "UTF-8")({
        text = "x", references = { { audio = "\1\2", text = "bad \200" } } })
      raises(client.voices.create, "field 'title'", "UTF-8")({ title = "\255", voices = { fish.file(REFERENCE_WAV) } })
      assert(client.convert({ text = "héllo wörld ✓ 🐟", format = "pcm" }))
      assert.equal(1, #srv:requests())
    end)

    it("say how long a URL is when libcurl would refuse it", function()
      raises(client.voices.list, "fish.voices.list", "request URL would be", "8,000,000")({ title = string.rep("t", 9 * 1024 * 1024) })
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("files", function()
    it("accepts only regular, non-empty files, checked by stat (a FIFO never blocks)", function()
      local fifo = dir .. "/pipe"
      assert(os.execute("mkfifo " .. files.quote(fifo)))
      raises(fish.file, "is a fifo, not a regular file")(fifo)
      raises(fish.file, "is a char, not a regular file")("/dev/zero")
      raises(fish.file, "is a directory, not a regular file")(dir)
      local empty = dir .. "/empty.wav"
      files.write(empty, "")
      raises(fish.file, "is empty")(empty)
      raises(fish.file, "No such file")(dir .. "/missing.wav")
      raises(fish.file, "NUL")(REFERENCE_WAV .. "\0.txt")
    end)

    it("refuse a sample deleted or changed after fish.file, naming the field, before any request", function()
      local path = dir .. "/sample.wav"
      files.write(path, files.read(REFERENCE_WAV))
      local sample = fish.file(path)
      os.remove(path)
      raises(client.voices.create, "field 'voices[1]'", path, "No such file")({ title = "t", voices = { sample } })
      raises(client.convert, "field 'references[1].audio'", "No such file")({
        text = "x", references = { { audio = sample, text = "t" } } })
      files.write(path, files.read(REFERENCE_WAV) .. "more")
      raises(client.asr.transcribe, "field 'audio'", "changed size since fish.file")({ audio = sample })
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("out", function()
    it("is checked before anything is sent and billed", function()
      local fifo = dir .. "/target.fifo"
      os.execute("mkfifo " .. files.quote(fifo))
      raises(client.convert, "field 'out'", "must be a file path")({ text = "x", out = "" })
      raises(client.convert, "field 'out'", "No such file")({ text = "x", out = dir .. "/missing/x.wav" })
      raises(client.convert, "field 'out'", "is a directory")({ text = "x", out = dir })
      raises(client.convert, "field 'out'", "names a directory")({ text = "x", out = dir .. "/" })
      raises(client.convert, "field 'out'", "is a fifo, not a regular file")({ text = "x", out = fifo })
      raises(client.convert, "field 'out'", "/dev/null exists and is a char")({ text = "x", out = "/dev/null" })
      raises(client.convert, "field 'out'", "NUL")({ text = "x", out = dir .. "/a\0b.wav" })
      if files.capture("id -u"):match("^0") == nil then
        local locked = dir .. "/locked"
        os.execute("mkdir " .. files.quote(locked) .. " && chmod 500 " .. files.quote(locked))
        raises(client.convert, "field 'out'", "not writable")({ text = "x", out = locked .. "/x.wav" })
      end
      assert.equal(0, #srv:requests())
    end)

    it("keeps the mode of the file it replaces, and leaves a new file to the umask", function()
      local target = dir .. "/private.wav"
      files.write(target, "old")
      os.execute("chmod 600 " .. files.quote(target))
      assert(client.convert({ text = "mode", format = "wav", out = target }))
      assert.equal("600", files.capture("stat -c %a " .. files.quote(target)):match("%d+"))
      local fresh = dir .. "/fresh.wav"
      assert(client.convert({ text = "mode", format = "wav", out = fresh }))
      -- touch creates files as open(2) does: 0666 less the umask.
      local probe = dir .. "/probe"
      os.execute("touch " .. files.quote(probe))
      local expected = files.capture("stat -c %a " .. files.quote(probe)):match("%d+")
      assert.equal(expected, files.capture("stat -c %a " .. files.quote(fresh)):match("%d+"))
    end)
  end)

  describe("size caps", function()
    it("fail an audio answer past max_bytes with kind too_large", function()
      local audio, message, err = client.convert({ text = string.rep("long ", 50), format = "wav", max_bytes = 1000 })
      assert.is_nil(audio)
      assert.equal("too_large", err.kind, message)
      assert.matches("1000 bytes", message)
      assert.is_nil(message:find("Failure writing output", 1, true))
    end)

    it("fail an endless JSON answer with kind too_large, without reading it all", function()
      local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0, max_json_bytes = 1024 * 1024 })
      srv:fault("/model/seed-voice-1", { status = 200, big_body = 4 * 1024 * 1024 * 1024, content_type = "application/json" })
      local voice, message, err = c.voices.get("seed-voice-1")
      assert.is_nil(voice)
      assert.equal("too_large", err.kind, message)
      c.close()
    end)
  end)

  describe("proxies", function()
    local proxy, proxy_pid, proxy_log, proxy_url

    setup(function()
      proxy_log = dir .. "/proxy.log"
      files.write(proxy_log, "")
      -- env -u LD_PRELOAD: under make test-asan, only Lua gets the sanitizer.
      proxy = io.popen(("env -u LD_PRELOAD %s %s %s"):format(server.PYTHON,
        files.quote(server.ROOT .. "/spec/support/fake_proxy.py"), files.quote(proxy_log)))
      local port
      port, proxy_pid = proxy:read("*l"):match("LISTENING (%d+) (%d+)")
      proxy_url = "http://127.0.0.1:" .. port
    end)

    teardown(function()
      -- By pid: closing the pipe waits for the proxy to exit.
      os.execute("env -u LD_PRELOAD kill " .. proxy_pid)
      proxy:close()
    end)

    -- A child process with proxy variables set: returns what it printed.
    local function child(env, lua)
      local script = os.tmpname()
      files.write(script, ("package.path = %q; package.cpath = %q\n"):format(package.path, package.cpath) .. lua)
      local out = files.capture(("%s %s %s 2>&1"):format(env, require("support.abi").interpreter, files.quote(script)))
      os.remove(script)
      return out
    end

    it("never proxies loopback or plain http, whatever the environment says", function()
      local env = ("http_proxy=%s HTTP_PROXY=%s https_proxy=%s ALL_PROXY=%s all_proxy=%s"):format(
        proxy_url, proxy_url, proxy_url, proxy_url, proxy_url)
      local out = child(env, ([[
        local fish = require("fish")
        local c = fish.new({ api_key = %q, base_url = %q, retries = 0 })
        local audio, message = c.convert({ text = "direct", format = "pcm" })
        print(audio and "ok" or message)
      ]]):format(srv.api_key, srv.url))
      assert.matches("^ok", out)
      assert.equal("", files.read(proxy_log))
      assert.equal(1, #srv:requests())
    end)

    it("refuses an explicit proxy for a plain-http base URL", function()
      raises(fish.new, "option 'proxy'", "https")({ api_key = "k", base_url = "http://example.com", insecure = true,
        proxy = proxy_url })
      raises(fish.new, "option 'proxy'")({ api_key = "k", base_url = "https://example.com", proxy = 5 })
    end)

    it("tunnels https through CONNECT, so the proxy never sees the key", function()
      files.write(proxy_log, "")
      local c = fish.new({ api_key = "secret-key-0123456789", base_url = "https://api.example.invalid",
        retries = 0, proxy = proxy_url })
      local audio, message = c.convert({ text = "tunnel", format = "pcm" })
      assert.is_nil(audio, message)
      local seen = files.read(proxy_log)
      assert.matches("^CONNECT api%.example%.invalid:443 HTTP/1%.1", seen)
      assert.is_nil(seen:find("secret-key", 1, true), seen)
      assert.is_nil(seen:lower():find("authorization", 1, true), seen)
      c.close()
    end)

    it("takes https_proxy from the environment unless no_proxy names the host", function()
      local script = [[
        local fish = require("fish")
        local c = fish.new({ api_key = "k", base_url = "https://api.example.invalid", retries = 0 })
        print(select(2, c.convert({ text = "env", format = "pcm" })))
      ]]
      files.write(proxy_log, "")
      child("https_proxy=" .. proxy_url, script)
      assert.matches("^CONNECT api%.example%.invalid:443", files.read(proxy_log))
      files.write(proxy_log, "")
      child(("https_proxy=%s no_proxy=localhost,.example.invalid"):format(proxy_url), script)
      assert.equal("", files.read(proxy_log))
      files.write(proxy_log, "")
      child(("https_proxy=%s"):format(proxy_url), script:gsub("retries = 0", "retries = 0, proxy = false"))
      assert.equal("", files.read(proxy_log))
    end)
  end)

  describe("voice lists from a hostile server", function()
    it("refuse null and non-table items", function()
      for _, body in ipairs({ '{"total":2,"items":[null,{"_id":"a"}]}', '{"total":1,"items":[5]}',
        '{"total":1,"items":[{"title":"no id"}]}', '{"total":1,"items":{"x":{"_id":"a"}}}' }) do
        srv:fault("/model", { status = 200, body = body }, { method = "GET" })
        local page, message, err = client.voices.list()
        assert.is_nil(page, body)
        assert.equal("invalid_response", err.kind, message)
      end
    end)

    it("stop each when the server repeats a full page", function()
      local page = '{"total":1000000,"items":[{"_id":"a"},{"_id":"b"}]}'
      srv:fault("/model", { status = 200, body = page }, { method = "GET", times = 5 })
      local seen = 0
      local ok, err = pcall(function()
        for _ in client.voices.each({ page_size = 2 }) do seen = seen + 1 end
      end)
      assert.is_false(ok)
      assert.equal("invalid_response", err.kind)
      assert.matches("repeats", err.message)
      assert.equal(2, seen)
      assert.equal(2, #srv:requests_for("GET", "/model"))
    end)

    it("stop each after MAX_PAGES pages", function()
      local saved = voices.MAX_PAGES
      voices.MAX_PAGES = 3
      for i = 1, 5 do
        srv:fault("/model", { status = 200, body = ('{"items":[{"_id":"a%d"},{"_id":"b%d"}]}'):format(i, i) },
          { method = "GET" })
      end
      local ok, err = pcall(function()
        for _ in client.voices.each({ page_size = 2 }) do end
      end)
      voices.MAX_PAGES = saved
      assert.is_false(ok)
      assert.equal("invalid_response", err.kind)
      assert.matches("more than 3 pages", err.message)
      assert.equal(4, #srv:requests_for("GET", "/model"))
    end)
  end)
end)
