-- Many calls at once in one Lua state: fish tasks, frame loops, host pause
-- functions, cancellation and cleanup. Bounds are loose on purpose: they
-- prove overlap (well under the serial sum), not speed.
local fish = require("fish")
local core = require("fish.core")
local loop = require("fish.loop")
local server = require("support.server")
local files = require("support.files")
local tmpdir, entries = files.tmpdir, files.entries
local timing = require("support.timing")

describe("fish tasks", function()
  local srv, client, dir

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    require("support.files").remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  it("runs tasks to completion and returns their results through wait()", function()
    local order = {}
    local a = fish.spawn(function(x)
      order[#order + 1] = "a1"
      fish.sleep(0.05)
      order[#order + 1] = "a2"
      return x * 2, "done"
    end, 21)
    local b = fish.spawn(function()
      order[#order + 1] = "b1"
      local value, word = a:wait()
      order[#order + 1] = "b2"
      return value, word
    end)
    fish.run()
    assert.same({ "a1", "b1", "a2", "b2" }, order)
    assert.same({ true, 42, "done" }, { b:result() })
    assert.equal("done", a.status)
  end)

  it("fish.sleep in a task waits its time while other tasks run", function()
    local woke_at, other_ran
    local started = core.now()
    fish.spawn(function()
      fish.sleep(0.3)
      woke_at = core.now() - started
    end)
    fish.spawn(function() other_ran = core.now() - started end)
    fish.run()
    assert.is_true(woke_at >= 0.29, ("woke after %.3f s"):format(woke_at))
    assert.is_true(other_ran < woke_at)
  end)

  it("suspends only the calling task during a conversion", function()
    srv:config({ tts_delay = 0.5 })
    local ticks, finished = 0, false
    fish.spawn(function()
      assert(client.convert({ text = "in a task", format = "pcm" }))
      finished = true
    end)
    fish.spawn(function()
      while not finished do
        ticks = ticks + 1
        fish.sleep(0.02)
      end
    end)
    fish.run()
    assert.is_true(finished)
    -- The ticker ran all through the half-second conversion.
    timing.check(ticks >= 10, "ticker ran " .. ticks .. " times")
  end)

  it("blocks outside a task, exactly as before", function()
    assert.is_false(loop.in_task())
    local audio = assert(client.convert({ text = "blocking", format = "pcm" }))
    assert.is_true(#audio > 0)
  end)

  it("does not yield from coroutines it does not own", function()
    srv:config({ tts_delay = 0.2 })
    local co = coroutine.create(function()
      return client.convert({ text = "inside a foreign coroutine", format = "pcm" })
    end)
    local ok, audio = coroutine.resume(co)
    assert.is_true(ok)
    assert.equal("dead", coroutine.status(co))
    assert.is_string(audio)
  end)

  it("reports an unwatched task's error with its traceback to the error handler", function()
    local function explode() error("boom in a task") end
    local err
    fish.on_error(function(message) err = message end)
    fish.spawn(function() explode() end)
    local ok = pcall(fish.run)
    fish.on_error(nil)
    assert.is_true(ok)
    assert.matches("fish task failed: .*boom in a task", err)
    assert.matches("stack traceback", err)
    assert.matches("explode", err)
  end)

  it("hands a task's error to the task waiting for it", function()
    local failing = fish.spawn(function()
      fish.sleep(0.01)
      error("inner failure")
    end)
    local seen
    fish.spawn(function()
      local ok, err = fish.pcall(failing.wait, failing)
      seen = { ok, err }
    end)
    fish.run()
    assert.is_false(seen[1])
    assert.matches("inner failure", seen[2])
  end)

  it("sleeps without using CPU while it waits (3 s, under 0.1 s of CPU)", function()
    local cpu = os.clock()
    local wall = core.now()
    fish.sleep(3)
    local used = os.clock() - cpu
    assert.is_true(core.now() - wall >= 2.9)
    timing.check(used < 0.1, ("fish.sleep(3) used %.3f s of CPU"):format(used))
  end)

  it("waits on the network without using CPU (3 s stall, under 0.1 s of CPU)", function()
    srv:fault("/v1/tts", { slow_headers = 3 })
    local cpu = os.clock()
    fish.spawn(function() assert(client.convert({ text = "slow", format = "pcm" })) end)
    fish.run()
    local used = os.clock() - cpu
    timing.check(used < 0.1, ("a 3 s wait used %.3f s of CPU"):format(used))
  end)

  it("trains a voice while two one-shot conversions run, in well under the serial sum", function()
    srv:config({ train_delay = 2, tts_delay = 1 })
    local f = assert(io.open(server.ROOT .. "/examples/reference.wav", "rb"))
    local sample = f:read("*a")
    f:close()
    local started = core.now()
    local trainer = fish.spawn(function()
      local voice = assert(client.voices.create({ title = "Task voice", voices = { sample } }))
      return assert(client.voices.wait_trained(voice, { interval = 0.1, timeout = 10 }))
    end)
    local speakers = {}
    for i = 1, 2 do
      speakers[i] = fish.spawn(function()
        return assert(client.convert({ text = "one-shot " .. i, format = "pcm", references = { { audio = sample, text = "ref" } } }))
      end)
    end
    fish.run()
    local elapsed = core.now() - started
    assert.equal("trained", trainer.results[1].state)
    for i = 1, 2 do assert.is_true(#speakers[i].results[1] > 0) end
    -- Serially: 2 s training + 1 s + 1 s = 4 s.
    timing.check(elapsed < 3.2, ("took %.2f s"):format(elapsed))
  end)

  it("keeps 200 conversions in flight at once", function()
    srv:config({ tts_delay = 0.5 })
    local handles = {}
    for i = 1, 200 do
      handles[i] = fish.spawn(function()
        return client.convert({ text = "many " .. i, format = "pcm" })
      end)
    end
    fish.run()
    for i = 1, 200 do
      local audio, err = handles[i].results[1], handles[i].results[3]
      assert.is_nil(err)
      assert.is_true(#audio > 0)
    end
    timing.check(srv:stats().max_concurrent_tts >= 100, "too few conversions overlapped")
  end)
end)

describe("frame loops", function()
  local srv, client

  setup(function()
    srv = server.start({ tts_delay = 1 })
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  it("fish.step(0) never waits while 50 transfers run, and they complete", function()
    local done = 0
    for i = 1, 50 do
      fish.spawn(function()
        assert(client.convert({ text = "frame " .. i, format = "pcm" }))
        done = done + 1
      end)
    end
    local slowest, frames = 0, 0
    local started = core.now()
    while done < 50 and core.now() - started < 20 do
      local t = core.now()
      fish.step(0)
      slowest = math.max(slowest, core.now() - t)
      frames = frames + 1
      -- the rest of the frame: the game does its own work
      loop.engine():poll(0.005)
    end
    assert.equal(50, done)
    -- The server takes 1 s per conversion; a step that waited on it would show.
    timing.check(slowest < 0.25, ("slowest step took %.3f s"):format(slowest))
    assert.is_true(frames > 20)
  end)
end)

describe("host pause functions", function()
  it("waits through the host's pause, never blocking in curl", function()
    local srv = server.start({ tts_delay = 0.3 })
    local pauses = 0
    local c = fish.new({
      api_key = srv.api_key,
      base_url = srv.url,
      pause = function(seconds)
        pauses = pauses + 1
        assert(seconds <= 0.011, "pause asked for " .. seconds)
        coroutine.yield(seconds) -- like ngx.sleep: hand control back to the host
      end,
    })
    -- A tiny host scheduler: runs the handler coroutine, "sleeping" between resumes.
    local handler = coroutine.create(function() return c.convert({ text = "host loop", format = "pcm" }) end)
    local audio
    while coroutine.status(handler) ~= "dead" do
      local ok, value = coroutine.resume(handler)
      assert.is_true(ok, value)
      if coroutine.status(handler) == "dead" then audio = value else loop.engine():poll(value) end
    end
    assert.is_string(audio)
    assert.is_true(pauses > 5)
    c.close()
    srv:stop()
  end)
end)

describe("cancellation and cleanup", function()
  local srv, client, dir

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    require("support.files").remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  local function step_until(predicate)
    local started = core.now()
    while not predicate() and core.now() - started < 10 do fish.step(0.01) end
    assert.is_true(predicate())
  end

  it("a canceled task's conversion returns kind canceled and leaves no partial file", function()
    srv:fault("/v1/tts", { stall_body = 5, after_bytes = 16384 })
    local result
    local task = fish.spawn(function()
      result = { client.convert({ text = string.rep("cancel me ", 40), format = "wav", out = dir .. "/canceled.wav" }) }
    end)
    -- Wait until audio bytes have reached the temporary file.
    step_until(function() return #entries(dir) > 0 end)
    assert.is_true(task:cancel())
    fish.run()
    assert.is_nil(result[1])
    assert.equal("canceled", result[3].kind)
    assert.same({}, entries(dir))
    assert.equal("canceled", task.status)
  end)

  it("a cancel token ends a blocking call from a frame loop", function()
    srv:fault("/v1/tts", { slow_headers = 5 })
    local token = fish.cancel_token()
    local result
    fish.spawn(function() result = { client.convert({ text = "token", cancel = token }) } end)
    fish.step(0.05)
    token:cancel()
    fish.run()
    assert.is_nil(result[1])
    assert.equal("canceled", result[3].kind)
  end)

  it("a cancel token ends wait_trained between polls", function()
    srv:config({ train_delay = 30 })
    local voice = assert(client.voices.create({ title = "Never ready", voices = { "RIFF....WAVE" } }))
    local token = fish.cancel_token()
    local result
    local task = fish.spawn(function()
      result = { client.voices.wait_trained(voice, { interval = 5, cancel = token }) }
    end)
    fish.step(0.05)
    token:cancel()
    local started = core.now()
    fish.run()
    assert.equal("done", task.status)
    assert.is_nil(result[1])
    assert.equal("canceled", result[3].kind)
    -- It did not sit out the 5 s poll interval.
    assert.is_true(core.now() - started < 4)
  end)

  it("closing a client cancels its requests in flight", function()
    -- All three held: fish.spawn sends each request at once, so an answer
    -- that came at once would end its request before the third started.
    srv:fault("/v1/tts", { slow_headers = 5 }, { times = 3 })
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local results = {}
    for i = 1, 3 do
      fish.spawn(function() results[i] = { c.convert({ text = "closing " .. i }) } end)
    end
    step_until(function() return loop.engine():count() == 3 end)
    c.close()
    fish.run()
    for i = 1, 3 do
      assert.is_nil(results[i][1])
      assert.equal("canceled", results[i][3].kind)
    end
    assert.equal(0, loop.engine():count())
  end)

  it("a coroutine abandoned mid-transfer frees its curl handles when collected", function()
    srv:fault("/v1/tts", { slow_headers = 5 })
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0, pause = coroutine.yield })
    local before = loop.engine():count()
    local co = coroutine.create(function() return c.convert({ text = "abandoned" }) end)
    assert(coroutine.resume(co))
    assert.equal("suspended", coroutine.status(co))
    assert.equal(before + 1, loop.engine():count())
    co = nil -- luacheck: ignore 311 (dropping the only reference is the point)
    collectgarbage()
    collectgarbage()
    assert.equal(before, loop.engine():count())
    c.close()
  end)
end)
