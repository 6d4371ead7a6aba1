-- The task loop under misuse and failure (issue 9): a canceled task whose
-- on_chunk waits, fish.run/fish.step/task:wait called from inside a task,
-- NaN and non-number timeouts, canceling a task that waits for another, and
-- several task errors in one pass. The scenarios that used to hang run in a
-- child interpreter under `timeout`, so a regression fails here instead of
-- stalling the suite.
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")
local abi = require("support.abi")
local timing = require("support.timing")

local CHILD_LIMIT = 30 -- seconds; every child scenario ends in well under 5

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Run `body` in a child interpreter of this ABI, with `fish`, `core` and
-- (given a server) `client` in scope. The child prints "END wall cpu" when
-- it gets to the end. Returns its output, its exit code (124: it hung and
-- was stopped), and the wall and CPU seconds it reported.
local function run_child(body, srv)
  local prelude = ([[
package.path = %q
package.cpath = %q
local fish = require("fish")
local core = require("fish.core")
local client = %s
local started_wall, started_cpu = core.now(), os.clock()
]]):format(package.path, package.cpath,
    srv and ("fish.new({ api_key = %q, base_url = %q, retries = 0 })"):format(srv.api_key, srv.url) or "nil")
  local epilogue = [[

io.write(("END %.3f %.3f\n"):format(core.now() - started_wall, os.clock() - started_cpu))
]]
  local path = os.tmpname()
  files.write(path, prelude .. body .. epilogue)
  local cmd = ("timeout -k 2 %d %s %s 2>&1; echo \"exit=$?\""):format(CHILD_LIMIT, abi.interpreter, files.quote(path))
  local out = files.capture(cmd)
  os.remove(path)
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  out = out:gsub("exit=%d+%s*$", "")
  local wall, cpu = out:match("END ([%d.]+) ([%d.]+)")
  return out, code, tonumber(wall), tonumber(cpu)
end

-- Drive every task to its end, swallowing the errors of earlier scenarios
-- (bounded, so a broken loop cannot hang the suite), and restore the default
-- error handler: each test starts from a clean scheduler.
local function drain()
  fish.on_error(function() end)
  for _ = 1, 100 do
    if pcall(fish.run) then
      fish.on_error(nil)
      return
    end
  end
  error("the scheduler kept raising after 100 fish.run calls")
end

