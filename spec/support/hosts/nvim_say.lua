-- Run inside `nvim --headless --clean -u NONE -c "luafile <this>"` by
-- spec/hosts_spec.lua. Loads the example plugin from examples/nvim, runs
-- `:FishSay hello`, and meanwhile counts the ticks of the editor's own 20 ms
-- timer (unless FISH_SPEC_CLOCK=0: then nothing else runs in the editor).
-- Over the wait it also measures the process's CPU time and what fish's
-- driver (fish.nvim) did. When the conversion ends it writes a JSON result
-- and quits.
--
-- With FISH_SPEC_NEIGHBOUR=1, another "plugin" shares fish meanwhile: one
-- task of it fails unwatched (its error must reach vim.notify, not raise in
-- anyone's code) and one sleeps with fish.sleep (fish's own timer, which the
-- driver must fire without any tick).
--
-- With FISH_SPEC_STOP_MS=n, :FishSayStop runs n ms after :FishSay.
--
-- Environment: FISH_SPEC_ROOT (the repository), FISH_SPEC_RESULT (where
-- the JSON goes), FISH_SPEC_OUT (the audio file), plus FISH_API_KEY and
-- FISH_BASE_URL for the plugin.
local uv = vim.uv or vim.loop
local result_path = assert(os.getenv("FISH_SPEC_RESULT"), "FISH_SPEC_RESULT not set")

local function write_result(t)
  local f = assert(io.open(result_path, "w"))
  f:write(vim.fn.json_encode(t))
  f:close()
end

-- This process's CPU time in seconds, from the kernel's scheduler (ns).
local function cpu_seconds()
  local f = assert(io.open("/proc/self/schedstat", "r"))
  local ns = tonumber(f:read("*l"):match("^(%d+)"))
  f:close()
  return ns / 1e9
end

local function quit()
  vim.schedule(function() vim.cmd("qall!") end)
end

local main_ok, main_err = pcall(function()
  local root = assert(os.getenv("FISH_SPEC_ROOT"), "FISH_SPEC_ROOT not set")
  package.path = root .. "/src/?.lua;" .. root .. "/src/?/init.lua;" .. package.path
  package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

  vim.opt.runtimepath:append(root .. "/examples/nvim")
  vim.cmd("runtime! plugin/fish_say.lua")
  vim.g.fish_say = { play = false, format = "mp3", out = assert(os.getenv("FISH_SPEC_OUT")) }

  -- The editor's own timer: if anything blocked the loop, it would stop ticking.
  local ticks, last, max_gap = 0, nil, 0
  local started = uv.hrtime()
  local clock = uv.new_timer()
  if os.getenv("FISH_SPEC_CLOCK") ~= "0" then clock:start(20, 20, function()
    local now = uv.hrtime()
    ticks = ticks + 1
    max_gap = math.max(max_gap, (now - (last or started)) / 1e9)
    last = now
  end) end

  local watchdog = uv.new_timer()
  watchdog:start(12000, 0, vim.schedule_wrap(function()
    write_result({ ok = false, error = "no FishSayDone within 12 s", ticks = ticks })
    quit()
  end))

  vim.api.nvim_create_autocmd("User", {
    pattern = "FishSayDone",
    once = true,
    callback = function()
      local elapsed = (uv.hrtime() - started) / 1e9
      local cpu = cpu_seconds() - vim.g.fish_spec_cpu0
      local driver = require("fish.nvim").stats()
      local driver0 = vim.g.fish_spec_driver0
      clock:stop()
      watchdog:stop()
      local last_result = vim.g.fish_say_last or {}
      write_result({
        ok = last_result.ok == true,
        path = last_result.path,
        bytes = last_result.bytes,
        error = last_result.error,
        ticks = ticks,
        max_gap = max_gap,
        elapsed = elapsed,
        command_seconds = vim.g.fish_spec_command_seconds,
        jobs_running = require("fish_say").running(),
        cpu_seconds = cpu,
        socket_events = driver.socket_events - driver0.socket_events,
        timer_fires = driver.timer_fires - driver0.timer_fires,
        passes = driver.passes - driver0.passes,
        notified = (_G.fish_spec_results and select(1, _G.fish_spec_results())) or {},
        neighbour = (_G.fish_spec_results and select(2, _G.fish_spec_results())) or {},
      })
      quit()
    end,
  })

  vim.g.fish_spec_cpu0 = cpu_seconds()
  local notified, neighbour = {}, {}
  if os.getenv("FISH_SPEC_NEIGHBOUR") == "1" then
    local notify = vim.notify
    vim.notify = function(message, ...)
      notified[#notified + 1] = tostring(message)
      return notify(message, ...)
    end
    require("fish.nvim")
    local fish = require("fish")
    fish.spawn(function() error("the neighbour plugin broke") end)
    local t0 = uv.hrtime()
    fish.spawn(function()
      fish.sleep(0.3)
      neighbour.slept = (uv.hrtime() - t0) / 1e9
      neighbour.in_fast_event = vim.in_fast_event()
    end)
    -- A spawn from a luv callback (a fast event, where editor calls fail):
    -- the task's first slice must run in vim.schedule, not right there.
    uv.new_timer():start(10, 0, function()
      fish.spawn(function()
        neighbour.fast_spawn_in_fast_event = vim.in_fast_event()
        neighbour.fast_spawn_buffer = vim.api.nvim_get_current_buf()
      end)
    end)
  end
  -- Read back when the conversion is done (vim.g would copy the tables now).
  _G.fish_spec_results = function() return notified, neighbour end

  local before = uv.hrtime()
  vim.cmd("FishSay hello")
  vim.g.fish_spec_driver0 = require("fish.nvim").stats()
  vim.g.fish_spec_command_seconds = (uv.hrtime() - before) / 1e9
  local stop_ms = tonumber(os.getenv("FISH_SPEC_STOP_MS") or "")
  if stop_ms then
    uv.new_timer():start(stop_ms, 0, vim.schedule_wrap(function() vim.cmd("FishSayStop") end))
  end
  if require("fish_say").running() == 0 and vim.g.fish_say_last == nil then
    error("FishSay started nothing: " .. vim.fn.execute("messages"), 0)
  end
end)

if not main_ok then
  write_result({ ok = false, error = "script failed: " .. tostring(main_err) })
  quit()
end
