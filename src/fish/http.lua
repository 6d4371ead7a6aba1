-- One API call over HTTP: build the request, run it through the loop, turn
-- the outcome into a response or an error, and retry where that is safe
-- (protocol-decisions.md, "Retries").
local core = require("fish.core")
local errors = require("fish.errors")
local loop = require("fish.loop")

local http = {}

local RETRY_AFTER_CAP = 60
local BACKOFF_BASE = 1.0
local JITTER = 0.10

local function retryable_status(status)
  return status == 408 or status == 429 or status >= 500
end

-- Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.
function http.parse_retry_after(value, now_epoch)
  if type(value) ~= "string" then return nil end
  value = value:match("^%s*(.-)%s*$")
  local seconds
  if value:match("^%d+$") then
    seconds = tonumber(value)
  else
    local at = core.http_date(value)
    if not at then return nil end
    seconds = at - (now_epoch or core.epoch())
    if seconds < 0 then seconds = 0 end
  end
  if seconds > RETRY_AFTER_CAP then seconds = RETRY_AFTER_CAP end
  return seconds
end

-- Seconds to wait from X-RateLimit-Reset, which carries the epoch second at
-- which the limit resets (the TypeScript SDK reads it so); used only when
-- there is no Retry-After, and capped like it.
function http.parse_rate_limit_reset(value, now_epoch)
  if type(value) ~= "string" then return nil end
  local at = tonumber(value:match("^%s*(%d+)%s*$"))
  if not at then return nil end
  local seconds = at - (now_epoch or core.epoch())
  if seconds < 0 then seconds = 0 end
  if seconds > RETRY_AFTER_CAP then seconds = RETRY_AFTER_CAP end
  return seconds
end

-- A number in [0, 1) for the jitter. LuaJIT's math.random starts from the
-- same seed in every process, so alone it would give every process the same
-- "random" waits and let them retry in lockstep; the clock's sub-millisecond
-- digits differ from process to process. The host's random state is left as
-- it is: a library must not reseed it.
local function jitter_fraction()
  local clock = (core.now() * 1e6) % 1000 / 1000
  return (math.random() + clock) % 1
end

-- 1 s, 2 s, 4 s, ... with +-10 % jitter, never above the Retry-After cap
-- (a caller who asks for many retries must not wait for hours).
local function backoff(attempt)
  local base = math.min(BACKOFF_BASE * 2 ^ (attempt - 1), RETRY_AFTER_CAP)
  return base * (1 + JITTER * (2 * jitter_fraction() - 1))
end

local TIMEOUT_MESSAGES = {
  connect = "could not connect within %gs",
  first_byte = "no response within %gs",
  idle = "no data for %gs during the response",
  total = "the request took longer than %gs",
}

-- The error for a transfer that did not complete.
local function transfer_error(request, failure, message, limits)
  if failure == "canceled" then
    local which = loop.expired(request)
    if which then
      return errors.new({ kind = "timeout", timeout = which, message = TIMEOUT_MESSAGES[which]:format(limits[which]) })
    end
    return errors.new({ kind = "canceled", message = "the request was canceled" })
  end
  if failure == "connect_timeout" then
    local message_text = TIMEOUT_MESSAGES.connect:format(limits.connect)
    return errors.new({ kind = "timeout", timeout = "connect", message = message_text })
  end
  if failure == "write" then return errors.new({ kind = "io", message = message }) end
  if failure == "file_changed" or failure == "read" then
    return errors.new({ kind = "io", cause = failure, message = message })
  end
  if failure == "too_large" or failure == "resources" then return errors.new({ kind = failure, message = message }) end
  return errors.new({ kind = "network", cause = failure, message = message })
end

-- Failures that may be tried again: nothing reached the server's handler,
-- so nothing was generated or billed.
local RETRYABLE_FAILURES = { connect = true, connect_timeout = true, network = true }

-- Beside the target, so the final rename stays on one file system. The C
-- side creates it with O_EXCL, so a clash fails loudly instead of clobbering,
-- and removes it when the request is closed without a commit.
local temp_counter = 0
local function temp_path_for(out)
  temp_counter = temp_counter + 1
  return ("%s.%x-%d.part"):format(out, math.floor(core.now() * 1e6) % 0x7fffffff, temp_counter)
end

-- What a caller who watches the transfer is told, after each engine step
-- that moved it: on_chunk gets the body bytes that arrived, on_progress the
-- transfer counters (sent, send_total, received, receive_total) when any of
-- them changed. on_progress is called at least once, and its last call,
-- after the transfer ended, has the final counts. Each attempt is a new
-- request, so a retry counts again from zero. Returns deliver, moved for
-- loop.await.
local function watcher(spec, request)
  local on_chunk, on_progress = spec.on_chunk, spec.on_progress
  local taken = 0
  local sent, send_total, received, receive_total = 0, nil, 0, nil
  local told = false
  local function counters_moved()
    local s, st, r, rt = request:transfer()
    return s ~= sent or st ~= send_total or r ~= received or rt ~= receive_total
  end
  local function moved()
    if on_chunk and (request:progress()) > taken then return true end
    return on_progress ~= nil and counters_moved()
  end
  local function deliver()
    if on_chunk then
      taken = request:progress()
      local bytes = request:take()
      if bytes then on_chunk(bytes) end
    end
    if on_progress and (counters_moved() or (not told and request:state() ~= "running")) then
      sent, send_total, received, receive_total = request:transfer()
      told = true
      on_progress(sent, send_total, received, receive_total)
    end
  end
  return deliver, moved
end

