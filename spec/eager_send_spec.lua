-- A request a task starts goes out before the scheduler resumes the next
-- task of the same pass (while few requests run): when many answers arrive
-- at once, the first task woken does not wait for the others' work before
-- its next request leaves.
local fish = require("fish")
local server = require("support.server")

describe("a request started in a task", function()
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

  it("reaches the server before the next task of the same pass has run", function()
    local seen_by_second
    -- A kept connection, as a batch has: libcurl then sends in one step.
    assert(client.convert({ text = "warm up" }))
    srv:reset()
    -- Both are ready in the first pass; the second blocks the whole process
    -- for a while (as a task writing a file does), then asks the server.
    fish.spawn(function() assert(client.convert({ text = "first" })) end)
    fish.spawn(function()
      os.execute("sleep 0.3")
      seen_by_second = #srv:requests_for("POST", "/v1/tts")
    end)
    fish.run()
    assert.equal(1, seen_by_second)
  end)

  it("still goes out after the pass when many requests run", function()
    -- Past the eager limit a pump per start would cost more than it saves:
    -- the requests leave together after the pass, and all complete.
    local done = 0
    for i = 1, 80 do
      fish.spawn(function()
        assert(client.convert({ text = "many " .. i }))
        done = done + 1
      end)
    end
    fish.run()
    assert.equal(80, done)
  end)
end)
