-- The one waiting primitive of fish. Every call that has to wait (a
-- transfer, a retry back-off, wait_trained's polling, fish.sleep) ends up in
-- loop.wait_until, which picks one of three ways to wait:
--   * inside a fish task: yield to the fish scheduler, suspending that task;
--   * with a host pause function (ngx.sleep, ...): step and let the host pause;
--   * otherwise: block in curl_multi_poll, which sleeps without using CPU.
-- fish never yields just because coroutine.isyieldable() is true: OpenResty,
-- plenary.async and game schedulers run code in coroutines fish does not own.
--
-- This file holds the engine, the pump that routes its events, the waits and
-- fish.step/fish.run. Tasks and their ready queue are in fish.tasks, request
-- watchdogs in fish.deadlines, cancel tokens in fish.tokens.
local core = require("fish.core")
local errors = require("fish.errors")
local tasks = require("fish.tasks")
local deadlines = require("fish.deadlines")
local tokens = require("fish.tokens")

local loop = {}

local unpack = table.unpack or unpack -- luacheck: ignore 113 143

local engine                                            -- one per Lua state, made on first use
local tracked = setmetatable({}, { __mode = "v" })      -- engine id -> running request started here
local tracked_count = 0                                 -- how many `tracked` holds, as far as we know
local id_of = setmetatable({}, { __mode = "k" })        -- request -> engine id
local started = 0                                       -- requests started so far
local last_pump, pump_due = -math.huge, nil           -- when the engine last moved, and what it asked for
local finished_scratch = {}
local changed_scratch = {}                              -- live sockets with news, from the engine
local live_owner = setmetatable({}, { __mode = "v" })   -- engine id -> the live session on that socket
local live_step                                         -- fish.live's delivery, run by every fish.step
local live_due_at                                       -- when live_step last asked to run again
local live_news = false                                 -- a live socket had news since live_step last ran

local WAIT = tasks.WAIT
local HOST_PAUSE_STEP = 0.01 -- a host pause cannot be woken by a socket: poll this often
local MAX_SLEEP = 1.0 -- re-check deadlines at least this often

-- A wait in seconds: a number, not negative and not NaN (NaN fails every
-- comparison, so a NaN deadline never passes and a NaN poll time is
-- undefined in C). math.huge is fine: every wait is cut to MAX_SLEEP
-- slices. Raises at the public function's caller.
function loop.check_seconds(fn, what, value, optional, position)
  if optional and value == nil then return end
  if type(value) ~= "number" or value ~= value or value < 0 then
    error(("%s: argument %d (%s) must be %sa non-negative number of seconds, got %s"):format(
      fn, position or 1, what, optional and "nil or " or "", tostring(value)), 3)
  end
end

function loop.engine()
  if not engine then engine = core.engine() end
  return engine
end

-- A host driver (fish.nvim, fish.openresty) moves the engine by socket
-- events instead of polling it, and hooks in here. `sockets = true` makes
-- every pump use socket mode too (curl_multi_socket_action on the ready
-- fds and the due timer instead of curl_multi_perform): libcurl reports a
-- socket that perform opened only once the socket path runs its transfer,
-- so mixing the two would leave the host blind to it until a timer fired.
-- Each hook may be nil:
--   moved():  the engine moved outside the driver (a request started or was
--             canceled, a pump): its fds and timer may have changed.
--   ended(request): the request is over (after its task was woken).
--   lazy_spawn(): true when fish.spawn must queue the new task for the
--             host's next pass instead of running it at once.
--   wait(ready, deadline, on): wait outside a fish task as wait_for would;
--             returns handled, result (handled false: wait the usual way).
--             on.request may be a request, or a key of loop.wait_on.
--   notify(key): loop.notify(key) was called (a live session has news for
--             whoever waits on `key` with loop.wait_on).
local host = {}
loop.host = host

local function earliest(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return a < b and a or b
end

-- ---- transfers ------------------------------------------------------------------

local function untrack(request)
  local id = id_of[request]
  if id and tracked[id] then
    tracked[id] = nil
    tracked_count = tracked_count - 1
  end
end

-- The request is over: drop its watchdog, wake the task that awaits it.
local function ended(request)
  untrack(request)
  deadlines.forget(request)
  tasks.request_ended(request)
  if host.ended then host.ended(request) end
end

-- Cancel a running request from fish (a deadline, a token, a canceled
-- task). request:cancel() ends it at once, so the engine will never report
-- it: its waiter is woken here.
local function cancel_request(request)
  if request:state() == "running" then request:cancel() end
  ended(request)
  if host.moved then host.moved() end
end
loop.cancel_request = cancel_request

tokens.hooks.cancel_request = cancel_request
tokens.hooks.wake = tasks.wake
tokens.hooks.wakeup = function() if engine then engine:wakeup() end end

-- Start a request. `limits` holds seconds: first_byte (from the start until
-- the first response byte), idle (between bytes), total. Each is optional.
function loop.start(request, limits)
  local id = loop.engine():add(request)
  started = started + 1
  id_of[request] = id
  tracked[id] = request
  tracked_count = tracked_count + 1
  deadlines.watch(request, limits)
  if host.moved then host.moved() end
end

-- Which limit canceled this request ("first_byte", "idle", "total"), if any.
loop.expired = deadlines.expired

-- Can a wait on a request be done in C (e:wait, below)? Only outside any
-- task and host loop, with no pause and nothing watching the transfer:
-- nobody else runs while such a call blocks, so it needs no watchdog entry
-- and no pass through the loop until something else happens.
function loop.waits_in_c(pause, watching)
  return not (pause or watching or host.wait or host.sockets or tasks.current())
end

-- A request ended without the engine reporting it (closed, canceled by
-- someone else, collected): the engine runs fewer than we track. Rare, so
-- a look at each tracked request is fine here.
local function sweep()
  local count = 0
  for _, request in pairs(tracked) do
    if request:state() ~= "running" then
      ended(request)
    else
      count = count + 1
    end
  end
  tracked_count = count
end

-- Move every transfer as far as it can go without waiting, and wake the
-- tasks whose request finished, whose deadline or timer came. Returns the
-- absolute time by which we must look again (or nil: only when woken).
-- Route what the engine reported (finished ids in finished_scratch, live
-- sockets with news in changed_scratch; how many still run, or nil if
-- unknown), then enforce deadlines and fire timers. `curl_in`: seconds
-- until libcurl wants to move again, or nil.
local function settle(running, curl_in)
  last_pump = core.now()
  for i = 1, #finished_scratch do
    local request = tracked[finished_scratch[i]]
    if request then ended(request) end
  end
  -- A live socket with news: its session only takes note and wakes its
  -- waiters; the caller's callbacks run later, from a step or a wait.
  for i = 1, #changed_scratch do
    local owner = live_owner[changed_scratch[i]]
    if owner then
      owner:changed()
      live_news = true
    end
  end
  if running and running < tracked_count then sweep() end
  local now = core.now()
  local due = deadlines.enforce(now, cancel_request)
  due = earliest(due, tasks.fire_timers(now))
  if curl_in then due = earliest(due, now + curl_in) end
  -- fish.live's own timers (a time limit, a retry) run in its step, so a
  -- host driver arming its timer from this must count them. One already
  -- due needs a pass, not a timer (loop.live_wants says so).
  if live_due_at and live_due_at > now then due = earliest(due, live_due_at) end
  pump_due = due
  return due
end

local function clear_finished()
  for i = #finished_scratch, 1, -1 do finished_scratch[i] = nil end
  for i = #changed_scratch, 1, -1 do changed_scratch[i] = nil end
end

local function pump()
  local e = loop.engine()
  clear_finished()
  local due
  if host.sockets then
    due = settle((e:poll_sockets(finished_scratch, changed_scratch)), e:timer_due())
  else
    due = settle(e:perform(finished_scratch, changed_scratch), e:timeout())
  end
  if host.moved then host.moved() end
  return due
end

-- For host drivers: move the engine in socket mode and route what finished
-- exactly as pump does. `how`: "action" (the host saw `events` on `fd`),
-- "timeout" (a host timer fired), "poll" (look at every watched fd without
-- waiting). Returns the absolute time fish must look again (libcurl's
-- timer, a deadline, a task's timer) or nil, and for "poll" how many fds
-- were ready.
function loop.drive(how, fd, events)
  local e = loop.engine()
  clear_finished()
  local running, active
  if how == "action" then
    running = e:socket_action(fd, events, finished_scratch, changed_scratch)
  elseif how == "timeout" then
    local curl_in = e:timer_due()
    if curl_in and curl_in <= 0 then running = e:socket_timeout(finished_scratch, changed_scratch) end
  elseif how == "poll" then
    running, active = e:poll_sockets(finished_scratch, changed_scratch)
  else
    error("loop.drive: unknown way '" .. tostring(how) .. "'", 2)
  end
  return settle(running, e:timer_due()), active
end

-- When fish must look again without moving anything (or nil): after tasks
-- ran, their new timers and requests count.
function loop.due()
  local now = core.now()
  local due = earliest(deadlines.enforce(now, cancel_request), tasks.next_timer())
  due = earliest(due, live_due_at)
  local curl_in = engine and engine:timer_due()
  if curl_in then due = earliest(due, now + curl_in) end
  return due
end

-- How many requests started here still run.
function loop.running()
  return tracked_count
end

-- ---- tasks ------------------------------------------------------------------

local Task = tasks.Task
local current_task = tasks.current

function loop.in_task()
  return current_task() ~= nil
end

-- Is the current task canceled? Its fish calls then return at once.
function loop.task_canceled()
  local task = current_task()
  return task ~= nil and task.canceled
end

-- A request started outside a step is handed to libcurl at once only while
-- this few run: each curl_multi_perform visits every running transfer, and
-- a burst of thousands of spawns must not cost a pass over all of them each.
-- Past it, requests go out at the next step, as they always may.
local KICK_LIMIT = 32

-- fish.spawn. Outside a step and outside any task (a game's frame code, a
-- script), the task runs at once until its first wait, and a request it
-- started leaves now rather than at the next step, so the answer can be
-- seen by the very next fish.step. Inside a task (or a step's pass), the
-- new task waits for the next pass, as it always did.
function loop.spawn(fn, ...)
  if type(fn) ~= "function" then error("fish.spawn: argument 1 must be a function", 2) end
  if tasks.resuming or current_task() then return tasks.spawn(fn, ...) end
  -- A host may say the caller's context cannot run task code now (Neovim's
  -- fast event callbacks, where editor calls fail): the task then waits for
  -- the host's next pass, as a spawn inside a task does.
  if host.lazy_spawn and host.lazy_spawn() then return tasks.spawn(fn, ...) end
  local before = started
  local task = tasks.spawn_now(fn, ...)
  if started ~= before and tracked_count <= KICK_LIMIT then
    -- On a new connection the first pass only begins connect(); a near
    -- server has accepted by the time a zero-wait poll looks, and a second
    -- pass sends the request. Neither pass waits.
    pump()
    loop.engine():poll(0)
    pump()
  end
  return task
end

loop.on_error = tasks.on_error

-- ---- pcall across yields -------------------------------------------------------

-- PUC Lua 5.1 cannot yield across pcall, so pcall(fish.convert, ...) in a
-- task fails there with "attempt to yield across metamethod/C-call
-- boundary". 5.2+ and LuaJIT can, and use pcall itself.
local PCALL_YIELDS = _VERSION ~= "Lua 5.1" or type(jit) == "table"
local pack = tasks.pack
local task_of = tasks.task_of

local function copcall(fn, ...)
  local co = coroutine.create(fn)
  -- The protected coroutine runs on behalf of the current task, so fish
  -- calls inside it still suspend that task rather than blocking.
  local task = current_task()
  if task then task_of[co] = task end
  local resumed = pack(coroutine.resume(co, ...))
  while coroutine.status(co) ~= "dead" do
    -- It yielded: hand the yield to whoever resumed us, and the answer back.
    resumed = pack(coroutine.resume(co, coroutine.yield(unpack(resumed, 2, resumed.n))))
  end
  task_of[co] = nil
  if resumed[1] then return true, unpack(resumed, 2, resumed.n) end
  return false, resumed[2]
end

-- fish.pcall(fn, ...): pcall that lets fish calls inside fn suspend their
-- task, on every ABI.
loop.pcall = PCALL_YIELDS and pcall or copcall

-- ---- the waiting primitive ---------------------------------------------------

-- Wait until ready() is true or the absolute time `deadline` passes (either
-- may be nil). `pause` is a host's sleep function, or nil. `on_cancel` runs
-- if the waiting task is canceled. `on` says what announces that ready()
-- may have become true, so a suspended task is woken by it instead of being
-- polled: { request = r } (r ends; with progress = true, bytes also count
-- and are polled), { task = t } (t ends), { token = k } (k is canceled).
-- Returns true if ready() holds.
local function wait_for(ready, deadline, pause, on_cancel, on)
  local task = current_task()
  if task then
    if task.canceled then
      -- A canceled task's waits end at once: cancel what it waits on (the
      -- request of loop.await), which is how a canceled task's transfer
      -- ends even when the cancel came while it waited on something else
      -- (a fish.sleep in on_chunk). If that does not make it ready, still
      -- yield, once: a task that keeps waiting in a loop then cannot freeze
      -- the other tasks and the host (the scheduler resumes a canceled task
      -- on its next pass).
      if on_cancel then on_cancel() end
      if ready and ready() then return true end
      coroutine.yield(WAIT, ready, nil, on_cancel, on)
      return ready ~= nil and ready()
    end
    if ready == nil and deadline == nil then
      coroutine.yield(WAIT) -- a plain yield: go on at the next step
      return false
    end
    -- Woken by what it waits for, its timer or a cancel.
    while not (ready and ready()) do
      if deadline and core.now() >= deadline then return false end
      coroutine.yield(WAIT, ready, deadline, on_cancel, on)
      if task.canceled then return ready ~= nil and ready() end
    end
    return true
  end
  if host.wait then
    local handled, result = host.wait(ready, deadline, on)
    if handled then return result end
  end
  while true do
    -- Under a host pause, every waiting coroutine comes here on its own
    -- schedule: unless something is due, one engine step per
    -- HOST_PAUSE_STEP serves them all.
    local due = pump_due
    local t = core.now()
    if not pause or t - last_pump >= HOST_PAUSE_STEP or (due and t >= due) then due = pump() end
    if ready and ready() then return true end
    local now = core.now()
    if deadline and now >= deadline then return false end
    due = earliest(due, deadline)
    local sleep = due and math.max(0, due - now) or MAX_SLEEP
    if sleep > MAX_SLEEP then sleep = MAX_SLEEP end
    if pause then
      pause(math.min(math.max(sleep, 0.001), HOST_PAUSE_STEP))
    else
      loop.engine():poll(sleep)
    end
  end
end

function loop.wait_until(ready, deadline, pause, on_cancel)
  return wait_for(ready, deadline, pause, on_cancel, nil)
end

-- A blocking call's wait: e:wait moves the engine and sleeps in C, and
-- enforces the request's own time limits there. It comes back to Lua when
-- the request is over, something else finished or has news, one of fish's
-- other deadlines or timers is due, or a poll woke with nothing ready (so a
-- Ctrl-C hook runs); settle then routes it all as a pump would.
local function wait_in_c(request, limits)
  local e = loop.engine()
  local first_byte, idle, total
  if limits then first_byte, idle, total = limits.first_byte, limits.idle, limits.total end
  while true do
    clear_finished()
    -- Only this request running and no task: nothing else falls due.
    local within
    if tracked_count > 1 or tasks.count() > 0 or live_due_at then
      local due = loop.due()
      within = due and math.max(0, due - core.now()) or nil
    end
    local running, curl_in, expired = e:wait(request, within, first_byte, idle, total,
      finished_scratch, changed_scratch)
    if expired then
      deadlines.mark_expired(request, expired)
      cancel_request(request)
    end
    settle(running, curl_in)
    if request:state() ~= "running" then return end
  end
end

-- Start a request and wait in C until it is no longer running; for the
-- calls loop.waits_in_c allows (others use loop.start and loop.await).
function loop.transfer_in_c(request, limits)
  loop.start(request, nil)
  wait_in_c(request, limits)
end

-- Wait until the request is no longer running. With `on_progress`, call it
-- whenever new bytes may have arrived, so streams reach the caller as they
-- come, and once more when the request ends. `moved()`, if given, says
-- when there is something new for on_progress instead (default: new body
-- bytes). Canceling the waiting task cancels the request.
function loop.await(request, pause, on_progress, moved)
  if not on_progress and not host.wait and not current_task() then
    -- A blocking wait outside any task: nothing can cancel it and no one
    -- is woken, so it needs neither the cancel closure nor the `on` table.
    wait_for(function() return request:state() ~= "running" end, nil, pause)
    return
  end
  local function cancel() cancel_request(request) end
  if not on_progress then
    wait_for(function() return request:state() ~= "running" end, nil, pause, cancel, { request = request })
    return
  end
  local seen = 0
  local function ready()
    if request:state() ~= "running" then return true end
    if moved then return moved() end
    return (request:progress()) > seen
  end
  local on = { request = request, progress = true }
  repeat
    wait_for(ready, nil, pause, cancel, on)
    seen = request:progress()
    on_progress()
  until request:state() ~= "running"
end

-- ---- live sockets (fish.live) -----------------------------------------------------

-- Start a live socket on the engine; `owner:changed()` is called from the
-- pump whenever the engine reports news on it. The owner is held weakly: a
-- session nobody refers to is collected, and its socket closed.
function loop.add_live(sock, owner)
  local id = loop.engine():add_live(sock)
  live_owner[id] = owner
  if host.moved then host.moved() end
  return id
end

-- Wait as wait_for does, woken in a task by loop.notify(key) rather than
-- polled (a live session notifies the keys of its waiters on news).
function loop.wait_on(key, ready, deadline, pause, on_cancel)
  return wait_for(ready, deadline, pause, on_cancel, { request = key })
end

-- Wake what waits on `key`: a task (as when a request ends), or, through
-- the host's hook, a wait outside tasks (fish.openresty's semaphore).
function loop.notify(key)
  tasks.request_ended(key)
  if host.notify then host.notify(key) end
end

-- C code changed what the engine watches outside an engine move (a live
-- socket's send left output for POLLOUT): a host driver looks again.
function loop.moved()
  if host.moved then host.moved() end
end

-- A live session's timers changed outside its step (text or a stop made
-- audio owed, a waiter left): it wants its step by `at` (nil: no change).
-- A host driver then re-arms its timer.
function loop.live_due(at)
  if at == nil then return end
  live_due_at = earliest(live_due_at, at)
  if host.moved then host.moved() end
end

-- For host drivers, which run a pass only when something needs one: does
-- fish.live's step need to run (news on a socket nobody may wait on, or
-- one of its timers due)?
function loop.live_wants(now)
  return live_news or (live_due_at ~= nil and live_due_at <= now)
