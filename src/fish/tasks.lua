-- Fish tasks: the task objects, what each suspended task waits for, the
-- ready queue, and the errors nobody waits for.
--
-- A task is resumed only when something it waits for happens, never because
-- a step went looking: a finished request wakes the task that awaits it (the
-- engine reports finished ids), a due timer on the heap wakes a sleeper, a
-- task that ends wakes the tasks in its wait(), a cancel token wakes the
-- tasks that sleep on it. Woken tasks join the ready queue in the order they
-- were woken, and a step resumes them from there. Only a wait on a bare
-- ready() function (nothing announces when it becomes true) is polled, and
-- only those are: the cost of a step follows what changed, not how many
-- tasks there are.
local core = require("fish.core")
local heap = require("fish.heap")
local tokens = require("fish.tokens")

local tasks = {}

local unpack = table.unpack or unpack -- luacheck: ignore 113 143

local WAIT = {} -- what a fish task yields to say "resume me when ready"
tasks.WAIT = WAIT

local task_of = setmetatable({}, { __mode = "k" }) -- coroutine -> its task
tasks.task_of = task_of
-- task -> true until it ends. Only held, never read: a suspended task must
-- stay alive even when nothing but its own request or token refers to it.
local live_tasks = {} -- luacheck: ignore 241
local live = 0                                      -- how many
local spawned = 0
local queue = { head = 1, tail = 0 }                -- ready tasks, oldest first
local timers = heap.new()                           -- sleeping tasks, by wake-up time
local polled = {}                                   -- task -> its wait on a bare ready()
local polled_count = 0
local request_waiter = setmetatable({}, { __mode = "k" }) -- request -> the task awaiting it
local unhandled = { head = 1, tail = 0 }            -- failed tasks whose error nobody has taken

-- Work counters for tests (spec/scheduler_spec.lua): they show what a step
-- touched. `timer_visits` and the deadlines' count are heap entries looked at.
local counters = { resumed = 0, woken = 0, polled = 0 }
tasks.counters = counters
function tasks.timer_visits() return timers.visits end

local Task = {}
Task.__index = Task
tasks.Task = Task

-- The task that the running coroutine belongs to, or nil.
function tasks.current()
  local co = coroutine.running()
  return co and task_of[co] or nil
end

function tasks.count()
  return live
end

function tasks.queued()
  return queue.tail - queue.head + 1
end

local function pack(...)
  return { n = select("#", ...), ... }
end
tasks.pack = pack

-- hooks.ready(): a task became ready while none was (set by a host driver,
-- fish.nvim, which then schedules a pass: nobody has to step fish).
local hooks = {}
tasks.hooks = hooks

local function enqueue(task)
  if task.queued then return end
  task.queued = true
  local tail = queue.tail + 1
  queue.tail = tail
  queue[tail] = task
  if tail == queue.head and hooks.ready then hooks.ready() end
end

