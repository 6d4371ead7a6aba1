-- Runs the batch's requests with fish tasks, at most `limit` at once, and
-- adapts that limit to the server (AIMD, as TCP does):
--   * a 429 halves the limit (at least 1) and pauses every new request for
--     err.retry_after seconds (else 0.5 s, 1 s, 2 s ... up to 30 s while
--     429s keep coming). Only a 429 to a request started after the last
--     decrease decreases again, so a burst of 429s from requests that were
--     already in flight counts as one signal, not sixteen;
--   * every `limit` successes in a row raise the limit by one, up to --jobs.
-- A row that gets a 429 is tried again until it succeeds (it is never
-- failed for it); other failures that may pass (5xx, 408, network, connect
-- timeouts) are tried again up to `retries` times, 1 s, 2 s, 4 s apart; the
-- rest fail the row. auth, permission and 402 (no credit) would fail every
-- row alike: they stop the batch.
--
-- fish's own retries are off for these calls (retries = 0): the runner must
-- see each 429 to slow down.
local failure = require("fish.cli.failure")

local runner = {}

local POLL = 0.02 -- seconds between looks at a free slot
local TICK = 0.1 -- seconds between progress ticks
local PAUSE_CAP = 30

local Runner = {}
Runner.__index = Runner

-- runner.new{ fish =, rows =, jobs =, retries =, clock =, convert = fn(row),
--   on_result = fn(row, result), events = progress }
-- convert(row) makes one attempt: path, bytes | nil, message, err.
function runner.new(opts)
  return setmetatable({
    fish = opts.fish, rows = opts.rows, jobs = opts.jobs, retries = opts.retries or 2,
    clock = opts.clock, convert = opts.convert, on_result = opts.on_result, events = opts.events,
    limit = opts.jobs, active = 0, next = 1, epoch = 0, successes = 0,
    pause_until = 0, rate_limit_streak = 0, settled = {}, workers = 0, stopped = nil,
  }, Runner)
end

local FATAL_KINDS = { auth = true, permission = true }
local RETRYABLE_KINDS = { server = true, network = true }

local function verdict(err)
  if err.kind == "rate_limit" then return "rate_limited" end
  if FATAL_KINDS[err.kind] or err.status == 402 then return "fatal" end
  if RETRYABLE_KINDS[err.kind] or err.status == 408 or (err.kind == "timeout" and err.timeout == "connect") then
    return "retry"
  end
  return "failed"
end

-- Stop starting rows; `reason` is an error line for the rows left.
function Runner:stop(reason)
  self.stopped = self.stopped or reason
end

-- Wait for a free slot; false when the runner stopped, or (for a worker
-- that holds no row) when no row is left to take.
function Runner:acquire(holding)
  while true do
    if self.stopped then return false end
    if not holding and self.next > #self.rows then return false end
    local now = self.clock()
    if now >= self.pause_until and self.active < self.limit then
      self.active = self.active + 1
      return true
    end
    local wait = POLL
    if self.pause_until > now then wait = math.min(self.pause_until - now, 0.25) end
    self.fish.sleep(wait)
  end
end

-- One attempt; an error raised inside (not a failure returned) becomes the
-- row's failure, except Ctrl-C, which must end the whole run.
function Runner:attempt(row)
  local ok, path, second, err = self.fish.pcall(self.convert, row)
  if not ok then
    if failure.is_interrupt(path) then error(path, 0) end
    local message = failure.strip_position(path)
    return nil, message, { kind = "error", status = 0, message = message }
  end
  if path then return path, second end
  return nil, second, err or { kind = "error", status = 0, message = tostring(second) }
end

function Runner:settle(row, result)
  self.settled[row] = true
  self.on_result(row, result)
end

function Runner:succeeded()
  self.rate_limit_streak = 0
  if self.limit >= self.jobs then return end
  self.successes = self.successes + 1
  if self.successes >= self.limit then
    local old = self.limit
    self.limit, self.successes = old + 1, 0
    self.events:concurrency(old, self.limit)
  end
