-- The fish side of `make bench`: the work raw.c does, through fish's public
-- API, against the same fast local server (nginx.conf). One measurement per
-- process; spec/bench/run.lua starts it under lua5.4 or luajit with
-- LUA_PATH/LUA_CPATH pointing at the fish tree and at benchclock.
--
--   fish_bench.lua seq BASE COUNT BYTES          COUNT sequential fish.convert calls;
--                                                CPU time per call
--   fish_bench.lua core_seq BASE COUNT BYTES     the same requests through fish's C
--                                                core from a bare loop (no API layer)
--   fish_bench.lua upload BASE FILE string|file  one call with FILE as an inline
--                                                reference (a Lua string or
--                                                fish.file): time, peak RSS growth
--   fish_bench.lua frames BASE COUNT             fish.spawn + fish.step(0) at 60 fps:
--                                                latency until the frame that sees it
--   fish_bench.lua waiting BASE N STATS FRAMES   N tasks waiting on a slow answer;
--                                                the time of fish.step(0), once a frame
--   fish_bench.lua tasks N                       N tasks that fish.sleep(0) once and
--                                                return: CPU per task
--
-- BASE is a base_url such as http://127.0.0.1:PORT/n/20480. Results are
-- printed as "key value" lines, as raw.c prints them.
local fish = require("fish")
local clock = require("benchclock")

local FRAME = 1 / 60

local function out(key, value)
  io.write(key, " ", value, "\n")
end

local function client_for(base)
  return fish.new({ api_key = "k", base_url = base })
end

local function convert(client, args)
  local audio, message = client.convert(args)
  if not audio then error("fish.convert failed: " .. tostring(message), 0) end
  return audio
end