-- Take back what `wait` registered. Lists it joined (a token's sleepers, a
-- task's waiters) are left alone: an entry there wakes nothing once the
-- task no longer waits with that record.
local function unregister(task, wait)
  if wait.timer then
    timers:remove(wait.timer)
    wait.timer = nil
  end
  if polled[task] == wait then
    polled[task] = nil
    polled_count = polled_count - 1
  end
  if wait.request and request_waiter[wait.request] == task then request_waiter[wait.request] = nil end
  if task.waiting == wait then task.waiting = nil end
end

-- Something `task` waits for with `wait` happened: queue the task (once).
function tasks.wake(task, wait)
  if task.status ~= "running" or task.waiting ~= wait or wait == nil then return end
  unregister(task, wait)
  counters.woken = counters.woken + 1
  enqueue(task)
end

-- The request ended (finished, or canceled by fish): wake its waiter.
function tasks.request_ended(request)
  local task = request_waiter[request]
  if task then
    request_waiter[request] = nil
    tasks.wake(task, task.waiting)
  end
end

-- How many waits on bare ready() functions (streams included) a pass polls.
function tasks.polling()
  return polled_count
end

-- Wake every sleeper whose time has come. Returns the next wake-up time.
function tasks.fire_timers(now)
  while true do
    local entry = timers:peek()
    if not entry or entry.at > now then return entry and entry.at end
    timers:remove(entry)
    entry.wait.timer = nil
    tasks.wake(entry.task, entry.wait)
  end
end

-- Check the waits on bare ready() functions; wake, in spawn order, those
-- that hold.
function tasks.poll_conditions()
  if polled_count == 0 then return end
  local woken
  for task, wait in pairs(polled) do
    counters.polled = counters.polled + 1
    if wait.ready() then
      woken = woken or {}
      woken[#woken + 1] = task
    end
  end
  if not woken then return end
  table.sort(woken, function(a, b) return a.seq < b.seq end)
  for _, task in ipairs(woken) do tasks.wake(task, task.waiting) end
end

-- Record what a suspended task waits for. `yielded` is what it passed to
-- coroutine.yield: WAIT, ready, deadline, on_cancel, wake (or anything else,
-- for a plain cooperative yield, which goes on at the next step).
local function suspend(task, yielded)
  if not (yielded[1] and yielded[2] == WAIT) then
    task.on_cancel = nil
    enqueue(task)
    return
  end
  local wait = { ready = yielded[3], deadline = yielded[4], on_cancel = yielded[5] }
  local on = yielded[6]
  task.on_cancel = wait.on_cancel
  task.waiting = wait
  -- A canceled task goes on at the next pass; so does a plain yield.
  if task.canceled or (wait.ready == nil and wait.deadline == nil) then
    enqueue(task)
    return
  end
  if wait.deadline then
    wait.timer = timers:push({ at = wait.deadline, task = task, wait = wait })
  end
  if wait.ready then
    if on and on.request then
      wait.request = on.request
      request_waiter[on.request] = task
    end
    if on and on.task then
      local waiters = on.task.waiters
      waiters[#waiters + 1] = { task = task, wait = wait }
    end
    if on and on.token then tokens.wake_on_cancel(on.token, task, wait) end
    -- Streams also wait for bytes, which nothing announces; a bare ready()
    -- may depend on anything.
    if not on or on.progress then
      polled[task] = wait
      polled_count = polled_count + 1
    end
  end
end

-- Is someone waiting in task:wait() for `task` right now? Outside tasks: a
-- blocking wait() is counting. Inside: a task still suspended in that wait.
local function someone_waits_for(task)
  if (task.blocking_waiters or 0) > 0 then return true end
  for _, w in ipairs(task.waiters) do
    if w.task.waiting == w.wait then return true end
  end
  return false
end

local function finish(task, resumed)
  live = live - 1
  live_tasks[task] = nil
  task_of[task.co] = nil
  task.on_cancel = nil
  if resumed[1] then
    task.status = task.canceled and "canceled" or "done"
    task.results = { n = resumed.n - 1, unpack(resumed, 2, resumed.n) }
  else
    task.status = "error"
    task.error = debug.traceback(task.co, tostring(resumed[2]))
    task.raw_error = resumed[2]
    -- A task that someone waits for hands its error to the waiter; any other
    -- error waits in `unhandled` for the error handler.
    if not (task.watched or someone_waits_for(task)) then
      unhandled.tail = unhandled.tail + 1
      unhandled[unhandled.tail] = task
    end
  end
  local waiters = task.waiters
  task.waiters = {}
  for _, w in ipairs(waiters) do tasks.wake(w.task, w.wait) end
end

local function resume(task)
  if task.waiting then unregister(task, task.waiting) end
  task.on_cancel = nil
  tasks.resuming = task
  counters.resumed = counters.resumed + 1
  local resumed = pack(coroutine.resume(task.co))
  tasks.resuming = nil
  if coroutine.status(task.co) == "dead" then
    finish(task, resumed)
  else
    suspend(task, resumed)
  end
end

-- Resume the tasks that were ready when this pass began, oldest first.
-- With `budget` (seconds), stop once that much time has gone, after at
-- least one task; the rest stay first in line for the next pass. Returns
-- how many ran. `after_each`, if given, runs after each resumption.
function tasks.run_ready(budget, after_each)
  local last = queue.tail -- woken during this pass: the next pass
  local started = budget and core.now()
  local ran = 0
  while queue.head <= last do
    local head = queue.head
    local task = queue[head]
    queue[head] = nil
    queue.head = head + 1
    task.queued = false
    if task.status == "running" then
      ran = ran + 1
      resume(task)
      if after_each then after_each() end
      if budget and core.now() - started >= budget then break end
    end
  end
  if queue.head > queue.tail then queue.head, queue.tail = 1, 0 end
  return ran
end

-- The earliest time a sleeping task wakes, or nil.
function tasks.next_timer()
  local entry = timers:peek()
  return entry and entry.at
end

local function new_task(fn, ...)
  local args = pack(...)
  local co = coroutine.create(function()
    return fn(unpack(args, 1, args.n))
  end)
  spawned = spawned + 1
  local task = setmetatable({ co = co, status = "running", seq = spawned, waiters = {} }, Task)
  task_of[co] = task
  live_tasks[task] = true
  live = live + 1
  return task
end

-- A task that starts at the next pass.
function tasks.spawn(fn, ...)
  if type(fn) ~= "function" then error("fish.spawn: argument 1 must be a function", 2) end
  local task = new_task(fn, ...)
  enqueue(task)
  return task
end

-- A task that runs at once, until its first wait (see loop.spawn).
function tasks.spawn_now(fn, ...)
  local task = new_task(fn, ...)
  resume(task)
  return task
end

-- ---- errors nobody waits for -----------------------------------------------

-- An error in a task that nobody waits for goes to the error handler as
-- ("fish task failed: <error with the task's traceback>", task), never into
-- whatever fish.step happens to run next: in Neovim two plugins share one
-- Lua state, and one's failed task must not raise in the other's step. The
-- default handler reports it where a person will see it: vim.notify under
-- Neovim (scheduled, as it may be called from a fast event), else io.stderr.
-- fish.on_error(fn) sets another.
local function report_task_error(message)
  local vim = rawget(_G, "vim")
  if type(vim) == "table" and type(vim.notify) == "function" and type(vim.schedule) == "function" then
    vim.schedule(function() vim.notify(message, vim.log and vim.log.levels.ERROR) end)
    return
  end
  io.stderr:write(message, "\n")
end
local on_error = report_task_error

-- fish.on_error(fn): fn(message, task) takes every task error that nobody
-- waits for; nil restores the default (vim.notify or io.stderr).
function tasks.on_error(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("fish.on_error: argument 1 must be a function or nil", 2)
  end
  on_error = fn or report_task_error
end

function tasks.has_unhandled()
  return unhandled.head <= unhandled.tail
end

-- Hand the queued task errors to the handler, oldest first. Each leaves the
-- queue before its call, so it is handed over once, and one that a
-- task:wait() or task:result() has taken since is skipped. A handler that
-- raises does not raise out of the step that called it (that step may
-- belong to someone else): its error goes to the default handler, with the
-- task's.
function tasks.deliver_errors()
  while unhandled.head <= unhandled.tail do
    local head = unhandled.head
    local task = unhandled[head]
    unhandled[head] = nil
    unhandled.head = head + 1
    if unhandled.head > unhandled.tail then unhandled.head, unhandled.tail = 1, 0 end
    if not task.watched then
      local message = "fish task failed: " .. task.error
      local ok, err = pcall(on_error, message, task)
      if not ok then
        report_task_error("fish.on_error: the handler raised: " .. tostring(err) .. "\nwhile handling: " .. message)
      end
    end
  end
end

-- ---- task handles -------------------------------------------------------------

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
-- nil, err of kind "canceled"), and every later fish call in it returns at
-- once. It goes on at the next pass.
function Task:cancel()
  if self.status ~= "running" then return false end
  self.canceled = true
  if self.on_cancel then self.on_cancel() end
  if self.status == "running" and tasks.resuming ~= self then enqueue(self) end
  return true
end

function Task:__tostring()
  return "fish.task (" .. self.status .. ")"
end

return tasks
