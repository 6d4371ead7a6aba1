-- on_progress: upload and download progress of convert, voices.create and
-- asr.transcribe, from libcurl's transfer info, delivered by fish's wait in
-- each of its three ways of waiting (blocking, tasks, host pause).
local fish = require("fish")
local core = require("fish.core")
local loop = require("fish.loop")
local server = require("support.server")
local files = require("support.files")

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"

-- An on_progress that records every call.
local function recorder()
  local calls = {}
  local function on_progress(sent, send_total, received, receive_total)
    calls[#calls + 1] = { sent = sent, send_total = send_total, received = received, receive_total = receive_total }
  end
  return calls, on_progress
end

-- Counters never go back within one attempt, and the last call has them all.
local function assert_monotonic(calls)
  for i = 2, #calls do
    assert.is_true(calls[i].sent >= calls[i - 1].sent, "sent went back at call " .. i)
    assert.is_true(calls[i].received >= calls[i - 1].received, "received went back at call " .. i)
  end
end

-- Some call saw the upload under way: more than nothing, less than all.
local function saw_upload_midway(calls)
  for _, c in ipairs(calls) do
    if c.send_total and c.sent > 0 and c.sent < c.send_total then return true end
  end
  return false
end

-- The Content-Length of the last captured request for `path`.
local function wire_length(srv, path)
  return tonumber(srv:last_request(path).headers["content-length"])
end

describe("on_progress", function()
  local srv, client, dir, big_reference

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = files.tmpdir()
    -- Large enough that the upload takes many engine steps on loopback.
    big_reference = string.rep("\1\2\3\4\5\6\7\8", 1024 * 1024) -- 8 MiB
    files.write(dir .. "/big.wav", big_reference)
  end)

  teardown(function()
    client.close()
    srv:stop()
    files.remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  describe("uploads", function()
    it("counts a large inline reference up to the body's length", function()
      local calls, on_progress = recorder()
      assert(client.convert({
        text = "upload", format = "wav",
        references = { { audio = big_reference, text = "big" } },
        on_progress = on_progress,
      }))
      local length = wire_length(srv, "/v1/tts")
      assert.is_true(length > #big_reference)
      assert.is_true(#calls >= 2)
      assert_monotonic(calls)
      assert.is_true(saw_upload_midway(calls), "no call between the first and the last byte sent")
      local last = calls[#calls]
      assert.equal(length, last.send_total)
      assert.equal(length, last.sent)
      assert.is_true(last.received > 0)
      -- Streamed audio comes without a length.
      assert.is_nil(last.receive_total)
      if math.type then assert.equal("integer", math.type(last.sent)) end
    end)

    it("counts a fish.file reference, whose bytes stream from disk", function()
      local calls, on_progress = recorder()
      assert(client.convert({
        text = "upload file", format = "wav",
        references = { { audio = fish.file(dir .. "/big.wav"), text = "big" } },
        on_progress = on_progress,
      }))
      local length = wire_length(srv, "/v1/tts")
      assert_monotonic(calls)
      assert.is_true(saw_upload_midway(calls))
      assert.equal(length, calls[#calls].send_total)
      assert.equal(length, calls[#calls].sent)
    end)

    it("counts the samples of voices.create, a multipart body", function()
      local calls, on_progress = recorder()
      local voice = assert(client.voices.create({
        title = "progress", voices = { fish.file(dir .. "/big.wav"), fish.file(REFERENCE_WAV) },
        on_progress = on_progress,
      }))
      assert.is_string(voice.id)
      local length = wire_length(srv, "/model")
      assert.is_true(length > #big_reference + files.size(REFERENCE_WAV))
      assert_monotonic(calls)
      assert.is_true(saw_upload_midway(calls))
      local last = calls[#calls]
      assert.equal(length, last.send_total)
      assert.equal(length, last.sent)
      -- The JSON answer has a Content-Length.
      assert.is_true(last.received > 0)
      assert.equal(last.received, last.receive_total)
    end)

    it("counts the audio of asr.transcribe", function()
      local calls, on_progress = recorder()
      local transcript = assert(client.asr.transcribe({ audio = fish.file(dir .. "/big.wav"), on_progress = on_progress }))
      assert.is_string(transcript.text)
      local last = calls[#calls]
      assert.equal(wire_length(srv, "/v1/asr"), last.sent)
      assert.equal(last.sent, last.send_total)
      assert.equal(last.received, last.receive_total)
      assert.is_true(saw_upload_midway(calls))
    end)
  end)

  describe("downloads", function()
    it("counts a long answer with a Content-Length up to its total", function()
      local size = 6 * 1024 * 1024
      srv:fault("/v1/tts", { status = 200, big_body = size, content_type = "audio/mpeg" })
      local calls, on_progress = recorder()
      local audio = assert(client.convert({ text = "download", on_progress = on_progress }))
      assert.equal(size, #audio)
      assert_monotonic(calls)
      local midway = false
      for _, c in ipairs(calls) do
        if c.receive_total == size and c.received > 0 and c.received < size then midway = true end
      end
      assert.is_true(midway, "no call between the first and the last byte received")
      assert.equal(size, calls[#calls].received)
      assert.equal(size, calls[#calls].receive_total)
    end)

    it("counts streamed audio (no length) into a file, and agrees with on_chunk's bytes", function()
      local calls, on_progress = recorder()
      local chunked = 0
      local total = assert(client.convert({
        text = string.rep("stream ", 200), format = "wav",
        on_chunk = function(bytes) chunked = chunked + #bytes end,
        on_progress = on_progress,
      }))
      assert.equal(total, chunked)
      assert.equal(total, calls[#calls].received)
      assert.is_nil(calls[#calls].receive_total)
      local out = dir .. "/streamed.wav"
      local calls2, on_progress2 = recorder()
      local _, size = assert(client.convert({ text = string.rep("stream ", 200), format = "wav", out = out,
        on_progress = on_progress2 }))
      assert.equal(size, calls2[#calls2].received)
      assert.equal(files.size(out), size)
    end)

    it("is called once at the end when nothing moved between steps", function()
      srv:fault("/v1/tts", { empty_body = true })
      local calls, on_progress = recorder()
      local ok = client.convert({ text = "empty", on_progress = on_progress })
      assert.is_nil(ok) -- an empty answer is an error
      assert.is_true(#calls >= 1)
      assert.equal(0, calls[#calls].received)
      assert.equal(0, calls[#calls].receive_total)
      assert.equal(wire_length(srv, "/v1/tts"), calls[#calls].sent)
    end)
  end)

  describe("in each way of waiting", function()
    it("wakes a fish task while bytes move, not only at the end", function()
      local calls, on_progress = recorder()
      local task = fish.spawn(function()
        return client.convert({
          text = "task", format = "wav",
          references = { { audio = big_reference, text = "big" } },
          on_progress = on_progress,
        })
      end)
      fish.run()
      assert.is_string((task:wait()))
      assert.is_true(saw_upload_midway(calls))
      assert.equal(calls[#calls].send_total, calls[#calls].sent)
    end)

    it("is driven by fish.step(0) from a frame loop, at most once per step", function()
      local calls, on_progress = recorder()
      local steps = 0
      local task = fish.spawn(function()
        return client.convert({
          text = "frames", format = "wav",
          references = { { audio = fish.file(dir .. "/big.wav"), text = "big" } },
          on_progress = on_progress,
        })
      end)
      local started = core.now()
      while task.status == "running" and core.now() - started < 30 do
        fish.step(0)
        steps = steps + 1
        -- a frame's worth of other work
        loop.engine():poll(0.001)
      end
      assert.equal("done", task.status)
      assert.is_true(#calls <= steps, ("%d calls in %d steps"):format(#calls, steps))
      assert.is_true(saw_upload_midway(calls))
      assert.equal(calls[#calls].send_total, calls[#calls].sent)
    end)

    it("runs under a host pause function", function()
      local pauses = 0
      local paused = fish.new({
        api_key = srv.api_key, base_url = srv.url, retries = 0,
        pause = function(seconds) pauses = pauses + 1 loop.engine():poll(seconds) end,
      })
      local calls, on_progress = recorder()
      assert(paused.asr.transcribe({ audio = big_reference, on_progress = on_progress }))
      paused.close()
      assert.is_true(pauses > 0)
      assert.is_true(saw_upload_midway(calls))
      assert.equal(wire_length(srv, "/v1/asr"), calls[#calls].sent)
    end)
  end)

  describe("retries", function()
    it("count again from zero for the new attempt", function()
      srv:fault("/v1/tts", { status = 503 })
      local calls, on_progress = recorder()
      local retrying = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 1 })
      local backoff = require("fish.http")._backoff
      require("fish.http")._backoff = function() return 0.01 end
      local ok, message = pcall(retrying.convert, {
        text = "retry", format = "wav",
        references = { { audio = big_reference, text = "big" } },
        on_progress = on_progress,
      })
      require("fish.http")._backoff = backoff
      retrying.close()
      assert.is_true(ok, message)
      -- The failed attempt sent all its body, then the second began again.
      local restarted = false
      for i = 2, #calls do
        if calls[i].sent < calls[i - 1].sent then restarted = true end
      end
      assert.is_true(restarted)
      assert.equal(calls[#calls].send_total, calls[#calls].sent)
    end)
  end)

  describe("checks", function()
    it("refuses an on_progress that is not a function, naming it", function()
      local cases = {
        function() client.convert({ text = "x", on_progress = "f" }) end,
        function() client.voices.create({ title = "t", voices = "abc", on_progress = true }) end,
        function() client.asr.transcribe({ audio = "abc", on_progress = 1 }) end,
      }
      for _, case in ipairs(cases) do
        local ok, why = pcall(case)
        assert.is_false(ok)
        assert.matches("field 'on_progress' must be a function", why, 1, true)
      end
      -- Nothing was sent.
      assert.same({}, srv:requests())
    end)

    it("is not an option of the other calls", function()
      local ok, why = pcall(client.voices.get, "seed-voice-1", { on_progress = function() end })
      assert.is_false(ok)
      assert.matches("unknown field 'on_progress'", why, 1, true)
    end)

    it("closes the transfer when it raises, as on_chunk does", function()
      local before = loop.engine():count()
      local ok, why = pcall(client.convert, {
        text = "raise", format = "wav",
        references = { { audio = big_reference, text = "big" } },
        on_progress = function() error("progress failed", 0) end,
      })
      assert.is_false(ok)
      assert.equal("progress failed", why)
      assert.equal(before, loop.engine():count())
    end)
  end)

  describe("the request object", function()
    it("counts only for requests made with progress = true", function()
      local function fetch(progress)
        local r = core.request({ url = srv.url .. "/v1/tts", method = "POST", body = "not msgpack", progress = progress,
          headers = { "Authorization: Bearer " .. srv.api_key, "Content-Type: application/msgpack" } })
        loop.start(r)
        loop.await(r)
        local counts = { r:transfer() }
        r:close()
        return counts
      end
      local with = fetch(true)
      assert.equal(#"not msgpack", with[1])
      assert.equal(#"not msgpack", with[2])
      assert.is_true(with[3] > 0) -- the 400 page counts too
      local without = fetch(nil)
      assert.equal(0, without[1])
      assert.equal(0, without[3])
    end)
  end)
end)
