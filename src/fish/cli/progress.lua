-- What fish-audio shows while it works, on stderr, in one of three modes:
--   bar    a terminal: one line redrawn in place, at most 10 times a second:
--            63/200 rows [#######-------------]  2.1 MiB  ETA 0:09  14.2 rows/s (150.3 KiB/s)  jobs 16
--          failures and rate limits print above it;
--   plain  not a terminal (a log, CI): one line per finished row and per
--          change of concurrency;
--   none   nothing.
-- progress.mode picks it: --progress, else FISH_AUDIO_PROGRESS, else bar when
-- stderr is a terminal (asked once, `test -t 2`), else plain.
--
-- Two displays share these modes: a batch's (progress.new: rows, bytes,
-- rate, ETA) and one long upload's (progress.upload: say with references,
-- transcribe, voices create). Both are fed by fish's on_progress, which
-- reports the bytes a transfer has sent and received so far: a batch's
-- bytes grow while rows are under way (Progress:transfer), and
-- Progress:row then replaces that row's partial count by its size.
local fs = require("fish.cli.fs")

local progress = {}

progress.MODES = { "bar", "plain", "none" }
local REDRAW = 0.1 -- seconds: at most 10 redraws a second
local BAR_WIDTH = 20

-- The --progress flag of every command that shows progress.
progress.OPTION = { "progress", value = "MODE", choices = progress.MODES,
  help = "bar, plain lines, or none [default: FISH_AUDIO_PROGRESS, else bar when stderr is a terminal, else plain]" }

-- An upload smaller than this ends before a display would help: it shows
-- nothing (a say with a short reference stays quiet).
progress.LONG_UPLOAD = 1024 * 1024
local PLAIN_EVERY = 1 -- seconds between plain lines of one upload

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
    bytes = 0, partial = {}, partial_bytes = 0, sent = 0, partial_sent = {}, partial_sent_bytes = 0,
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
  local sent = self.sent + self.partial_sent_bytes
  if sent > 0 then parts[#parts + 1] = "sent " .. progress.size(sent) end
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

-- How far row `id`'s transfer has got: body bytes received and sent so far
-- (fish's on_progress). A retry starts again from zero, and replaces the
-- row's counts.
function Progress:transfer(id, received, sent)
  self.partial_bytes = self.partial_bytes - (self.partial[id] or 0) + received
  self.partial[id] = received
  sent = sent or 0
  self.partial_sent_bytes = self.partial_sent_bytes - (self.partial_sent[id] or 0) + sent
  self.partial_sent[id] = sent
  self:draw()
end

-- A row is settled: result.status is "ok" or "failed".
function Progress:row(row, result)
  self.partial_bytes = self.partial_bytes - (self.partial[row.id] or 0)
  self.partial[row.id] = nil
  -- What the row sent stays counted: the upload happened.
  local sent = self.partial_sent[row.id] or 0
  self.partial_sent_bytes = self.partial_sent_bytes - sent
  self.partial_sent[row.id] = nil
  self.sent = self.sent + sent
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

-- ---- one long upload -------------------------------------------------------

local Upload = {}
Upload.__index = Upload

-- progress.upload(mode, what, { stream =, clock =, width =, threshold = }):
-- the display of one call's upload; `what` names it ("clip.wav").
-- upload:callback() is the call's on_progress; upload:finish() ends the
-- display once the call returned.
--   bar:   uploading clip.wav: 3.2 MiB of 10.0 MiB [######--------------] 32%  1.2 MiB/s  ETA 0:06
--   plain: the same words without the bar, a line once a second at most,
--          and a last line when everything is sent.
function progress.upload(mode, what, opts)
  opts = opts or {}
  return setmetatable({
    mode = mode, what = what, stream = opts.stream or io.stderr, clock = opts.clock or os.time,
    width = opts.width or tonumber(os.getenv("COLUMNS") or "") or 80,
    threshold = opts.threshold or progress.LONG_UPLOAD,
    sent = 0, total = nil, started = nil, last_draw = nil, drawn = false, told_done = false,
  }, Upload)
end

function Upload:line(now)
  local sent, total = self.sent, self.total
  if sent >= total then
    return ("uploaded %s: %s in %.1fs; waiting for the answer"):format(self.what, progress.size(total),
      now - self.started)
  end
  local fraction = total > 0 and sent / total or 1
  local filled = math.floor(fraction * BAR_WIDTH + 0.5)
  local bar = self.mode == "bar" and (" [%s%s]"):format(("#"):rep(filled), ("-"):rep(BAR_WIDTH - filled)) or ""
  local parts = { ("uploading %s: %s of %s%s %d%%"):format(self.what, progress.size(sent), progress.size(total), bar,
    math.floor(fraction * 100)) }
  local elapsed = now - self.started
  local rate = (sent > 0 and elapsed > 0) and sent / elapsed or nil
  if rate then
    parts[#parts + 1] = progress.size(rate) .. "/s"
    parts[#parts + 1] = "ETA " .. progress.duration((total - sent) / rate)
  end
  local line = table.concat(parts, "  ")
  if self.mode == "bar" and #line >= self.width then line = line:sub(1, self.width - 1) end
  return line
end

-- The display of a command's upload: the mode from its --progress flag, else
-- FISH_AUDIO_PROGRESS, else whether stderr is a terminal, which is asked
-- only once an upload turns out long.
function progress.command_upload(options, what)
  local shown = progress.upload(nil, what, { clock = require("fish.core").now })
  shown.mode_of = function() return progress.mode(options.progress, os.getenv("FISH_AUDIO_PROGRESS")) end
  return shown
end

function Upload:update(sent, send_total)
  local now = self.clock()
  -- A retry sends the body again from its first byte.
  if not self.started or sent < self.sent then self.started, self.told_done = now, false end
  self.sent, self.total = sent, send_total
  if not send_total or send_total < self.threshold then return end
  self.mode = self.mode or self.mode_of()
  if self.mode == "none" then return end
  local done = sent >= send_total
  if done and self.told_done then return end
  local every = self.mode == "bar" and REDRAW or PLAIN_EVERY
  if not done and self.last_draw and now - self.last_draw < every then return end
  if self.mode == "bar" then
    self.stream:write("\r", self:line(now), "\27[K")
    self.drawn = true
  else
    self.stream:write("fish-audio: ", self:line(now), "\n")
  end
  self.stream:flush()
  self.last_draw, self.told_done = now, done
end

function Upload:callback()
  return function(sent, send_total) self:update(sent, send_total) end
end

-- The call returned: a bar gives its line back to what follows.
function Upload:finish()
  if self.drawn then
    self.stream:write("\n")
    self.stream:flush()
    self.drawn = false
  end
end

return progress