-- Start the request and wait for it, feeding on_chunk and on_progress as it moves.
-- Whatever raises on the way (either callback, a host's pause function)
-- must not leave the transfer running and buffering: close the request,
-- then raise again. loop.pcall lets the callbacks, a host's pause and a
-- task yield across it on every ABI. A wait done in C yields nowhere, and
-- plain pcall keeps it on the calling thread: PUC 5.1's Ctrl-C hook is set
-- on the main thread only, so a wait inside loop.pcall's coroutine would
-- not see it.
local function transfer(client, spec, request, limits)
  local deliver, moved
  if spec.on_chunk or spec.on_progress then deliver, moved = watcher(spec, request) end
  local ok, why
  if loop.waits_in_c(client.pause, deliver) then
    ok, why = pcall(loop.transfer_in_c, request, limits)
  else
    loop.start(request, limits)
    ok, why = loop.pcall(loop.await, request, client.pause, deliver, moved)
  end
  if not ok then
    request:close()
    error(why, 0)
  end
end

local request_options = { proxy_tunnel = true }

-- Run one attempt. Returns the finished request.
local function attempt(client, spec, limits)
  local temp
  local sink = "buffer"
  if spec.out then
    sink, temp = "file", temp_path_for(spec.out)
  elseif spec.on_chunk then
    sink = "stream"
  end
  -- core.request only reads its options (it copies what it keeps), so one
  -- table serves every attempt instead of a new 14-field table each time.
  -- Every key is set on each use; the body and mime are let go right after,
  -- so a large inline reference is not held here until the next call.
  local o = request_options
  o.url, o.method, o.headers, o.body, o.mime = spec.url, spec.method, spec.headers, spec.body, spec.mime
  o.sink, o.path, o.target, o.max_bytes = sink, temp, spec.out, spec.max_bytes
  o.connect_timeout, o.ca_file, o.proxy = limits.connect, client.ca_file, spec.proxy or ""
  o.progress = spec.on_progress ~= nil
  local request = core.request(o)
  o.body, o.mime, o.headers = nil, nil, nil
  client:_track(request)
  if spec.cancel then spec.cancel:watch(request) end
  transfer(client, spec, request, limits)
  return request
end

-- The outcome of a finished request: response, or nil plus error and
-- whether trying again is safe.
local function outcome(spec, request, limits)
  local failure, message = request:result()
  local delivered, _, first_byte_at = request:progress()
  local status = request:status()
  -- A non-2xx answer whose body broke off (a proxy's 502 that hangs up, a
  -- reset inside a 503 page) is still that status: report and retry it as
  -- the status says. None of its bytes reached the caller's sink.
  local broken_error_body = failure == "network" and status >= 300 and delivered == 0
  if failure and not broken_error_body then
    local err = transfer_error(request, failure, message, limits)
    local before_response = first_byte_at == 0 and delivered == 0
    return nil, err, before_response and RETRYABLE_FAILURES[failure] == true
  end
  if status < 200 or status >= 300 then
    local body, truncated = request:error_body()
    truncated = truncated or broken_error_body
    local err = errors.from_http(status, body, truncated, spec.secrets)
    err.retry_after = http.parse_retry_after(request:header("Retry-After"))
      or http.parse_rate_limit_reset(request:header("X-RateLimit-Reset"))
    if status >= 300 and status < 400 then
      err.location = request:header("Location")
      err.message = err.message .. " (redirects are not followed)"
    end
    return nil, err, retryable_status(status)
  end
  if delivered == 0 and spec.expect_body then
    local empty = ("the server answered %d with an empty body"):format(status)
    return nil, errors.new({ kind = "invalid_response", status = status, message = empty }), false
  end
  return {
    status = status,
    body = (not spec.out and not spec.on_chunk) and (request:take() or "") or nil,
    bytes = delivered,
  }
end

-- Move a finished download into place. The request's commit renames its
-- own temporary file; a request closed without one removes it.
local function commit(request, spec)
  local ok, why = request:commit(spec.out)
  if ok then return true end
  return nil, errors.new({ kind = "io", message = "cannot move the audio into place: " .. tostring(why) })
end

-- http.send(client, spec): spec = { method, url, headers, body | mime,
-- out | on_chunk, on_progress, expect_body, max_bytes, retries, limits,
-- cancel, proxy, secrets }. Every error it returns has had the call's keys redacted.
function http.send(client, spec)
  local limits = spec.limits
  local attempts = (spec.retries or 0) + 1
  local response, err, safe
  for n = 1, attempts do
    if loop.task_canceled() or (spec.cancel and spec.cancel.canceled) then
      err = errors.new({ kind = "canceled", message = "the call was canceled", attempts = n - 1 })
      break
    end
    -- Closed while we waited to retry: close() cancels what runs, and must
    -- not be undone by the next attempt.
    if client.closed then
      err = errors.new({ kind = "canceled", message = "the client was closed", attempts = n - 1 })
      break
    end
    local request = attempt(client, spec, limits)
    response, err, safe = outcome(spec, request, limits)
    if response and spec.out then
      local committed, why = commit(request, spec)
      if not committed then response, err, safe = nil, why, false end
    end
    request:close()
    if response then
      response.attempts = n
      return response
    end
    err.attempts = n
    if not safe or n == attempts then break end
    -- The back-off goes through the module table, so a spec can shorten it.
    -- A cancel token or client.close() ends the wait early.
    local wait = err.retry_after or http._backoff(n)
    loop.wait_until(function()
      return client.closed or (spec.cancel ~= nil and spec.cancel.canceled)
    end, core.now() + wait, client.pause)
  end
  return nil, errors.redact(err, spec.secrets)
end

http._backoff = backoff
return http
