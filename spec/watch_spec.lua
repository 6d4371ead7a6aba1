-- Socket mode (src/watch.c, loop.drive): libcurl's socket and timer
-- callbacks as data, curl_multi_socket_action, and a pump for hosts that
-- cannot watch fds. These run in any Lua; the host drivers built on them
-- (fish.nvim, fish.openresty) run in real hosts in spec/hosts_spec.lua.
local fish = require("fish")
local core = require("fish.core")
local loop = require("fish.loop")
local tasks = require("fish.tasks")
local server = require("support.server")

local WHATS = { ["in"] = true, out = true, inout = true, none = true, remove = true }

describe("socket mode", function()
  local srv, client

  setup(function()
    srv = server.start({ tts_delay = 0.3 })
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    loop.host.sockets = true -- as a host driver sets it: every pump in socket mode
  end)

  teardown(function()
    loop.host.sockets = nil
    if srv then srv:stop() end
  end)

  before_each(function() srv:reset() end)

  -- Drive the tasks with socket mode only: our own poll of the watched fds
  -- (loop.drive "poll") and passes that resume the tasks it woke.
  local function drive_by_sockets(limit)
    local started = core.now()
    local passes = 0
    while tasks.count() > 0 do
      assert(core.now() - started < (limit or 10), "socket mode did not finish the tasks")
      if tasks.queued() > 0 then loop.run_pass() end
      loop.drive("poll")
      passes = passes + 1
      loop.engine():poll(0.005) -- a host would sleep here; this one wakes on the sockets
    end
    return passes
  end

  it("reports the fds libcurl watches, and a due timer once a request starts", function()
    local e = loop.engine()
    local changes = {}
    e:watch_changes(changes) -- forget earlier tests' changes
    -- Right after the request is added (the host's `moved` hook), libcurl's
    -- timer says: run me now.
    local due_at_start
    local moved = loop.host.moved
    loop.host.moved = function()
      if due_at_start == nil then due_at_start = e:timer_due() end
    end
    local task = fish.spawn(function() return client.convert({ text = "watch me", format = "pcm" }) end)
    local ok, err = pcall(loop.run_pass)
    loop.host.moved = moved
    assert(ok, err)
    assert.is_number(due_at_start)
    assert.is_true(due_at_start <= 0.01, "timer due in " .. tostring(due_at_start))
    -- Move it until libcurl opens its socket.
    local seen = {}
    for _ = 1, 200 do
      loop.drive("poll")
      local n = e:watch_changes(changes)
      assert.equal(2 * n, #changes)
      for i = 1, n do
        assert.is_number(changes[2 * i - 1])
        assert.is_true(changes[2 * i - 1] >= 0)
        assert.is_true(WHATS[changes[2 * i]], "what: " .. tostring(changes[2 * i]))
        seen[#seen + 1] = changes[2 * i]
      end
      if #seen > 0 then break end
      e:poll(0.005)
    end
    assert.is_true(#seen > 0, "libcurl reported no socket")
    drive_by_sockets()
    local audio = task:wait()
    assert.is_string(audio)
    assert.equal(1, #srv:requests())
  end)

  it("finished transfers reach their tasks through loop.drive, as through fish.step", function()
    local results = {}
    for i = 1, 5 do
      fish.spawn(function() results[i] = client.convert({ text = "n" .. i, format = "pcm" }) end)
    end
    drive_by_sockets()
    for i = 1, 5 do assert.is_string(results[i], "task " .. i) end
    assert.equal(5, srv:stats().max_concurrent_tts)
    assert.equal(0, loop.running())
  end)

  it("leaves blocking calls working in the same Lua state", function()
    fish.spawn(function() return client.convert({ text = "by sockets", format = "pcm" }) end)
    drive_by_sockets()
    -- perform mode (curl_multi_poll, curl_multi_perform) on the same engine
    local audio, message = client.convert({ text = "blocking", format = "pcm" })
    assert.is_string(audio, message)
    local t = fish.spawn(function() return client.convert({ text = "stepped", format = "pcm" }) end)
    assert.is_string(t:wait())
  end)

  it("keeps a live socket's fd watched after libcurl lets go of it, until it closes", function()
    -- libcurl connects a live socket (CONNECT_ONLY), then stops watching
    -- its fd (REMOVE), and the socket watches it itself from then on. A
    -- host applies the changes in order: the socket's own entry must come
    -- after libcurl's REMOVE, or the host would drop a socket in use.
    local e = loop.engine()
    local changes, state = {}, {}
    e:watch_changes(changes)
    local function look()
      for i = 1, e:watch_changes(changes) do state[changes[2 * i - 1]] = changes[2 * i] end
    end
    local got = 0
    local s = client.live({ reference_id = "", format = "pcm", on_audio = function(b) got = got + #b end })
    local started = core.now()
    repeat
      assert(core.now() - started < 10, "the session did not open")
      loop.drive("poll")
      loop.run_pass()
      look()
      e:poll(0.005)
    until s.state() == "open"
    local watched = {}
    for fd, what in pairs(state) do
      if what ~= "remove" then watched[#watched + 1] = fd .. " " .. what end
    end
    assert.equal(1, #watched, "watched now: " .. table.concat(watched, ", "))
    assert.matches("^%d+ in", watched[1])
    local fd = tonumber(watched[1]:match("^%d+"))
    assert.is_true(s.send("Hello there."))
    s.stop()
    repeat
      assert(core.now() - started < 10, "the session did not finish")
      loop.drive("poll")
      loop.run_pass()
      look()
      e:poll(0.005)
    until s.state() == "done"
    assert.is_true(got > 0)
    assert.equal("remove", state[fd])
  end)

  it("socket_action on an fd libcurl does not know moves nothing and raises nothing", function()
    local finished = {}
    local running = loop.engine():socket_action(2 ^ 20, "in", finished)
    assert.equal(loop.engine():count(), running)
  end)

  it("socket_timeout with nothing running leaves no timer", function()
    local e = loop.engine()
    local finished = {}
    assert.equal(0, e:socket_timeout(finished))
    assert.is_nil(e:timer_due())
  end)

  it("refuses bad arguments, naming them", function()
    local e = loop.engine()
    local ok, err = pcall(e.socket_action, e, 3, "sideways", {})
    assert.is_false(ok)
    assert.matches("bad argument #3", err)
    assert.matches("sideways", err)
    ok, err = pcall(e.socket_action, e, -1, "in", {})
    assert.is_false(ok)
    assert.matches("fd must not be negative", err)
    ok, err = pcall(e.socket_action, e, 3, "in")
    assert.is_false(ok)
    assert.matches("table expected", err)
    ok, err = pcall(e.watch_changes, e)
    assert.is_false(ok)
    assert.matches("table expected", err)
    ok, err = pcall(e.poll_sockets, e, nil)
    assert.is_false(ok)
    assert.matches("table expected", err)
    ok, err = pcall(loop.drive, "sideways")
    assert.is_false(ok)
    assert.matches("unknown way 'sideways'", err)
    ok, err = pcall(e.limit_connections, e, -1)
    assert.is_false(ok)
    assert.matches("bad argument #2 .*from 0 to 1000000", err)
  end)

  it("limit_connections bounds the engine's connections; transfers past it wait their turn", function()
    -- In a child interpreter: its engine has no connections yet (idle ones
    -- made before the limit would be reused).
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
package.path = %q
package.cpath = %q
local fish = require("fish")
require("fish.loop").engine():limit_connections(1, nil)
local c = fish.new({ api_key = %q, base_url = %q, retries = 0 })
local results = {}
for i = 1, 3 do fish.spawn(function() results[i] = c.convert({ text = "q" .. i, format = "pcm" }) end) end
fish.run()
for i = 1, 3 do assert(type(results[i]) == "string", "task " .. i) end
print("DONE")
]]):format(package.path, package.cpath, srv.api_key, srv.url))
    f:close()
    local pipe = io.popen(require("support.abi").interpreter .. " " .. script .. " 2>&1")
    local out = pipe:read("*a")
    pipe:close()
    os.remove(script)
    assert.matches("DONE", out)
    assert.equal(3, #srv:requests())
    assert.equal(1, srv:stats().max_concurrent_tts)
  end)
end)

describe("fish.openresty.start outside nginx", function()
  it("checks its options, then refuses to run outside nginx", function()
    local openresty = require("fish.openresty")
    local function fails(pattern, ...)
      local ok, err = pcall(openresty.start, ...)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    fails("argument 1 must be a table", "x")
    fails("unknown option 'pool'", { pool = 3 })
    fails("option 'max_connections' must be a whole number from 1", { max_connections = 0 })
    fails("option 'max_host_connections' must be a whole number", { max_host_connections = 1.5 })
    fails("option 'tick' must be a number of seconds", { tick = 0 })
    fails("option 'tick'", { tick = 0 / 0 })
    fails("not running inside nginx", {})
  end)
end)
