-- What a caller can add to any request, as the official SDKs allow: extra
-- headers (per client and per call), extra query parameters, a per-call
-- api_key; and what fish reads back: X-RateLimit-Reset. Also the header
-- checks that keep a value from splitting a request, the multipart file
-- name, and percent-encoding that does not depend on the C locale.
local fish = require("fish")
local util = require("fish.util")
local http = require("fish.http")
local server = require("support.server")
local files = require("support.files")
local abi = require("support.abi")

local TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

describe("request options", function()
  local srv, client, dir

  setup(function()
    srv = server.start()
    client = fish.new({
      api_key = srv.api_key, base_url = srv.url, retries = 0,
      headers = { traceparent = TRACEPARENT, ["X-Team"] = "voices" },
    })
    dir = files.tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    files.remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  describe("headers", function()
    it("sends the client's extra headers with every call", function()
      assert(client.convert({ text = "Hi", format = "pcm" }))
      assert(client.voices.list())
      assert(client.account.credits())
      for _, r in ipairs(srv:requests()) do
        assert.equal(TRACEPARENT, r.headers["traceparent"], r.path)
        assert.equal("voices", r.headers["x-team"], r.path)
        assert.equal("Bearer " .. srv.api_key, r.headers["authorization"], r.path)
      end
      assert.equal(3, #srv:requests())
    end)

    it("adds a call's headers, which replace the client's of the same name", function()
      local mine = "00-11111111111111111111111111111111-2222222222222222-01"
      assert(client.convert({ text = "Hi", format = "pcm", headers = { TraceParent = mine, ["X-Request-Id"] = "r1" } }))
      local sent = srv:last_request("/v1/tts")
      assert.equal(mine, sent.headers["traceparent"])
      assert.equal("r1", sent.headers["x-request-id"])
      assert.equal("voices", sent.headers["x-team"])
      assert.equal("s2-pro", sent.headers["model"])
      assert.equal("application/msgpack", sent.headers["content-type"])
      -- The next call is back to the client's own.
      assert(client.voices.get("seed-voice-1", { headers = { ["X-Request-Id"] = "r2" } }))
      sent = srv:last_request("/model/seed-voice-1")
      assert.equal(TRACEPARENT, sent.headers["traceparent"])
      assert.equal("r2", sent.headers["x-request-id"])
    end)

    it("sends an empty value as an empty header", function()
      assert(client.account.package({ headers = { ["X-Empty"] = "" } }))
      assert.equal("", srv:last_request().headers["x-empty"])
    end)

    it("refuses CR, LF and NUL in every header value, naming the option", function()
      local cases = {
        { function() return fish.new({ api_key = "k\r\nX-Evil: 1", base_url = srv.url }) end, "option 'api_key'" },
        { function() return fish.new({ api_key = "k\0tail", base_url = srv.url }) end, "option 'api_key'" },
        { function() return fish.new({ api_key = "k", base_url = srv.url, model = "s1\nX: y" }) end, "option 'model'" },
        { function() return fish.new({ api_key = "k", base_url = srv.url, user_agent = "ua\r" }) end, "option 'user_agent'" },
        { function() return fish.new({ api_key = "k", base_url = srv.url, headers = { A = "x\ny" } }) end, "header 'A'" },
        { function() return client.convert({ text = "x", model = "s1\r\nGET / HTTP/1.1" }) end, "field 'model'" },
        { function() return client.convert({ text = "x", api_key = "a\nb" }) end, "option 'api_key'" },
        { function() return client.voices.list({ headers = { B = "1\0002" } }) end, "header 'B'" },
      }
      for i, case in ipairs(cases) do
        local ok, why = pcall(case[1])
        assert.is_false(ok, "case " .. i)
        assert.matches(case[2], why, 1, true)
        assert.matches("must not contain CR, LF or NUL", why, 1, true)
      end
      assert.equal(0, #srv:requests())
    end)

    it("refuses bad header names and the headers fish sets itself", function()
      local cases = {
        { { ["Bad Name"] = "x" }, "invalid header name" },
        { { ["X:Y"] = "x" }, "invalid header name" },
        { { [1] = "x" }, "invalid header name" },
        { { Authorization = "Bearer other" }, "use the 'api_key' option" },
        { { ["user-agent"] = "x" }, "use the 'user_agent' option" },
        { { Model = "s1" }, "use the 'model' option" },
        { { ["Content-Length"] = "5" }, "fish sets it" },
        { { Host = "example.com" }, "fish sets it" },
      }
      for _, case in ipairs(cases) do
        local ok, why = pcall(client.convert, { text = "x", headers = case[1] })
        assert.is_false(ok)
        assert.matches(case[2], why, 1, true)
        ok, why = pcall(fish.new, { api_key = "k", base_url = srv.url, headers = case[1] })
        assert.is_false(ok)
        assert.matches(case[2], why, 1, true)
      end
      local ok, why = pcall(client.convert, { text = "x", headers = { A = 5 } })
      assert.is_false(ok)
      assert.matches("header 'A' must be a string", why, 1, true)
      ok, why = pcall(client.convert, { text = "x", headers = "traceparent: x" })
      assert.is_false(ok)
      assert.matches("option 'headers' must be a table", why, 1, true)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("query", function()
    it("appends a call's parameters, a list repeating its key", function()
      assert(client.convert({ text = "Hi", format = "pcm", query = { trace = "on", tag = { "a", "b c" }, n = 3, ok = true } }))
      assert.equal("n=3&ok=true&tag=a&tag=b%20c&trace=on", srv:last_request("/v1/tts").query)
    end)

    it("comes after fish's own parameters", function()
      assert(client.voices.list({ page_size = 5, query = { experiment = "x" } }))
      assert.equal("page_size=5&experiment=x", srv:last_request("/model").query)
    end)

    it("refuses values that have no text form, and lists with holes", function()
      for _, query in ipairs({ { a = {} , b = function() end }, { a = 0 / 0 }, { a = { "x", nil, "z" } }, { [1] = "x" } }) do
        local ok = pcall(client.account.credits, { query = query })
        assert.is_false(ok)
      end
      local ok, why = pcall(client.account.credits, { query = { a = { "x", nil, "z" } } })
      assert.is_false(ok)
      assert.matches("hole", why)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("a per-call api_key", function()
    it("is sent instead of the client's, for that call only", function()
      local wrong = fish.new({ api_key = "not-the-key", base_url = srv.url, retries = 0 })
      local audio, message, err = wrong.convert({ text = "Hi", format = "pcm" })
      assert.is_nil(audio)
      assert.equal("auth", err.kind, message)
      assert(wrong.convert({ text = "Hi", format = "pcm", api_key = srv.api_key }))
      local sent = srv:requests_for("POST", "/v1/tts")
      assert.equal("Bearer not-the-key", sent[1].headers["authorization"])
      assert.equal("Bearer " .. srv.api_key, sent[2].headers["authorization"])
      wrong.close()
    end)

    it("is redacted from errors like the client's key", function()
      local secret = "per-call-secret-0123456789"
      srv:fault("/v1/tts", { status = 401, body = { message = "bad key " .. secret } })
      local audio, message, err = client.convert({ text = "Hi", format = "pcm", api_key = secret })
      assert.is_nil(audio)
      assert.is_nil(message:find(secret, 1, true), message)
      assert.is_nil(err.body:find(secret, 1, true), err.body)
      assert.matches("<redacted>", err.message, 1, true)
    end)
  end)

  describe("X-RateLimit-Reset", function()
    it("sets retry_after when there is no Retry-After, capped at 60 s", function()
      local now = tonumber(files.capture("date +%s"))
      srv:fault("/v1/tts", { status = 429, headers = { ["X-RateLimit-Reset"] = tostring(now + 5) } })
      local _, _, err = client.convert({ text = "Hi", format = "pcm" })
      assert.equal("rate_limit", err.kind)
      assert.is_true(err.retry_after >= 3 and err.retry_after <= 5, tostring(err.retry_after))
      srv:fault("/v1/tts", { status = 429, headers = { ["X-RateLimit-Reset"] = tostring(now + 3600) } })
      _, _, err = client.convert({ text = "Hi", format = "pcm" })
      assert.equal(60, err.retry_after)
      srv:fault("/v1/tts", { status = 429, headers = { ["X-RateLimit-Reset"] = tostring(now - 10) } })
      _, _, err = client.convert({ text = "Hi", format = "pcm" })
      assert.equal(0, err.retry_after)
    end)

    it("gives way to Retry-After", function()
      local now = tonumber(files.capture("date +%s"))
      srv:fault("/v1/tts", { status = 429, headers = { ["Retry-After"] = "7", ["X-RateLimit-Reset"] = tostring(now + 30) } })
      local _, _, err = client.convert({ text = "Hi", format = "pcm" })
      assert.equal(7, err.retry_after)
    end)

    it("parses epoch seconds and nothing else", function()
      assert.equal(4, http.parse_rate_limit_reset("1004", 1000))
      assert.equal(60, http.parse_rate_limit_reset(" 99999 ", 1000))
      assert.equal(0, http.parse_rate_limit_reset("10", 1000))
      assert.is_nil(http.parse_rate_limit_reset("soon", 1000))
      assert.is_nil(http.parse_rate_limit_reset("1.5e3", 1000))
      assert.is_nil(http.parse_rate_limit_reset(nil, 1000))
    end)
  end)

  describe("multipart file names", function()
    it("are the text after the last '/', so a backslash stays in the name on POSIX", function()
      if package.config:sub(1, 1) ~= "/" then return pending("POSIX only") end
      local path = dir .. "/take\\one.wav"
      files.write(path, files.read(server.ROOT .. "/examples/reference.wav"))
      assert(client.voices.create({ title = "Backslash", voices = { fish.file(path) }, texts = { "x" } }))
      local parts = srv:last_request("/model").parts
      local names = {}
      for _, part in ipairs(parts) do
        if part.name == "voices" then names[#names + 1] = part.filename end
      end
      assert.same({ "take\\one.wav" }, names)
    end)
  end)
end)

describe("percent-encoding", function()
  -- The oracle: RFC 3986's unreserved set, by byte value.
  local function expected(byte)
    local c = string.char(byte)
    if c:find("^[A-Za-z0-9]$") or c == "-" or c == "." or c == "_" or c == "~" then return c end
    return ("%%%02X"):format(byte)
  end

  it("keeps only unreserved ASCII and encodes every other byte", function()
    for byte = 0, 255 do
      assert.equal(expected(byte), util.percent_encode(string.char(byte)), "byte " .. byte)
    end
  end)

  it("does not depend on the C locale (a Latin-1 locale calls 0xE9 a letter)", function()
    local locales = files.tmpdir()
    local made = os.execute(("localedef -i en_US -f ISO-8859-1 %s/en_US.ISO-8859-1 >/dev/null 2>&1")
      :format(files.quote(locales)))
    if made ~= true and made ~= 0 then
      files.remove_tree(locales)
      return pending("localedef cannot build en_US.ISO-8859-1 here (Debian package: locales)")
    end
    local script = os.tmpname()
    files.write(script, ([[
      package.path = %q
      assert(os.setlocale("en_US.ISO-8859-1", "ctype"), "locale not loaded")
      local util = require("fish.util")
      io.write(("\233"):match("%%w") and "alnum " or "not-alnum ", util.percent_encode("caf\233 \255"))
    ]]):format(package.path))
    local out = files.capture(("LOCPATH=%s %s %s 2>&1"):format(
      files.quote(locales), abi.interpreter, files.quote(script)))
    os.remove(script)
    files.remove_tree(locales)
    -- The encoding ignores the locale. On PUC Lua the locale takes effect
    -- (%w matches 0xE9 there, which is what broke the %w-based encoder);
    -- LuaJIT classifies characters itself and ignores it.
    local expect_alnum = type(jit) ~= "table"
    assert.equal((expect_alnum and "alnum" or "not-alnum") .. " caf%E9%20%FF", out)
  end)
end)
