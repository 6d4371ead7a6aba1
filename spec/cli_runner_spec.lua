-- The batch runner (fish.cli.runner) on its own, with a fake convert: what
-- it does with errors raised inside its worker tasks. The process-level
-- behaviour (Ctrl-C, kill -9, reruns) is in cli_spec.lua.
local fish = require("fish")
local core = require("fish.core")
local runner = require("fish.cli.runner")

local quiet = setmetatable({}, { __index = function() return function() end end })

local function rows(n)
  local list = {}
  for i = 1, n do list[i] = { id = tostring(i) } end
  return list
end

describe("fish-audio batch runner", function()
  it("ends the run with Ctrl-C's error when it lands inside a worker task", function()
    -- The interpreters raise "interrupted!" in whatever coroutine runs; a
    -- worker's error is one nobody waits for, which fish hands to its error
    -- handler instead of raising it from fish.step.
    local calls = 0
    local run = runner.new({
      fish = fish, rows = rows(50), jobs = 4, clock = core.now, events = quiet,
      on_result = function() end,
      convert = function()
        calls = calls + 1
        if calls == 3 then error("interrupted!", 0) end
        fish.sleep(0.01)
        return "x.mp3", 1
      end,
    })
    local ok, err = pcall(run.run, run)
    assert.is_false(ok)
    assert.matches("interrupted!", tostring(err), 1, true)
    assert.equal("interrupted", run.stopped)
    assert.is_true(calls < 50, calls .. " rows were started after the interrupt")
    -- Every worker is counted out, so the progress task ends and fish.run
    -- returns (a worker that ended by the interrupt was never counted out).
    run:drain(2)
    assert.equal(0, run.workers)
    fish.run()
  end)

  it("reports any other task error and goes on", function()
    local results = {}
    local run = runner.new({
      fish = fish, rows = rows(3), jobs = 1, clock = core.now, events = quiet,
      on_result = function(row, result) results[row.id] = result.status end,
      convert = function(row)
        if row.id == "2" then error("a bug in convert") end
        return "x.mp3", 1
      end,
    })
    run:run()
    assert.same({ ["1"] = "ok", ["2"] = "failed", ["3"] = "ok" }, results)
  end)
end)
