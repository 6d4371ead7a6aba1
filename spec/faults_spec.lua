-- One spec per way the network or the API can fail. Each checks the error
-- object (kind, status, the fields that go with the kind), that no partial
-- `out` file is left behind (temporary files included), and that the same
-- client then makes a successful call: no failure poisons a client.
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")
local mkdtemp, entries = files.tmpdir, files.entries

local LONG_TEXT = string.rep("A sentence of audio. ", 3) -- about 3 s of audio, 260 KB of WAV

-- Every entry of `dir`, hidden ones included (a temp file is named x.wav.*.part).
local function alive(pid)
  local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
  return r == true or r == 0
end

local function stop_and_wait(srv)
  local pid = srv.pid
  srv:stop()
  local deadline = core.now() + 5
  while alive(pid) and core.now() < deadline do fish.sleep(0.02) end
  assert(not alive(pid), "test server did not stop")
end

-- The bundled server on a chosen port (server.start always picks a free one).
local function start_on(port, key)
  local log = os.tmpname()
  local cmd = ("env -u LD_PRELOAD %s %s --port %d --api-key %s 2>%s & echo PID $!"):format(
    server.PYTHON, server.shell_quote(server.SCRIPT), port, server.shell_quote(key), server.shell_quote(log))
  local pipe = assert(io.popen(cmd, "r"))
  local pid, listening
  for line in pipe:lines() do
    pid = pid or line:match("^PID (%d+)")
    listening = listening or line:match("^LISTENING (%d+)")
    if pid and listening then break end
  end
  assert(listening, "server did not start on port " .. port)
  local self = setmetatable({ pid = pid, port = port, api_key = key, pipe = pipe, log = log }, server)
  self.url = "http://127.0.0.1:" .. port
  return self
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