-- Nearest rank, as raw.c computes it.
local function percentile(values, p)
  local v = {}
  for i = 1, #values do v[i] = values[i] end
  table.sort(v)
  local i = math.ceil(p * #v)
  if i < 1 then i = 1 end
  return v[i]
end

local function status_kb(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)"))
end

-- Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  return f:close() and ok ~= nil
end

local modes = {}

function modes.seq(base, count, bytes)
  count, bytes = tonumber(count), tonumber(bytes)
  local client = client_for(base)
  local args = { text = "hello" }
  assert(#convert(client, args) == bytes) -- connect first, as raw.c does
  local c0, t0 = clock.cpu(), clock.now()
  for _ = 1, count do
    local audio = convert(client, args)
    if #audio ~= bytes then error("the answer has " .. #audio .. " bytes, not " .. bytes, 0) end
  end
  local c1, t1 = clock.cpu(), clock.now()
  out("cpu_us", ("%.3f"):format((c1 - c0) / count * 1e6))
  out("wall_us", ("%.3f"):format((t1 - t0) / count * 1e6))
end

-- seq through fish's C core alone, from a bare Lua loop: the request, the
-- engine's e:wait and take, with the headers and body convert sends, but
-- none of the API layer (checks, retries, errors, the response table). It
-- splits fish's cost between the core and the layer above it.
function modes.core_seq(base, count, bytes)
  count, bytes = tonumber(count), tonumber(bytes)
  local core = require("fish.core")
  local engine = core.engine()
  local options = {
    url = base .. "/v1/tts", method = "POST", sink = "buffer", proxy = "", proxy_tunnel = true,
    headers = { "Authorization: Bearer k", "User-Agent: fish-bench", "Accept: */*", "Expect:",
      "Content-Type: application/msgpack", "model: s2-pro" },
  }
  local finished, changed = {}, {}
  local function convert_in_core()
    local body = core.mp_writer()
    body:map(1)
    body:str("text")
    body:str("hello")
    options.body = body
    local request = core.request(options)
    engine:add(request)
    repeat
      for i = #finished, 1, -1 do finished[i] = nil end
      engine:wait(request, nil, nil, nil, nil, finished, changed)
    until request:state() ~= "running"
    local audio = request:take()
    if request:status() ~= 200 or #audio ~= bytes then error("core_seq: a wrong answer", 0) end
    request:close()
    body:close()
  end
  convert_in_core() -- connect first
  local c0 = clock.cpu()
  for _ = 1, count do convert_in_core() end
  out("cpu_us", ("%.3f"):format((clock.cpu() - c0) / count * 1e6))
end

function modes.upload(base, path, kind)
  local client = client_for(base)
  convert(client, { text = "hello" }) -- connect first
  local audio
  if kind == "string" then
    local f = assert(io.open(path, "rb"))
    audio = f:read("a")
    f:close()
  elseif kind == "file" then
    audio = fish.file(path)
  else
    error("kind must be string or file")
  end
  local args = { text = "hello", references = { { audio = audio, text = "reference" } } }
  collectgarbage("collect")
  collectgarbage("collect")
  local peak_ok = reset_peak()
  local rss0 = status_kb("VmRSS")
  local t0 = clock.now()
  convert(client, args)
  local t1 = clock.now()
  local hwm = status_kb("VmHWM")
  out("seconds", ("%.6f"):format(t1 - t0))
  if peak_ok and rss0 and hwm then out("peak_kb", hwm - rss0) end
end

-- Where in its frame request i is made (raw.c spreads them the same way).
local function spawn_offset(i)
  local x = i * 0.6180339887498949
  return (x - math.floor(x)) * FRAME
end

-- A game loop at 60 fps: each frame calls fish.step(0) and looks at its
-- task; the game's update makes a request somewhere inside a frame. The
-- latency runs from fish.spawn to the frame that sees the answer.
function modes.frames(base, count)
  count = tonumber(count)
  local client = client_for(base)
  convert(client, { text = "hello" }) -- the connection is made (a blocking call)
  local latencies = {}
  local frame = clock.now()
  for i = 1, count do
    frame = frame + FRAME
    clock.sleep_until(frame)
    fish.step(0)
    clock.sleep_until(frame + spawn_offset(i))
    local t0 = clock.now()
    local task = fish.spawn(function() return client.convert({ text = "hello" }) end)
    while true do
      frame = frame + FRAME
      clock.sleep_until(frame)
      fish.step(0)
      local done, audio, message = task:result()
      if done then
        if not audio then error("fish.convert failed: " .. tostring(message), 0) end
        break
      end
    end
    latencies[i] = clock.now() - t0
    frame = frame + FRAME -- a frame with nothing waiting
    clock.sleep_until(frame)
    fish.step(0)
  end
  out("latency_ms", ("%.3f"):format(percentile(latencies, 0.5) * 1e3))
end

-- How many requests the server holds in a delayed answer right now.
local function server_waiting(stats_url)
  local pipe = assert(io.popen("curl -s --max-time 5 '" .. stats_url .. "'", "r"))
  local text = pipe:read("a")
  pipe:close()
  return tonumber(text:match("waiting (%d+)")) or -1
end

function modes.waiting(base, n, stats_url, frames)
  n, frames = tonumber(n), tonumber(frames)
  local client = client_for(base)
  for _ = 1, n do
    fish.spawn(function() return client.convert({ text = "hello" }) end)
  end
  -- Until every request has reached the server and waits there.
  local t0 = clock.now()
  local next_check, waiting = t0, 0
  while waiting < n do
    fish.step(0.01)
    if clock.now() >= next_check then
      waiting = server_waiting(stats_url)
      next_check = clock.now() + 0.1
    end
    if clock.now() - t0 > 30 then error("the requests did not all reach the server within 30 s", 0) end
  end
  local settled = clock.now() - t0

  local steps = {}
  local frame = clock.now()
  for f = 1, frames do
    frame = frame + FRAME
    clock.sleep_until(frame)
    local s0 = clock.now()
    local live = fish.step(0)
    steps[f] = clock.now() - s0
    if live ~= n then error("a task ended while it should wait", 0) end
  end
  waiting = server_waiting(stats_url)
  out("settle_s", ("%.3f"):format(settled))
  out("waiting_after", waiting)
  out("median_ms", ("%.4f"):format(percentile(steps, 0.5) * 1e3))
  out("p90_ms", ("%.4f"):format(percentile(steps, 0.9) * 1e3))
  out("p99_ms", ("%.4f"):format(percentile(steps, 0.99) * 1e3))
  io.stdout:flush()
  os.exit(0) -- the server sees the sockets close; nothing is torn down one by one
end

function modes.tasks(n)
  n = tonumber(n)
  local function body() fish.sleep(0) end
  local c0 = clock.cpu()
  for _ = 1, n do fish.spawn(body) end
  fish.run()
  local c1 = clock.cpu()
  out("cpu_us", ("%.3f"):format((c1 - c0) / n * 1e6))
end

local mode = arg[1]
if not modes[mode] then
  io.stderr:write("usage: fish_bench.lua seq|core_seq|upload|frames|waiting|tasks ...\n")
  os.exit(2)
end
modes[mode](select(2, (table.unpack or unpack)(arg))) -- luacheck: ignore 113 143
