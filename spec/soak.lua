-- Soak test: many conversions in one process, about 10 % of them faulted,
-- with the process's resident memory measured after a warm-up and at the
-- end. Not a busted spec (busted only picks *_spec.lua); run it as
--
--   lua5.4 spec/soak.lua [N]      (default 20000; luajit works too)
--
-- Every call must end either with the audio or with a proper error object,
-- the errors must match the faults queued (kind by kind), and resident
-- memory must grow by less than 2 MB between the warm-up and the end. The
-- exit status is non-zero otherwise.
local ROOT = (arg and arg[0] or ""):match("^(.*)/spec/soak%.lua$") or "."
package.path = ROOT .. "/src/?.lua;" .. ROOT .. "/src/?/init.lua;" .. ROOT .. "/spec/?.lua;" .. package.path
package.cpath = require("support.abi").cpath .. ";" .. package.cpath

local fish = require("fish")
local core = require("fish.core")
local cjson = require("cjson")
local server = require("support.server")

local N = tonumber(arg and arg[1]) or 20000
local BATCH = 50 -- concurrent fish tasks
local WARM_UP = 1000
local REPORT_EVERY = tonumber(os.getenv("FISH_SOAK_REPORT") or "") or 2000
local FAULT_RATE = 0.10
local MAX_GROWTH_KB = 2 * 1024
local TEXT = "soak test"

-- Each fault with the error kind it must give. The calls make no retries,
-- so every fault is one error, except that libcurl itself retries, once, a
-- reused keep-alive connection that dies before any answer: a hang-up
-- fault can be absorbed that way, so kind "network" may come out short.
local FAULTS = {
  { kind = "server", fault = { status = 500 } },
  { kind = "server", fault = { status = 503, headers = { ["Retry-After"] = "0" } } },
  { kind = "not_found", fault = { status = 404 } },
  { kind = "rate_limit", fault = { status = 429, headers = { ["Retry-After"] = "1" } } },
  { kind = "auth", fault = { status = 401, body = "No permission -- see authorization schemes" } },
  { kind = "http", fault = { status = 422, body = { { loc = { "text" }, msg = "bad" } } } },
  { kind = "invalid_response", fault = { empty_body = true } },
  { kind = "network", fault = { reset = "before_headers" } },
  { kind = "network", fault = { close = true } },
  { kind = "network", fault = { truncate = true, after_bytes = 4000 } },
  { kind = "network", fault = { reset = "mid_body", after_bytes = 4000 } },
  { kind = "timeout", fault = { slow_headers = 0.6 } },
  { kind = nil, fault = { delay = 0.05 } }, -- slow, but a success
}
local FIRST_BYTE_TIMEOUT = 0.3 -- ends slow_headers; ordinary answers take milliseconds

local KINDS = {}
for _, kind in ipairs({ "auth", "permission", "not_found", "rate_limit", "server", "http", "network",
  "timeout", "canceled", "io", "invalid_response" }) do KINDS[kind] = true end

local function rss_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function fail(message)
  error("soak: FAIL: " .. message, 0)
end

-- ---- the server and its control API ------------------------------------------

local function start_server()
  local key = "soak-key-0123456789"
  local cmd = ("env -u LD_PRELOAD %s %s --port 0 --quiet --api-key %s & echo PID $!"):format(
    server.PYTHON, server.shell_quote(server.SCRIPT), key)
  local pipe = assert(io.popen(cmd, "r"))
  local pid, port
  for line in pipe:lines() do
    pid = pid or line:match("^PID (%d+)")
    port = port or line:match("^LISTENING (%d+)")
    if pid and port then break end
  end
  if not port then fail("the test server did not start") end
  local srv = setmetatable({ pid = pid, port = tonumber(port), api_key = key, pipe = pipe, log = os.tmpname() }, server)
  srv.url = "http://127.0.0.1:" .. port
  return srv
end

