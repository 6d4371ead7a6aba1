-- What a batch shows while it runs, on stderr, in one of three modes:
--   bar    a terminal: one line redrawn in place, at most 10 times a second:
--            63/200 rows [#######-------------]  2.1 MiB  ETA 0:09  14.2 rows/s (150.3 KiB/s)  jobs 16
--          failures and rate limits print above it;
--   plain  not a terminal (a log, CI): one line per finished row and per
--          change of concurrency;
--   none   nothing.
-- progress.mode picks it: --progress, else FISH_AUDIO_PROGRESS, else bar when
-- stderr is a terminal (asked once, `test -t 2`), else plain.
--
-- Bytes: today they are counted when a row finishes (the size fish.convert
-- returns). Per-transfer progress plugs in at Progress:transfer(id, bytes),
-- the seam for libcurl's transfer info: whoever knows how far a transfer
-- has got calls it as bytes arrive, and the bar counts them before the row
-- is done. Progress:row then replaces that row's partial count by its size.
local fs = require("fish.cli.fs")

local progress = {}

progress.MODES = { "bar", "plain", "none" }
local REDRAW = 0.1 -- seconds: at most 10 redraws a second
local BAR_WIDTH = 20

function progress.mode(flag, env_value, isatty)
  for _, mode in ipairs(progress.MODES) do
    if flag == mode then return mode end
  end
  for _, mode in ipairs(progress.MODES) do
    if env_value == mode then return mode end
  end
  if isatty == nil then isatty = fs.isatty(2) end
  return isatty and "bar" or "plain"
end

function progress.size(bytes)
  if bytes < 1024 then return ("%d B"):format(math.floor(bytes)) end
  if bytes < 1024 * 1024 then return ("%.1f KiB"):format(bytes / 1024) end
  if bytes < 1024 ^ 3 then return ("%.1f MiB"):format(bytes / 1024 ^ 2) end
  return ("%.2f GiB"):format(bytes / 1024 ^ 3)
end

function progress.duration(seconds)
  seconds = math.floor(seconds + 0.5)
  local h, m, s = math.floor(seconds / 3600), math.floor(seconds % 3600 / 60), seconds % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
  return ("%d:%02d"):format(m, s)
end

local Progress = {}
Progress.__index = Progress

-- progress.new(mode, { stream =, clock = function() -> seconds, width = })
function progress.new(mode, opts)
  opts = opts or {}
  return setmetatable({
    mode = mode,
    stream = opts.stream or io.stderr,
    clock = opts.clock or os.time,
    width = opts.width or tonumber(os.getenv("COLUMNS") or "") or 80,
    total = 0, settled = 0, voiced = 0, skipped = 0, failed = 0, to_voice = 0,
    bytes = 0, partial = {}, partial_bytes = 0,
    jobs = 0, paused_until = nil, last_draw = nil, dirty = false, drawn = false,
  }, Progress)
end

function Progress:say(line)
  if self.mode == "none" then return end
  if self.drawn then self.stream:write("\r\27[K") end
  self.stream:write("fish-audio: ", line, "\n")
  self.drawn = false
  self:draw(true)
end

-- The bar line for the state right now.
function Progress:line(now)
  local done = self.settled
  local fraction = self.total > 0 and done / self.total or 1
  local filled = math.floor(fraction * BAR_WIDTH + 0.5)
  local bytes = self.bytes + self.partial_bytes
  local parts = {
    ("%d/%d rows [%s%s]"):format(done, self.total, ("#"):rep(filled), ("-"):rep(BAR_WIDTH - filled)),
    progress.size(bytes),
  }
  local elapsed = now - self.started
  local finished = self.voiced + self.failed
  local rate = (finished > 0 and elapsed > 0) and finished / elapsed or nil
  if rate then parts[#parts + 1] = "ETA " .. progress.duration((self.to_voice - finished) / rate) end
  if self.paused_until and self.paused_until > now then
    parts[#parts + 1] = ("rate limited, %.0fs"):format(self.paused_until - now)
  end
  if rate then parts[#parts + 1] = ("%.1f rows/s (%s/s)"):format(rate, progress.size(bytes / elapsed)) end
  parts[#parts + 1] = "jobs " .. self.jobs
  local line = table.concat(parts, "  ")
  if #line >= self.width then line = line:sub(1, self.width - 1) end
  return line
end

function Progress:draw(force)
  if self.mode ~= "bar" or not self.started or self.closed then return end
  local now = self.clock()
  if not force and self.last_draw and now - self.last_draw < REDRAW then
    self.dirty = true
    return
  end
  self.stream:write("\r", self:line(now), "\27[K")
  self.stream:flush()
  self.last_draw, self.dirty, self.drawn = now, false, true
end

-- total rows in the manifest, how many are skipped, how many will be voiced;
-- jobs is the starting concurrency.
function Progress:start(total, skipped, jobs)
  self.started = self.clock()
  self.total, self.skipped, self.settled = total, skipped, skipped
  self.to_voice, self.jobs = total - skipped, jobs
  if self.mode == "plain" then
    self:say(("%d rows: %d to voice, %d already done; %d at once"):format(total, total - skipped, skipped, jobs))
  end
  self:draw(true)
end

-- SEAM: how far a transfer has got, in bytes received so far.
function Progress:transfer(id, bytes)
  self.partial_bytes = self.partial_bytes - (self.partial[id] or 0) + bytes
  self.partial[id] = bytes
  self:draw()
end

-- A row is settled: result.status is "ok" or "failed".
function Progress:row(row, result)
  self.partial_bytes = self.partial_bytes - (self.partial[row.id] or 0)
  self.partial[row.id] = nil
  self.settled = self.settled + 1
  if result.status == "ok" then
    self.voiced = self.voiced + 1
    self.bytes = self.bytes + (result.bytes or 0)
    if self.mode == "plain" then
      self:say(("[%d/%d] ok %s (%s)"):format(self.settled, self.total, row.id, progress.size(result.bytes or 0)))
    end
  else
    self.failed = self.failed + 1
    local message = result.error and result.error.message or "failed"
    self:say(("[%d/%d] failed %s: %s"):format(self.settled, self.total, row.id, message))
  end
  self:draw()
end

function Progress:rate_limited(wait, old_jobs, new_jobs)
  self.paused_until = self.clock() + wait
  self.jobs = new_jobs
  local change = old_jobs ~= new_jobs and (", jobs %d -> %d"):format(old_jobs, new_jobs) or ""
  if self.mode == "plain" then
    self:say(("rate limited (HTTP 429): waiting %.1fs%s"):format(wait, change))
  else
    self:draw(true)
  end
end

function Progress:concurrency(old_jobs, new_jobs)
  self.jobs = new_jobs
  if self.mode == "plain" then self:say(("jobs %d -> %d"):format(old_jobs, new_jobs)) end
  self:draw()
end

-- Called every REDRAW seconds while the batch runs: shows a change that a
-- throttled draw held back, and moves the clock and ETA along.
function Progress:tick()
  if self.mode == "bar" then self:draw(self.dirty or (self.last_draw and self.clock() - self.last_draw >= 1)) end
end

-- The closing line; `extra` is appended to it.
function Progress:finish(extra)
  if self.mode == "none" then return end
  if self.mode == "bar" and self.started then
    self:draw(true)
    self.stream:write("\n")
    self.drawn = false
  end
  self.closed = true
  local elapsed = self.started and (self.clock() - self.started) or 0
  self:say(("%d rows: %d voiced, %d skipped, %d failed; %s in %.1fs%s"):format(
    self.total, self.voiced, self.skipped, self.failed, progress.size(self.bytes), elapsed, extra or ""))
end

return progress
