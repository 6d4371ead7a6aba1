-- The handler of the bench's fast server (nginx.conf in this directory):
-- a POST /v1/tts that reads and discards the request body, optionally
-- waits, and answers a given number of bytes: a string made once per size,
-- then a counter, so that no two answers are the same bytes (as no two
-- syntheses are). LuaJIT interns every string: identical answers would
-- let it find the last one instead of allocating and copying a new one,
-- which real audio never allows. Nothing here decodes msgpack: the bench
-- measures the client.
-- luacheck: globals ngx
local M = {}

local MAX_BYTES = 64 * 1024 * 1024

local COUNTER_BYTES = 8
local MIN_BYTES = 4 + COUNTER_BYTES

local fillers = {} -- bytes -> the answer of that size without its counter
local served = 0

-- The answer of n bytes, as pieces for ngx.print (which copies them into
-- one buffer; no Lua string of n bytes is made per request).
local function answer_of(n)
  local filler = fillers[n]
  if not filler then
    -- An MPEG frame sync up front, then filler: audio enough for a client.
    filler = "\255\251\144\100" .. string.rep("\0", n - MIN_BYTES)
    fillers[n] = filler
  end
  served = served + 1
  -- At the end: LuaJIT's string hash samples the last bytes.
  return { filler, ("%08x"):format(served % 0x100000000) }
end

local function fail(status, message)
  ngx.status = status
  ngx.header.content_type = "application/json"
  ngx.print(('{"status":%d,"message":"%s"}'):format(status, message))
  return ngx.exit(status)
end

-- Held answers (/hold/v1/tts) wait on this until GET /_release posts it
-- (after a GET /_hold; before it, and after the release, they do not wait).
-- One worker (nginx.conf), so one semaphore sees every held request.
local held
local HOLD_LIMIT = 60

-- Count the request among those waiting while wait() runs; a client that
-- hangs up ends it at once.
local function waiting_while(wait)
  local stats = ngx.shared.bench
  local counted = true
  stats:incr("waiting", 1, 0)
  local function uncount()
    if counted then
      counted = false
      stats:incr("waiting", -1, 0)
    end
  end
  ngx.on_abort(function()
    uncount()
    return ngx.exit(499)
  end)
  wait()
  uncount()
end

-- bytes: the size of the answer; delay: seconds to wait first (or nil);
-- hold: wait until released (or HOLD_LIMIT seconds).
function M.tts(bytes, delay, hold)
  if ngx.req.get_method() ~= "POST" then return fail(405, "POST only") end
  local auth = ngx.var.http_authorization
  if not auth or not auth:find("^Bearer %S") then return fail(401, "missing or malformed Authorization") end
  -- Read the whole body and drop it. nginx reads it in C into one buffer
  -- (client_body_buffer_size in nginx.conf holds a 30 MB reference): far
  -- less CPU for the server than reading it through a Lua socket.
  ngx.req.read_body()
  local n = tonumber(bytes)
  if not n or n < MIN_BYTES or n > MAX_BYTES then
    return fail(400, ("bytes must be %d .. 64 MiB"):format(MIN_BYTES))
  end
  delay = tonumber(delay)
  if delay and delay > 0 then
    waiting_while(function() ngx.sleep(delay) end)
  elseif hold and ngx.shared.bench:get("released") == false then
    held = held or require("ngx.semaphore").new(0)
    waiting_while(function() held:wait(HOLD_LIMIT) end)
  end
  ngx.header.content_type = "audio/mpeg"
  ngx.header.content_length = n
  ngx.print(answer_of(n))
end

-- GET /_hold: held answers wait from now on; GET /_release answers those
-- waiting, and the ones that come later at once.
function M.hold()
  ngx.shared.bench:set("released", false)
  ngx.say("holding")
end

function M.release()
  ngx.shared.bench:set("released", true)
  local waiters = held and -held:count() or 0
  if waiters > 0 then held:post(waiters) end
  ngx.say("released ", waiters)
end

function M.stats()
  ngx.say("waiting ", ngx.shared.bench:get("waiting") or 0)
end

return M
