-- What the official TypeScript SDK can send, fish sends too (issue 8, point
-- 7): the same calls made with npm's fish-audio 0.1.0 (pinned by
-- spec/support/ts_sdk/package-lock.json, run by spec/support/ts_sdk/send.mjs)
-- and with fish, against the local server, and the requests it captured
-- compared field by field:
--   * extra headers, client-wide and per call (W3C traceparent, x-request-id);
--   * extra query parameters per call, a list as a repeated key;
--   * an API key for one call only;
--   * a 429 whose only hint is X-RateLimit-Reset (no Retry-After).
-- Fields where the SDKs legitimately differ are not compared: User-Agent,
-- Accept / Accept-Encoding / Accept-Language / Sec-Fetch-Mode (fetch's own),
-- Connection, Content-Length and the msgpack key order (fish writes its own
-- defaults into the body), and the `model` header (the TS SDK sends its
-- backend, "s1", by default; fish sends its configured model).
--
-- The SDK is installed with `npm ci` into build/ts_sdk/ (once; again only
-- when the pinned package.json or lock changes). The spec runs once per
-- suite run, in the Lua 5.4 pass, and is pending elsewhere, and pending
-- when node or npm is missing or `npm ci` fails (no network): never a
-- failure for want of either.
local abi = require("support.abi")
local server = require("support.server")
local files = require("support.files")
local cjson = require("cjson")

local q = files.quote
local ROOT = server.ROOT
local SOURCE = ROOT .. "/spec/support/ts_sdk"
local SDK_DIR = ROOT .. "/build/ts_sdk"
local ONCE = "lua5.4"

local TEXT = "Both SDKs say this sentence."
-- W3C trace context: version-trace_id-parent_id-flags.
local TRACEPARENT_CLIENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
local TRACEPARENT_CALL = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

-- Run a shell command; returns ok and everything it printed.
local function run(cmd)
  local pipe = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"exit=$?\"", "r"))
  local out = pipe:read("*a")
  pipe:close()
  local status = out:match("exit=(%d+)%s*$")
  return status == "0", (out:gsub("exit=%d+%s*$", ""))
end

-- Install the pinned SDK into build/ts_sdk unless it is there already, and
-- put send.mjs beside it (an ES module finds "fish-audio" from its own
-- directory). Under flock: `make test-asan` and `make test-valgrind` run
-- this spec side by side. Returns nil when ready, else why not.
local function install_sdk()
  if not run("command -v node") then return "node is not installed (Debian: apt-get install nodejs npm)" end
  if not run("command -v npm") then return "npm is not installed (Debian: apt-get install npm)" end
  local script = table.concat({
    "mkdir -p " .. q(SDK_DIR),
    "cd " .. q(SDK_DIR),
    "if ! { cmp -s " .. q(SOURCE .. "/package.json") .. " package.json" ..
      " && cmp -s " .. q(SOURCE .. "/package-lock.json") .. " package-lock.json" ..
      " && [ -f node_modules/fish-audio/package.json ]; }; then" ..
      " rm -rf node_modules package.json package-lock.json" ..
      " && cp " .. q(SOURCE .. "/package.json") .. " " .. q(SOURCE .. "/package-lock.json") .. " ." ..
      " && timeout 300 npm ci --prefix " .. q(SDK_DIR) ..
      " --no-audit --no-fund --fetch-retries=1 --fetch-timeout=60000" ..
      " || { rm -rf node_modules; exit 1; }; fi",
    "cmp -s " .. q(SOURCE .. "/send.mjs") .. " send.mjs || cp " .. q(SOURCE .. "/send.mjs") .. " send.mjs",
  }, " && ")
  local locked = run("command -v flock") and
    ("mkdir -p " .. q(SDK_DIR) .. " && flock " .. q(SDK_DIR .. "/.lock") .. " sh -c " .. q(script)) or script
  local ok, out = run("env -u LD_PRELOAD sh -c " .. q(locked))
  if not ok then
    -- npm's first error line says what went wrong (its last names a log).
    local why = out:match("npm error ([^\n]+)") or out:gsub("%s+$", ""):match("([^\n]*)$")
    return "npm ci of the TypeScript SDK failed (no network?): " .. why
  end
  local version = (files.read(SDK_DIR .. "/node_modules/fish-audio/package.json") or ""):match('"version"%s*:%s*"([^"]+)"')
  if version ~= "0.1.0" then return "build/ts_sdk holds fish-audio " .. tostring(version) .. ", not 0.1.0" end
