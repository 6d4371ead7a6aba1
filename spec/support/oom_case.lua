-- One out-of-memory case for oom_spec.lua, run by oom_host:
--   oom_host oom_case.lua CASE K BASE_URL
-- The K-th allocation that grows memory after the case's setup fails, in the
-- middle of the C core's work; the case then carries on as a program would
-- (closes what it made, drives the engine on) and prints "survived". Under
-- the sanitizer build a use after free or a leak of state shows at once.
local case, k, base = arg[1], tonumber(arg[2]), arg[3]
local core = require("fish.core")
local engine = core.engine()

-- Drive the engine for `seconds`, in the interface's own mode or in socket
-- mode; failures raised inside are the case's business, not a crash.
local function drive(seconds, socket_mode, finished)
  local until_time = core.now() + seconds
  local changed = {}
  finished = finished or {}
  while core.now() < until_time do
    if socket_mode then
      pcall(engine.poll_sockets, engine, finished, changed)
      pcall(engine.watch_changes, engine, {})
      pcall(engine.socket_timeout, engine, finished)
    else
      pcall(engine.perform, engine, finished, changed)
    end
    engine:poll(0.01)
  end
end

-- Run fn with the K-th growing allocation failing. Armed inside the
-- protected call: an argument built outside it (a table, a closure) would
-- take the failure out of the C core's hands and into the case's own code.
local function failing(fn)
  local ok, why = pcall(function()
    fail_allocation(k)
    fn()
  end)
  fail_allocation(0)
  return ok, why
end

local cases = {}

-- e:add: the request must not be left in libcurl's multi unknown to the engine.
function cases.add()
  local request = core.request({ url = base .. "/length/10" })
  failing(function() engine:add(request) end)
  request:close()
  drive(0.2)
end

-- e:add_live: the same for a live socket (its handshake fails here: no
-- WebSocket at this server, which changes nothing for the case).
function cases.add_live()
  local socket = core.live_socket({ url = base:gsub("^http", "ws") .. "/live" })
  failing(function() engine:add_live(socket) end)
  local finished = {}
  drive(0.2, false, finished)
  -- A socket the engine does not know must not come back as a request.
  assert(#finished == 0, "a live socket was reported as a finished request")
  socket:close()
end

-- e:watch_changes: a failure while it fills its table must leave every
-- change listed and none freed.
function cases.watch()
  local kept = core.request({ url = base .. "/endless" })
  local dropped = core.request({ url = base .. "/endless" })
  engine:add(kept)
  engine:add(dropped)
  engine:socket_timeout({})
  drive(0.1, true)
  -- Two changes: a "remove" (the dropped request's socket), then a new
  -- socket. The table has room for one pair, so the failure comes after
  -- the first entry was handled.
  dropped:close()
  local late = core.request({ url = base .. "/endless" })
  engine:add(late)
  engine:socket_timeout({})
  local out = { 0, 0 }
  failing(function() engine:watch_changes(out) end)
  engine:watch_changes({})
  kept:close()
  late:close()
end

-- core.request: every option it copies, failing at each allocation.
function cases.request()
  local options = {
    url = base .. "/upload", method = "POST", headers = { "A: b", "C: d" },
    mime = { { name = "a", data = "xyz" }, { name = "b", data = ("z"):rep(5000) } }, sink = "stream",
  }
  local request
  local ok = failing(function() request = core.request(options) end)
  if ok then
    engine:add(request)
    drive(0.2)
    pcall(request.take, request)
    request:close()
  end
end

-- e:perform: finishing requests while the finished table cannot grow.
function cases.collect()
  local requests = {}
  for i = 1, 4 do
    requests[i] = core.request({ url = base .. "/length/" .. (i * 1000) })
    engine:add(requests[i])
  end
  failing(function() drive(0.2) end)
  drive(0.1)
  for _, request in ipairs(requests) do
    pcall(request.take, request)
    request:close()
  end
end

-- Does this process (the shell's parent) hold `path` open? Asked by name:
-- a count of descriptors would also see the ends of popen's own pipe,
-- which the parent closes while ls may already be looking.
local function is_open(path)
  local listing = io.popen("ls -l /proc/$PPID/fd")
  local found = false
  for line in listing:lines() do
    if line:sub(-#path - 4) == " -> " .. path then found = true end
  end
  listing:close()
  return found
end

-- The msgpack writer and reader, with a referenced file: w:result() reads
-- it, and must not leave it open when an allocation fails.
function cases.writer()
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(("f"):rep(20000))
  f:close()
  local big, value = ("x"):rep(70000), { x = { 1, 2, 3 }, y = { z = "q" } }
  local w = core.mp_writer()
  -- The file first: its bytes are read while the result is still small,
  -- so the result grows (allocates) while the file is open.
  w:map(3):str("a")
  assert(w:bin_file_ref(path))
  w:str("b"):bin(big):str("c")
  failing(function()
    w:value(value)
    core.mp_decode(w:result())
  end)
  assert(not is_open(path), "w:result() left the referenced file open")
  w:close()
  os.remove(path)
end

assert(cases[case], "no such case: " .. tostring(case))()
collectgarbage()
engine:close()
collectgarbage()
print("survived")
