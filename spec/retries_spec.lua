-- When fish tries again (protocol-decisions.md, "Retries"), counted by the
-- requests the local server saw: 408, 429, 5xx and connection failures before
-- any response byte are retried, at most `retries` times (2 by default);
-- nothing is retried once a byte reached the caller; Retry-After is honoured
-- and capped; the wait suspends only the calling fish task.
local fish = require("fish")
local core = require("fish.core")
local http = require("fish.http")
local server = require("support.server")
local run = require("support.files").capture

local TEXT = "A retried sentence."

-- Lua source that finds this checkout's fish from any directory, for scripts
-- run in a child interpreter.
local function child_prelude()
  local root = server.ROOT
  return ("package.path = %q .. package.path; package.cpath = %q .. package.cpath\n"):format(
    root .. "/src/?.lua;" .. root .. "/src/?/init.lua;", require("support.abi").cpath .. ";")
end

-- fish.sleep inside a task, repeated until the time has really passed:
-- while loop.lua's task_ready wakes a task that sleeps with no condition at
-- once (see the report), a single fish.sleep would not wait at all.
local function nap(seconds)
  local wake = core.now() + seconds
  repeat fish.sleep(math.max(0, wake - core.now())) until core.now() >= wake
end

local function http_date(epoch)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", epoch)
end

