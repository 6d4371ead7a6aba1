-- Every example runs against the local server, so none of them can rot.
local server = require("support.server")
local size_of = require("support.files").size

local LUA = require("support.abi").lua
local q = server.shell_quote

-- Run an example with the server's key, or with `key` (run_with_key).
local function run_with_key(key, srv, script, ...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = q(a) end
  -- The child inherits the environment (under make test-asan: the sanitizer
  -- preload too, as the module it loads is the instrumented one).
  local cmd = ("env FISH_API_KEY=%s FISH_BASE_URL=%s %s %s %s 2>&1; echo \"exit=$?\""):format(
    q(key), q(srv.url), LUA, q(server.ROOT .. "/examples/" .. script), table.concat(args, " "))
  local pipe = io.popen(cmd)
  local out = pipe:read("*a")
  pipe:close()
  return out:match("exit=(%d+)%s*$") == "0", out
end

local function run(srv, script, ...)
  return run_with_key(srv.api_key, srv, script, ...)
end

describe("examples", function()
  local srv, dir

  setup(function()
    srv = server.start({ train_delay = 1 })
    local pipe = io.popen("mktemp -d")
    dir = pipe:read("*l")
    pipe:close()
  end)

  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. q(dir))
  end)

  it("oneshot.lua clones from the reference WAV and writes an MP3", function()
    local ok, out = run(srv, "oneshot.lua", dir .. "/oneshot.mp3")
    assert.is_true(ok, out)
    assert.matches("one%-shot: wrote .*oneshot%.mp3 %(%d+ bytes%)", out)
    assert.is_true(size_of(dir .. "/oneshot.mp3") > 0)
    local sent = srv:last_request("/v1/tts")
    assert.equal("Hello, this is a short reference recording. The quick brown fox jumps over the lazy dog.",
      sent.msgpack.references[1].text)
  end)

  it("persistent.lua creates a voice, waits for training and speaks with it", function()
    local ok, out = run(srv, "persistent.lua", dir .. "/persistent.mp3")
    assert.is_true(ok, out)
    assert.matches("trained", out)
    assert.is_true(size_of(dir .. "/persistent.mp3") > 0)
    assert.is_string(srv:last_request("/v1/tts").msgpack.reference_id)
  end)

  it("tasks.lua trains and converts at once", function()
    local ok, out = run(srv, "tasks.lua", dir)
    assert.is_true(ok, out)
    assert.matches("trained voice: %x+", out)
    assert.is_true(size_of(dir .. "/task-1.mp3") > 0)
    assert.is_true(size_of(dir .. "/task-2.mp3") > 0)
  end)

  it("live.lua streams a paragraph sentence by sentence and writes the audio", function()
    local ok, out = run(srv, "live.lua", dir .. "/live.mp3")
    assert.is_true(ok, out)
    local bytes = tonumber(out:match("live: wrote .*live%.mp3 %((%d+) bytes in %d+ blocks%)"))
    assert.is_true(bytes and bytes > 0, out)
    assert.equal(bytes, size_of(dir .. "/live.mp3"))
    -- Each sentence was flushed as soon as it was complete.
    local record = srv:control("GET", "/_test/live?wait=5")[1]
    local flushes = 0
    for _, event in ipairs(record.events) do
      if event.event == "flush" then flushes = flushes + 1 end
    end
    assert.equal(3, flushes)
    assert.equal("stop", record.events[#record.events].event)
  end)

  -- A task's error must end the script with it, not only be reported on
  -- stderr while the script goes on to print its success line.
  it("tasks.lua and live.lua fail with the task's error when a call fails", function()
    local ok, out = run_with_key("a-wrong-key", srv, "tasks.lua", dir)
    assert.is_false(ok, out)
    assert.matches("401", out)
    assert.is_nil(out:find("trained voice", 1, true), out)
    ok, out = run_with_key("a-wrong-key", srv, "live.lua", dir .. "/refused.mp3")
    assert.is_false(ok, out)
    assert.matches("401", out)
    assert.is_nil(out:find("live: wrote", 1, true), out)
    assert.is_nil(size_of(dir .. "/refused.mp3"))
  end)

  it("game_loop.lua speaks while the frame loop keeps running", function()
    srv:config({ tts_delay = 0.5 })
    local ok, out = run(srv, "game_loop.lua", dir .. "/line.mp3")
    srv:config({ tts_delay = 0 })
    assert.is_true(ok, out)
    local frames = tonumber(out:match("game loop: (%d+) frames"))
    assert.is_true(frames and frames >= 10, out)
    assert.is_true(size_of(dir .. "/line.mp3") > 0)
    -- on_progress counted the download.
    assert.equal(size_of(dir .. "/line.mp3"), tonumber(out:match("(%d+) bytes received")))
  end)
end)