end

-- fn(now) runs at the end of every fish.step and returns the next time it
-- wants to run, or nil: fish.live delivers there what sessions nobody
-- waits on have received, and runs their timers.
function loop.set_live_step(fn)
  live_step = fn
end

-- Is any live session still open? fish.live replaces this; a host driver
-- that runs only while something is under way counts these too.
function loop.live_active()
  return false
end

-- Sleep; a cancel token ends the sleep early. Returns false if canceled.
function loop.sleep(seconds, pause, token)
  local ready = token and function() return token.canceled end or nil
  return not wait_for(ready, core.now() + seconds, pause, nil, token and { token = token } or nil)
end

-- ---- cancel tokens -------------------------------------------------------------

loop.new_token = tokens.new
loop.is_token = tokens.is

-- ---- the scheduler -------------------------------------------------------------

local function not_in_a_task(fn)
  if tasks.resuming then
    error(fn .. ": cannot be called inside a fish task (it would have to resume the task that called it);"
      .. " wait for a task with task:wait(), or for time with fish.sleep", 3)
  end
end

-- While few requests run, a request a task started goes out before the
-- next task is resumed: when many answers come at once (a batch whose
-- answers all take the same time), the first task woken sends its next
-- request at once, not after every other woken task has done its work
-- (writing its file, its report). With many running, a pump costs more
-- (libcurl looks at each transfer), and one after the pass serves them all.
local EAGER_SEND = 64
local sent_upto = 0 -- `started` as of the last pump in a pass
local function send_started()
  if started ~= sent_upto and tracked_count <= EAGER_SEND then
    sent_upto = started
    pump()
  end
