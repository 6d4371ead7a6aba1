-- Run inside `nvim --headless --clean -u NONE -c "luafile <this>"` by
-- spec/hosts_spec.lua. A fish.live session driven only by fish.nvim: no
-- fish.step, nothing blocks. Text goes out in pieces from editor timers,
-- audio comes to on_audio, and finish() runs inside a fish task. The
-- editor's own 20 ms timer ticks all along. Over an idle stretch of the
-- session (nothing sent, no audio due) it records what fish.nvim did.
--
-- FISH_SPEC_LIVE_MODE:
--   await:     the pieces go out, then a task awaits finish() while the
--              server holds the audio back (its audio_delay fault): the idle
--              stretch is inside that wait.
--   callbacks: the session is made before require("fish.nvim"); the pieces
--              and a flush go out, the audio reaches on_audio with nobody
--              waiting, then comes the idle stretch, and only later a task
--              calls finish().
--   bulk:      once the socket is open, a send too big for the socket's
--              buffers and one of 325 characters, from an editor timer;
--              with nobody waiting, their audio must come (then a task
--              calls finish()).
--   cancel:    once the socket is open, cancel() from an editor timer.
--   timeout:   first_audio_timeout = 0.5 and a server that holds the audio
--              back: with nobody waiting, the session must fail on fish.live's
--              own timer.
-- Environment: FISH_SPEC_ROOT, FISH_SPEC_RESULT (where the JSON goes),
-- FISH_API_KEY and FISH_BASE_URL.
local uv = vim.uv or vim.loop
local result_path = assert(os.getenv("FISH_SPEC_RESULT"), "FISH_SPEC_RESULT not set")
local mode = os.getenv("FISH_SPEC_LIVE_MODE") or "await"

local function write_result(t)
  local f = assert(io.open(result_path, "w"))
  f:write(vim.fn.json_encode(t))
  f:close()
end

local function quit()
  vim.schedule(function() vim.cmd("qall!") end)
end

-- Run fn `ms` after the start, from an editor timer (in vim.schedule, as a
-- plugin's code would run).
local function at(ms, fn)
  local t = uv.new_timer()
  t:start(ms, 0, vim.schedule_wrap(function()
    t:close()
    fn()
  end))
end

local main_ok, main_err = pcall(function()
  local root = assert(os.getenv("FISH_SPEC_ROOT"), "FISH_SPEC_ROOT not set")
  package.path = root .. "/src/?.lua;" .. root .. "/src/?/init.lua;" .. package.path
  package.cpath = root .. "/build/luajit/?.so;" .. package.cpath
  local fish = require("fish")

  local ticks, last, max_gap = 0, nil, 0
  local started = uv.hrtime()
  local function now() return (uv.hrtime() - started) / 1e9 end
  local clock = uv.new_timer()
  clock:start(20, 20, function()
    local t = uv.hrtime()
    ticks = ticks + 1
    max_gap = math.max(max_gap, (t - (last or started)) / 1e9)
    last = t
  end)

  local res = { mode = mode, blocks = 0, bytes = 0 }
  local function done(extra)
    clock:stop()
    for k, v in pairs(extra) do res[k] = v end
    res.ticks, res.max_gap, res.elapsed = ticks, max_gap, now()
    write_result(res)
    quit()
  end
  local s -- the session
  local watchdog = uv.new_timer()
  watchdog:start(12000, 0, vim.schedule_wrap(function()
    done({ ok = false, error = "the session did not end within 12 s", state = s and s.state() })
  end))

  local on_first_audio -- run once the first audio came
  local function on_audio(bytes)
    res.blocks = res.blocks + 1
    res.bytes = res.bytes + #bytes
    res.first_audio_at = res.first_audio_at or now()
    if on_first_audio then
      local go = on_first_audio
      on_first_audio = nil
      vim.schedule(go)
    end
    res.in_fast_event = res.in_fast_event or vim.in_fast_event()
  end
  local opts = { reference_id = "", format = "mp3", on_audio = on_audio, idle_timeout = 10 }
  if mode == "timeout" then opts.first_audio_timeout = 0.5 end

  if mode == "callbacks" then
    -- Made before the driver exists: fish.nvim must pick up its socket.
    s = assert(fish.live(opts))
    require("fish.nvim")
  else
    require("fish.nvim")
    s = assert(fish.live(opts))
  end
  local nvim = require("fish.nvim")

  -- The driver's counters over [from, to] ms.
  local function measure(from, to)
    local before
    at(from, function() before = nvim.stats() end)
    at(to, function()
      local after = nvim.stats()
      res.idle = {
        seconds = (to - from) / 1000,
        socket_events = after.socket_events - before.socket_events,
        timer_fires = after.timer_fires - before.timer_fires,
        passes = after.passes - before.passes,
        blocks_before = res.blocks,
      }
    end)
  end

  local function finish_in_task()
    fish.spawn(function()
      res.finish_started = now()
      local ok, message = s.finish()
      done({ ok = ok == true, error = message, state = s.state(), in_task_fast = vim.in_fast_event() })
    end)
  end

  if mode == "await" then
    at(50, function() assert(s.send("Hello there. ")) end)
    at(150, function() assert(s.send("How are you today? ")) end)
    at(250, function() assert(s.send("Fine, thanks.")) end)
    -- finish() sends stop; the server then holds the audio 2.5 s.
    at(300, finish_in_task)
    measure(600, 2400)
  elseif mode == "callbacks" then
    at(50, function() assert(s.send("Hello there. ")) end)
    at(150, function()
      assert(s.send("How are you today?"))
      assert(s.flush())
    end)
    measure(900, 2900)
    at(3000, function() assert(s.send(" Fine, thanks.")) end)
    at(3100, finish_in_task)
  elseif mode == "bulk" then
    -- More than the socket takes at once (16 MB of spaces, which the server
    -- synthesises to nothing): the rest waits in the socket for POLLOUT,
    -- which the driver must then watch for, though no fish call moved the
    -- engine since the send.
    -- Once the socket is open, so the bytes go straight to it.
    local check = uv.new_timer()
    check:start(20, 20, vim.schedule_wrap(function()
      if s.state() ~= "open" or not check:is_active() then return end
      check:stop()
      assert(s.send(string.rep(" ", 16 * 1024 * 1024)))
      -- No flush (which would start a time limit, and so re-arm the
      -- driver): the server speaks once it holds chunk_length (300)
      -- characters.
      assert(s.send(string.rep("Hello there. ", 25)))
      -- Nobody waits now: only the driver can get the rest out, and the
      -- audio back. finish() is called once that audio came.
      on_first_audio = finish_in_task
    end))
  elseif mode == "cancel" then
    local check = uv.new_timer()
    check:start(20, 20, vim.schedule_wrap(function()
      if s.state() ~= "open" or not check:is_active() then return end
      check:stop()
      local sockets_open = nvim.stats().sockets
      s.cancel()
      -- Before anything moves the engine again: the socket's fd is closed,
      -- so the driver must have dropped its poll handle on it already.
      done({ ok = true, state = s.state(), sockets_open = sockets_open, sockets_after = nvim.stats().sockets })
    end))
  else -- timeout
    at(50, function()
      assert(s.send("Hello there."))
      assert(s.flush())
    end)
    -- Nobody waits: fish.live's first-audio timer alone must end it.
    at(2000, function()
      res.state_before = s.state()
      finish_in_task()
    end)
  end
end)

if not main_ok then
  write_result({ ok = false, error = "script failed: " .. tostring(main_err) })
  quit()
end
