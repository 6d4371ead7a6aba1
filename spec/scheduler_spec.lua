-- Scheduling that scales (issue 10): a step's work follows what changed,
-- not how many tasks there are. Nothing here is timed: the scheduler counts
-- what it touches (loop.stats(), the heaps' `visits`), and the specs count
-- with it.
local fish = require("fish")
local core = require("fish.core")
local loop = require("fish.loop")
local heap = require("fish.heap")
local deadlines = require("fish.deadlines")
local server = require("support.server")

local function log2(n) return math.log(n) / math.log(2) end

local function delta(before, after)
  local d = {}
  for k, v in pairs(after) do d[k] = v - (before[k] or 0) end
  return d
end

describe("fish.heap", function()
  it("pops entries in time order, equal times in the order pushed", function()
    local h = heap.new()
    local times = {}
    for i = 1, 500 do
      times[i] = (i * 7919) % 101 -- many equal times, in no order
      h:push({ at = times[i], i = i })
    end
    assert.equal(500, h:size())
    local last_at, last_i = -1, 0
    for _ = 1, 500 do
      local e = h:pop()
      assert.is_true(e.at > last_at or (e.at == last_at and e.i > last_i))
      last_at, last_i = e.at, e.i
    end
    assert.is_nil(h:pop())
    assert.is_nil(h:peek())
    assert.equal(0, h:size())
  end)

  it("removes any entry, once, and keeps the rest in order", function()
    local h = heap.new()
    local entries = {}
    for i = 1, 200 do entries[i] = h:push({ at = (i * 37) % 200 + 0.5 }) end
    for i = 1, 200, 3 do assert.is_true(h:remove(entries[i])) end
    assert.is_false(h:remove(entries[1]))
    assert.equal(200 - 67, h:size())
    local last = -1
    while h:size() > 0 do
      local e = h:pop()
      assert.is_true(e.at >= last)
      last = e.at
    end
  end)

  it("moves an entry to a new time", function()
    local h = heap.new()
    local a = h:push({ at = 1 })
    h:push({ at = 2 })
    h:update(a, 3)
    assert.equal(2, h:pop().at)
    assert.equal(a, h:pop())
  end)

  it("refuses a NaN time and an entry that is already in a heap", function()
    local h = heap.new()
    assert.has_error(function() h:push({ at = 0 / 0 }) end)
    assert.has_error(function() h:push({}) end)
    local e = h:push({ at = 1 })
    assert.has_error(function() h:push(e) end)
  end)

  it("looks at O(log n) entries to push and pop among 100,000", function()
    local h = heap.new()
    for i = 1, 100000 do h:push({ at = (i * 7919) % 100003 }) end
    local before = h.visits
    h:push({ at = -1 })
    assert.is_true(h:pop().at == -1)
    -- one sift up, one sift down: two comparisons a level at most
    assert.is_true(h.visits - before <= 3 * log2(100000) + 4, tostring(h.visits - before))
  end)
end)

describe("fish.deadlines", function()
  -- Requests stand-ins: deadlines only reads progress() and state().
  local function fake(started, first_byte_at, last_activity)
    local r = { state_ = "running", canceled = false }
    function r.progress() return 0, started, first_byte_at, last_activity end
    function r:state() return self.state_ end
    return r
  end

  it("ends each request by the limit that came first, and names it", function()
    local now = core.now()
    local a = fake(now - 10, 0, now - 10)            -- no first byte after 10 s
    local b = fake(now - 10, now - 9, now - 5)       -- silent for 5 s
    local c = fake(now - 10, now - 9, now - 0.1)     -- still talking
    deadlines.watch(a, { first_byte = 5, idle = 2, total = 100 })
    deadlines.watch(b, { first_byte = 5, idle = 2, total = 100 })
    deadlines.watch(c, { first_byte = 5, idle = 2, total = 100 })
    local canceled = {}
    local nearest = deadlines.enforce(core.now(), function(r) canceled[#canceled + 1] = r; r.state_ = "canceled" end)
    assert.equal(2, #canceled)
    assert.equal("first_byte", deadlines.expired(a))
    assert.equal("idle", deadlines.expired(b))
    assert.is_nil(deadlines.expired(c))
    assert.is_true(nearest > now and nearest <= now + 2)
    deadlines.forget(c)
  end)

  it("applies an idle limit from a first byte that came after the watch began", function()
    local now = core.now()
    local r = fake(now, 0, now)
    deadlines.watch(r, { idle = 0.05, first_byte = 100, total = 100 })
    assert.is_nil(deadlines.expired(r))
    local nearest = deadlines.enforce(now, error)
    assert.is_true(nearest <= now + 0.06, "looks again within one idle period")
    -- The first byte came, then silence.
    r.progress = function() return 10, now, now + 0.001, now + 0.002 end
    local ended
    deadlines.enforce(now + 0.2, function(request) ended = request end)
    assert.equal(r, ended)
    assert.equal("idle", deadlines.expired(r))
  end)

  it("looks only at the due entries among 10,000 watched requests", function()
    local now = core.now()
    local watched = {}
    for i = 1, 10000 do
      watched[i] = fake(now, 0, now)
      deadlines.watch(watched[i], { total = 60 + i })
    end
    local _, before = deadlines.stats()
    for _ = 1, 100 do deadlines.enforce(core.now(), error) end
    local held, after = deadlines.stats()
    assert.is_true(held >= 10000)
    assert.is_true(after - before <= 100, tostring(after - before)) -- one peek per enforce
    for i = 1, 10000 do deadlines.forget(watched[i]) end
  end)
end)

describe("fish scheduler", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  it("with 10,000 sleeping tasks, a finished request resumes its task alone", function()
    local sleepers = {}
    for i = 1, 10000 do sleepers[i] = fish.spawn(function() fish.sleep(3600) end) end
    -- Even when an assertion fails: 10,000 hour-long sleepers left behind
    -- would make the next fish.run wait for them.
    finally(function()
      for _, task in ipairs(sleepers) do task:cancel() end
      fish.run()
    end)
    local got
    -- The answer takes a while, so that several steps pass with the worker
    -- still waiting (fish.spawn sends its request at once).
    srv:fault("/v1/tts", { delay = 0.2 }, { times = 1 })
    local worker = fish.spawn(function() got = assert(client.convert({ text = "one of many", format = "pcm" })) end)
    fish.step(0) -- everyone starts and suspends
    local live = 10001
    local steps, resumed = 0, 0
    local bound = 3 * log2(10001) + 8
    local started = core.now()
    while worker.status == "running" and core.now() - started < 20 do
      loop.engine():poll(0.01)
      local before = loop.stats()
      local left = fish.step(0)
      if worker.status ~= "running" then live = live - 1 end
      assert.equal(live, left)
      local d = delta(before, loop.stats())
      steps = steps + 1
      resumed = resumed + d.resumed
      assert.is_true(d.resumed <= 1, "a step resumed " .. d.resumed .. " tasks")
      assert.equal(0, d.polled)
      assert.is_true(d.timer_visits <= bound, "timer heap entries looked at: " .. d.timer_visits)
      assert.is_true(d.deadline_visits <= bound, "deadline heap entries looked at: " .. d.deadline_visits)
    end
    assert.equal("done", worker.status)
    assert.is_not_nil(got)
    assert.equal(1, resumed)
    assert.is_true(steps > 1)
    for _, task in ipairs(sleepers) do task:cancel() end
    fish.run()
    for _, task in ipairs(sleepers) do assert.equal("canceled", task.status) end
  end)

  it("keeps a waiting task alive when nothing but fish holds it", function()
    local done = 0
    for i = 1, 8 do
      fish.spawn(function()
        assert(client.convert({ text = "unheld " .. i, format = "pcm" }))
        done = done + 1
      end)
    end
    local started = core.now()
    while done < 8 and core.now() - started < 20 do
      collectgarbage()
      fish.step(0.05)
    end
    assert.equal(8, done)
  end)

  it("a budget bounds a step; the other ready tasks run in the next steps, in order, none lost", function()
    local order = {}
    for i = 1, 2000 do
      fish.spawn(function()
        coroutine.yield() -- ready for the next step (fish.spawn ran it up to here)
        order[#order + 1] = i
        local t = core.now()
        while core.now() - t < 0.0002 do end -- each task takes 0.2 ms of Lua time
      end)
    end
    local before = loop.stats()
    fish.step(0, 0.005)
    local first = delta(before, loop.stats()).resumed
    assert.is_true(first >= 1 and first <= 100, "the first step resumed " .. first)
    assert.equal(first, #order)
    local steps = 1
    while fish.step(0, 0.005) > 0 do steps = steps + 1 end
    assert.is_true(steps >= 2000 * 0.0002 / 0.005 / 2, "steps: " .. steps)
    assert.equal(2000, #order)
    for i = 1, 2000 do assert.equal(i, order[i]) end
  end)

  it("a budget keeps the order of tasks that a finished request woke", function()
    local order = {}
    local tasks = {}
    local n = 40
    for i = 1, n do
      tasks[i] = fish.spawn(function()
        assert(client.convert({ text = "budget " .. i, format = "pcm" }))
        order[#order + 1] = i
        local t = core.now()
        while core.now() - t < 0.001 do end
      end)
    end
    local started = core.now()
    while #order < n and core.now() - started < 20 do
      local before = loop.stats()
      fish.step(0.05, 0.002)
      assert.is_true(delta(before, loop.stats()).resumed <= n)
    end
    assert.equal(n, #order)
    for _, task in ipairs(tasks) do assert.equal("done", task.status) end
  end)

  it("a budget of 0 still resumes one task per step", function()
    local ran = 0
    for _ = 1, 3 do fish.spawn(function() coroutine.yield() ran = ran + 1 end) end
    assert.equal(2, fish.step(0, 0))
    assert.equal(1, ran)
    fish.run()
    assert.equal(3, ran)
  end)

  it("refuses a budget that is not a non-negative number", function()
    assert.has_error(function() fish.step(0, -1) end,
      "fish.step: argument 2 (budget) must be nil or a non-negative number of seconds, got -1")
    assert.has_error(function() fish.step(0, 0 / 0) end)
    assert.has_error(function() fish.step(0, "1") end)
  end)

  it("sends a request that a task started during a step before that step returns", function()
    srv:fault("/v1/tts", { slow_headers = 3 }) -- the answer waits; the request must not
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local task = fish.spawn(function()
      coroutine.yield() -- on to the step: the request starts there
      return c.convert({ text = "sent in this frame", format = "pcm" })
    end)
    fish.step(0)
    assert.equal("running", task.status)
    -- No fish call from here on: only the server's own view.
    local seen
    local started = core.now()
    repeat
      seen = #srv:requests_for("POST", "/v1/tts")
    until seen > 0 or core.now() - started > 2
    assert.equal(1, seen)
    c.close()
    fish.run()
  end)

  it("fish.spawn outside a step runs the task up to its first wait and sends its request at once", function()
    srv:fault("/v1/tts", { slow_headers = 3 }) -- the answer waits; the request must not
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local before = loop.stats()
    local reached = false
    local task = fish.spawn(function()
      reached = true
      return c.convert({ text = "sent from frame code", format = "pcm" })
    end)
    assert.is_true(reached)
    assert.equal("running", task.status)
    assert.equal(1, delta(before, loop.stats()).resumed)
    -- No fish call from here on: only the server's own view.
    local seen
    local started = core.now()
    repeat
      seen = #srv:requests_for("POST", "/v1/tts")
    until seen > 0 or core.now() - started > 2
    assert.equal(1, seen)
    c.close()
    fish.run()
  end)

  it("fish.spawn inside a task leaves the new task for the next pass", function()
    local inner_ran, inner_status
    local outer = fish.spawn(function()
      coroutine.yield()
      local inner = fish.spawn(function() inner_ran = true end)
      inner_status = inner.status
      return inner_ran
    end)
    assert.is_nil(inner_ran)
    fish.run()
    local done, ran_before_return = outer:result()
    assert.is_true(done)
    assert.is_nil(ran_before_return)
    assert.equal("running", inner_status)
    assert.is_true(inner_ran)
  end)

  it("wakes a task whose request was canceled from outside fish", function()
    srv:fault("/v1/tts", { slow_headers = 5 })
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local result
    local task = fish.spawn(function() result = { c.convert({ text = "closed under me" }) } end)
    fish.step(0)
    c.close() -- cancels the request without the engine reporting it
    local started = core.now()
    while task.status == "running" and core.now() - started < 3 do fish.step(0.05) end
    assert.equal("done", task.status)
    assert.is_nil(result[1])
    assert.equal("canceled", result[3].kind)
    assert.is_true(core.now() - started < 2)
  end)

  it("a task's end wakes the tasks in its wait() without polling them", function()
    local gate = fish.cancel_token()
    local target = fish.spawn(function() fish.sleep(3600) return "late" end)
    local waiters = {}
    for i = 1, 50 do waiters[i] = fish.spawn(function() return target:wait() end) end
    local sleeper = fish.spawn(function() return loop.sleep(3600, nil, gate) end)
    fish.step(0)
    local before = loop.stats()
    for _ = 1, 5 do fish.step(0) end
    local d = delta(before, loop.stats())
    assert.equal(0, d.resumed)
    assert.equal(0, d.polled)
    gate:cancel() -- a token wakes its sleeper at once
    target:cancel()
    fish.run()
    assert.equal(false, select(2, sleeper:result()))
    for _, w in ipairs(waiters) do
      local done, value = w:result()
      assert.is_true(done)
      assert.equal("late", value)
    end
  end)
end)