describe("faults", function()
  local srv, client, root

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    root = mkdtemp()
  end)

  teardown(function()
    client.close()
    srv:stop()
    require("support.files").remove_tree(root)
  end)

  before_each(function() srv:reset() end)

  -- A fresh, empty directory for one call's `out`.
  local dirs = 0
  local function fresh_dir()
    dirs = dirs + 1
    local dir = root .. "/d" .. dirs
    assert(os.execute("mkdir " .. server.shell_quote(dir)))
    return dir
  end

  -- Convert into `out` under a fresh directory; returns result, err, dir.
  local function convert_out(c, extra)
    local dir = fresh_dir()
    local args = { text = LONG_TEXT, format = "wav", out = dir .. "/x.wav" }
    for k, v in pairs(extra or {}) do args[k] = v end
    local path, msg, err = c.convert(args)
    -- A failure is nil, message, err: the message is the error's own line.
    if path == nil then assert.equal(tostring(err), msg) end
    return path, err, dir
  end

  local function assert_error(err, kind, status)
    assert.is_true(fish.is_error(err), "expected an error object, got " .. tostring(err))
    assert.equal(kind, err.kind, tostring(err))
    assert.equal(status, err.status, tostring(err))
    assert.is_string(err.message)
    assert.is_true(#err.message > 0)
    assert.equal(1, err.attempts)
    local line = tostring(err)
    assert.is_nil(line:find("[\r\n]"), "tostring(err) spans lines: " .. line)
    -- The line names the public call, then the status or the kind.
    assert.matches("^fish%.[%w_.]+$", err.call)
    assert.equal(err.call .. ": ", line:sub(1, #err.call + 2))
    if status >= 300 then
      assert.matches("^HTTP " .. status .. "[ :]", line:sub(#err.call + 3))
    else
      assert.matches("^" .. kind, line:sub(#err.call + 3))
    end
  end

  -- A fault that hangs up before answering. libcurl itself retries once,
  -- on a fresh connection, when a reused keep-alive connection dies before
  -- any answer (the server may have closed it while idle), so the fault is
  -- queued twice and the spare one dropped afterwards.
  local function hang_up_fault(fault)
    srv:fault("/v1/tts", fault, { times = 2 })
  end
  local function drop_faults()
    srv:control("DELETE", "/_test/faults")
  end

  local function assert_no_file(dir)
    assert.same({}, entries(dir))
  end

  local function assert_recovers(c)
    local dir = fresh_dir()
    local path, size = c.convert({ text = "back to normal", format = "wav", out = dir .. "/ok.wav" })
    assert(path, "the client did not recover: " .. tostring(size))
    assert.equal(dir .. "/ok.wav", path)
    assert.is_true(size > 44)
    assert.same({ "ok.wav" }, entries(dir))
    local f = assert(io.open(path, "rb"))
    assert.equal("RIFF", f:read(4))
    f:close()
  end

  -- ---- the connection ------------------------------------------------------------

  describe("connection", function()
    it("connection refused (a closed port): network/connect, then the same client recovers", function()
      local probe = server.start()
      local port = probe.port
      stop_and_wait(probe)
      local c = fish.new({ api_key = srv.api_key, base_url = "http://127.0.0.1:" .. port, retries = 0 })
      local path, err, dir = convert_out(c)
      assert.is_nil(path)
      assert_error(err, "network", 0)
      assert.equal("connect", err.cause)
      assert_no_file(dir)
      -- The same client, once something listens on that port again.
      local back = start_on(port, srv.api_key)
      local ok, why = pcall(assert_recovers, c)
      back:stop()
      c.close()
      assert(ok, why)
    end)

    it("reset before the headers: network, nothing written", function()
      hang_up_fault({ reset = "before_headers" })
      local path, err, dir = convert_out(client)
      drop_faults()
      assert.is_nil(path)
      assert_error(err, "network", 0)
      assert.equal("network", err.cause)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("reset mid-body: network, the partial audio is removed", function()
      srv:fault("/v1/tts", { reset = "mid_body", after_bytes = 20000 })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "network", 0)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("a truncated chunked body (FIN without the last chunk): network, no file", function()
      srv:fault("/v1/tts", { truncate = true, after_bytes = 20000 })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "network", 0)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("the server closes at once without answering: network", function()
      hang_up_fault({ close = true })
      local path, err, dir = convert_out(client)
      drop_faults()
      assert.is_nil(path)
      assert_error(err, "network", 0)
      assert_no_file(dir)
      assert_recovers(client)
    end)
  end)

  -- ---- time limits ----------------------------------------------------------------

  describe("time limits", function()
    it("slow headers: timeout/first_byte", function()
      srv:fault("/v1/tts", { slow_headers = 2 })
      local started = core.now()
      local path, err, dir = convert_out(client, { first_byte_timeout = 0.3 })
      local took = core.now() - started
      assert.is_nil(path)
      assert_error(err, "timeout", 0)
      assert.equal("first_byte", err.timeout)
      assert.is_true(took >= 0.25 and took < 1.5, ("took %.2fs"):format(took))
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("a stalled body: timeout/idle, the partial audio is removed", function()
      srv:fault("/v1/tts", { stall_body = 2, after_bytes = 20000 })
      local started = core.now()
      local path, err, dir = convert_out(client, { idle_timeout = 0.3 })
      local took = core.now() - started
      assert.is_nil(path)
      assert_error(err, "timeout", 0)
      assert.equal("idle", err.timeout)
      assert.is_true(took >= 0.25 and took < 1.5, ("took %.2fs"):format(took))
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("a total timeout cuts a stream that never stalls for long", function()
      -- Two pauses of 0.3 s, each under the idle limit, 0.6 s in all.
      srv:fault("/v1/tts", { pause_after_first = 0.3, stall_body = 0.3, after_bytes = 100000 })
      local started = core.now()
      local path, err, dir = convert_out(client, { timeout = 0.45, idle_timeout = 0.4 })
      local took = core.now() - started
      assert.is_nil(path)
      assert_error(err, "timeout", 0)
      assert.equal("total", err.timeout)
      assert.is_true(took >= 0.4 and took < 1.5, ("took %.2fs"):format(took))
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("a long stream with pauses is not cut by the default limits", function()
      local plain = fish.new({ api_key = srv.api_key, base_url = srv.url }) -- every default
      srv:fault("/v1/tts", { pause_after_first = 0.5, stall_body = 0.5, after_bytes = 100000 })
      local started = core.now()
      local dir = fresh_dir()
      local path, size = plain.convert({ text = LONG_TEXT, format = "wav", out = dir .. "/x.wav" })
      local took = core.now() - started
      assert(path, tostring(size))
      assert.equal(dir .. "/x.wav", path)
      assert.is_true(size > 200000)
      assert.is_true(took >= 0.9, ("took %.2fs"):format(took))
      assert.same({ "x.wav" }, entries(dir))
      plain.close()
    end)

    it("idle counts between bytes, not from the start; first_byte ends with the first byte", function()
      -- Gaps of 0.35 s under an idle limit of 0.5 s, 0.7 s in all; and a
      -- first-byte limit of 0.3 s that a later stall must not trigger.
      srv:fault("/v1/tts", { pause_after_first = 0.35, stall_body = 0.35, after_bytes = 100000 })
      local chunks = 0
      local bytes, _, err = client.convert({
        text = LONG_TEXT, format = "wav", idle_timeout = 0.5, first_byte_timeout = 0.3,
        on_chunk = function() chunks = chunks + 1 end,
      })
      assert.is_nil(err, err and tostring(err))
      assert.is_true(bytes > 200000)
      assert.is_true(chunks >= 2)
    end)
  end)

  -- ---- HTTP errors ------------------------------------------------------------------

  describe("HTTP errors", function()
    it("401 in plain text: auth, the body kept", function()
      srv:fault("/v1/tts", { status = 401, body = "No permission -- see authorization schemes" })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "auth", 401)
      assert.equal("No permission -- see authorization schemes", err.body)
      assert.equal("No permission -- see authorization schemes", err.message)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("402 JSON {status, message}: http, the message from the JSON", function()
      srv:fault("/v1/tts", { status = 402, body = { status = 402, message = "Insufficient API credit, please top up" } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "http", 402)
      assert.equal("Insufficient API credit, please top up", err.message)
      assert.equal(402, err.json.status)
      assert.matches('"status"', err.body)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("403: permission", function()
      srv:fault("/v1/tts", { status = 403 })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "permission", 403)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("404: not_found", function()
      srv:fault("/v1/tts", { status = 404, body = { status = 404, message = "Not Found" } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "not_found", 404)
      assert.equal("Not Found", err.message)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("422 as a JSON array: every field in a one-line message", function()
      srv:fault("/v1/tts", { status = 422, body = {
        { loc = { "temperature" }, type = "less_than_equal", msg = "Input should be less than or equal to 1" },
        { loc = { "references", "0", "audio" }, type = "bytes_type", msg = "Input should be a valid bytes" },
      } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "http", 422)
      assert.equal("temperature: Input should be less than or equal to 1; references.0.audio: Input should be a valid bytes",
        err.message)
      assert.equal(2, #err.json)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("422 with odd items (nested loc, table msg, bare values) still gives one line", function()
      srv:fault("/v1/tts", { status = 422, body = {
        { loc = { "body", { nested = true }, 3 }, msg = { why = "odd" } }, "plain", 7,
      } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "http", 422)
      assert.matches('^body%.{"nested":true}%.3: {"why":"odd"}; plain; 7$', err.message)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("422 with integer list indexes in loc, as FastAPI sends them", function()
      srv:fault("/v1/tts", { status = 422, body = '[{"loc": ["body", "references", 0, "audio"], "msg": "bad"}]' })
      local _, _, err = client.convert({ text = "loc", format = "pcm" })
      assert_error(err, "http", 422)
      assert.equal("body.references.0.audio: bad", err.message)
    end)

    it("422 as {detail: [...]}", function()
      srv:fault("/v1/tts", { status = 422, body = { detail = { { loc = { "body", "text" }, msg = "field required" } } } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "http", 422)
      assert.equal("body.text: field required", err.message)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("422 as {detail: \"...\"}", function()
      srv:fault("/v1/tts", { status = 422, body = { detail = "Text too long" } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "http", 422)
      assert.equal("Text too long", err.message)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("429 with Retry-After: rate_limit, retry_after in seconds", function()
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "7" } })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "rate_limit", 429)
      assert.equal(7, err.retry_after)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("429 without Retry-After: rate_limit, no retry_after", function()
      srv:fault("/v1/tts", { status = 429 })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "rate_limit", 429)
      assert.is_nil(err.retry_after)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    for _, status in ipairs({ 500, 502, 503 }) do
      it(status .. ": server", function()
        srv:fault("/v1/tts", { status = status })
        local path, err, dir = convert_out(client)
        assert.is_nil(path)
        assert_error(err, "server", status)
        assert.matches("injected fault", err.message)
        assert_no_file(dir)
        assert_recovers(client)
      end)
    end

    it("invalid JSON in an error body: the text is kept as the message", function()
      srv:fault("/v1/tts", { status = 500, body = '{"message": "half', content_type = "application/json" })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "server", 500)
      assert.equal('{"message": "half', err.message)
      assert.equal('{"message": "half', err.body)
      assert.is_nil(err.json)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("JSON nulls and nested messages in an error body", function()
      srv:fault("/v1/tts", { status = 500, body = '{"message": null, "detail": "Backend busy", "reason": null}' })
      local _, _, err = client.convert({ text = "nulls", format = "pcm" })
      assert_error(err, "server", 500)
      assert.equal("Backend busy", err.message)
      assert.is_nil(err.json.message)
      assert.is_nil(err.json.reason)

      srv:fault("/v1/tts", { status = 400, body = { message = { code = "E42", text = "nested" } } })
      _, _, err = client.convert({ text = "nested", format = "pcm" })
      assert_error(err, "http", 400)
      assert.matches('"code":"E42"', err.message)
      assert.is_nil(err.message:find("table: ", 1, true))
      assert_recovers(client)
    end)

    it("a 500 whose body breaks off is still a server error, with the part that came", function()
      srv:fault("/v1/tts", { status = 500, body = string.rep("overloaded ", 4000), reset = "mid_body", after_bytes = 1000 })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "server", 500)
      assert.is_true(err.body_truncated)
      assert.matches("^overloaded", err.body)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("an error body over 10 MB: 64 KiB kept, body_truncated, memory flat", function()
      -- Warm up first, so that one-time allocations do not count as growth.
      srv:fault("/v1/tts", { big_body = 200000 }, { times = 2 })
      client.convert({ text = "warm up", format = "pcm" })
      client.convert({ text = "warm up", format = "pcm" })
      collectgarbage("collect")
      local before = rss_kb()
      srv:fault("/v1/tts", { big_body = 11000000, status = 500 })
      local started = core.now()
      local path, err, dir = convert_out(client, { retries = 0 })
      local took = core.now() - started
      collectgarbage("collect")
      local after = rss_kb()
      assert.is_nil(path)
      assert_error(err, "server", 500)
      assert.is_true(#err.body <= 64 * 1024, "kept " .. #err.body .. " bytes")
      assert.is_true(#err.body >= 60 * 1024, "kept only " .. #err.body .. " bytes")
      assert.is_true(err.body_truncated)
      assert.is_true(#err.message <= 310, "message of " .. #err.message .. " bytes")
      assert.is_true(after - before < 20 * 1024, ("RSS grew from %d to %d kB"):format(before, after))
      assert.is_true(took < 5, ("took %.2fs: the rest of the body was read"):format(took))
      assert_no_file(dir)
      assert_recovers(client)
    end)
  end)

  -- ---- answers that are not what they claim ----------------------------------------

  describe("invalid responses", function()
    it("200 with an empty body: invalid_response, no file", function()
      srv:fault("/v1/tts", { empty_body = true })
      local path, err, dir = convert_out(client)
      assert.is_nil(path)
      assert_error(err, "invalid_response", 200)
      assert_no_file(dir)
      assert_recovers(client)
    end)

    it("200 with invalid JSON from GET /model/{id}: invalid_response", function()
      srv:fault("/model/seed-voice-1", { bad_json = true })
      local voice, _, err = client.voices.get("seed-voice-1")
      assert.is_nil(voice)
      assert_error(err, "invalid_response", 200)
      assert.equal('{"_id": "x", "state": ', err.body)
      voice = assert(client.voices.get("seed-voice-1"))
      assert.equal("seed-voice-1", voice.id)
      assert_recovers(client)
    end)

    it("200 with invalid JSON from GET /model: invalid_response", function()
      srv:fault("/model", { bad_json = true }, { method = "GET" })
      local page, _, err = client.voices.list({})
      assert.is_nil(page)
      assert_error(err, "invalid_response", 200)
      page = assert(client.voices.list({}))
      assert.is_true(page.total >= 1)
      assert_recovers(client)
    end)
  end)
end)
