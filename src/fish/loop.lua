-- The one waiting primitive of fish. Every call that has to wait (a
-- transfer, a retry back-off, wait_trained's polling, fish.sleep) ends up in
-- loop.wait_until, which picks one of three ways to wait:
--   * inside a fish task: yield to the fish scheduler, suspending that task;
--   * with a host pause function (ngx.sleep, ...): step and let the host pause;
--   * otherwise: block in curl_multi_poll, which sleeps without using CPU.
-- fish never yields just because coroutine.isyieldable() is true: OpenResty,
-- plenary.async and game schedulers run code in coroutines fish does not own.
local core = require("fish.core")
local errors = require("fish.errors")

local loop = {}

local unpack = table.unpack or unpack -- luacheck: ignore 113 143

local engine                                           -- one per Lua state, made on first use
local watchdogs = setmetatable({}, { __mode = "k" })   -- request -> time limits
local expired = setmetatable({}, { __mode = "k" })     -- request -> which limit ended it
local tasks = {}                                       -- live tasks, in spawn order
local task_of = setmetatable({}, { __mode = "k" })     -- coroutine -> its task
local waits_for = setmetatable({}, { __mode = "k" })   -- a task:wait()'s ready function -> the task it waits for
local resuming                                         -- the task the scheduler is running right now
local unhandled = {}                                   -- failed tasks whose error nobody has taken yet
local finished_scratch = {}

local WAIT = {} -- what a fish task yields to say "resume me when ready"
local HOST_PAUSE_STEP = 0.01 -- a host pause cannot be woken by a socket: poll this often
local MAX_SLEEP = 1.0 -- re-check deadlines at least this often

-- A wait in seconds: a number, not negative and not NaN (NaN fails every
-- comparison, so a NaN deadline never passes and a NaN poll time is
-- undefined in C). math.huge is fine: every wait is cut to MAX_SLEEP
-- slices. Raises at the public function's caller.
function loop.check_seconds(fn, what, value, optional)
  if optional and value == nil then return end
  if type(value) ~= "number" or value ~= value or value < 0 then
    error(("%s: argument 1 (%s) must be %sa non-negative number of seconds, got %s"):format(
      fn, what, optional and "nil or " or "", tostring(value)), 3)
  end
end

function loop.engine()
  if not engine then engine = core.engine() end
  return engine
end

-- ---- transfers and their deadlines ---------------------------------------

-- Start a request. `limits` holds seconds: first_byte (from the start until
-- the first response byte), idle (between bytes), total. Each is optional.
function loop.start(request, limits)
  loop.engine():add(request)
  if limits and (limits.first_byte or limits.idle or limits.total) then
    watchdogs[request] = limits
  end
end

-- Which limit canceled this request ("first_byte", "idle", "total"), if any.
function loop.expired(request)
  return expired[request]
end

local function earliest(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return a < b and a or b
end

-- Cancel every request past one of its limits; return the nearest deadline.
local function enforce_deadlines(now)
  local nearest
  for request, limits in pairs(watchdogs) do
    if request:state() ~= "running" then
      watchdogs[request] = nil
    else
      local _, started, first_byte_at, last_activity = request:progress()
      local deadline, why
      if limits.total then deadline, why = started + limits.total, "total" end
      if first_byte_at == 0 and limits.first_byte then
        local at = started + limits.first_byte
        if deadline == nil or at < deadline then deadline, why = at, "first_byte" end
      elseif first_byte_at > 0 and limits.idle then
        local at = last_activity + limits.idle
        if deadline == nil or at < deadline then deadline, why = at, "idle" end
      end
      if deadline and deadline <= now then
        expired[request] = why
        request:cancel()
        watchdogs[request] = nil
      else
        nearest = earliest(nearest, deadline)
      end
    end
  end
  return nearest
end

-- Move every transfer as far as it can go without waiting. Returns the
-- absolute time by which we must look again (or nil: only when woken).
local function pump()
  local e = loop.engine()
  for i = #finished_scratch, 1, -1 do finished_scratch[i] = nil end
  e:perform(finished_scratch)
  local now = core.now()
  local due = enforce_deadlines(now)
  local curl_due = e:timeout()
  if curl_due then due = earliest(due, now + curl_due) end
  return due
end

-- ---- tasks ------------------------------------------------------------------

local Task = {}
Task.__index = Task

local function current_task()
  local co = coroutine.running()
  return co and task_of[co] or nil
end

function loop.in_task()
  return current_task() ~= nil
end

-- Is the current task canceled? Its fish calls then return at once.
function loop.task_canceled()
  local task = current_task()
  return task ~= nil and task.canceled
end

local function task_ready(task, now)
  if task.wake_at and now >= task.wake_at then return true end
  if task.canceled then return true end
  -- No condition: a timed sleep waits for wake_at; a plain yield goes on.
  if task.ready == nil then return task.wake_at == nil end
  return task.ready()
end

local function remove_task(task)
  for i = 1, #tasks do
    if tasks[i] == task then
      table.remove(tasks, i)
      return
    end
  end
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Is someone waiting in task:wait() for `task` right now? Outside tasks: a
-- blocking wait() is counting. Inside: a task suspended with that wait's own
-- ready function (a wait that could not suspend leaves nothing behind).
local function someone_waits_for(task)
  if (task.blocking_waiters or 0) > 0 then return true end
  for _, other in ipairs(tasks) do
    if other.ready and waits_for[other.ready] == task then return true end
  end
  return false
end

local function settle(task, resumed)
  local co = task.co
  if coroutine.status(co) ~= "dead" then
    if resumed[1] and resumed[2] == WAIT then
      task.ready, task.wake_at, task.on_cancel = resumed[3], resumed[4], resumed[5]
    else
      -- The task yielded on its own: a plain cooperative yield.
      task.ready, task.wake_at, task.on_cancel = nil, nil, nil
    end
    return nil
  end
  remove_task(task)
  task_of[co] = nil
  if resumed[1] then
    task.status = task.canceled and "canceled" or "done"
    task.results = { n = resumed.n - 1, unpack(resumed, 2, resumed.n) }
    return nil
  end
  task.status = "error"
  task.error = debug.traceback(co, tostring(resumed[2]))
  task.raw_error = resumed[2]
  -- A task that someone waits for hands its error to the waiter; any other
  -- error waits in `unhandled` for the error handler.
  if not (task.watched or someone_waits_for(task)) then unhandled[#unhandled + 1] = task end
end

local function resume(task, ...)
  task.ready, task.wake_at, task.on_cancel = nil, nil, nil
  resuming = task
  local resumed = pack(coroutine.resume(task.co, ...))
  resuming = nil
  settle(task, resumed)
end

-- Resume every task that can go on. Returns how many ran.
local function run_ready_tasks()
  local now = core.now()
  local ran = 0
  -- Snapshot: tasks spawned during this pass run on the next one.
  local snapshot = {}
  for i = 1, #tasks do snapshot[i] = tasks[i] end
  for _, task in ipairs(snapshot) do
    if task.status == "running" and task_ready(task, now) then
      ran = ran + 1
      resume(task)
    end
  end
  return ran
end

function loop.spawn(fn, ...)
  if type(fn) ~= "function" then error("fish.spawn: argument 1 must be a function", 2) end
  local args = pack(...)
  local task
  local co = coroutine.create(function()
    return fn(unpack(args, 1, args.n))
  end)
  task = setmetatable({ co = co, status = "running" }, Task)
  task_of[co] = task
  tasks[#tasks + 1] = task
  return task
end

-- ---- pcall across yields -------------------------------------------------------

-- PUC Lua 5.1 cannot yield across pcall, so pcall(fish.convert, ...) in a
-- task fails there with "attempt to yield across metamethod/C-call
-- boundary". 5.2+ and LuaJIT can, and use pcall itself.
local PCALL_YIELDS = _VERSION ~= "Lua 5.1" or type(jit) == "table"

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
-- if the waiting task is canceled. Returns true if ready() holds.
function loop.wait_until(ready, deadline, pause, on_cancel)
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
      coroutine.yield(WAIT, ready, nil, on_cancel)
      return ready ~= nil and ready()
    end
    if not (ready and ready()) then
      coroutine.yield(WAIT, ready, deadline, on_cancel)
    end
    return ready ~= nil and ready()
  end
  while true do
    local due = pump()
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

-- Wait until the request is no longer running. With `on_progress`, call it
-- whenever new bytes may have arrived, so streams reach the caller as they
-- come. Canceling the waiting task cancels the request.
function loop.await(request, pause, on_progress)
  local function cancel() request:cancel() end
  if not on_progress then
    loop.wait_until(function() return request:state() ~= "running" end, nil, pause, cancel)
    return
  end
  local seen = 0
  local function ready()
    if request:state() ~= "running" then return true end
    return (request:progress()) > seen
  end
  repeat
    loop.wait_until(ready, nil, pause, cancel)
    seen = request:progress()
    on_progress()
  until request:state() ~= "running"
end

-- Sleep; a cancel token ends the sleep early. Returns false if canceled.
function loop.sleep(seconds, pause, token)
  local ready = token and function() return token.canceled end or nil
  return not loop.wait_until(ready, core.now() + seconds, pause)
end

-- ---- cancel tokens -------------------------------------------------------------

-- fish.cancel_token(): pass it as `cancel = token` to any call; token:cancel()
-- (from a task, a frame loop, a timer) ends those calls with kind "canceled".
local Token = {}
Token.__index = Token

function loop.new_token()
  return setmetatable({ canceled = false, requests = setmetatable({}, { __mode = "k" }) }, Token)
end

function loop.is_token(value)
  return getmetatable(value) == Token
end

function Token:watch(request)
  self.requests[request] = true
end

function Token:cancel()
  if self.canceled then return false end
  self.canceled = true
  for request in pairs(self.requests) do
    if request:state() == "running" then request:cancel() end
  end
  if engine then engine:wakeup() end
  return true
end

function Token:__tostring()
  return "fish.cancel_token (" .. (self.canceled and "canceled" or "active") .. ")"
end

-- ---- the scheduler -------------------------------------------------------------

-- An error in a task that nobody waits for goes to the error handler as
-- ("fish task failed: <error with the task's traceback>", task). The default
-- raises it from fish.step/fish.run. A host that must not be interrupted by
-- a raise (Neovim: vim.notify) sets its own with fish.on_error.
local function raise_task_error(message)
  error(message, 0)
end
local on_error = raise_task_error

-- fish.on_error(fn): fn(message, task) takes every task error that nobody
-- waits for; nil restores the default (raise).
function loop.on_error(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("fish.on_error: argument 1 must be a function or nil", 2)
  end
  on_error = fn or raise_task_error
end

-- Hand the queued task errors to the handler, oldest first. Each leaves the
-- queue before its call, so it is handed over once, and one that a
-- task:wait() or task:result() has taken since is skipped. A handler that
-- raises (the default) stops here with the rest still queued: the default
-- raises one error per step call, each the error of one task with its own
-- traceback, and the following step/run calls raise the others. (Rather
-- than one message listing them all: a host that pcalls fish.step each
-- frame sees every error, in order, exactly as a handler would get it.)
local function deliver_errors()
  while unhandled[1] do
    local task = table.remove(unhandled, 1)
    if not task.watched then on_error("fish task failed: " .. task.error, task) end
  end
end

local function not_in_a_task(fn)
  if resuming then
    error(fn .. ": cannot be called inside a fish task (it would have to resume the task that called it);"
      .. " wait for a task with task:wait(), or for time with fish.sleep", 3)
  end
end

-- Drive transfers and tasks once, waiting at most `timeout` seconds for
-- something to happen (0: never wait). Returns the number of live tasks.
-- Raises (or hands to the handler) task errors nobody waits for.
function loop.step(timeout)
  not_in_a_task("fish.step")
  loop.check_seconds("fish.step", "timeout", timeout, true)
  timeout = timeout or 0
  deliver_errors() -- the ones a previous call left queued
  local due = pump()
  local ran = run_ready_tasks()
  deliver_errors()
  if ran == 0 and timeout > 0 then
    local now = core.now()
    for _, task in ipairs(tasks) do due = earliest(due, task.wake_at) end
    local sleep = due and math.max(0, due - now) or MAX_SLEEP
    sleep = math.min(sleep, timeout, MAX_SLEEP)
    if sleep > 0 then loop.engine():poll(sleep) end
    pump()
    run_ready_tasks()
    deliver_errors()
  end
  return #tasks
end

-- Drive everything until no task is left and every task error is handed over.
function loop.run()
  not_in_a_task("fish.run")
  while #tasks > 0 or unhandled[1] do loop.step(MAX_SLEEP) end
end

-- ---- task handles ----------------------------------------------------------------

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
  if me == self or (not me and resuming == self) then error("a fish task cannot wait for itself", 2) end
  if me then
    local function done() return self.status ~= "running" end
    waits_for[done] = self
    loop.wait_until(done)
  elseif resuming then
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

-- done?, then the results (or false, error) without waiting.
function Task:result()
  -- Asking for the result is taking charge of the task's error, too.
  self.watched = true
  if self.status == "running" then return false end
  if self.status == "error" then return true, false, self.error end
  local r = self.results or { n = 0 }
  return true, unpack(r, 1, r.n)
end

-- Cancel the task: the transfer it waits on is canceled (its call returns
-- nil, err of kind "canceled"), and every later fish call in it returns at once.
function Task:cancel()
  if self.status ~= "running" then return false end
  self.canceled = true
  if self.on_cancel then self.on_cancel() end
  return true
end

function Task:__tostring()
  return "fish.task (" .. self.status .. ")"
end

loop.Task = Task

return loop