end

-- Resume what is ready, then let libcurl send what those tasks just
-- started, so a request started in a frame goes out in that frame.
local function run_pass(budget)
  tasks.poll_conditions()
  sent_upto = started
  local ran = tasks.run_ready(budget, send_started)
  if started ~= sent_upto then pump() end
  tasks.deliver_errors()
  return ran
end
-- fish.live's delivery (what sessions nobody waits on received, their
-- timers): after each pass. Returns how many deliveries it made.
local function run_live_step()
  if not live_step then return 0 end
  live_news = false
  local due, delivered = live_step(core.now())
  live_due_at = due
  return delivered or 0
end

-- For host drivers: resume what is ready, once, from the host's own loop.
function loop.run_pass(budget)
  not_in_a_task("fish.run_pass")
  return run_pass(budget) + run_live_step()
end

-- Drive transfers and tasks once, waiting at most `timeout` seconds for
-- something to happen (0: never wait). With `budget` (seconds), resume
-- tasks only until that much time has gone (at least one): the others stay
-- ready, in order, for the next step. Returns the number of live tasks.
-- Task errors nobody waits for go to the error handler, never out of here.
function loop.step(timeout, budget)
  not_in_a_task("fish.step")
  loop.check_seconds("fish.step", "timeout", timeout, true)
  loop.check_seconds("fish.step", "budget", budget, true, 2)
  timeout = timeout or 0
  tasks.deliver_errors() -- the ones a previous call left queued
  local due = pump()
  local ran = run_pass(budget) + run_live_step()
  due = earliest(due, live_due_at)
  if ran == 0 and timeout > 0 and tasks.queued() == 0 then
    local now = core.now()
    due = earliest(due, tasks.next_timer())
    local sleep = due and math.max(0, due - now) or MAX_SLEEP
    sleep = math.min(sleep, timeout, MAX_SLEEP)
    if sleep > 0 then loop.engine():poll(sleep) end
    pump()
    run_pass(budget)
    run_live_step()
  end
  return tasks.count()