describe("retries", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url }) -- default retries
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  local function tts_requests()
    return srv:control("GET", "/_test/requests?path=/v1/tts")
  end

  -- Replace the back-off for one test (it is 1 s, then 2 s), recording the
  -- attempt numbers it was asked for.
  local real_backoff = http._backoff
  local asked
  local function fast_backoff()
    asked = {}
    http._backoff = function(attempt)
      asked[#asked + 1] = attempt
      return 0.01
    end
  end
  after_each(function() http._backoff = real_backoff end)

  -- The next request goes out on a new connection: libcurl retries a reused
  -- keep-alive connection that dies before answering on its own, which
  -- would add a request the server counts.
  local function fresh_connection()
    srv:fault("/v1/tts", { headers = { Connection = "close" } })
    assert(client.convert({ text = "closing the connection", format = "pcm" }))
    srv:reset()
  end

  describe("how many times", function()
    it("tries 3 times by default, and err.attempts says so", function()
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = "0" } }, { times = 3 })
      local audio, _, err = client.convert({ text = TEXT, format = "pcm" })
      assert.is_nil(audio)
      assert.equal("server", err.kind)
      assert.equal(503, err.status)
      assert.equal(3, err.attempts)
      assert.equal(3, #tts_requests())
    end)

    it("succeeds when a retry does", function()
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = "0" } }, { times = 2 })
      local audio = assert(client.convert({ text = TEXT, format = "pcm" }))
      assert.is_true(#audio > 0)
      assert.equal(3, #tts_requests())
    end)

    it("takes `retries` from the client and from the call, 0 included", function()
      local one = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 1 })
      srv:fault("/v1/tts", { status = 500, headers = { ["Retry-After"] = "0" } }, { times = 10 })
      local _, _, err = one.convert({ text = TEXT, format = "pcm" })
      assert.equal(2, err.attempts)
      assert.equal(2, #tts_requests())

      _, _, err = one.convert({ text = TEXT, format = "pcm", retries = 0 })
      assert.equal(1, err.attempts)
      assert.equal(3, #tts_requests())

      _, _, err = one.convert({ text = TEXT, format = "pcm", retries = 4 })
      assert.equal(5, err.attempts)
      assert.equal(8, #tts_requests())
      one.close()

      local none = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
      srv:reset()
      srv:fault("/v1/tts", { status = 500, headers = { ["Retry-After"] = "0" } }, { times = 2 })
      _, _, err = none.convert({ text = TEXT, format = "pcm" })
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
      assert(none.convert({ text = TEXT, format = "pcm", retries = 1 }))
      none.close()
    end)

    it("applies to the JSON calls too", function()
      srv:fault("/model/seed-voice-1", { status = 502, headers = { ["Retry-After"] = "0" } }, { times = 2 })
      local voice = assert(client.voices.get("seed-voice-1"))
      assert.equal("seed-voice-1", voice.id)
      assert.equal(3, #srv:control("GET", "/_test/requests?path=/model/seed-voice-1"))
    end)

    it("rejects a bad `retries` at once", function()
      for _, bad in ipairs({ -1, 1.5, "2", true }) do
        local ok, msg = pcall(client.convert, { text = TEXT, retries = bad })
        assert.is_false(ok)
        assert.matches("retries", msg)
      end
      -- (fish.new still takes 1.5 and fails on each call instead; see the report.)
      for _, bad in ipairs({ -1, "2", true }) do
        local ok, msg = pcall(fish.new, { api_key = "k", base_url = srv.url, retries = bad })
        assert.is_false(ok)
        assert.matches("retries", msg)
      end
      assert.equal(0, #tts_requests())
    end)
  end)

  describe("what is retried", function()
    for _, status in ipairs({ 408, 429, 500, 502, 503, 504 }) do
      it("retries HTTP " .. status, function()
        srv:fault("/v1/tts", { status = status, headers = { ["Retry-After"] = "0" } })
        assert(client.convert({ text = TEXT, format = "pcm" }))
        assert.equal(2, #tts_requests())
      end)
    end

    it("does not retry other statuses", function()
      for _, status in ipairs({ 400, 401, 402, 403, 404, 409, 413, 422 }) do
        srv:reset()
        srv:fault("/v1/tts", { status = status, headers = { ["Retry-After"] = "0" } })
        local audio, _, err = client.convert({ text = TEXT, format = "pcm" })
        assert.is_nil(audio)
        assert.equal(status, err.status)
        assert.equal(1, err.attempts)
        assert.equal(1, #tts_requests(), "HTTP " .. status .. " was retried")
      end
    end)

    it("does not follow or retry a redirect", function()
      srv:fault("/v1/tts", { redirect = srv.url .. "/v1/tts", headers = { ["Retry-After"] = "0" } })
      local _, _, err = client.convert({ text = TEXT, format = "pcm" })
      assert.equal(302, err.status)
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
    end)

    it("retries a reset before the headers after the real back-off of about 1 s", function()
      fresh_connection()
      srv:fault("/v1/tts", { reset = "before_headers" })
      local started = core.now()
      local audio = assert(client.convert({ text = TEXT, format = "pcm", retries = 1 }))
      local took = core.now() - started
      assert.is_true(#audio > 0)
      assert.equal(2, #tts_requests())
      assert.is_true(took >= 0.9 and took < 2, ("took %.2fs"):format(took))
    end)

    it("retries a connection closed without an answer", function()
      fast_backoff()
      fresh_connection()
      srv:fault("/v1/tts", { close = true }, { times = 2 })
      assert(client.convert({ text = TEXT, format = "pcm" }))
      local seen = tts_requests()
      assert.equal(3, #seen)
      assert.is_false(seen[1].body_read)
      assert.is_false(seen[2].body_read)
      assert.same({ 1, 2 }, asked)
    end)

    it("retries a refused connection, backing off 1 s then 2 s", function()
      fast_backoff()
      local probe = server.start()
      local url = probe.url
      probe:stop()
      -- Wait until nothing listens there any more.
      local deadline = core.now() + 5
      repeat
        local c = fish.new({ api_key = "k", base_url = url, retries = 0 })
        local _, _, err = c.convert({ text = TEXT })
        c.close()
      until (err and err.cause == "connect") or core.now() > deadline
      asked = {}
      local dead = fish.new({ api_key = "k", base_url = url })
      local audio, _, err = dead.convert({ text = TEXT })
      dead.close()
      assert.is_nil(audio)
      assert.equal("network", err.kind)
      assert.equal("connect", err.cause)
      assert.equal(3, err.attempts)
      assert.same({ 1, 2 }, asked)
    end)

    it("retries a 5xx whose body breaks off (no byte reached the caller)", function()
      srv:fault("/v1/tts", { status = 503, body = string.rep("busy ", 2000), reset = "mid_body",
        after_bytes = 100, headers = { ["Retry-After"] = "0" } })
      assert(client.convert({ text = TEXT, format = "pcm" }))
      assert.equal(2, #tts_requests())
    end)

    it("never retries once audio reached on_chunk (reset mid-body)", function()
      srv:fault("/v1/tts", { reset = "mid_body", after_bytes = 20000 }, { times = 3 })
      local got = 0
      local bytes, _, err = client.convert({
        text = string.rep(TEXT, 4), format = "wav",
        on_chunk = function(chunk) got = got + #chunk end,
      })
      assert.is_nil(bytes)
      assert.equal("network", err.kind)
      assert.equal(1, err.attempts)
      assert.is_true(got > 0)
      assert.equal(1, #tts_requests())
    end)

    it("never retries once audio reached `out` (truncated body)", function()
      local target = os.tmpname()
      os.remove(target)
      srv:fault("/v1/tts", { truncate = true, after_bytes = 20000 }, { times = 3 })
      local path, _, err = client.convert({ text = string.rep(TEXT, 4), format = "wav", out = target })
      assert.is_nil(path)
      assert.equal("network", err.kind)
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
      assert.is_nil(io.open(target))
    end)

    it("never retries once audio was buffered (stall past the idle limit)", function()
      srv:fault("/v1/tts", { stall_body = 1, after_bytes = 20000 }, { times = 3 })
      local audio, _, err = client.convert({ text = string.rep(TEXT, 4), format = "wav", idle_timeout = 0.2 })
      assert.is_nil(audio)
      assert.equal("timeout", err.kind)
      assert.equal("idle", err.timeout)
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
    end)

    it("does not retry a first-byte timeout: the server may still be generating (and billing)", function()
      srv:fault("/v1/tts", { slow_headers = 1 }, { times = 3 })
      local _, _, err = client.convert({ text = TEXT, format = "pcm", first_byte_timeout = 0.2 })
      assert.equal("timeout", err.kind)
      assert.equal("first_byte", err.timeout)
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
    end)

    it("does not retry a 200 with an empty body", function()
      srv:fault("/v1/tts", { empty_body = true }, { times = 3 })
      local _, _, err = client.convert({ text = TEXT, format = "pcm" })
      assert.equal("invalid_response", err.kind)
      assert.equal(1, err.attempts)
      assert.equal(1, #tts_requests())
    end)
  end)

  describe("what a retry sends", function()
    it("sends the same bytes and headers each time", function()
      srv:fault("/v1/tts", { status = 500, headers = { ["Retry-After"] = "0" } }, { times = 2 })
      assert(client.convert({
        text = TEXT, format = "wav", temperature = 0.5,
        references = { { audio = "\0\1\2\255binary", text = "a reference" } },
      }))
      local seen = tts_requests()
      assert.equal(3, #seen)
      assert.is_true(#seen[1].body_b64 > 0)
      for i = 2, 3 do
        assert.equal(seen[1].body_b64, seen[i].body_b64)
        for _, name in ipairs({ "authorization", "content-type", "model", "user-agent", "content-length" }) do
          assert.equal(seen[1].headers[name], seen[i].headers[name], name)
        end
      end
    end)

    it("sends the same parts again for a multipart upload streamed from disk", function()
      local path = os.tmpname()
      local f = assert(io.open(path .. ".wav", "wb"))
      f:write("RIFF" .. string.rep("\0\1\2\3", 5000))
      f:close()
      srv:fault("/model", { status = 503, headers = { ["Retry-After"] = "0" } }, { times = 1, method = "POST" })
      local voice, _, err = client.voices.create({
        title = "retried upload", voices = { fish.file(path .. ".wav") }, texts = { "hello" },
      })
      os.remove(path .. ".wav")
      os.remove(path)
      assert.is_nil(err, err and tostring(err))
      assert.is_string(voice.id)
      local seen = srv:control("GET", "/_test/requests?path=/model&method=POST")
      assert.equal(2, #seen)
      assert.is_table(seen[1].parts)
      assert.same(seen[1].parts, seen[2].parts)
    end)
  end)

  describe("how long it waits", function()
    it("honours Retry-After in seconds", function()
      fast_backoff()
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "1" } })
      local started = core.now()
      assert(client.convert({ text = TEXT, format = "pcm" }))
      local took = core.now() - started
      assert.is_true(took >= 0.95 and took < 2, ("took %.2fs"):format(took))
      assert.same({}, asked) -- the header, not the back-off, set the wait
    end)

    it("honours Retry-After: 0 (no back-off at all)", function()
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = "0" } }, { times = 2 })
      local started = core.now()
      assert(client.convert({ text = TEXT, format = "pcm" }))
      local took = core.now() - started
      assert.is_true(took < 0.8, ("took %.2fs"):format(took))
    end)

    it("honours Retry-After as an HTTP date", function()
      fast_backoff()
      local at = os.time() + 2
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = http_date(at) } })
      local started = core.now()
      assert(client.convert({ text = TEXT, format = "pcm" }))
      local took = core.now() - started
      -- Dates have whole seconds: the wait is between 1 and 2 s.
      assert.is_true(took >= 0.9 and took < 3, ("took %.2fs"):format(took))
      assert.same({}, asked)
    end)

    it("caps Retry-After at 60 s, and a cancel token ends the wait", function()
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "86400" } }, { times = 2 })
      local _, _, err = client.convert({ text = TEXT, format = "pcm", retries = 0 })
      assert.equal(60, err.retry_after)

      local token = fish.cancel_token()
      local result
      fish.spawn(function()
        result = { client.convert({ text = TEXT, format = "pcm", cancel = token }) }
      end)
      fish.spawn(function()
        nap(0.2)
        token:cancel()
      end)
      local started = core.now()
      fish.run()
      local took = core.now() - started
      assert.is_nil(result[1])
      assert.equal("canceled", result[3].kind)
      assert.equal(1, result[3].attempts)
      assert.is_true(took < 2, ("took %.2fs"):format(took))
      assert.equal(2, #tts_requests())
    end)

    it("stops retrying when the client is closed during the wait", function()
      local c = fish.new({ api_key = srv.api_key, base_url = srv.url })
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = "1" } }, { times = 3 })
      local result
      fish.spawn(function() result = { c.convert({ text = TEXT, format = "pcm" }) } end)
      fish.spawn(function()
        nap(0.2)
        c.close()
      end)
      local started = core.now()
      fish.run()
      assert.is_true(core.now() - started < 0.9)
      assert.is_nil(result[1])
      assert.equal("canceled", result[3].kind)
      assert.equal(1, result[3].attempts)
      assert.equal(1, #tts_requests())
    end)

    it("suspends only the calling task while it waits", function()
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "1" } })
      local ticks, done, audio = 0, false, nil
      fish.spawn(function()
        audio = client.convert({ text = TEXT, format = "pcm" })
        done = true
      end)
      fish.spawn(function()
        while not done do
          ticks = ticks + 1
          nap(0.05)
        end
      end)
      local started = core.now()
      fish.run()
      local took = core.now() - started
      assert.is_string(audio)
      assert.equal(2, #tts_requests())
      assert.is_true(took >= 0.95, ("took %.2fs"):format(took))
      -- The ticker kept running through the whole second of waiting.
      assert.is_true(ticks >= 12 and ticks <= 25, "the ticker ran " .. ticks .. " times")
    end)
  end)

  describe("http._backoff", function()
    local function sample(attempt, n)
      local min, max, sum = math.huge, -math.huge, 0
      for _ = 1, n do
        local v = real_backoff(attempt)
        min, max, sum = math.min(min, v), math.max(max, v), sum + v
      end
      return min, max, sum / n
    end

    it("waits 1 s then 2 s, then doubling, each +-10 %, uniformly spread", function()
      for attempt, base in ipairs({ 1, 2, 4, 8 }) do
        local n = 4000
        local min, max, mean = sample(attempt, n)
        assert.is_true(min >= base * 0.9 and max <= base * 1.1, ("attempt %d: %g..%g"):format(attempt, min, max))
        -- Uniform over +-10 %: the extremes are reached and the mean is central.
        assert.is_true(min < base * 0.91 and max > base * 1.09, ("attempt %d: %g..%g"):format(attempt, min, max))
        assert.is_true(math.abs(mean - base) < base * 0.01, ("attempt %d: mean %g"):format(attempt, mean))
      end
    end)

    it("never waits more than a minute, however many retries", function()
      for attempt = 7, 40 do
        local v = real_backoff(attempt)
        assert.is_true(v >= 54 and v <= 66, ("attempt %d: %g"):format(attempt, v))
      end
    end)

    it("differs between processes (LuaJIT seeds math.random the same every time)", function()
      local lua = require("support.abi").interpreter
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(child_prelude() .. 'io.write(string.format("%.12f", require("fish.http")._backoff(1)))')
      f:close()
      local values = {}
      for i = 1, 3 do values[i] = run(lua .. " " .. script) end
      os.remove(script)
      for i = 1, 3 do assert.matches("^%d%.%d+$", values[i]) end
      assert.is_false(values[1] == values[2] and values[2] == values[3], "always " .. values[1])
    end)
  end)

  describe("http.parse_retry_after", function()
    local parse = http.parse_retry_after
    local now = 1700000000

    it("reads delta-seconds", function()
      assert.equal(0, parse("0", now))
      assert.equal(1, parse("1", now))
      assert.equal(30, parse("30", now))
      assert.equal(7, parse(" 7 ", now))
    end)

    it("reads an HTTP date relative to now", function()
      assert.equal(30, parse(http_date(now + 30), now))
      assert.equal(1, parse(http_date(now + 1), now))
      assert.equal(0, parse(http_date(now), now))
      -- The obsolete forms RFC 9110 still asks recipients to accept.
      assert.equal(45, parse(os.date("!%A, %d-%b-%y %H:%M:%S GMT", now + 45), now))
      assert.equal(45, parse(os.date("!%a %b %e %H:%M:%S %Y", now + 45), now))
    end)

    it("treats a date in the past as 0", function()
      assert.equal(0, parse(http_date(now - 1), now))
      assert.equal(0, parse(http_date(now - 86400 * 365), now))
      assert.equal(0, parse("Wed, 21 Oct 2015 07:28:00 GMT", now))
    end)

    it("caps both forms at 60 s", function()
      assert.equal(60, parse("60", now))
      assert.equal(60, parse("61", now))
      assert.equal(60, parse("86400", now))
      assert.equal(60, parse("99999999999999999999999", now))
      assert.equal(60, parse(http_date(now + 61), now))
      assert.equal(60, parse(http_date(now + 86400 * 30), now))
    end)

    it("returns nil for garbage", function()
      for _, v in ipairs({ "", "  ", "soon", "-5", "1.5", "12abc", "1e3", "+5", "5 5", "now", "GMT", "Mon" }) do
        assert.is_nil(parse(v, now), ("%q"):format(v))
      end
      assert.is_nil(parse(nil, now))
      assert.is_nil(parse(5, now))
    end)

    it("uses the wall clock when no time is given", function()
      local v = parse(http_date(os.time() + 20))
      assert.is_true(v >= 18 and v <= 20, tostring(v))
    end)
  end)
end)
