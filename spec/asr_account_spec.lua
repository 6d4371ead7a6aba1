-- fish.asr and fish.account end to end against the bundled local server:
-- the msgpack body of a transcription byte by byte, the decoded answers,
-- and the wallet calls with their query.
local fish = require("fish")
local server = require("support.server")
local files = require("support.files")
local read_file, write_file = files.read, files.write

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"
local REFERENCE_SECONDS = 6.531 -- 104496 frames at 16 kHz
local TRANSCRIPT = "hello from the local fish server"

local function u32be(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local function msgpack_str(s)
  assert(#s < 32)
  return string.char(0xa0 + #s) .. s
end

describe("fish.asr.transcribe", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  describe("on the wire", function()
    it("sends the Python SDK's bytes: audio as bin, ignore_timestamps false by default", function()
      assert(client.asr.transcribe({ audio = "\1\2" }))
      local sent = srv:last_request("/v1/asr")
      assert.equal("POST", sent.method)
      assert.equal("application/msgpack", sent.headers["content-type"])
      assert.equal("Bearer " .. srv.api_key, sent.headers["authorization"])
      assert.is_nil(sent.headers["model"])
      -- fish-api.md §4.1, ENC vector for audio 0102.
      assert.equal("82a5617564696fc4020102b169676e6f72655f74696d657374616d7073c2", server.hex(server.body(sent)))
      assert.same({ audio = { ["$bin"] = "AQI=" }, ignore_timestamps = false }, sent.msgpack)
    end)

    it("sends ignore_timestamps true only for timestamps = false", function()
      assert(client.asr.transcribe({ audio = "\1\2", timestamps = false }))
      assert.equal("82a5617564696fc4020102b169676e6f72655f74696d657374616d7073c3",
        server.hex(server.body(srv:last_request("/v1/asr"))))
      assert(client.asr.transcribe({ audio = "\1\2", timestamps = true }))
      assert.equal("82a5617564696fc4020102b169676e6f72655f74696d657374616d7073c2",
        server.hex(server.body(srv:last_request("/v1/asr"))))
    end)

    it("adds language as a str after ignore_timestamps when given", function()
      assert(client.asr.transcribe({ audio = "\1\2\3", language = "en", timestamps = false }))
      local body = server.body(srv:last_request("/v1/asr"))
      assert.equal("83" .. "a5617564696f" .. "c403010203" .. "b1" .. server.hex("ignore_timestamps") .. "c3"
        .. "a8" .. server.hex("language") .. "a2656e", server.hex(body))
    end)

    it("reads audio from fish.file(path) into a bin 32 of the file's bytes", function()
      local wav = read_file(REFERENCE_WAV)
      assert.is_true(#wav > 65535) -- so it needs bin 32
      assert(client.asr.transcribe({ audio = fish.file(REFERENCE_WAV) }))
      local body = server.body(srv:last_request("/v1/asr"))
      local expect = "\130" .. msgpack_str("audio") .. "\198" .. u32be(#wav) .. wav
        .. msgpack_str("ignore_timestamps") .. "\194"
      assert.equal(#expect, #body)
      assert.is_true(expect == body, "the body differs from the expected msgpack")
    end)

    it("sends bytes as bin even when they are valid text", function()
      assert(client.asr.transcribe({ audio = "text" }))
      assert.equal("c404" .. server.hex("text"), server.hex(server.body(srv:last_request("/v1/asr"))):sub(15, 26))
    end)
  end)

  describe("answers", function()
    it("returns the transcript with duration and timed segments", function()
      local result, _, err = client.asr.transcribe({ audio = fish.file(REFERENCE_WAV) })
      assert.is_nil(err)
      assert.equal(TRANSCRIPT, result.text)
      assert.is_true(math.abs(result.duration - REFERENCE_SECONDS) < 0.01, tostring(result.duration))
      assert.equal("en", result.language)
      assert.equal(2, #result.segments)
      local words = {}
      local last_end = 0
      for _, segment in ipairs(result.segments) do
        assert.is_string(segment.text)
        assert.is_number(segment.start)
        assert.is_number(segment["end"])
        assert.is_true(segment.start >= last_end - 1e-9)
        assert.is_true(segment["end"] > segment.start)
        assert.is_true(segment["end"] <= result.duration + 1e-9)
        last_end = segment["end"]
        words[#words + 1] = segment.text
      end
      assert.equal(TRANSCRIPT, table.concat(words, " "))
    end)

    it("returns no segments with timestamps = false, and the language asked for", function()
      local result = assert(client.asr.transcribe({ audio = read_file(REFERENCE_WAV), timestamps = false, language = "de" }))
      assert.equal(TRANSCRIPT, result.text)
      assert.is_table(result.segments)
      assert.equal(0, #result.segments)
      assert.equal("de", result.language)
      assert.is_true(math.abs(result.duration - REFERENCE_SECONDS) < 0.01)
    end)

    it("returns HTTP errors as nil, err", function()
      srv:fault("/v1/asr", { status = 500 })
      local result, _, err = client.asr.transcribe({ audio = "\1\2" })
      assert.is_nil(result)
      assert.is_true(fish.is_error(err))
      assert.equal("server", err.kind)
      assert.equal(500, err.status)

      srv:fault("/v1/asr", { status = 422, body = { { loc = { "body", "audio" }, msg = "Audio too short", type = "value_error" } } })
      result, _, err = client.asr.transcribe({ audio = "\1\2" })
      assert.is_nil(result)
      assert.equal("http", err.kind)
      assert.equal(422, err.status)
      assert.matches("body%.audio: Audio too short", err.message)

      local bad = fish.new({ api_key = "wrong-key", base_url = srv.url })
      result, _, err = bad.asr.transcribe({ audio = "\1\2" })
      assert.is_nil(result)
      assert.equal("auth", err.kind)
      bad.close()
    end)

    it("refuses an empty audio file before sending, as it refuses empty bytes", function()
      local empty = os.tmpname()
      write_file(empty, "")
      local ok, why = pcall(fish.file, empty)
      os.remove(empty)
      assert.is_false(ok)
      assert.matches("is empty", why)
      ok, why = pcall(client.asr.transcribe, { audio = "" })
      assert.is_false(ok)
      assert.matches("field 'audio'", why)
      assert.equal(0, #srv:requests())
    end)

    it("turns a 200 whose JSON is not an object into invalid_response", function()
      srv:fault("/v1/asr", { status = 200, body = "false", content_type = "application/json" })
      local result, message, err = client.asr.transcribe({ audio = "\1\2" })
      assert.is_nil(result)
      assert.matches("not an object", message)
      assert.equal("invalid_response", err.kind)
      srv:fault("/wallet/self/api-credit", { status = 200, body = "0", content_type = "application/json" })
      result, message, err = client.account.credits()
      assert.is_nil(result)
      assert.matches("not an object", message)
      assert.equal("invalid_response", err.kind)
    end)

    it("turns a 200 with invalid JSON into invalid_response", function()
      srv:fault("/v1/asr", { bad_json = true })
      local result, _, err = client.asr.transcribe({ audio = "\1\2" })
      assert.is_nil(result)
      assert.equal("invalid_response", err.kind)
      assert.equal(200, err.status)
    end)
  end)

  describe("arguments", function()
    it("raises a clear error naming the field before any request", function()
      local cases = {
        { {}, "field 'audio' must be bytes" },
        { { audio = "" }, "field 'audio' must be bytes" },
        { { audio = 42 }, "field 'audio' must be bytes" },
        { { audio = { "x" } }, "field 'audio' must be bytes" },
        { { audio = "x", language = 5 }, "field 'language' must be a string" },
        { { audio = "x", timestamps = "yes" }, "field 'timestamps' must be a boolean" },
        { { audio = "x", langauge = "en" }, "unknown field 'langauge' %(did you mean 'language'%?%)" },
        { { audio = "x", ignore_timestamps = true }, "unknown field 'ignore_timestamps'" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.asr.transcribe, case[1])
        assert.is_false(ok)
        assert.matches("fish%.asr%.transcribe: " .. case[2], err)
      end
      local ok, err = pcall(client.asr.transcribe, "audio bytes")
      assert.is_false(ok)
      assert.matches("fish%.asr%.transcribe: expected a table of options", err)
      assert.equal(0, #srv:requests())
    end)

    it("accepts the per-call options retries and timeout", function()
      srv:fault("/v1/asr", { status = 503, headers = { ["Retry-After"] = "0" } }, { times = 1 })
      local result = assert(client.asr.transcribe({ audio = "\1\2", retries = 1, timeout = 30 }))
      assert.equal(TRANSCRIPT, result.text)
      assert.equal(2, #srv:requests_for("POST", "/v1/asr"))
    end)
  end)
end)

describe("fish.account", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  describe("credits", function()
    it("gets the API credit with no query by default", function()
      local credits, _, err = client.account.credits()
      assert.is_nil(err)
      local sent = srv:last_request()
      assert.equal("GET", sent.method)
      assert.equal("/wallet/self/api-credit", sent.path)
      assert.equal("", sent.query)
      assert.equal("Bearer " .. srv.api_key, sent.headers["authorization"])
      -- The credit is a decimal string, kept as the server wrote it.
      assert.equal("10.00", credits.credit)
      assert.equal("10.00", credits.cumulative_top_up)
      assert.is_string(credits._id)
      assert.equal("10ca1f15000000000000000000000001", credits.user_id)
      assert.is_string(credits.created_at)
      assert.is_string(credits.updated_at)
      assert.is_false(credits.has_phone_sha256)
      -- has_free_credit is only filled when asked for: JSON null reaches Lua as nil.
      assert.is_nil(credits.has_free_credit)
      assert(client.account.credits({}))
      assert.equal("", srv:last_request().query)
    end)

    it("sends check_free_credit=true or false when given", function()
      local credits = assert(client.account.credits({ check_free_credit = true }))
      assert.equal("check_free_credit=true", srv:last_request().query)
      assert.is_true(credits.has_free_credit)
      credits = assert(client.account.credits({ check_free_credit = false }))
      assert.equal("check_free_credit=false", srv:last_request().query)
      assert.is_nil(credits.has_free_credit)
    end)

    it("raises for bad arguments before any request", function()
      local cases = {
        { { check_free_credit = "yes" }, "field 'check_free_credit' must be a boolean" },
        { { check_free_credits = true }, "unknown field 'check_free_credits' %(did you mean 'check_free_credit'%?%)" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.account.credits, case[1])
        assert.is_false(ok)
        assert.matches("fish%.account%.credits: " .. case[2], err)
      end
      local ok, err = pcall(client.account.credits, true)
      assert.is_false(ok)
      assert.matches("fish%.account%.credits: expected a table of options", err)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("package", function()
    it("gets the platform package", function()
      local package, _, err = client.account.package()
      assert.is_nil(err)
      local sent = srv:last_request()
      assert.equal("GET", sent.method)
      assert.equal("/wallet/self/package", sent.path)
      assert.equal("", sent.query)
      assert.equal("10ca1f15000000000000000000000001", package.user_id)
      assert.equal("free", package.type)
      assert.equal(1000, package.total)
      assert.equal(800, package.balance)
      assert.is_string(package.created_at)
      assert.is_string(package.updated_at)
      assert.is_string(package.finished_at)
    end)
  end)

  it("returns errors as nil, err", function()
    local bad = fish.new({ api_key = "wrong-key", base_url = srv.url })
    local credits, _, err = bad.account.credits()
    assert.is_nil(credits)
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    local package, _, err2 = bad.account.package()
    assert.is_nil(package)
    assert.equal("auth", err2.kind)
    bad.close()

    srv:fault("/wallet/self/package", { bad_json = true })
    package, _, err = client.account.package()
    assert.is_nil(package)
    assert.equal("invalid_response", err.kind)
    srv:fault("/wallet/self/api-credit", { status = 403 })
    credits, _, err = client.account.credits()
    assert.is_nil(credits)
    assert.equal("permission", err.kind)
  end)

  it("refuses calls on a closed client", function()
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url })
    c.close()
    assert.has_error(function() c.account.credits() end)
    assert.has_error(function() c.account.package() end)
    assert.has_error(function() c.asr.transcribe({ audio = "x" }) end)
    assert.equal(0, #srv:requests())
  end)
end)

describe("module-level fish.asr and fish.account", function()
  it("use the default client from FISH_API_KEY and FISH_BASE_URL", function()
    local srv = server.start()
    local script = os.tmpname()
    write_file(script, [[
      local fish = require("fish")
      local text = assert(fish.asr.transcribe{ audio = "\1\2", language = "en" }).text
      local credit = assert(fish.account.credits{ check_free_credit = true }).credit
      local total = assert(fish.account:package()).total
      io.write(text, "|", credit, "|", total)
    ]])
    local lua = require("support.abi").interpreter
    local cmd = ("FISH_API_KEY=%s FISH_BASE_URL=%s %s %s 2>&1"):format(
      server.shell_quote(srv.api_key), server.shell_quote(srv.url), lua, script)
    local pipe = io.popen(cmd)
    local out = pipe:read("*a")
    pipe:close()
    os.remove(script)
    assert.equal(TRANSCRIPT .. "|10.00|1000", out)
    local paths = {}
    for _, r in ipairs(srv:requests()) do
      assert.equal("Bearer " .. srv.api_key, r.headers["authorization"])
      paths[#paths + 1] = r.path .. (r.query ~= "" and ("?" .. r.query) or "")
    end
    assert.same({ "/v1/asr", "/wallet/self/api-credit?check_free_credit=true", "/wallet/self/package" }, paths)
    srv:stop()
  end)
end)