end

local skip
if abi.lua ~= ONCE then
  skip = "runs once per suite, in the Lua 5.4 pass (this is " .. abi.lua .. ")"
else
  skip = install_sdk()
end

-- ---- reading captured requests ------------------------------------------------------

local function unescape(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- A query string as { {name, value}, ... }, decoded, in order.
local function query_pairs(raw)
  local out = {}
  for part in (raw or ""):gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=?(.*)$")
    out[#out + 1] = { unescape(k), unescape(v) }
  end
  return out
end

local function pair_text(pairs_list)
  local t = {}
  for i, kv in ipairs(pairs_list) do t[i] = kv[1] .. "=" .. kv[2] end
  return table.concat(t, " & ")
end

-- Assert that the TypeScript SDK's request and fish's agree on each field:
-- fields maps a name (for the message) to a function of a captured request.
local function same(fields, ts_req, fish_req)
  for name, get in pairs(fields) do
    assert.are.same(get(ts_req), get(fish_req), name .. ": the TypeScript SDK sent one thing, fish another")
  end
end

local function header(name) return function(r) return r.headers[name] end end
local function body_field(name) return function(r) return r.msgpack and r.msgpack[name] end end

describe("parity with the official TypeScript SDK (npm fish-audio 0.1.0)", function()
  if skip then
    pending("TypeScript SDK parity: skipped, " .. skip)
    return
  end

  local fish = require("fish")
  local srv

  setup(function() srv = server.start() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function node_command(scenario, params)
    return "env -u LD_PRELOAD node " .. q(SDK_DIR .. "/send.mjs") .. " " .. q(srv.url) .. " " .. q(srv.api_key) ..
      " " .. q(scenario) .. " " .. q(cjson.encode(params))
  end

  -- Run one scenario of send.mjs; returns its results (one per SDK call).
  local function ts(scenario, params)
    local ok, out = run(node_command(scenario, params))
    local line = out:match('({"scenario":[^\n]*)')
    assert(ok and line, "send.mjs " .. scenario .. " failed:\n" .. out)
    return cjson.decode(line).results
  end

  -- The same, for a scenario that holds (params.hold): send.mjs prints
  -- READY once node is up and waits for its stdin to close; `between` runs
  -- in that pause, so what it sets up is not aged by node's start-up, which
  -- takes seconds when the suites of all five Luas share the cores.
  local function ts_held(scenario, params, between)
    params.hold = true
    local out = os.tmpname()
    local pipe = assert(io.popen("(" .. node_command(scenario, params) .. "; echo \"exit=$?\") >" .. q(out) .. " 2>&1", "w"))
    local deadline = os.time() + 120
    local text
    repeat
      text = files.read(out) or ""
      if text:find("READY\n") or text:find("exit=%d+") then break end
      os.execute("env -u LD_PRELOAD sleep 0.05")
    until os.time() > deadline
    local ready = text:find("READY\n") ~= nil
    local ok, err = true, nil
    if ready then ok, err = pcall(between) end
    pipe:close() -- closes node's stdin: it goes on, and this waits for it
    if not ok then error(err, 0) end
    text = files.read(out) or ""
    os.remove(out)
    local line = text:match('({"scenario":[^\n]*)')
    assert(ready and line and text:match("exit=0"), "send.mjs " .. scenario .. " failed:\n" .. text)
    return cjson.decode(line).results
  end

  local function new_client(opts)
    opts = opts or {}
    opts.api_key = opts.api_key or srv.api_key
    opts.base_url = srv.url
    return fish.new(opts)
  end

  -- The requests for `path` since the last reset, then a reset, so the next
  -- SDK's requests are counted alone.
  local function take(path, method)
    local found = srv:requests_for(method or "POST", path)
    srv:reset()
    return found
  end

  it("sends client-wide and per-call headers as the SDK does, a call's replacing the client's", function()
    -- Client-wide: traceparent and x-client-tag. Call 1 adds x-request-id;
    -- call 2 also replaces the client's traceparent with its own.
    local client_headers = { traceparent = TRACEPARENT_CLIENT, ["x-client-tag"] = "parity" }
    local calls = {
      { headers = { ["x-request-id"] = "req-0001" } },
      { headers = { traceparent = TRACEPARENT_CALL, ["x-request-id"] = "req-0002" } },
    }
    local results = ts("headers", { client_headers = client_headers, calls = calls,
      request = { text = TEXT, format = "pcm" } })
    for _, r in ipairs(results) do assert.is_true(r.ok, r.call .. ": " .. tostring(r.error)) end
    local by_ts = take("/v1/tts")

    local client = new_client({ headers = client_headers })
    for i, call in ipairs(calls) do
      local audio, msg = client.convert({ text = TEXT, format = "pcm", headers = call.headers })
      assert(audio, "fish call " .. i .. ": " .. tostring(msg))
    end
    client.close()
    local by_fish = take("/v1/tts")

    assert.equal(2, #by_ts)
    assert.equal(2, #by_fish)
    -- Compared: the three extra headers, Authorization (the client's key),
    -- Content-Type, and the two body fields both were given.
    local fields = {
      traceparent = header("traceparent"),
      ["x-request-id"] = header("x-request-id"),
      ["x-client-tag"] = header("x-client-tag"),
      authorization = header("authorization"),
      ["content-type"] = header("content-type"),
      ["body text"] = body_field("text"),
      ["body format"] = body_field("format"),
    }
    for i = 1, 2 do same(fields, by_ts[i], by_fish[i]) end
    -- And what they agree on is what was asked: a replaced header is sent
    -- once, with the call's value (the server joins repeats with ", ").
    assert.equal(TRACEPARENT_CLIENT, by_fish[1].headers.traceparent)
    assert.equal(TRACEPARENT_CALL, by_fish[2].headers.traceparent)
    assert.equal("req-0001", by_fish[1].headers["x-request-id"])
    assert.equal("req-0002", by_fish[2].headers["x-request-id"])
    for i = 1, 2 do
      assert.equal("parity", by_fish[i].headers["x-client-tag"])
      assert.equal("Bearer " .. srv.api_key, by_fish[i].headers.authorization)
      assert.equal(TEXT, by_fish[i].msgpack.text)
    end
  end)

  it("sends per-call query parameters as the SDK does: lists as repeated keys, on /v1/tts and GET /model", function()
    -- Values that need escaping (space, &, =, +, /, UTF-8), a number, a
    -- boolean, and a list whose order must survive.
    local query = {
      experiment = "a b&c=d+e",
      limit = 3,
      debug = true,
      tag = { "x", "y/z", "ü" },
    }
    local results = ts("query", { query = query, search = { page_size = 5 }, request = { text = TEXT, format = "pcm" } })
    for _, r in ipairs(results) do assert.is_true(r.ok, r.call .. ": " .. tostring(r.error)) end
    local ts_tts, ts_model = srv:requests_for("POST", "/v1/tts"), srv:requests_for("GET", "/model")
    srv:reset()

    local client = new_client()
    assert(client.convert({ text = TEXT, format = "pcm", query = query }))
    assert(client.voices.list({ page_size = 5, query = query }))
    client.close()
    local fish_tts, fish_model = srv:requests_for("POST", "/v1/tts"), srv:requests_for("GET", "/model")

    assert.equal(1, #ts_tts)
    assert.equal(1, #fish_tts)
    assert.equal(1, #ts_model)
    assert.equal(1, #fish_model)
    -- Compared: the decoded query, pair by pair and in order (the bytes may
    -- differ: each escapes its own set of characters), with Authorization.
    -- Both send keys in sorted order (send.mjs sorts them for the SDK, which
    -- keeps the object's order) and a list's values in list order.
    local fields = {
      query = function(r) return pair_text(query_pairs(r.query)) end,
      authorization = header("authorization"),
    }
    same(fields, ts_tts[1], fish_tts[1])
    -- GET /model: each SDK's own parameters (page_size here) first, the
    -- extra ones after them.
    same(fields, ts_model[1], fish_model[1])
    local want = "debug=true & experiment=a b&c=d+e & limit=3 & tag=x & tag=y/z & tag=ü"
    assert.equal(want, pair_text(query_pairs(fish_tts[1].query)))
    assert.equal("page_size=5 & " .. want, pair_text(query_pairs(fish_model[1].query)))
  end)

  it("uses a per-call api_key for that call only, as the SDK does", function()
    -- The client's key is wrong, the call's is right: the call succeeds
    -- and carries the call's key; the next call, without one, carries the
    -- client's again and gets a 401.
    local wrong = "wrong-client-key-0000"
    local results = ts("api_key", { client_key = wrong, request = { text = TEXT, format = "pcm" } })
    assert.is_true(results[1].ok, "TypeScript SDK, call with apiKey: " .. tostring(results[1].error))
    assert.is_false(results[2].ok)
    assert.equal(401, results[2].status)
    local by_ts = take("/v1/tts")

    local client = new_client({ api_key = wrong })
    local audio, msg = client.convert({ text = TEXT, format = "pcm", api_key = srv.api_key })
    assert(audio, "fish, call with api_key: " .. tostring(msg))
    assert.is_true(#audio > 0)
    local none, _, err = client.convert({ text = TEXT, format = "pcm", retries = 0 })
    client.close()
    assert.is_nil(none)
    assert.equal(401, err.status)
    local by_fish = take("/v1/tts")

    assert.equal(2, #by_ts)
    assert.equal(2, #by_fish)
    -- Compared: Authorization on each of the two calls.
    for i = 1, 2 do same({ authorization = header("authorization") }, by_ts[i], by_fish[i]) end
    assert.equal("Bearer " .. srv.api_key, by_fish[1].headers.authorization)
    assert.equal("Bearer " .. wrong, by_fish[2].headers.authorization)
  end)

  describe("a 429 with X-RateLimit-Reset and no Retry-After", function()
    -- The reset as the header carries it: whole epoch seconds, at least
    -- `seconds` from now.
    local function reset_in(seconds)
      return os.time() + seconds + 1
    end
    local function rate_limited(reset)
      srv:fault("/v1/tts", { status = 429, headers = { ["X-RateLimit-Reset"] = ("%d"):format(reset) } })
    end

    -- One SDK's attempts: the 429, then the retry, which must come no
    -- earlier than the reset and at least 1.5 s after the first (the
    -- default back-off of both is about 1 s, so a retry that ignored the
    -- header would come sooner). Compared: that one retry came, the gap
    -- between the two arrivals (the server's clock, field `t`), and that
    -- the retry was the same request (Authorization, body text).
    local function check_retry(who, attempts, reset)
      assert.equal(2, #attempts, who .. ": one 429, then one retry")
      local gap = attempts[2].t - attempts[1].t
      assert.is_true(gap >= 1.5, ("%s: retried %.2f s after the 429, before X-RateLimit-Reset"):format(who, gap))
      assert.is_true(attempts[2].t >= reset - 0.1,
        ("%s: retried at %.2f, before X-RateLimit-Reset %d"):format(who, attempts[2].t, reset))
      assert.equal(attempts[1].headers.authorization, attempts[2].headers.authorization)
      assert.equal(attempts[1].msgpack.text, attempts[2].msgpack.text)
    end

    it("both SDKs wait until then before their one retry", function()
      -- The 429 is queued once node is up, just before the SDK's convert.
      local reset
      local results = ts_held("rate_limit", { max_retries = 1, request = { text = TEXT, format = "pcm" } }, function()
        reset = reset_in(2)
        rate_limited(reset)
      end)
      assert.is_true(results[2].ok, "TypeScript SDK: " .. tostring(results[2].error))
      local by_ts = take("/v1/tts")
      assert.is_number(by_ts[1] and by_ts[1].t, "the local server records no arrival time (field t)")
      check_retry("TypeScript SDK", by_ts, reset)

      local client = new_client()
      reset = reset_in(2)
      rate_limited(reset)
      local audio, msg = client.convert({ text = TEXT, format = "pcm", retries = 1 })
      client.close()
      assert(audio, "fish: " .. tostring(msg))
      check_retry("fish", take("/v1/tts"), reset)
    end)

    it("fish's err.retry_after is the seconds until then when it does not retry", function()
      local client = new_client()
      local reset = os.time() + 2
      rate_limited(reset)
      local none, msg, err = client.convert({ text = TEXT, format = "pcm", retries = 0 })
      client.close()
      assert.is_nil(none)
      assert.is_string(msg)
      assert.equal(429, err.status)
      local sent = take("/v1/tts")
      assert.equal(1, #sent)
      -- About 2: the seconds from the request's arrival to the reset, give
      -- or take the second the header rounds to.
      local expected = reset - sent[1].t
      assert.is_number(err.retry_after, "err.retry_after is " .. tostring(err.retry_after))
      assert.is_true(err.retry_after >= 1 and err.retry_after <= 3, "retry_after " .. tostring(err.retry_after))
      assert.is_true(math.abs(err.retry_after - expected) <= 1,
        ("retry_after %s, but the reset was %.2f s after the request"):format(tostring(err.retry_after), expected))
    end)
  end)
end)
