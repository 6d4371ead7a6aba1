-- The fish side of `make bench`'s live TTS rows: fish.live against the
-- local Fish-compatible server (spec/support/fish_server.py), on the same
-- work as live_raw.c. Run by spec/bench/run.lua with LUA_PATH/LUA_CPATH set
-- to the fish tree under test and benchclock (the clock live_raw.c reads).
--
--   latency PORT KEY FLUSHES TEXT RATE block|step
--     One session, format = pcm at RATE. FLUSHES times: s.send(TEXT),
--     s.flush(), then wait until that flush's audio is all in. Times from
--     s.flush() returning to the first on_audio call. "block" waits in the
--     session (its events() iterator, the blocking wait); "step" calls
--     fish.step(0) in a loop, as a frame loop would (no sleep: the best a
--     loop can do).
--   memory PORT KEY FLUSHES TEXT RATE WARMUP
--     The same, blocking, with on_audio only counting the bytes. VmRSS and
--     VmHWM (/proc/self/status) after WARMUP flushes and at the end.
--
-- Prints "key value" lines.
local fish = require("fish")
local clock = require("benchclock")

local mode, port, key, flushes, text, rate, extra = ...
flushes, rate = tonumber(flushes), tonumber(rate)
assert(mode == "latency" or mode == "memory", "usage: live_bench.lua latency|memory PORT KEY FLUSHES TEXT RATE ...")

-- As fish_server.py: max(0.2, 0.05 * characters) seconds of 16-bit mono.
local per_flush = math.floor(math.max(0.2, 0.05 * #text) * rate + 0.5) * 2

local function status_kb(field)
  local f = assert(io.open("/proc/self/status", "r"))
  local text_ = f:read("*a")
  f:close()
  return tonumber(text_:match(field .. ":%s*(%d+)"))
end

local function percentile(list, q)
  local v = {}
  for i = 1, #list do v[i] = list[i] end
  table.sort(v)
  local at = q * (#v - 1)
  local lo = math.floor(at)
  local hi = math.min(lo + 1, #v - 1)
  return v[lo + 1] + (v[hi + 1] - v[lo + 1]) * (at - lo)
end

local client = fish.new({ api_key = key, base_url = "http://127.0.0.1:" .. port, model = "s2-pro" })

local got, first_at = 0, nil
local s = client.live({
  format = "pcm", sample_rate = rate,
  on_audio = function(bytes)
    if not first_at then first_at = clock.now() end
    got = got + #bytes
  end,
})
local next_event = s.events() -- the blocking wait: each call waits for the next event

local function wait_blocking()
  while got < per_flush do
    local ev = next_event()
    if ev and ev.type == "error" then error(ev.message, 0) end
    if not ev then error("the session ended early: " .. s.state(), 0) end
  end
end

local function wait_stepping()
  while got < per_flush do
    fish.step(0)
    local state = s.state()
    if state == "failed" or state == "canceled" or state == "done" then
      error("the session ended early: " .. select(2, s.finish()), 0)
    end
  end
end

local wait = (mode == "latency" and extra == "step") and wait_stepping or wait_blocking
local warmup = mode == "memory" and tonumber(extra) or 0
local latencies, total = {}, 0
local rss0, hwm0, lua0
for k = 1, flushes do
  got, first_at = 0, nil
  assert(s.send(text))
  assert(s.flush())
  local t0 = clock.now()
  wait()
  latencies[k] = first_at - t0
  total = total + got
  if k == warmup then rss0, hwm0, lua0 = status_kb("VmRSS"), status_kb("VmHWM"), collectgarbage("count") end
end
assert(s.finish())

print("flushes " .. flushes)
print("audio_bytes " .. total)
print(("first_audio_ms %.4f"):format(percentile(latencies, 0.5) * 1e3))
print(("first_audio_p90_ms %.4f"):format(percentile(latencies, 0.9) * 1e3))
if mode == "memory" then
  local rss1, hwm1, lua1 = status_kb("VmRSS"), status_kb("VmHWM"), collectgarbage("count")
  print("rss_start_kb " .. rss0)
  print("rss_growth_kb " .. (rss1 - rss0))
  print("hwm_growth_kb " .. (hwm1 - hwm0))
  print(("lua_heap_growth_kb %.0f"):format(lua1 - lua0))
  print("audio_seconds " .. (total / (2 * rate)))
end
