-- fish.live{...}: live text-to-speech over a WebSocket (/v1/tts/live, or
-- /v1/tts/live/with-timestamp with timestamps = true). Text goes out as the
-- caller produces it, audio comes back as the server makes it.
--
-- The socket is the C core's (core.live_socket, moved along by the same
-- engine as the HTTP transfers). This file is the session around it: the
-- public handle, what each event does, the errors, the retries before the
-- socket opens, the time limits, and the three ways of waiting (blocking,
-- fish tasks, fish.step from a host loop).
--
-- Nothing here runs the caller's code from inside the engine: a socket with
-- news only marks its session (changed()); the callbacks run when someone
-- advances the session: finish() and events() while they wait, and
-- fish.step for the sessions nobody waits on.
local core = require("fish.core")
local errors = require("fish.errors")
local http = require("fish.http")
local loop = require("fish.loop")
local tts = require("fish.tts")
local util = require("fish.util")
local live_audio = require("fish.live_audio")
local live_out = require("fish.live_out")
local live_protocol = require("fish.live_protocol")
local live_text = require("fish.live_text")

local live = {}

local FN = "fish.live"
local PATH = "/v1/tts/live"
local PATH_TIMESTAMPS = "/v1/tts/live/with-timestamp"

-- Audio messages of about a second of 44.1 kHz PCM are ~88 KB; a message
-- past this is not one the API sends (live-tts.md §1.5).
local DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024