-- Run fn with io.stderr replaced by a recorder; returns what was written.
local function capture_stderr(fn)
  local real = io.stderr
  local written = {}
  io.stderr = { write = function(self, ...) -- luacheck: ignore 122 212
    for i = 1, select("#", ...) do written[#written + 1] = tostring(select(i, ...)) end
    return self
  end }
  local ok, err = pcall(fn)
  io.stderr = real -- luacheck: ignore 122
  if not ok then error(err, 0) end
  return table.concat(written)
end

describe("a canceled task whose on_chunk waits", function()
  local srv

  setup(function() srv = server.start() end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    -- Some audio, then a 5 s stall: the transfer is still running when the
    -- task is canceled, so only the cancel can end it early.
    srv:fault("/v1/tts", { stall_body = 5, after_bytes = 2000 })
  end)

  local function check(out, code, wall, cpu)
    assert.equal(0, code, out)
    assert.matches("RESULT nil canceled", out)
    -- It did not sit out the 5 s stall, and it did not spin while it waited.
    timing.check(wall < 4, out)
    timing.check(cpu < wall / 2 + 0.1, ("used %s s of CPU in %s s: %s"):format(cpu, wall, out))
  end

  it("ends when another task cancels it, without a busy loop", function()
    local out, code, wall, cpu = run_child([[
local chunks, result = 0, nil
local t = fish.spawn(function()
  result = { client.convert({ text = string.rep("stream me ", 200), format = "pcm",
    on_chunk = function() chunks = chunks + 1; fish.sleep(0.05) end }) }
end)
fish.spawn(function()
  while chunks == 0 do fish.sleep(0.01) end
  t:cancel() -- the task is inside on_chunk's fish.sleep
end)
fish.run()
print("RESULT " .. tostring(result[1]) .. " " .. tostring(result[3] and result[3].kind) .. " " .. t.status)
]], srv)
    check(out, code, wall, cpu)
    assert.matches("RESULT nil canceled canceled", out)
  end)

  it("ends when it cancels itself from its own on_chunk", function()
    local out, code, wall, cpu = run_child([[
local result, me
me = fish.spawn(function()
  result = { client.convert({ text = string.rep("stream me ", 200), format = "pcm",
    on_chunk = function() me:cancel(); fish.sleep(0.05) end }) }
end)
fish.run()
print("RESULT " .. tostring(result[1]) .. " " .. tostring(result[3] and result[3].kind) .. " " .. me.status)
]], srv)
    check(out, code, wall, cpu)
  end)

  it("ends inside fish.pcall too", function()
    local out, code, wall, cpu = run_child([[
local result, me
me = fish.spawn(function()
  local r = { fish.pcall(client.convert, { text = string.rep("stream me ", 200), format = "pcm",
    on_chunk = function() me:cancel(); fish.sleep(0.05) end }) }
  result = { r[2], r[3], r[4] } -- after fish.pcall's true
end)
fish.run()
print("RESULT " .. tostring(result[1]) .. " " .. tostring(result[3] and result[3].kind))
]], srv)
    check(out, code, wall, cpu)
  end)

  it("does not freeze the other tasks when it keeps waiting in a loop", function()
    -- A canceled task's fish calls return at once; one that ignores that and
    -- loops on fish.sleep must still let the other tasks (and the host) run.
    local out, code = run_child([[
local stop = false
local looper = fish.spawn(function()
  while not stop do fish.sleep(0.05) end
  return "stopped"
end)
fish.spawn(function() fish.sleep(0.2); stop = true end)
fish.step(0)
looper:cancel()
fish.run()
print("RESULT " .. tostring(looper:wait()))
]])
    assert.equal(0, code, out)
    assert.matches("RESULT stopped", out)
  end)
end)

describe("fish.run, fish.step and task:wait inside a task", function()
  it("fish.run() inside a task raises a clear error instead of spinning", function()
    local out, code = run_child([[
local t = fish.spawn(function() fish.run() end)
fish.run()
print("RESULT", pcall(t.wait, t))
]])
    assert.equal(0, code, out)
    assert.matches("RESULT\tfalse\t[^\n]*fish%.run: cannot be called inside a fish task", out)
  end)

  it("fish.step() inside a task raises a clear error", function()
    local out, code = run_child([[
local t = fish.spawn(function() return pcall(fish.step, 0) end)
fish.run()
print("RESULT", t:wait())
]])
    assert.equal(0, code, out)
    assert.matches("RESULT\tfalse\t[^\n]*fish%.step: cannot be called inside a fish task", out)
  end)

  it("fish.run() from a coroutine that a task runs raises too", function()
    local out, code = run_child([[
local t = fish.spawn(function()
  return pcall(coroutine.wrap(function() fish.run() end))
end)
fish.run()
print("RESULT", t:wait())
]])
    assert.equal(0, code, out)
    assert.matches("RESULT\tfalse\t[^\n]*fish%.run: cannot be called inside a fish task", out)
  end)

  it("task:wait() on itself from a coroutine it runs, or through fish.pcall, raises", function()
    local out, code = run_child([[
local t
t = fish.spawn(function()
  coroutine.yield() -- the body starts inside fish.spawn, before t is assigned
  local a = { pcall(coroutine.wrap(function() return t:wait() end)) }
  local b = { fish.pcall(t.wait, t) }
  return a[2], b[2]
end)
fish.run()
local a, b = t:wait()
print("RESULT A", a)
print("RESULT B", b)
]])
    assert.equal(0, code, out)
    assert.matches("RESULT A\t[^\n]*a fish task cannot wait for itself", out)
    assert.matches("RESULT B\t[^\n]*a fish task cannot wait for itself", out)
  end)

  it("task:wait() on another task from a coroutine fish does not own raises", function()
    local out, code = run_child([[
local other = fish.spawn(function() fish.sleep(0.05); return "other" end)
local t = fish.spawn(function()
  return pcall(coroutine.wrap(function() return other:wait() end))
end)
fish.run()
print("RESULT", t:wait())
print("OTHER", other:wait())
]])
    assert.equal(0, code, out)
    assert.matches("RESULT\tfalse\t[^\n]*task:wait: called from a coroutine that fish does not own", out)
    assert.matches("OTHER\tother", out)
  end)
end)

describe("timeouts checked", function()
  after_each(drain)

  it("fish.sleep(NaN) raises, naming the argument, in and outside a task", function()
    local out, code = run_child([[
print("OUTSIDE", pcall(fish.sleep, 0/0))
local t = fish.spawn(function() return pcall(fish.sleep, 0/0) end)
fish.run()
print("INSIDE", t:wait())
]])
    assert.equal(0, code, out)
    assert.matches("OUTSIDE\tfalse\t[^\n]*fish%.sleep: argument 1 %(seconds%) must be a non%-negative number of seconds, got [-]?nan", out)
    assert.matches("INSIDE\tfalse\t[^\n]*fish%.sleep: argument 1 %(seconds%)", out)
  end)

  it("fish.step checks its timeout: nil or a non-negative number, not NaN", function()
    for _, bad in ipairs({ "x", -1, 0 / 0, true, {} }) do
      local ok, err = pcall(function() fish.step(bad) end)
      assert.is_false(ok, tostring(bad))
      assert.matches("fish%.step: argument 1 %(timeout%) must be nil or a non%-negative number of seconds, got ", err)
      -- It names the caller's line, not loop.lua.
      assert.matches("loop_hardening_spec%.lua", err)
    end
    assert.is_number(fish.step())
    assert.is_number(fish.step(0))
  end)

  it("fish.step clamps huge timeouts", function()
    local started = core.now()
    assert.equal(0, fish.step(math.huge))
    assert.equal(0, fish.step(1e300))
    assert.is_true(core.now() - started < 5)
  end)
end)

-- A blocking call outside any task waits in C (e:wait), which must come
-- back to Lua when a poll is cut short, or the interpreter's Ctrl-C hook
-- would wait for the answer.
describe("a blocking call", function()
  local srv
  setup(function() srv = server.start() end)
  teardown(function() srv:stop() end)

  it("is interrupted by Ctrl-C (SIGINT) at once, not when the answer comes", function()
    srv:fault("/v1/tts", { delay = 8 })
    local out, code = run_child([[
local pid = io.open("/proc/self/stat"):read("*l"):match("^%d+")
os.execute(("(sleep 0.5; kill -INT %d) &"):format(pid))
local t0 = core.now()
local ok, err = pcall(client.convert, { text = "slow" })
print(("CAUGHT %s %s %.2f"):format(tostring(ok), tostring(err), core.now() - t0))
]], srv)
    srv:reset()
    assert.equal(0, code, out)
    local ok, err, waited = out:match("CAUGHT (%S+) (.-) ([%d.]+)\n")
    assert.equal("false", ok, out)
    assert.matches("interrupted!", err, 1, true)
    assert.is_true(tonumber(waited) < 4, out)
  end)
end)

describe("canceling a task that waits for another", function()
  after_each(drain)

  it("its wait() returns nil, message, err of kind canceled; the other task runs on", function()
    local other = fish.spawn(function() fish.sleep(0.1); return "other done" end)
    local got
    local waiter = fish.spawn(function() got = pack(other:wait()) end)
    fish.step(0) -- both start; the waiter suspends in other:wait()
    assert.is_true(waiter:cancel())
    fish.run()
    assert.is_nil(got[1])
    assert.is_string(got[2])
    assert.matches("canceled", got[2])
    assert.equal("canceled", got[3].kind)
    assert.equal("canceled", waiter.status)
    assert.equal("done", other.status)
    assert.same({ true, "other done" }, { other:result() })
  end)

  it("the other task's later error still reaches the error handler", function()
    local handled = {}
    fish.on_error(function(message) handled[#handled + 1] = message end)
    local other = fish.spawn(function() fish.sleep(0.05); error("late failure") end)
    local waiter = fish.spawn(function() return other:wait() end)
    fish.step(0)
    waiter:cancel()
    fish.run()
    assert.equal(1, #handled)
    assert.matches("fish task failed: [^\n]*late failure", handled[1])
  end)
end)

describe("task errors", function()
  after_each(drain)

  local function spawn_failures(n)
    local tasks = {}
    -- Each yields first: fish.spawn runs a task at once until its first
    -- wait, and these must fail in a step.
    for i = 1, n do tasks[i] = fish.spawn(function() coroutine.yield() error("failure " .. i) end) end
    return tasks
  end

  it("by default writes every unwatched error to io.stderr, and never raises from fish.run", function()
    local written = capture_stderr(function()
      spawn_failures(3)
      fish.run() -- does not raise: the errors are not the caller's
    end)
    local seen = {}
    for n in written:gmatch("fish task failed: [^\n]*failure (%d)") do seen[#seen + 1] = tonumber(n) end
    assert.same({ 1, 2, 3 }, seen)
    assert.matches("stack traceback", written)
  end)

  it("one owner's failed task never raises inside another owner's fish.step", function()
    -- Two plugins in one Lua state: A's task fails unwatched, B steps.
    local written = capture_stderr(function()
      fish.spawn(function() error("plugin A broke") end)
      local b = fish.spawn(function() fish.sleep(0); return "plugin B fine" end)
      for _ = 1, 5 do assert.is_true(pcall(fish.step, 0)) end
      assert.same({ true, "plugin B fine" }, { pcall(b.wait, b) })
    end)
    assert.matches("plugin A broke", written)
  end)

  it("a handler that raises does not raise from the step: its error goes to the default", function()
    fish.on_error(function() error("the handler itself broke") end)
    local written = capture_stderr(function()
      spawn_failures(2)
      assert.is_true(pcall(fish.step, 0))
    end)
    fish.on_error(nil)
    assert.matches("the handler itself broke", written)
    assert.matches("failure 1", written)
    assert.matches("failure 2", written)
  end)

  it("passes each unwatched error to fish.on_error's handler once, and never raises", function()
    local calls = {}
    fish.on_error(function(message, task) calls[#calls + 1] = { message, task } end)
    local tasks = spawn_failures(3)
    fish.run()
    fish.run()
    assert.equal(3, #calls)
    for i = 1, 3 do
      assert.matches("^fish task failed: [^\n]*failure " .. i, calls[i][1])
      assert.matches("stack traceback", calls[i][1])
      assert.equal(tasks[i], calls[i][2])
    end
    -- nil restores the default: io.stderr.
    fish.on_error(nil)
    local written = capture_stderr(function()
      spawn_failures(1)
      fish.run()
    end)
    assert.matches("fish task failed: [^\n]*failure 1", written)
    assert.equal(3, #calls)
  end)

  it("gives a waited-for task's error to its waiter, not to the handler", function()
    local handled = 0
    fish.on_error(function() handled = handled + 1 end)
    local failing = fish.spawn(function() fish.sleep(0.01); error("for the waiter") end)
    local seen
    fish.spawn(function() seen = { fish.pcall(failing.wait, failing) } end)
    local polled = spawn_failures(1)[1]
    assert.is_false(polled:result()) -- asking for the result takes charge of its error
    fish.run()
    assert.equal(0, handled)
    assert.is_false(seen[1])
    assert.matches("for the waiter", seen[2])
    local done, ok, err = polled:result()
    assert.same({ true, false }, { done, ok })
    assert.matches("failure 1", err)
  end)

  it("fish.on_error takes a function or nil", function()
    local ok, err = pcall(fish.on_error, "not a function")
    assert.is_false(ok)
    assert.matches("fish%.on_error: argument 1 must be a function or nil", err)
  end)
end)

describe("fish.pcall across yields", function()
  after_each(drain)

  it("catches errors and passes results across suspensions, nested, on this ABI", function()
    local t = fish.spawn(function()
      local ok1, e1 = fish.pcall(function() fish.sleep(0.01); error("inner", 0) end)
      local ok2, a, b = fish.pcall(function(x)
        fish.sleep(0.01)
        local okn, v = fish.pcall(function() fish.sleep(0.01); return x * 2 end)
        return okn, v
      end, 21)
      return ok1, e1, ok2, a, b
    end)
    fish.run()
    assert.same({ false, "inner", true, true, 42 }, { t:wait() })
  end)

  it("a canceled task inside fish.pcall ends its waits", function()
    local t = fish.spawn(function()
      return fish.pcall(function()
        fish.sleep(5)
        return "woke early"
      end)
    end)
    fish.step(0)
    local started = core.now()
    t:cancel()
    fish.run()
    assert.same({ true, "woke early" }, { t:wait() })
    assert.is_true(core.now() - started < 4)
  end)
end)