-- Reset the server and queue `faults` in one curl run (--next per request).
local function reset_and_queue(srv, faults)
  local parts = { "env -u LD_PRELOAD curl -sSf -o /dev/null --max-time 30 -X POST -d '{}'",
    server.shell_quote(srv.url .. "/_test/reset") }
  for _, fault in ipairs(faults) do
    local body = cjson.encode({ path = "/v1/tts", times = 1, fault = fault })
    parts[#parts + 1] = "--next -sSf -o /dev/null --max-time 30 -X POST -H 'Content-Type: application/json' -d "
      .. server.shell_quote(body) .. " " .. server.shell_quote(srv.url .. "/_test/faults")
  end
  local r = os.execute(table.concat(parts, " "))
  if not (r == true or r == 0) then fail("cannot queue faults") end
end

-- ---- one batch ------------------------------------------------------------------

local totals = { calls = 0, ok = 0, errors = 0, faults = 0, by_kind = {}, absorbed = 0 }
local expected_length

local function check_error(err)
  if not fish.is_error(err) then fail("not an error object: " .. tostring(err)) end
  if not KINDS[err.kind] then fail("unknown error kind " .. tostring(err.kind)) end
  if type(err.status) ~= "number" or type(err.message) ~= "string" or err.message == "" then
    fail("incomplete error object: " .. tostring(err))
  end
  if err.attempts ~= 1 then fail("expected 1 attempt, got " .. tostring(err.attempts)) end
  local line = tostring(err)
  if line:find("[\r\n]") or not line:match("^fish%.convert: ") then fail("bad tostring: " .. line) end
end

local function run_batch(srv, client, size)
  local queued, want = {}, {}
  for _ = 1, size do
    if math.random() < FAULT_RATE then
      local pick = FAULTS[math.random(#FAULTS)]
      queued[#queued + 1] = pick.fault
      if pick.kind then want[pick.kind] = (want[pick.kind] or 0) + 1 end
    end
  end
  reset_and_queue(srv, queued)

  local results = {}
  for i = 1, size do
    fish.spawn(function()
      results[i] = { client.convert({ text = TEXT, format = "pcm", retries = 0, first_byte_timeout = FIRST_BYTE_TIMEOUT }) }
    end)
  end
  fish.run()

  local got = {}
  for i = 1, size do
    local audio, err = results[i][1], results[i][3]
    if audio then
      if type(audio) ~= "string" then fail("a call returned " .. type(audio)) end
      expected_length = expected_length or #audio
      if #audio ~= expected_length then
        fail(("audio of %d bytes, expected %d"):format(#audio, expected_length))
      end
      totals.ok = totals.ok + 1
    else
      check_error(err)
      got[err.kind] = (got[err.kind] or 0) + 1
      totals.by_kind[err.kind] = (totals.by_kind[err.kind] or 0) + 1
      totals.errors = totals.errors + 1
    end
  end
  -- Every error was caused by a fault of its kind; only hang-ups may vanish.
  for kind, n in pairs(got) do
    local expected = want[kind] or 0
    if n > expected or (kind ~= "network" and n ~= expected) then
      fail(("%d %s errors for %d such faults"):format(n, kind, expected))
    end
  end
  for kind, n in pairs(want) do
    if (got[kind] or 0) ~= n and kind ~= "network" then
      fail(("%d %s faults gave %d errors"):format(n, kind, got[kind] or 0))
    end
  end
  totals.absorbed = totals.absorbed + (want.network or 0) - (got.network or 0)
  -- All faults were used up.
  local pending = srv:control("GET", "/_test/faults")
  if #pending ~= 0 then fail(#pending .. " faults were never used") end
  totals.calls = totals.calls + size
  totals.faults = totals.faults + #queued
end

-- ---- main -----------------------------------------------------------------------

local srv = start_server()
local client = fish.new({ api_key = srv.api_key, base_url = srv.url })
-- RSS after a full collection, read after every batch. With 50 responses
-- freed per batch, glibc hands memory back to the kernel unevenly, so single
-- readings wander by a megabyte or more with no trend; a leak lifts the whole
-- series. So "after warm-up" is the median of the readings over the 1000
-- calls that follow it, and "at the end" the median over the last 1000.
local WINDOW = 1000

local function median(list)
  local copy = {}
  for i, v in ipairs(list) do copy[i] = v end
  table.sort(copy)
  return copy[math.floor((#copy + 1) / 2)]
end

local ok, why = pcall(function()
  local started = core.now()
  local warm, tail = {}, {} -- readings after warm-up, and the latest ones
  local low, high = math.huge, 0
  local next_report = WARM_UP + REPORT_EVERY
  local warm_until = math.min(WARM_UP, N)
  while totals.calls < N do
    run_batch(srv, client, math.min(BATCH, N - totals.calls))
    local rss = rss_kb()
    if totals.calls >= warm_until then
      low, high = math.min(low, rss), math.max(high, rss)
      if totals.calls <= warm_until + WINDOW then warm[#warm + 1] = rss end
      tail[#tail + 1] = rss
      if #tail > WINDOW / BATCH then table.remove(tail, 1) end
      if #warm == 1 then
        print(("soak: warm-up done: %d calls, RSS %d kB"):format(totals.calls, rss))
      end
    end
    if totals.calls >= next_report then
      print(("soak: %d calls, %.0f calls/s, RSS %d kB"):format(totals.calls,
        totals.calls / (core.now() - started), rss))
      next_report = next_report + REPORT_EVERY
    end
  end
  local took = core.now() - started
  local kinds = {}
  for kind, n in pairs(totals.by_kind) do kinds[#kinds + 1] = kind .. "=" .. n end
  table.sort(kinds)
  print(("soak: %d calls in %.1f s (%.0f calls/s): %d ok, %d errors from %d faults (%s; %d hang-ups absorbed by libcurl's own retry)")
    :format(totals.calls, took, totals.calls / took, totals.ok, totals.errors, totals.faults,
      table.concat(kinds, " "), totals.absorbed))
  local warm_rss, end_rss = median(warm), median(tail)
  local growth = end_rss - warm_rss
  print(("soak: RSS after warm-up %d kB, at the end %d kB (medians over %d calls; readings %d..%d kB)")
    :format(warm_rss, end_rss, WINDOW, low, high))
  print(("soak: growth %d kB over %d calls (limit %d kB)"):format(growth, totals.calls - warm_until, MAX_GROWTH_KB))
  if growth >= MAX_GROWTH_KB then fail("resident memory grew by " .. growth .. " kB") end
end)
client.close()
srv:stop()
if not ok then
  io.stderr:write(tostring(why), "\n")
  os.exit(1)
end
print("soak: OK")