-- The options of fish.live besides the /v1/tts fields.
local OPTIONS = {
  "model", "extra", "out", "on_audio", "on_alignment", "timestamps", "auto_flush", "max_message",
  "retries", "connect_timeout", "first_audio_timeout", "idle_timeout", "cancel", "headers", "api_key",
}
local KNOWN, NAMES = {}, {}
for _, list in ipairs({ tts.REQUEST_FIELDS, OPTIONS }) do
  for _, name in ipairs(list) do
    KNOWN[name] = true
    NAMES[#NAMES + 1] = name
  end
end

-- Which limit ended a session, and how it says so.
local TIMEOUT_MESSAGES = {
  connect = "could not open the session within %gs",
  first_audio = "no audio within %gs of the first flush or finish",
  idle = "the server sent nothing for %gs while the session was finishing",
}

-- Sessions that have not ended, held weakly: a session nobody refers to is
-- collected (its socket is closed by the socket's own finaliser, its
-- `out` file removed). fish.step looks at each: there are few.
local active = setmetatable({}, { __mode = "k" })

local Session = {}
Session.__index = Session
Session.__name = "fish.live_session"

-- ---- ending -------------------------------------------------------------------------

local function is_end(phase)
  return phase == "done" or phase == "failed" or phase == "canceled"
end

function Session:ended()
  return is_end(self.phase)
end

-- Wake whoever waits on this session (tasks in finish() or events()).
function Session:wake_waiters()
  for key in pairs(self.waiters) do loop.notify(key) end
end

-- Queue an event for events(), if the iterator is in use.
function Session:queue_event(event)
  local q = self.queue
  if not q then return end
  q.tail = q.tail + 1
  q[q.tail] = event
end

function Session:terminal_event()
  if self.phase == "done" then return { type = "finish" } end
  return { type = "error", message = tostring(self.err), error = self.err }
end

-- End the session: `err` nil means success. Closes the socket, commits or
-- discards the output file, and hands the end to events().
function Session:finish_with(err)
  if self:ended() then return end
  if err == nil and self.out then
    local ok, why = self.out:commit()
    if not ok then err = errors.new({ kind = "io", message = why }) end
  end
  if err then
    if self.out then self.out:discard() end
    self.err = errors.redact(err, self.secrets)
    self.err.call = FN
    self.phase = err.kind == "canceled" and "canceled" or "failed"
  else
    self.phase = "done"
  end
  local sock = self.sock
  if sock then sock:close() end
  self.sock = nil
  self.log = nil
  active[self] = nil
  -- Its fd is closed now: a host driver drops its handle on it before the
  -- number can be reused (a cancel from the host's own code moves no
  -- engine, so no driver would look by itself).
  if sock then loop.moved() end
  self:queue_event(self:terminal_event())
  self:wake_waiters()
end

-- Cancel: drop the socket at once. Audio received but not yet delivered is
-- discarded. Returns false if the session had already ended.
function Session:cancel_with(message)
  if self:ended() then return false end
  if self.queue then
    for i = self.queue.head, self.queue.tail do self.queue[i] = nil end
    self.queue.head, self.queue.tail = 1, 0
  end
  self:finish_with(errors.new({ kind = "canceled", message = message }))
  return true
end

-- For fish.cancel_token and client.close(), which end what they watch the
-- way they end requests: state() says whether it still runs, cancel() ends it.
function Session:state()
  return self:ended() and "done" or "running"
end

function Session:cancel()
  return self:cancel_with("the session was canceled")
end

-- ---- the socket -------------------------------------------------------------------

function Session:connect()
  local sock = core.live_socket({
    url = self.url,
    headers = self.headers,
    connect_timeout = self.limits.connect or 0,
    max_message = self.max_message,
    proxy = self.client.proxy or "",
    proxy_tunnel = true,
    ca_file = self.client.ca_file,
  })
  self.attempts = self.attempts + 1
  self.sock = sock
  self.retry_at = nil
  self.connect_at = core.now()
  for _, message in ipairs(self.log) do sock:send(message) end
  loop.add_live(sock, self)
  loop.live_due(self:next_due()) -- the connect limit
end

-- Queue one event for the server. Until the socket is open each is also
-- kept, so a retry can replay the session from its start.
-- A socket the engine has seen close takes nothing more: the message is
-- dropped, and the session learns of the close at its next advance (which
-- first delivers what came before it).
function Session:emit(message)
  if self.log then self.log[#self.log + 1] = message end
  local sock = self.sock
  if sock and sock:state() ~= "closed" then
    sock:send(message)
    -- What the socket could not write now waits for POLLOUT: a host driver
    -- that watches its fd must learn of it here, since a send (from the
    -- host's own code) moves no engine and so no driver looks by itself.
    loop.moved()
  end
end

-- The engine has news on our socket (called from the pump: no callbacks).
function Session:changed()
  self.news = true
  self:wake_waiters()
end

local RETRYABLE_STATUS = { [408] = true, [429] = true }

-- The error of a socket that never opened, and whether trying again is
-- safe (nothing reached the server's session).
function Session:refusal(kind, message)
  local status, headers, body = self.sock:handshake()
  status = tonumber(status) or 0
  if status ~= 0 and status ~= 101 then
    local err = errors.from_http(status, body, nil, self.secrets)
    headers = headers or {}
    err.retry_after = http.parse_retry_after(headers["retry-after"])
      or http.parse_rate_limit_reset(headers["x-ratelimit-reset"])
    if status == 404 or status == 405 or (status >= 200 and status < 300) then
      -- The self-hosted fish-speech server, and any plain HTTP server.
      err.message = ("live TTS is not supported by this server (it answered the WebSocket upgrade on %s "
        .. "with HTTP %d): %s"):format(self.path, status, err.message)
    end
    return err, RETRYABLE_STATUS[status] or status >= 500
  end
  if kind == "timeout" then
    return errors.new({ kind = "timeout", timeout = "connect",
      message = TIMEOUT_MESSAGES.connect:format(self.limits.connect or 0) }), true
  end
  if kind == "too_large" then return errors.new({ kind = "too_large", message = message }), false end
  if kind == "protocol" then
    return errors.new({ kind = "invalid_response", message = "WebSocket handshake: " .. tostring(message) }), false
  end
  return errors.new({ kind = "network", cause = "connect", message = message or "the connection failed" }), true
end

-- The error of a socket that closed after it opened, before `finish`.
function Session:broken(kind, message)
  if kind == "too_large" then return errors.new({ kind = "too_large", message = message }) end
  if kind == "protocol" then return errors.new({ kind = "invalid_response", message = message }) end
  local code, reason = self.sock:close_info()
  local text = "the connection closed before the session finished"
  if code then
    text = ("%s (close code %d%s)"):format(text, code, (reason and reason ~= "") and (": " .. reason) or "")
  elseif message then
    text = text .. ": " .. message
  end
  return errors.new({ kind = "network", cause = "closed", message = text, close_code = code,
    close_reason = reason ~= "" and reason or nil })
end

-- The socket closed or failed: retry, or end the session.
function Session:socket_ended()
  local kind, message = self.sock:failure()
  if not self.opened then return self:retry_or_fail(self:refusal(kind, message)) end
  return self:finish_with(self:broken(kind, message))
end

-- The socket never opened: try again if that is safe and retries are left
-- (after Retry-After, else the client's back-off), or end with `err`.
function Session:retry_or_fail(err, safe)
  err.attempts = self.attempts
  if safe and self.attempts <= self.retries then
    self.sock:close()
    self.sock = nil
    self.retry_at = core.now() + (err.retry_after or http._backoff(self.attempts))
    return
  end
  return self:finish_with(err)
end

-- ---- what the server sends ---------------------------------------------------------

-- Run a caller's callback. One that raises ends the session, and the error
-- goes on to whoever advanced it (finish, events, fish.step), as on_chunk's
-- does in fish.convert. loop.pcall lets it suspend its task on every ABI.
function Session:call(name, fn, ...)
  local ok, why = loop.pcall(fn, ...)
  if not ok then
    self:cancel_with(name .. " raised an error, so the session was closed: " .. tostring(why))
    error(why, 0)
  end
end

function Session:on_audio_event(event)
  local raw = event.audio
  if #raw > 0 and not self.first_audio_at then self.first_audio_at = core.now() end
  local bytes = self.carry and self.carry:take(raw) or raw
  local words
  if self.timestamps and event.alignment then
    words = live_audio.absolute_words(event.alignment, event.offset)
    if words then self.words = words end
  end
  local info
  if bytes ~= "" then
    self.blocks = self.blocks + 1
    info = {
      type = "audio", audio = bytes, seq = self.blocks, bytes = self.delivered,
      chunk_seq = event.chunk_seq, chunk_offset = event.offset, alignment = self.words,
    }
    if self.carry then
      info.rate, info.channels, info.bits = self.rate, live_audio.PCM_CHANNELS, live_audio.PCM_BITS
      info.time = self.delivered / (self.rate * live_audio.PCM_FRAME)
    end
    self.delivered = self.delivered + #bytes
    if self.out then
      local ok, why = self.out:write(bytes)
      if not ok then return self:finish_with(errors.new({ kind = "io", message = why })) end
    end
    self:queue_event(info)
    if self.on_audio then self:call("on_audio", self.on_audio, bytes, info) end
  end
  if words and not self:ended() then
    local event_info = { type = "alignment", alignment = words, chunk_seq = event.chunk_seq,
      chunk_offset = event.offset }
    self:queue_event(event_info)
    if self.on_alignment then self:call("on_alignment", self.on_alignment, words, event_info) end
  end
end

function Session:on_message(bytes)
  local event, why = live_protocol.decode(bytes)
  if not event then
    return self:finish_with(errors.new({ kind = "invalid_response",
      message = "the server sent a message that is not an event: " .. tostring(why) }))
  end
  if event.type == "audio" then return self:on_audio_event(event) end
  if event.type == "finish" then
    if event.reason == "stop" then
      if self.phase ~= "stopping" then
        return self:finish_with(errors.new({ kind = "network", cause = "closed",
          message = "the server ended the session before finish() was called" }))
      end
      return self:finish_with(nil)
    end
    return self:finish_with(errors.new({ kind = "server", event = "finish",
      message = "the server ended the session with an error" .. (event.message and (": " .. event.message) or "") }))
  end
  if event.type == "error" then
    return self:finish_with(errors.new({ kind = "server", event = "error",
      message = "the server reported an error" .. (event.message and (": " .. event.message) or "") }))
  end
  -- Unknown events are ignored (fish-api.md §5).
end

-- When the next time limit or retry is due, or nil.
function Session:next_due()
  if self:ended() then return nil end
  if self.retry_at then return self.retry_at end
  local due
  local limits = self.limits
  -- libcurl's connect timeout ends with the TCP and TLS connection; the
  -- Upgrade's answer is waited for here, under the same limit.
  if limits.connect and not self.opened then due = self.connect_at + limits.connect end
  if limits.first_audio and self.owed_at and not self.first_audio_at then
    local t = self.owed_at + limits.first_audio
    if not due or t < due then due = t end
  end
  -- After stop, the idle limit watches the server, unless the first-audio
  -- limit already does (audio is owed and none has come).
  local first_audio_watches = limits.first_audio and self.owed_at and not self.first_audio_at
  if limits.idle and self.phase == "stopping" and not first_audio_watches then
    local since = math.max(self.stop_at, self.last_message_at or 0)
    local t = since + limits.idle
    if not due or t < due then due = t end
  end
  return due
end

function Session:check_timers(now)
  if self.retry_at then
    if now >= self.retry_at then self:connect() end
    return
  end
  local limits = self.limits
  if limits.connect and not self.opened and now >= self.connect_at + limits.connect then
    return self:retry_or_fail(errors.new({ kind = "timeout", timeout = "connect",
      message = TIMEOUT_MESSAGES.connect:format(limits.connect) }), true)
  end
  if limits.first_audio and self.owed_at and not self.first_audio_at and now >= self.owed_at + limits.first_audio then
    return self:finish_with(errors.new({ kind = "timeout", timeout = "first_audio",
      message = TIMEOUT_MESSAGES.first_audio:format(limits.first_audio) }))
  end
  local due = self:next_due()
  if due and now >= due and self.phase == "stopping" then
    self:finish_with(errors.new({ kind = "timeout", timeout = "idle",
      message = TIMEOUT_MESSAGES.idle:format(limits.idle) }))
  end
end

-- Take what the socket has: every whole message in order, then its state;
-- then the time limits. Callbacks run here.
function Session:advance()
  if self:ended() then return end
  self.news = false
  local sock = self.sock
  if sock then
    while not self:ended() and self.sock == sock do
      local message = sock:receive()
      if not message then break end
      self.last_message_at = core.now()
      self:on_message(message)
    end
    if self:ended() or self.sock ~= sock then return end
    if not self.opened then
      local status = sock:handshake()
      if status == 101 then
        self.opened = true
        self.log = nil -- open: never replayed again
        if self.phase == "connecting" then self.phase = "open" end
      end
    end
    local state = sock:state()
    if state == "closed" or sock:failure() then return self:socket_ended() end
  end
  self:check_timers(core.now())
end

-- Drive the session until done() holds or it ends. Blocks, or suspends
-- only the calling task; a canceled task cancels the session.
function Session:drive(done)
  local key = {}
  self.waiters[key] = true
  local function ready() return self.news or self:ended() end
  local function on_cancel() self:cancel_with("the waiting task was canceled") end
  local ok, why = loop.pcall(function()
    while true do
      self:advance()
      if done() or self:ended() then return end
      loop.wait_on(key, ready, self:next_due(), self.client.pause, on_cancel)
    end
  end)
  self.waiters[key] = nil
  -- Nobody may wait now: fish.step (or a host driver) runs the timers.
  loop.live_due(self:next_due())
  if not ok then error(why, 0) end
end

-- fish.step: advance the sessions nobody waits on that have news or a due
-- timer. Returns the earliest time one wants to run again, and how many ran.
local function step(now)
  local list = {}
  for session in pairs(active) do
    if next(session.waiters) == nil then list[#list + 1] = session end
  end
  local due, ran = nil, 0
  for _, session in ipairs(list) do
    local at = session:next_due()
    if session.news or (at and at <= now) then
      ran = ran + 1
      session:advance()
      at = session:next_due()
    end
    if at and (not due or at < due) then due = at end
  end
  return due, ran
end
loop.set_live_step(step)
loop.live_active = function() return next(active) ~= nil end

-- ---- the public handle ------------------------------------------------------------

-- Text, flush and stop go out at once. After stop() or finish() the caller
-- has said there is no more text, so more is a bug in the caller: raise.
-- After a failure or a cancel (perhaps from another task) it is the
-- session's outcome: return it.
function Session:check_input(fn)
  if self.stopped then util.raise(("%s: the session takes no more text after stop() or finish()"):format(fn)) end
  if self:ended() then return errors.fail(self.err, FN) end
  return true
end

-- From the first flush (or stop) after some words were sent, audio is
-- owed: the first-audio limit starts. A flush of nothing, or of white
-- space, brings no audio, so it starts nothing: a session that waits for
-- its first words must not time out.
function Session:owe_audio()
  if self.has_words and not self.owed_at then self.owed_at = core.now() end
  -- The first-audio or idle limit may have started here, outside any step:
  -- a host driver that runs fish.live's step only when it is due must know.
  loop.live_due(self:next_due())
end

function Session:send(text)
  local fn = "session.send"
  if type(text) ~= "string" then util.raise(fn .. ": argument 1 (text) must be a string, got " .. type(text)) end
  util.check_text(fn, "text", text)
  local ok, message, err = self:check_input(fn)
  if not ok then return ok, message, err end
  if text == "" then return true end
  if not self.has_words and text:find("%S") then self.has_words = true end
  if not self.auto_flush then
    self:emit(live_protocol.text(text))
    return true
  end
  for _, piece in ipairs(live_text.split(text)) do
    self:emit(live_protocol.text(piece.text))
    if piece.flush then
      self:emit(live_protocol.flush())
      self:owe_audio()
    end
  end
  return true
end

function Session:flush()
  local ok, message, err = self:check_input("session.flush")
  if not ok then return ok, message, err end
  self:emit(live_protocol.flush())
  self:owe_audio()
  return true
end

function Session:stop()
  if self.stopped then return true end
  if self:ended() then return errors.fail(self.err, FN) end
  self.stopped = true
  self.phase = "stopping"
  self.stop_at = core.now()
  self:emit(live_protocol.stop())
  self:owe_audio()
  return true
end

function Session:result()
  if self.phase == "done" then return true end
  return errors.fail(self.err, FN)
end

function Session:finish()
  if not self:ended() then
    self:stop()
    self:drive(function() return self:ended() end)
  end
  return self:result()
end

-- for ev in s.events() do ... end: each audio and alignment event, then
-- one "finish" or "error" event, then the end.
function Session:events()
  if not self.queue then
    self.queue = { head = 1, tail = 0 }
  end
  local q = self.queue
  return function()
    while true do
      if q.head <= q.tail then
        local event = q[q.head]
        q[q.head] = nil
        q.head = q.head + 1
        if event.type == "finish" or event.type == "error" then self.terminal_given = true end
        return event
      end
      if self.terminal_given then return nil end
      if self:ended() then
        self.terminal_given = true
        return self:terminal_event()
      end
      self:drive(function() return q.head <= q.tail end)
    end
  end
end

-- The session's public table: functions called with a dot (s.send) or a
-- colon (s:send). It refers to the session; the session does not refer to
-- it, so dropping the handle lets the whole session be collected.
local function public_handle(session)
  local handle = {}
  local function method(fn)
    return function(first, ...)
      if first == handle then return fn(session, ...) end
      return fn(session, first, ...)
    end
  end
  handle.send = method(Session.send)
  handle.flush = method(Session.flush)
  handle.stop = method(Session.stop)
  handle.finish = method(Session.finish)
  handle.cancel = method(function(s)
    return s:cancel_with("the session was canceled")
  end)
  -- close is the idempotent close every fish object has, for `<close>`
  -- (5.4) too: a session still running is canceled, an ended one stays as
  -- it ended. (A dropped handle needs no __gc: the socket has its own.)
  handle.close = method(function(s)
    s:cancel_with("the session was closed")
  end)
  handle.events = method(Session.events)
  handle.state = method(function(s) return s.phase end)
  return setmetatable(handle, {
    __name = "fish.live_session",
    __tostring = function() return "fish.live_session (" .. handle.state() .. ")" end,
    __close = function() handle.close() end,
  })
end

-- ---- opening ----------------------------------------------------------------------

local function check_limit(name, v)
  local seconds = util.check_seconds(FN, ("option '%s'"):format(name), v)
  if seconds == 0 then return nil end
  return seconds
end

-- The ws:// or wss:// URL of a path on the client's base URL.
local function ws_url(base_url, path)
  return (base_url:gsub("^http", "ws")) .. path
end

-- live.open(state, args): the body of client.live and fish.live.
function live.open(state, args)
  state:check_open(FN)
  util.check_table(FN, args)
  util.check_known(FN, args, KNOWN, NAMES)
  local request = {}
  for _, name in ipairs(tts.REQUEST_FIELDS) do
    if name ~= "text" then request[name] = args[name] end
  end
  request.extra = args.extra
  request.model = args.model
  tts.check_request(request, FN)
  request.model = nil
  if args.text ~= nil then util.check_text(FN, "text", args.text) end
  for _, name in ipairs({ "on_audio", "on_alignment" }) do
    if args[name] ~= nil and type(args[name]) ~= "function" then
      util.raise(("%s: field '%s' must be a function"):format(FN, name))
    end
  end
  for _, name in ipairs({ "timestamps", "auto_flush" }) do
    if args[name] ~= nil and type(args[name]) ~= "boolean" then
      util.raise(("%s: field '%s' must be true or false, got %s"):format(FN, name, tostring(args[name])))
    end
  end
  if args.on_alignment and not args.timestamps then
    util.raise(FN .. ": field 'on_alignment' needs timestamps = true (only /v1/tts/live/with-timestamp sends timings)")
  end
  if args.out ~= nil then util.check_output_path(FN, "out", args.out) end
  local max_message = DEFAULT_MAX_MESSAGE
  if args.max_message ~= nil then max_message = util.check_byte_count(FN, "max_message", args.max_message) end

  -- The call's retries, token and limits: the client's, overridden by the
  -- call, checked by the code that checks every call's. first_audio is
  -- this call's first byte; the HTTP-only total limit has no meaning here.
  local retries, token, call_limits = state:call_settings({
    retries = args.retries, cancel = args.cancel,
    connect_timeout = args.connect_timeout, idle_timeout = args.idle_timeout,
  }, FN)
  local limits = { connect = call_limits.connect, first_audio = call_limits.first_byte, idle = call_limits.idle }
  if args.first_audio_timeout ~= nil then
    limits.first_audio = check_limit("first_audio_timeout", args.first_audio_timeout)
  end

  local api_key = state.api_key
  if args.api_key ~= nil then
    api_key = util.check_header_value(FN, "option 'api_key'", args.api_key)
    if api_key == "" then util.raise(FN .. ": option 'api_key' must not be empty") end
  end
  local model = args.model
  if model == nil then model = state.model end
  local endpoint_headers = {}
  if model then endpoint_headers[1] = "model: " .. util.check_header_value(FN, "field 'model'", model) end
  local call_headers = args.headers ~= nil and util.header_lines(FN, args.headers) or nil
  local headers = {}
  for _, line in ipairs(state:headers(api_key, call_headers, endpoint_headers)) do
    -- HTTP request lines a WebSocket upgrade has no use for.
    if line ~= "Expect:" and line ~= "Accept: */*" then headers[#headers + 1] = line end
  end

  local out
  if args.out then
    local why
    out, why = live_out.open(args.out)
    if not out then util.raise(("%s: field 'out' %s"):format(FN, why)) end
  end

  local path = args.timestamps and PATH_TIMESTAMPS or PATH
  local session = setmetatable({
    client = state,
    path = path,
    url = ws_url(state.base_url, path),
    headers = headers,
    secrets = { api_key, state.api_key },
    limits = limits,
    retries = retries,
    max_message = max_message,
    timestamps = args.timestamps == true,
    auto_flush = args.auto_flush == true,
    on_audio = args.on_audio,
    on_alignment = args.on_alignment,
    out = out,
    carry = request.format == "pcm" and live_audio.pcm_carry() or nil,
    rate = request.sample_rate or live_audio.DEFAULT_RATE,
    phase = "connecting",
    attempts = 0,
    blocks = 0,
    delivered = 0,
    waiters = {},
    log = {},
    -- Without on_audio, events() is how audio is read: keep every event
    -- from the start. With it, events() sees those from its first call on.
    queue = (not args.on_audio) and { head = 1, tail = 0 } or nil,
  }, Session)
  active[session] = true
  state:_track(session)
  session:emit(live_protocol.start(request))
  local handle = public_handle(session)
  if token then
    if token.canceled then
      session:cancel_with("the call was canceled")
      return handle
    end
    token:watch(session)
  end
  session:connect()
  if args.text ~= nil then handle.send(args.text) end
  return handle
end

-- The call a client offers as client.live (client.lua, EXTENSIONS).
live.calls = { live = live.open }

return live
