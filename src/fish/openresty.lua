-- require("fish.openresty").start{...}: fish in an nginx worker (OpenResty,
-- or nginx with the lua module and lua-resty-core).
--
-- One driver per worker, an ngx.timer.at light thread, moves every transfer
-- of the worker; a request handler waiting for its transfer sleeps on an
-- ngx.semaphore that the driver posts when that transfer ends. Nothing polls
-- per request, so a worker's cost does not grow with the number waiting.
--
-- ngx APIs cannot wait on a foreign fd, so the driver cannot sleep on
-- libcurl's sockets: it looks at all of them at once, without waiting, with
-- one poll(2) (engine:poll_sockets), moves only the transfers whose socket
-- is ready, then sleeps with ngx.sleep until libcurl's timer or fish's own
-- (a time limit, a retry) is due, at most `tick` seconds. It runs only
-- while transfers run, and stops when the last one ends.
-- luacheck: globals ngx
local core = require("fish.core")
local loop = require("fish.loop")

local M = {}

local DEFAULT_TICK = 0.01
local SAFETY = 10 -- a waiter looks again this often even if never posted
local tick = DEFAULT_TICK
local semaphore -- ngx.semaphore, loaded by start()
local waiters = setmetatable({}, { __mode = "k" }) -- request -> { sema =, progress = }
local streaming = {}                                -- request -> its waiter, for streams
local driving = false
local counters = { passes = 0, posts = 0, drivers = 0 }

-- Phases where a handler may yield (ngx.sleep, semaphore:wait).
local YIELDING = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local function post(waiter)
  counters.posts = counters.posts + 1
  waiter.sema:post(1)
end

local function post_all()
  for _, waiter in pairs(waiters) do post(waiter) end
end

-- The driver: one light thread while any transfer runs.
local function drive()
  -- A live session's socket is no transfer: it keeps the driver too.
  while (loop.running() > 0 or loop.live_active()) and not ngx.worker.exiting() do
    counters.passes = counters.passes + 1
    local due, active = loop.drive("poll")
    -- A stream's waiter wants every new byte: wake those when a socket moved.
    if active > 0 then
      for _, waiter in pairs(streaming) do post(waiter) end
    end
    local sleep = tick
    if due then
      sleep = math.min(sleep, due - core.now())
      -- nginx's timers count whole milliseconds: a shorter sleep would
      -- return at once and spin until the time comes.
      if sleep > 0 then sleep = math.max(sleep, 0.001) else sleep = 0 end
    end
    ngx.sleep(sleep)
  end
end

local function driver(premature)
  if premature then
    driving = false
    post_all()
    return
  end
  local ok, err = pcall(drive)
  driving = false
  if not ok then
    ngx.log(ngx.ERR, "fish driver failed: ", tostring(err))
    post_all() -- no waiter stays asleep; each looks at its request again
  end
end

local function ensure_driver()
  if driving then return true end
  local ok, err = ngx.timer.at(0, driver)
  if not ok then return false, err end
  driving = true
  counters.drivers = counters.drivers + 1
  return true
end

-- Wait outside a fish task (loop.host.wait). A wait for a request sleeps on
-- its semaphore, as does a live session's wait (loop.wait_on, whose key
-- the driver's pass posts through loop.notify on news); any other wait (a retry's back-off, fish.sleep, a bare
-- condition) sleeps with ngx.sleep, as pause = ngx.sleep would.
local function wait(ready, deadline, on)
  if not YIELDING[ngx.get_phase()] then return false end
  local request = on and on.request
  if request then
    local waiter = waiters[request] or { sema = semaphore.new(0) }
    waiters[request] = waiter
    if on.progress then streaming[request] = waiter end
    while not ready() do
      local now = core.now()
      if deadline and now >= deadline then break end
      local ok, err = ensure_driver()
      if not ok then
        -- No timer left (lua_max_pending_timers): move things ourselves.
        ngx.log(ngx.WARN, "fish: no driver (", err, "), this request polls")
        loop.drive("poll")
        ngx.sleep(tick)
      else
        -- The driver posts when the transfer ends, whatever ended it (the
        -- answer, a time limit, a cancel). The timeout is only a safety net.
        local seconds = deadline and math.min(deadline - now, SAFETY) or SAFETY
        waiter.sema:wait(seconds)
      end
    end
    streaming[request] = nil
    -- A key of loop.wait_on (a live session's waiter) is used once.
    if type(request) == "table" or request:state() ~= "running" then waiters[request] = nil end
    return true, ready()
  end
  while not (ready and ready()) do
    local now = core.now()
    if deadline and now >= deadline then return true, false end
    -- Only a bare condition is polled; a plain sleep sleeps to its end.
    local seconds = deadline and deadline - now or 1
    if ready then seconds = math.min(seconds, tick) end
    ngx.sleep(seconds)
  end
  return true, true
end

local function ended(request)
  local waiter = waiters[request]
  if waiter then post(waiter) end
end

local function check_count(opts, name)
  local n = opts[name]
  if n == nil then return nil end
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 1000000 then
    error(("fish.openresty.start: option '%s' must be a whole number from 1 to 1000000, got %s")
      :format(name, tostring(n)), 3)
  end
  return n
end

-- start{ max_connections =, max_host_connections =, tick = }: install the
-- driver in this worker (again: change the options). Every fish call made
-- from a request handler then waits on a semaphore.
--   max_connections: at most this many connections to the API from this
--     worker (nil: no limit); transfers beyond it wait for a free one.
--   max_host_connections: the same, per host.
--   tick: the longest the driver sleeps between looks at the sockets
--     while transfers run, in seconds (default 0.01).
function M.start(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("fish.openresty.start: argument 1 must be a table of options or nil", 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "max_connections" and k ~= "max_host_connections" and k ~= "tick" then
      error("fish.openresty.start: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  local total, per_host = check_count(opts, "max_connections"), check_count(opts, "max_host_connections")
  local t = opts.tick
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0.001 or t > 1) then
    error("fish.openresty.start: option 'tick' must be a number of seconds from 0.001 to 1, got "
      .. tostring(opts.tick), 2)
  end
  if type(ngx) ~= "table" or not ngx.timer then
    error("fish.openresty.start: not running inside nginx's lua module", 2)
  end
  semaphore = require("ngx.semaphore") -- lua-resty-core
  tick = opts.tick or DEFAULT_TICK
  loop.engine():limit_connections(total, per_host)
  loop.host.sockets = true
  loop.host.wait = wait
  loop.host.ended = ended
  loop.host.notify = ended -- a live session's news: wake its waiter the same way
  -- A live session's socket must open and send while its handler is still
  -- writing text (sleeping between pieces, not waiting on fish): start the
  -- driver as soon as one is open, not at the first wait. In a phase
  -- without timers (init_by_lua) the first wait starts it instead.
  loop.host.moved = function()
    if not driving and loop.live_active() then pcall(ensure_driver) end
  end
end

-- The driver's counters: passes (looks at the sockets), posts (waiters
-- woken), drivers (light threads started), running (transfers now).
function M.stats()
  return {
    passes = counters.passes, posts = counters.posts, drivers = counters.drivers,
    running = loop.running(),
  }
end

return M
