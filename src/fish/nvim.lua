-- require("fish.nvim"): fish driven by Neovim's own event loop (libuv).
--
-- Nothing ticks. libcurl says which sockets to watch and when its timer is
-- due (engine:watch_changes(), engine:timer_due()); this module keeps one
-- vim.uv poll handle per socket and one timer, set to the earliest of
-- libcurl's timer and fish's own (a retry back-off, fish.sleep, a request's
-- time limit). A socket event moves only the transfers on that socket
-- (curl_multi_socket_action), at once. Tasks then resume in vim.schedule,
-- where they may use any editor API; fish.spawn alone starts a task, nobody
-- has to call fish.step.
--
-- fish.step and blocking calls still work in the same Lua state: they move
-- the same engine, and this module picks up the sockets they changed.
-- luacheck: globals vim
local core = require("fish.core")
local loop = require("fish.loop")
local tasks = require("fish.tasks")

if type(vim) ~= "table" or not (vim.uv or vim.loop) then
  error("fish.nvim: runs only inside Neovim (no vim.uv here); elsewhere drive fish with fish.step or fish.run", 2)
end
local uv = vim.uv or vim.loop -- vim.uv is Neovim 0.10+, vim.loop before

local M = {}

local polls = {}   -- fd -> its uv poll handle
local changes = {} -- scratch for engine:watch_changes
local timer        -- one uv timer, armed for the earliest due time
local armed_at     -- the absolute time it is armed for, or nil
local scheduled = false
-- What the driver did, for tests and the bench: socket events handled,
-- timer expiries, passes that resumed tasks.
local counters = { socket_events = 0, timer_fires = 0, passes = 0 }

local after_move -- forward

local EVENTS = { r = "in", w = "out", rw = "inout", wr = "inout" }
local WANT = { ["in"] = "r", out = "w", inout = "rw" }

local function on_socket(fd, err, events)
  counters.socket_events = counters.socket_events + 1
  -- luv passes "r", "w", "rw" (newer ones may add "d", "p": ignore those).
  local what = err and "err" or EVENTS[(events or ""):gsub("[^rw]", "")]
  after_move(loop.drive("action", fd, what))
end

-- Bring the poll handles in line with what libcurl (and other C code of
-- fish) asked for since the last look. Changes come in order, so a closed
-- fd's handle is closed before a new socket with the same number gets one.
local function sync()
  local n = loop.engine():watch_changes(changes)
  for i = 1, n do
    local fd, what = changes[2 * i - 1], changes[2 * i]
    local handle = polls[fd]
    if what == "remove" then
      if handle then
        polls[fd] = nil
        handle:stop()
        handle:close()
      end
    elseif what == "none" then
      if handle then handle:stop() end
    else
      if not handle then
        handle = uv.new_socket_poll(fd)
        polls[fd] = handle
      end
      handle:start(WANT[what], function(err, events) on_socket(fd, err, events) end)
    end
  end
end

local function on_timer()
  counters.timer_fires = counters.timer_fires + 1
  armed_at = nil
  after_move(loop.drive("timeout"))
end

local function arm(due)
  if due == armed_at then return end
  timer:stop()
  armed_at = due
  if due then
    local ms = math.max(0, math.ceil((due - core.now()) * 1000))
    timer:start(ms, 0, on_timer)
  end
end

-- Resume the ready tasks in vim.schedule: a uv callback is a fast event,
-- where most editor functions may not be called.
local function pass()
  scheduled = false
  counters.passes = counters.passes + 1
  local ok, err = pcall(loop.run_pass)
  -- Even if the pass failed, the watch and the timer must follow the
  -- engine, or the transfers still running would never be woken.
  sync()
  arm(loop.due())
  -- Tasks woken during the pass run in the next one.
  if tasks.queued() > 0 then M.schedule() end
  if not ok then error(err, 0) end
end

function M.schedule()
  if scheduled then return end
  scheduled = true
  vim.schedule(pass)
end

after_move = function(due)
  sync()
  arm(due)
  -- Streams wait for bytes, which only a pass looks at; fish.live delivers
  -- to sessions nobody waits on, and runs their timers, in a pass too.
  if tasks.queued() > 0 or tasks.polling() > 0 or loop.live_wants(core.now()) then M.schedule() end
end

-- The driver's counters: { socket_events, timer_fires, passes, sockets }.
function M.stats()
  local n = 0
  for _ in pairs(polls) do n = n + 1 end
  return {
    socket_events = counters.socket_events, timer_fires = counters.timer_fires,
    passes = counters.passes, sockets = n,
  }
end

-- Installed once per Lua state, when first required.
timer = uv.new_timer()
loop.host.sockets = true
loop.host.moved = function()
  sync()
  arm(loop.due())
end
tasks.hooks.ready = M.schedule
-- fish.spawn runs a new task at once, unless called from a fast event (a
-- luv callback), where editor calls fail: then it runs in vim.schedule.
loop.host.lazy_spawn = function() return vim.in_fast_event() end
-- What is already running or ready when this is required.
loop.host.moved()
if tasks.queued() > 0 then M.schedule() end

return M
