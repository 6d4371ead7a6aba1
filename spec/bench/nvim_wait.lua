-- The Neovim row of `make bench`, run by spec/bench/run.lua inside
-- `nvim --headless --clean -u NONE -c "luafile <this>"`: the example plugin
-- (examples/nvim) converts one text while the fast server holds the answer
-- for a few seconds. Over that wait it counts how often fish woke: the
-- fish.nvim driver's socket events, timer expiries and task passes, plus any
-- fish.step call (a polling plugin's ticks), and the editor process's CPU
-- time, then writes them as "key value" lines and quits.
--
-- Environment: FISH_BENCH_ROOT (the fish tree: src/, build/luajit/,
-- examples/nvim/), FISH_BENCH_RESULT (where the lines go), FISH_BENCH_OUT
-- (the audio file), FISH_API_KEY and FISH_BASE_URL for the plugin.
-- luacheck: globals vim
local uv = vim.uv or vim.loop
local result_path = assert(os.getenv("FISH_BENCH_RESULT"), "FISH_BENCH_RESULT not set")

local function write_result(t)
  local f = assert(io.open(result_path, "w"))
  for key, value in pairs(t) do f:write(key, " ", tostring(value), "\n") end
  f:close()
end

local function quit()
  vim.schedule(function() vim.cmd("qall!") end)
end

local function cpu_seconds()
  local r = uv.getrusage()
  return r.utime.sec + r.utime.usec / 1e6 + r.stime.sec + r.stime.usec / 1e6
end

local main_ok, main_err = pcall(function()
  local root = assert(os.getenv("FISH_BENCH_ROOT"), "FISH_BENCH_ROOT not set")
  package.path = root .. "/src/?.lua;" .. root .. "/src/?/init.lua;" .. package.path
  package.cpath = root .. "/build/luajit/?.so;" .. package.cpath
  vim.opt.runtimepath:append(root .. "/examples/nvim")
  vim.cmd("runtime! plugin/fish_say.lua")
  vim.g.fish_say = { play = false, format = "mp3", out = assert(os.getenv("FISH_BENCH_OUT")) }

  -- A plugin that polls steps fish through the module table: count those
  -- calls too.
  local fish = require("fish")
  local steps, step = 0, fish.step
  fish.step = function(...)
    steps = steps + 1
    return step(...)
  end

  local watchdog = uv.new_timer()
  watchdog:start(20000, 0, vim.schedule_wrap(function()
    write_result({ ok = false, error = "no FishSayDone within 20 s" })
    quit()
  end))

  local started, cpu0
  vim.api.nvim_create_autocmd("User", {
    pattern = "FishSayDone",
    once = true,
    callback = function()
      local elapsed = (uv.hrtime() - started) / 1e9
      local cpu = cpu_seconds() - cpu0
      local driver = package.loaded["fish.nvim"] and package.loaded["fish.nvim"].stats()
        or { socket_events = 0, timer_fires = 0, passes = 0 }
      watchdog:stop()
      local last = vim.g.fish_say_last or {}
      write_result({
        ok = last.ok == true,
        error = last.error and last.error:gsub("%s", " ") or "none",
        seconds = ("%.3f"):format(elapsed),
        cpu_s = ("%.4f"):format(cpu),
        steps = steps,
        wakeups = steps + driver.socket_events + driver.timer_fires + driver.passes,
      })
      quit()
    end,
  })

  started, cpu0 = uv.hrtime(), cpu_seconds()
  vim.cmd("FishSay hello")
end)

if not main_ok then
  write_result({ ok = false, error = ("script failed: " .. tostring(main_err)):gsub("%s", " ") })
  quit()
end