end

-- Drive everything until no task is left and every task error is handed over.
function loop.run()
  not_in_a_task("fish.run")
  while tasks.count() > 0 or tasks.has_unhandled() do loop.step(MAX_SLEEP) end
end

-- For tests (spec/scheduler_spec.lua): what the scheduler has done so far.
-- resumed: task resumptions; woken: tasks queued by an event; polled:
-- ready() functions called by steps; timer_visits, deadline_visits: heap
-- entries looked at; deadlines: watchdogs held; queued: tasks ready now.
function loop.stats()
  local held, visits = deadlines.stats()
  local c = tasks.counters
  return {
    resumed = c.resumed, woken = c.woken, polled = c.polled,
    timer_visits = tasks.timer_visits(), deadline_visits = visits, deadlines = held,
    queued = tasks.queued(), live = tasks.count(), tracked = tracked_count,
  }
end

-- ---- waiting for a task ---------------------------------------------------------

local function drive_until_done(task)
  while task.status == "running" do loop.step(MAX_SLEEP) end
end

-- Wait for the task to end and return its results; a task that raised
-- raises the same error (with its traceback) here. In a task that is
-- canceled while it waits, returns nil, message, err of kind canceled.
-- Inside a task, call it from the task itself (fish.pcall included): a
-- coroutine of its own that the task runs can neither suspend the task
-- nor drive the scheduler, so wait() raises there.
function Task:wait()
  local me = current_task()
  if me == self or (not me and tasks.resuming == self) then error("a fish task cannot wait for itself", 2) end
  if me then
    wait_for(function() return self.status ~= "running" end, nil, nil, nil, { task = self })
  elseif tasks.resuming then
    error("task:wait: called from a coroutine that fish does not own, inside a fish task;"
      .. " call it from the task itself (fish.pcall is fine)", 2)
  else
    self.blocking_waiters = (self.blocking_waiters or 0) + 1
    local ok, err = pcall(drive_until_done, self)
    self.blocking_waiters = self.blocking_waiters - 1
    if not ok then error(err, 0) end
  end
  if self.status == "running" then
    -- Only a canceled waiter stops waiting early; the task runs on.
    return errors.fail(errors.new({ kind = "canceled", message = "the waiting task was canceled" }), "task:wait")
  end
  self.watched = true
  if self.status == "error" then error(self.error, 0) end
  -- A canceled task that returned nothing still tells its waiter why.
  if self.status == "canceled" and (not self.results or self.results.n == 0) then
    return errors.fail(errors.new({ kind = "canceled", message = "the task was canceled" }), "task:wait")
  end
  return unpack(self.results, 1, self.results.n)
end

loop.Task = Task

return loop