end

function Runner:rate_limited(err, epoch)
  local now = self.clock()
  self.rate_limit_streak = self.rate_limit_streak + 1
  local wait = err.retry_after
  if type(wait) ~= "number" then wait = math.min(0.5 * 2 ^ (self.rate_limit_streak - 1), PAUSE_CAP) end
  if now + wait > self.pause_until then self.pause_until = now + wait end
  if epoch == self.epoch then
    local old = self.limit
    self.limit = math.max(1, math.floor(old / 2))
    self.epoch, self.successes = self.epoch + 1, 0
    self.events:rate_limited(wait, old, self.limit)
  end
end

function Runner:work_rows()
  while self:acquire(false) do
    local row = self.rows[self.next]
    self.next = self.next + 1
    local attempts, other_failures = 0, 0
    while true do
      attempts = attempts + 1
      local epoch = self.epoch
      local path, message, err = self:attempt(row)
      self.active = self.active - 1
      if path then
        self:settle(row, { status = "ok", file = path, bytes = message, attempts = attempts })
        self:succeeded()
        break
      end
      -- Stopped under our feet (Ctrl-C closes the client): the row is
      -- left unsettled, to be done by the next run.
      if self.stopped and err.kind == "canceled" then break end
      local what = verdict(err)
      local failed = { status = "failed", attempts = attempts,
                       error = { kind = err.kind, status = err.status, message = message } }
      if what == "rate_limited" then
        self:rate_limited(err, epoch)
      elseif what == "retry" and other_failures < self.retries then
        other_failures = other_failures + 1
        self.fish.sleep(2 ^ (other_failures - 1))
      else
        if what == "fatal" then self:stop(message) end
        self:settle(row, failed)
        break
      end
      if not self:acquire(true) then break end
    end
  end
end

-- A worker task. It is counted out even when an error (Ctrl-C) ends it,
-- so the progress task and drain() see every worker go.
function Runner:work()
  local ok, err = self.fish.pcall(self.work_rows, self)
  self.workers = self.workers - 1
  if not ok then error(err, 0) end
end

-- Run every row; returns when all are settled or the runner stopped.
function Runner:run()
  local n = math.min(self.jobs, #self.rows)
  self.workers = n
  for _ = 1, n do self.fish.spawn(self.work, self) end
  -- Ctrl-C in a task's code (the interpreters raise "interrupted!" in
  -- whatever coroutine runs) ends that task with an error nobody waits for;
  -- fish hands those to its error handler, never out of fish.step. Take
  -- them here and end the run with the interrupt, as when it lands outside
  -- the tasks. Any other task error is a bug: report it as fish would.
  local interrupted
  self.fish.on_error(function(message)
    if failure.is_interrupt(message) then
      interrupted = interrupted or message
      self:stop("interrupted")
    else
      io.stderr:write(message, "\n")
    end
  end)
  self.fish.spawn(function()
    while self.workers > 0 do
      self.events:tick()
      self.fish.sleep(TICK)
    end
  end)
  local ok, err = pcall(function()
    while not interrupted and self.fish.step(1) > 0 do end
  end)
  self.fish.on_error(nil)
  if not ok then error(err, 0) end
  if interrupted then error(interrupted, 0) end
end

-- After an interrupt: let the tasks see the stop (their calls were
-- canceled) for at most `seconds`, so fish removes their temp files.
function Runner:drain(seconds)
  local deadline = self.clock() + seconds
  while self.workers > 0 and self.clock() < deadline do self.fish.step(0.05) end
end

-- Rows that never got a result (after a stop or an interrupt).
function Runner:unsettled()
  local left = {}
  for _, row in ipairs(self.rows) do
    if not self.settled[row] then left[#left + 1] = row end
  end
  return left
end

return runner
