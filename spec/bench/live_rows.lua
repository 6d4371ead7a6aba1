-- The live TTS rows of `make bench` (fish.live), loaded by run.lua:
--
--   dofile(BENCH .. "/live_rows.lua")(helpers)
--
-- adds the jobs (BENCH_ONLY=live runs only these) and their table lines.
-- They run against the local Fish-compatible server
-- (spec/support/fish_server.py, which sends the first audio the moment a
-- flush arrives), not the nginx fast server: nginx speaks no WebSocket
-- here. A fresh server for each measurement. The raw C side is live_raw.c,
-- a plain TCP socket with the same Upgrade request and the same masked
-- msgpack messages; the fish side is live_bench.lua. Both read the
-- monotonic clock (benchclock for Lua).
--
-- Each measurement: one session, LATENCY_FLUSHES flushes of TEXT (1 s of
-- 44.1 kHz PCM each: the server makes 0.05 s per character), each flush's
-- audio read whole before the next; its result is the median over those
-- flushes. The table gives the median of those over the runs, and the
-- difference fish - raw C (the target: at most 1 ms).
return function(h)
  local job, q = h.job, h.q
  local SERVER = h.BENCH .. "/../support/fish_server.py"
  local PYTHON = os.getenv("FISH_TEST_PYTHON") or "/usr/bin/python3"
  local KEY = "bench-live-key"
  local TEXT = "twenty characters!!!" -- 20 characters: 1 s of audio per flush
  local RATE = 44100
  local LATENCY_FLUSHES = 200
  local MEMORY_FLUSHES, MEMORY_WARMUP = 600, 30 -- 10 minutes of audio, 1 s per flush

  local built = false
  local function build()
    if built then return end
    h.must(("cc -O2 -std=c99 %s -o %s"):format(q(h.BENCH .. "/live_raw.c"), q(h.BUILD .. "/live_raw")),
      "building live_raw.c")
    built = true
  end

  -- Start fish_server.py on a free port; returns its port and a stop function.
  local function start_server()
    local log = h.BUILD .. "/live_server.log"
    local cmd = ("env -u LD_PRELOAD %s %s --port 0 --quiet --api-key %s 2>%s & echo PID $!; wait"):format(
      q(PYTHON), q(SERVER), q(KEY), q(log))
    local pipe = assert(io.popen("sh -c " .. q(cmd), "r"))
    local pid, port
    for line in pipe:lines() do
      pid = pid or line:match("^PID (%d+)")
      port = port or line:match("^LISTENING (%d+)")
      if pid and port then break end
    end
    local function stop()
      if pid then h.sh("kill " .. pid) end
      pipe:close()
    end
    if not port then
      stop()
      error("fish_server.py did not start: " .. (h.read_file(log) or ""), 0)
    end
    return port, stop
  end

  local function with_server(run)
    build()
    local port, stop = start_server()
    local ok, result = pcall(run, port)
    stop()
    if not ok then error(result, 0) end
    return result
  end

  local function raw_side()
    return with_server(function(port)
      local cmd = ("%s %s %s %d %s %d"):format(q(h.BUILD .. "/live_raw"), port, q(KEY), LATENCY_FLUSHES, q(TEXT), RATE)
      local ok, out = h.sh(cmd)
      if not ok then error("live_raw:\n" .. out, 0) end
      return h.parse(out)
    end)
  end

  local function fish_side(lua, args)
    return function()
      return with_server(function(port)
        local env = ("LUA_PATH=%s LUA_CPATH=%s "):format(
          q(h.FISH .. "/src/?.lua;" .. h.FISH .. "/src/?/init.lua;;"),
          q(h.FISH .. "/build/" .. lua.dir .. "/?.so;" .. h.BUILD .. "/" .. lua.dir .. "/?.so;;"))
        local cmd = ("env %s%s %s %s %s"):format(env, lua.name, q(h.BENCH .. "/live_bench.lua"),
          args[1], table.concat({ port, q(KEY), args[2], q(TEXT), RATE, args[3] }, " "))
        local ok, out = h.sh(cmd)
        if not ok then error(lua.name .. " live_bench.lua " .. args[1] .. ":\n" .. out, 0) end
        return h.parse(out)
      end)
    end
  end

  local function sides(args, with_raw)
    local t = {}
    for _, lua in ipairs(h.LUAS) do t[lua.name] = fish_side(lua, args) end
    if with_raw then t.raw = raw_side end
    return t
  end

  job("live_latency", sides({ "latency", LATENCY_FLUSHES, "block" }, true))
  job("live_latency_step", sides({ "latency", LATENCY_FLUSHES, "step" }))
  job("live_memory", sides({ "memory", MEMORY_FLUSHES, MEMORY_WARMUP }))

  local function fmt_kb(kb) return ("%+.2f MB"):format(kb / 1024) end
  local lines = h.lines
  lines[#lines + 1] = { "Live TTS: flush() to the first on_audio, blocking (raw C: to the first audio bytes)",
    "live_latency", "first_audio_ms", h.fmt_ms, "diff", "≤ raw C + 1 ms", raw_key = "first_byte_ms" }
  lines[#lines + 1] = { "… the same, 90th percentile of a session's 200 flushes", "live_latency",
    "first_audio_p90_ms", h.fmt_ms, "diff", "–", raw_key = "first_byte_p90_ms" }
  lines[#lines + 1] = { "… the same, fish.step(0) in a busy loop instead of blocking", "live_latency_step",
    "first_audio_ms", h.fmt_ms, "diff", "–", raw_job = "live_latency", raw_key = "first_byte_ms" }
  lines[#lines + 1] = { "Live TTS, 600 flushes of 1 s (10 min of audio, unpaced): VmRSS growth after 30",
    "live_memory", "rss_growth_kb", fmt_kb, nil, "< +1 MB" }
  lines[#lines + 1] = { "… the same: VmHWM growth after 30", "live_memory", "hwm_growth_kb", fmt_kb, nil, "< +1 MB" }
end
