-- fish.live against the local server's /v1/tts/live and
-- /v1/tts/live/with-timestamp (spec/support/fish_server.py), which records
-- every event it received and injects faults on demand. (spec/live_spec.lua
-- is the test against the real API.)
local fish = require("fish")
local core = require("fish.core")
local tts = require("fish.tts")
local http = require("fish.http")
local live_text = require("fish.live_text")
local live_audio = require("fish.live_audio")
local live_protocol = require("fish.live_protocol")
local server = require("support.server")
local files = require("support.files")

local hex = server.hex

-- ---- the pure parts -------------------------------------------------------------

describe("live_text.split (auto_flush)", function()
  local function cut(text)
    local out = {}
    for _, piece in ipairs(live_text.split(text)) do
      out[#out + 1] = piece.text .. (piece.flush and "|" or "")
    end
    return table.concat(out, "~")
  end

  it("cuts after . ! ? and keeps the space after with the sentence", function()
    assert.equal("One. |~Two! |~Three? |~four", cut("One. Two! Three? four"))
  end)

  it("cuts at the end of the text after a sentence end", function()
    assert.equal("Done.|", cut("Done."))
  end)

  it("cuts after a newline, and after the full-width marks with no space", function()
    assert.equal("line one\n|~line two", cut("line one\nline two"))
    assert.equal("你好。|~世界！|~吗？|~好", cut("你好。世界！吗？好"))
  end)

  it("leaves dots inside words and numbers alone", function()
    assert.equal("pi is 3.14 on fish.audio", cut("pi is 3.14 on fish.audio"))
  end)

  it("keeps a run of marks and closing quotes together", function()
    assert.equal('He said "Stop!" |~Then?! |~Wait... |~end', cut('He said "Stop!" Then?! Wait... end'))
  end)

  it("gives nothing for empty text", function()
    assert.same({}, live_text.split(""))
  end)
end)

describe("live_audio.pcm_carry", function()
  it("hands out whole 16-bit samples and carries an odd byte to the next block", function()
    local carry = live_audio.pcm_carry()
    assert.equal("ab", carry:take("abc"))
    assert.equal(1, carry:dangling())
    assert.equal("cd", carry:take("d"))
    assert.equal("", carry:take("e"))
    assert.equal("efgh", carry:take("fgh"))
    assert.equal(0, carry:dangling())
  end)
end)

describe("live_audio.absolute_words", function()
  it("adds the chunk's offset to each segment", function()
    local words = live_audio.absolute_words({ audio_duration = 1, segments = {
      { text = "a", start = 0, ["end"] = 0.25 }, { text = "b", start = 0.5, ["end"] = 0.75 } } }, 2)
    assert.same({ { text = "a", start = 2, ["end"] = 2.25 }, { text = "b", start = 2.5, ["end"] = 2.75 } }, words)
  end)

  it("ignores what is not a snapshot", function()
    assert.is_nil(live_audio.absolute_words(nil, 1))
    assert.is_nil(live_audio.absolute_words({ segments = "x" }, 1))
  end)
end)

describe("live_protocol", function()
  it("writes text, flush and stop as the SDKs do (fish-api.md Appendix A)", function()
    assert.equal("82a56576656e74a474657874a474657874a748656c6c6f2c20", hex(live_protocol.text("Hello, ")))
    assert.equal("81a56576656e74a5666c757368", hex(live_protocol.flush()))
    assert.equal("81a56576656e74a473746f70", hex(live_protocol.stop()))
  end)

  it("writes start as {event, request} with /v1/tts's request bytes and text = \"\"", function()
    local request = { reference_id = "abc", format = "pcm", sample_rate = 24000, prosody = { speed = 1 },
      extra = { zeta = 1 } }
    local body = tts.encode({ text = "", reference_id = "abc", format = "pcm", sample_rate = 24000,
      prosody = { speed = 1 }, extra = { zeta = 1 } })
    local expected = "82a56576656e74a57374617274a7726571756573" .. "74" .. hex(body:result())
    body:close()
    assert.equal(expected, hex(live_protocol.start(request)))
    -- float64 for speed, as over HTTP
    assert.truthy(hex(live_protocol.start(request)):find("a57370656564cb3ff0000000000000", 1, true))
  end)

  it("decodes audio, finish and error events, and leaves others aside", function()
    local function pack(t)
      local w = core.mp_writer()
      w:value(t)
      return w:result()
    end
    local audio = live_protocol.decode(pack({ event = "audio", audio = "xyz", chunk_seq = 2,
      chunk_audio_offset_sec = 1.5 }))
    assert.equal("audio", audio.type)
    assert.equal("xyz", audio.audio)
    assert.equal(1.5, audio.offset)
    assert.same({ type = "finish", reason = "error", message = "boom" },
      live_protocol.decode(pack({ event = "finish", reason = "error", message = "boom" })))
    assert.equal("bad", live_protocol.decode(pack({ event = "error", error = "bad" })).message)
    assert.equal("other", live_protocol.decode(pack({ event = "log", text = "hi" })).type)
    local none, why = live_protocol.decode("\193")
    assert.is_nil(none)
    assert.matches("msgpack", why)
    assert.is_nil((live_protocol.decode(pack({ 1, 2 }))))
  end)
end)

-- ---- against the local server ----------------------------------------------------

if not core.live_socket then
  pending("fish.live sessions: this fish.core has no live sockets (branch live-c not merged)")
  return
end

describe("fish.live", function()
  local srv, client, dir
  local saved_backoff = http._backoff

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local pipe = io.popen("mktemp -d")
    dir = pipe:read("*l")
    pipe:close()
    http._backoff = function() return 0.05 end
  end)

  teardown(function()
    http._backoff = saved_backoff
    client.close()
    srv:stop()
    os.execute("rm -rf " .. server.shell_quote(dir))
  end)

  before_each(function()
    srv:reset()
    srv:config({ live = true, live_chunk = 8192, live_delay = 0 })
  end)

  -- The sessions the server saw, once all have ended.
  local function sessions(path)
    return srv:control("GET", "/_test/live?wait=5" .. (path and ("&path=" .. path) or ""))
  end

  local function event_names(record)
    local names = {}
    for _, e in ipairs(record.events) do
      names[#names + 1] = e.event == "text" and ("text:" .. e.text) or e.event
    end
    return names
  end

  local function collector()
    local blocks, infos = {}, {}
    return function(bytes, info)
      blocks[#blocks + 1] = bytes
      infos[#infos + 1] = info
    end, blocks, infos
  end

  -- finish() of a session that must fail: nil, message, err, with the API
  -- key nowhere in what it reports.
  local function failure(s)
    local ok, message, err = s.finish()
    assert.is_nil(ok)
    assert.is_string(message)
    assert.equal(tostring(err), message)
    for _, text in ipairs({ message, err.message, err.body or "", tostring(s) }) do
      assert.is_nil(text:find(srv.api_key, 1, true), text)
    end
    return message, err
  end

  -- Drive the engine (fish.step) until the session is no longer connecting.
  local function until_open(s)
    for _ = 1, 500 do
      if s.state() ~= "connecting" then return end
      fish.step(0.01)
    end
  end

  local function listdir(path)
    local pipe = io.popen("ls -A " .. server.shell_quote(path))
    local out = pipe:read("*a")
    pipe:close()
    return out
  end

  describe("happy path", function()
    it("speaks text sent piece by piece, blocking in finish()", function()
      local on_audio, blocks = collector()
      local s = assert(client.live({ reference_id = "", format = "mp3", on_audio = on_audio }))
      assert.is_true(s.send("Hello there. "))
      assert.is_true(s.send("How are you?"))
      assert.is_true(s.flush())
      assert.is_true(s.finish())
      assert.equal("done", s.state())
      assert.is_true(#blocks > 0)
      local record = sessions()[1]
      assert.equal("/v1/tts/live", record.path)
      assert.same({ "start", "text:Hello there. ", "text:How are you?", "flush", "stop" }, event_names(record))
      assert.equal("", record.events[1].request.text)
      assert.equal("mp3", record.events[1].request.format)
      assert.equal("s2-pro", record.headers.model)
      assert.equal("Bearer " .. srv.api_key, record.headers.authorization)
      local total = 0
      for _, b in ipairs(blocks) do total = total + #b end
      assert.equal(record.audio_bytes, total)
    end)

    it("takes a per-call model, and model = false sends none", function()
      assert.is_function(fish.live)
      assert.is_true(client.live({ model = "s2.1-pro-free", on_audio = function() end }).finish())
      assert.equal("s2.1-pro-free", sessions()[1].headers.model)
      srv:reset()
      assert.is_true(client.live({ model = false, on_audio = function() end }).finish())
      assert.is_nil(sessions()[1].headers.model)
    end)

    it("takes an initial text, and a colon call works like a dot call", function()
      local s = client.live({ text = "First words.", on_audio = function() end })
      assert.is_true(s:send(" More."))
      assert.is_true(s:finish())
      assert.same({ "start", "text:First words.", "text: More.", "stop" }, event_names(sessions()[1]))
    end)

    it("sends no text event for an empty string", function()
      local s = client.live({ on_audio = function() end })
      assert.is_true(s.send(""))
      assert.is_true(s.send("x"))
      assert.is_true(s.finish())
      assert.same({ "start", "text:x", "stop" }, event_names(sessions()[1]))
    end)

    it("flushes at sentence ends with auto_flush", function()
      local s = client.live({ auto_flush = true, on_audio = function() end })
      s.send("One. Two! Thr")
      s.send("ee\nFour")
      assert.is_true(s.finish())
      assert.same({ "start", "text:One. ", "flush", "text:Two! ", "flush", "text:Thr", "text:ee\n", "flush",
        "text:Four", "stop" }, event_names(sessions()[1]))
    end)

    it("runs in fish tasks, several sessions at once, each suspending only its task", function()
      local polled = require("fish.loop").stats().polled
      local results = {}
      for i = 1, 3 do
        fish.spawn(function()
          local n = 0
          local s = client.live({ format = "pcm", on_audio = function(bytes) n = n + #bytes end })
          for _, word in ipairs({ "Task ", tostring(i), " speaks. " }) do
            s.send(word)
            fish.sleep(0.01)
          end
          local ok, message = s.finish()
          results[i] = { ok = ok, message = message, bytes = n }
        end)
      end
      fish.run()
      for i = 1, 3 do
        assert.is_true(results[i].ok, results[i].message)
        assert.is_true(results[i].bytes > 0)
      end
      -- Woken by their sockets' news, never polled.
      assert.equal(polled, require("fish.loop").stats().polled)
      assert.equal(3, #sessions())
    end)

    it("is driven by fish.step(0) from a host loop, callbacks running from the step", function()
      local on_audio, blocks = collector()
      local s = client.live({ on_audio = on_audio })
      s.send("Frame loop speech.")
      s.stop()
      local frames = 0
      while s.state() ~= "done" and frames < 100000 do
        fish.step(0)
        frames = frames + 1
      end
      assert.equal("done", s.state())
      assert.is_true(#blocks > 0)
      assert.is_true(s.finish())
    end)

    it("waits through the client's pause function, as a host loop's sleep", function()
      local pauses = 0
      local paused = fish.new({ api_key = srv.api_key, base_url = srv.url, pause = function(seconds)
        pauses = pauses + 1
        local till = os.clock() + seconds
        repeat until os.clock() >= till
      end })
      local on_audio, blocks = collector()
      local s = paused.live({ on_audio = on_audio })
      s.send("Paused host.")
      assert.is_true(s.finish())
      paused.close()
      assert.is_true(pauses > 0)
      assert.is_true(#blocks > 0)
    end)

    it("runs several blocking sessions side by side", function()
      local list = {}
      for i = 1, 3 do
        list[i] = client.live({ on_audio = function() end })
        list[i].send("Session " .. i .. ".")
      end
      for i = 1, 3 do assert.is_true(list[i].finish()) end
      assert.equal(3, #sessions())
    end)

    it("keeps the session open across flushes until finish", function()
      local s = client.live({ on_audio = function() end })
      s.send("First part.")
      s.flush()
      until_open(s)
      fish.sleep(0.1)
      fish.step(0)
      assert.equal("open", s.state())
      s.send("Second part.")
      assert.is_true(s.finish())
      assert.same({ "start", "text:First part.", "flush", "text:Second part.", "stop" }, event_names(sessions()[1]))
    end)
  end)

  describe("events()", function()
    it("yields every audio event then one finish, without on_audio", function()
      local s = client.live({ format = "pcm" })
      s.send("Iterated speech, long enough for a few blocks of audio.")
      s.stop()
      local types, bytes = {}, 0
      for ev in s.events() do
        types[#types + 1] = ev.type
        if ev.type == "audio" then bytes = bytes + #ev.audio end
      end
      assert.equal("finish", types[#types])
      assert.equal("audio", types[1])
      assert.equal(sessions()[1].audio_bytes, bytes)
      assert.is_true(s.finish())
    end)

    it("sees the events from its first call on when on_audio is set too", function()
      local seen = 0
      local s = client.live({ on_audio = function() seen = seen + 1 end })
      s.send("Both ways.")
      s.stop()
      local yielded = 0
      for ev in s.events() do
        if ev.type == "audio" then yielded = yielded + 1 end
      end
      assert.equal(seen, yielded)
    end)

    it("iterates in one task while another task sends and finishes", function()
      local s = client.live({ format = "pcm" })
      local bytes, last, finished = 0, nil, nil
      fish.spawn(function()
        -- Not `for ev in s.events()`: PUC Lua 5.1 cannot suspend a task
        -- from inside a for loop's iterator; a call of our own can.
        local next_event = s.events()
        while true do
          local ev = next_event()
          if not ev then break end
          last = ev.type
          if ev.type == "audio" then bytes = bytes + #ev.audio end
        end
      end)
      fish.spawn(function()
        for _, piece in ipairs({ "One sentence. ", "And another one." }) do
          s.send(piece)
          s.flush()
          fish.sleep(0.02)
        end
        finished = s.finish()
      end)
      fish.run()
      assert.is_true(finished)
      assert.equal("finish", last)
      assert.equal(sessions()[1].audio_bytes, bytes)
    end)

    it("ends with an error event when the session fails", function()
      srv:fault("/v1/tts/live", { finish_error = "no voice" })
      local s = client.live({})
      s.send("x")
      s.stop()
      local last
      for ev in s.events() do last = ev end
      assert.equal("error", last.type)
      assert.equal("server", last.error.kind)
      assert.matches("no voice", last.message)
    end)
  end)

  describe("timestamps", function()
    it("uses /with-timestamp and gives word times in the session's audio", function()
      local alignments, audio_infos = {}, {}
      local s = client.live({
        timestamps = true, format = "pcm", sample_rate = 16000,
        on_audio = function(_, info) audio_infos[#audio_infos + 1] = info end,
        on_alignment = function(words) alignments[#alignments + 1] = words end,
      })
      s.send("alpha beta gamma.")
      s.flush()
      s.send("delta epsilon.")
      assert.is_true(s.finish())
      assert.equal("/v1/tts/live/with-timestamp", sessions()[1].path)
      assert.is_true(#alignments >= 2)
      -- The second chunk starts where the first one's audio ends: 0.05 s a
      -- character in the local server's audio.
      local last = alignments[#alignments]
      local first_chunk = 0.05 * #"alpha beta gamma."
      assert.equal("delta", last[1].text)
      assert.is_true(math.abs(last[1].start - first_chunk) < 1e-6, tostring(last[1].start))
      assert.is_true(last[2].start > last[1].start)
      assert.same(last, audio_infos[#audio_infos].alignment)
      assert.equal(16000, audio_infos[1].rate)
    end)

    it("takes an audio event with empty audio as an alignment correction, not the end", function()
      srv:fault("/v1/tts/live/with-timestamp", { alignment_fix = true })
      local corrected
      local s = client.live({ timestamps = true, on_alignment = function(words) corrected = words end,
        on_audio = function() end })
      s.send("one two three")
      assert.is_true(s.finish())
      -- the correction closes the gaps: each word ends where the next starts
      assert.is_true(math.abs(corrected[1]["end"] - corrected[2].start) < 1e-6)
    end)
  end)

  describe("PCM", function()
    it("hands on_audio whole 16-bit samples however the server splits them", function()
      srv:fault("/v1/tts/live", { audio_chunk = 3 })
      local on_audio, blocks, infos = collector()
      local s = client.live({ format = "pcm", sample_rate = 24000, on_audio = on_audio })
      s.send("Odd splits.")
      assert.is_true(s.finish())
      local total = 0
      for i, b in ipairs(blocks) do
        assert.equal(0, #b % 2, "block " .. i)
        assert.equal(total, infos[i].bytes)
        assert.equal(total / 48000, infos[i].time)
        total = total + #b
      end
      assert.equal(sessions()[1].audio_bytes, total)
      assert.same({ 24000, 1, 16, 1 }, { infos[1].rate, infos[1].channels, infos[1].bits, infos[1].seq })
    end)
  end)

  describe("out", function()
    it("writes all the audio to the file, through a temporary file", function()
      local path = dir .. "/live.pcm"
      local on_audio, blocks = collector()
      local s = client.live({ format = "pcm", out = path, on_audio = on_audio })
      s.send("Saved to a file.")
      assert.is_nil(files.size(path))
      assert.is_true(s.finish())
      local f = assert(io.open(path, "rb"))
      assert.equal(table.concat(blocks), f:read("*a"))
      f:close()
      assert.equal("live.pcm", listdir(dir):gsub("%s+$", ""))
      os.remove(path)
    end)

    it("leaves no file when the session fails or is canceled", function()
      local path = dir .. "/failed.mp3"
      srv:fault("/v1/tts/live", { finish_error = "nope", after_audio = 1 })
      local s = client.live({ out = path })
      s.send("Half of this.")
      assert.is_nil(s.finish())
      local c = client.live({ out = path })
      c.send("x")
      c.flush()
      c.cancel()
      assert.equal("", listdir(dir))
    end)

    it("closes: a running session is canceled with no file left, an ended one stays done", function()
      local path = dir .. "/closed.mp3"
      local s = client.live({ out = path })
      s.send("Never finished.")
      s.flush()
      s.close()
      s:close()
      assert.equal("canceled", s.state())
      local ok, message, err = s.finish()
      assert.is_nil(ok)
      assert.equal("canceled", err.kind, message)
      assert.equal("", listdir(dir))
      local done = client.live({ format = "pcm" })
      done.send("Finished first.")
      assert.is_true(done.finish())
      done.close()
      assert.equal("done", done.state())
      assert.is_true(done.finish())
    end)

    it("closes with <close> on Lua 5.4 when the block ends, by an error too", function()
      if _VERSION ~= "Lua 5.4" then pending("<close> is Lua 5.4 syntax") return end
      local chunk = assert(load([[
        local client, path = ...
        local kept
        local ok = pcall(function()
          local s <close> = client.live({ out = path })
          kept = s
          s.send("Cut short.")
          error("the caller failed")
        end)
        return ok, kept
      ]]))
      local ok, s = chunk(client, dir .. "/scoped.mp3")
      assert.is_false(ok)
      assert.equal("canceled", s.state())
      assert.equal("", listdir(dir))
    end)

    it("refuses a bad path before connecting", function()
      local ok, err = pcall(client.live, { out = dir .. "/no/such/dir/x.mp3" })
      assert.is_false(ok)
      assert.matches("field 'out'", err)
      assert.equal(0, #sessions())
    end)
  end)

  describe("errors", function()
    it("reports a refused handshake with its status and body", function()
      srv:fault("/v1/tts/live", { status = 402, body = { status = 402, message = "Insufficient API credit" } })
      local s = client.live({})
      s.send("x")
      local message, err = failure(s)
      assert.equal("http", err.kind)
      assert.equal(402, err.status)
      assert.matches("Insufficient API credit", message)
      assert.matches("^fish.live: HTTP 402", message)
    end)

    it("reports a wrong key as auth", function()
      local other = fish.new({ api_key = "wrong-key", base_url = srv.url, retries = 0 })
      local message, err = failure(other.live({}))
      other.close()
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.matches("No permission", message)
    end)

    it("says that live TTS is not supported by a server without the endpoint", function()
      srv:config({ live = false })
      local message, err = failure(client.live({}))
      assert.equal(404, err.status)
      assert.matches("live TTS is not supported by this server", message)
    end)

    it("retries a 429 handshake, honouring Retry-After", function()
      srv:fault("/v1/tts/live", { status = 429, headers = { ["Retry-After"] = "0" } })
      local s = client.live({ retries = 1, on_audio = function() end })
      s.send("After a retry.")
      assert.is_true(s.finish())
      assert.equal(2, #srv:requests_for("GET", "/v1/tts/live"))
      assert.same({ "start", "text:After a retry.", "stop" }, event_names(sessions()[1]))
    end)

    it("gives up after the retries, with retry_after and attempts", function()
      srv:fault("/v1/tts/live", { status = 429, headers = { ["Retry-After"] = "0" } }, { times = 3 })
      local _, err = failure(client.live({ retries = 1 }))
      assert.equal("rate_limit", err.kind)
      assert.equal(0, err.retry_after)
      assert.equal(2, err.attempts)
    end)

    it("retries a network failure before the socket opens", function()
      srv:fault("/v1/tts/live", { reset = "before_headers" })
      local s = client.live({ retries = 2, on_audio = function() end })
      s.send("x")
      assert.is_true(s.finish())
    end)

    it("reports finish with reason error as kind server, with the server's message", function()
      srv:fault("/v1/tts/live", { finish_error = "voice is busy" })
      local s = client.live({})
      s.send("x")
      local message, err = failure(s)
      assert.equal("server", err.kind)
      assert.equal("finish", err.event)
      assert.matches("voice is busy", message)
    end)

    it("reports an error event as kind server, whichever key carries the text", function()
      srv:fault("/v1/tts/live/with-timestamp", { error_event = "too many sessions", error_key = "error" })
      local s = client.live({ timestamps = true })
      s.send("x")
      local message, err = failure(s)
      assert.equal("server", err.kind)
      assert.equal("error", err.event)
      assert.matches("too many sessions", message)
    end)

    it("reports an invalid start request the server refuses", function()
      local s = client.live({ chunk_length = 5 })
      s.send("x")
      local message, err = failure(s)
      assert.equal("server", err.kind)
      assert.matches("chunk_length", message)
    end)

    it("reports a close before finish as network, and never retries once audio came", function()
      srv:fault("/v1/tts/live", { drop = "fin", after_audio = 1 }, { times = 2 })
      local got = 0
      local s = client.live({ retries = 2, on_audio = function() got = got + 1 end })
      s.send(("long text "):rep(20))
      local message, err = failure(s)
      assert.equal("network", err.kind)
      assert.matches("closed before the session finished", message)
      assert.equal(1, #srv:requests_for("GET", "/v1/tts/live"))
      assert.is_true(got >= 1)
    end)

    it("retries a 503 handshake with the client's back-off", function()
      srv:fault("/v1/tts/live", { status = 503 })
      local s = client.live({ retries = 1, on_audio = function() end })
      s.send("x")
      assert.is_true(s.finish())
      assert.equal(2, #srv:requests_for("GET", "/v1/tts/live"))
    end)

    it("reads fragmented messages with pings inside, and ignores text frames and unknown events", function()
      srv:fault("/v1/tts/live", { fragment = 100, ping = 3, text_frame = "hello",
        send_event = { event = "log", message = "ignored" }, audio_chunk = 1000 })
      local on_audio, blocks = collector()
      local s = client.live({ on_audio = on_audio })
      s.send("Fragments and pings.")
      assert.is_true(s.finish())
      local record = sessions()[1]
      assert.equal(record.audio_bytes, #table.concat(blocks))
      assert.equal(3, #record.pongs)
    end)

    it("lets text be sent after the engine saw the socket close, reporting the close at finish", function()
      srv:fault("/v1/tts/live", { drop = "fin", after_audio = 1 })
      local on_audio, blocks = collector()
      local s = client.live({ on_audio = on_audio })
      s.send(("many words "):rep(30))
      s.flush()
      -- The engine moves (audio, then the close, arrive unseen) until the
      -- server has hung up.
      for _ = 1, 200 do
        fish.sleep(0.05)
        local record = srv:control("GET", "/_test/live")[1]
        if record and record.ended then break end
      end
      fish.sleep(0.1)
      assert.is_true(s.send("more"))
      assert.is_true(s.flush())
      local _, err = failure(s)
      assert.equal("network", err.kind)
      assert.is_true(#blocks >= 1) -- what came before the close was delivered
    end)

    it("takes a close with no close frame after finish as success", function()
      srv:fault("/v1/tts/live", { no_close_frame = true })
      local s = client.live({ on_audio = function() end })
      s.send("x")
      assert.is_true(s.finish())
    end)

    it("ends a session with no first audio after first_audio_timeout", function()
      srv:fault("/v1/tts/live", { stall = 3 })
      local s = client.live({ first_audio_timeout = 0.3 })
      s.send("x")
      local message, err = failure(s)
      assert.equal("timeout", err.kind)
      assert.equal("first_audio", err.timeout)
      assert.matches("no audio within 0.3s", message)
    end)

    it("ends a session whose upgrade is not answered within connect_timeout, retrying first", function()
      srv:fault("/v1/tts/live", { delay = 1 }, { times = 2 })
      local _, err = failure(client.live({ connect_timeout = 0.3, retries = 1 }))
      assert.equal("timeout", err.kind)
      assert.equal("connect", err.timeout)
      assert.equal(2, err.attempts)
      -- The server answers both upgrades once its delay is over, to sockets
      -- long closed: let it, so that its records land in this test.
      local records
      for _ = 1, 100 do
        records = srv:control("GET", "/_test/live?wait=1")
        if #records == 2 and records[1].ended and records[2].ended then break end
        fish.sleep(0.05)
      end
      assert.equal(2, #records)
    end)

    it("never times out a session that waits for its first words", function()
      local s = client.live({ first_audio_timeout = 0.2, idle_timeout = 0.2, on_audio = function() end })
      s.flush()
      s.send("   ")
      s.flush()
      until_open(s)
      fish.sleep(0.4)
      fish.step(0)
      assert.equal("open", s.state())
      s.send("Now the words come.")
      assert.is_true(s.finish())
    end)

    it("ends a finishing session that stalls after idle_timeout", function()
      srv:fault("/v1/tts/live", { stall = 3, after_audio = 1, audio_chunk = 64 })
      local s = client.live({ idle_timeout = 0.3, on_audio = function() end })
      s.send("A stall in the middle.")
      local _, err = failure(s)
      assert.equal("timeout", err.kind)
      assert.equal("idle", err.timeout)
    end)

    it("fails a message past max_message as too_large", function()
      srv:fault("/v1/tts/live", { oversized = 5000 })
      local s = client.live({ max_message = 4096 })
      s.send("x")
      local _, err = failure(s)
      assert.equal("too_large", err.kind)
    end)

    it("never shows the API key, even when the server echoes it", function()
      srv:fault("/v1/tts/live", { status = 401, body = "bad key " .. srv.api_key })
      local message, err = failure(client.live({}))
      assert.matches("bad key <redacted>", message)
      assert.matches("bad key <redacted>", err.body)
    end)

    it("raises on bad arguments, naming them", function()
      assert.has_error(function() client.live({ refrence_id = "x" }) end)
      local ok, why = pcall(client.live, { refrence_id = "x" })
      assert.is_false(ok)
      assert.matches("unknown field 'refrence_id' %(did you mean 'reference_id'%?%)", why)
      local function raised(fn, ...)
        local done, message = pcall(fn, ...)
        assert.is_false(done)
        return message
      end
      assert.matches("fish.live: field 'format' must be one of", raised(client.live, { format = "flac" }))
      assert.matches("timestamps = true", raised(client.live, { on_alignment = function() end }))
      local s = client.live({})
      assert.matches("argument 1 %(text%) must be a string", raised(s.send, 42))
      assert.matches("not valid UTF%-8", raised(s.send, "\255"))
      s.cancel()
    end)
  end)

  describe("ending", function()
    it("cancel drops the session at once, discarding audio not yet delivered", function()
      local delivered = 0
      local s = client.live({ on_audio = function() delivered = delivered + 1 end })
      s.send("Everything is sent before anyone reads it.")
      s.stop()
      -- A blocking fish.sleep moves the engine (the audio arrives) but
      -- delivers nothing: that is for finish(), events() and fish.step.
      -- Sleep until the server has sent the finish.
      local sent
      for _ = 1, 200 do
        fish.sleep(0.05)
        sent = srv:control("GET", "/_test/live")[1]
        if sent and sent.finish then break end
      end
      assert.is_true(sent.audio_events > 0)
      assert.is_true(s.cancel())
      local ok, message, err = s.finish()
      assert.is_nil(ok)
      assert.equal("canceled", err.kind)
      assert.matches("canceled", message)
      assert.equal(0, delivered)
      assert.equal("canceled", s.state())
    end)

    it("is safe to cancel twice, and a canceled session returns its error to send", function()
      local s = client.live({})
      assert.is_true(s.cancel())
      assert.is_false(s.cancel())
      local ok, _, err = s.send("more")
      assert.is_nil(ok)
      assert.equal("canceled", err.kind)
      assert.equal("canceled", select(3, s.finish()).kind)
    end)

    it("raises on text after finish, and finish() again gives the same result", function()
      local s = client.live({ on_audio = function() end })
      s.send("x")
      assert.is_true(s.finish())
      assert.has_error(function() s.send("more") end)
      assert.has_error(function() s.flush() end)
      local ok, why = pcall(s.send, "more")
      assert.is_false(ok)
      assert.matches("no more text after stop%(%) or finish%(%)", why)
      assert.is_true(s.finish())
      assert.is_false(s.cancel())
    end)

    it("a cancel token cancels the session, and so does closing the client", function()
      local token = fish.cancel_token()
      local s = client.live({ cancel = token })
      token:cancel()
      assert.equal("canceled", select(3, s.finish()).kind)
      local other = fish.new({ api_key = srv.api_key, base_url = srv.url })
      local t = other.live({})
      other.close()
      assert.equal("canceled", select(3, t.finish()).kind)
    end)

    it("a canceled task cancels the session it waits on", function()
      local result
      local task = fish.spawn(function()
        local s = client.live({ first_audio_timeout = 0 })
        result = { s.finish() }
      end)
      srv:fault("/v1/tts/live", { stall = 3 })
      fish.step(0)
      fish.step(0.1)
      task:cancel()
      fish.run()
      assert.equal("canceled", result[3].kind)
    end)

    it("a callback that raises closes the session and the error reaches the caller", function()
      local s = client.live({ on_audio = function() error("player broke") end })
      s.send("x")
      local ok, why = pcall(s.finish)
      assert.is_false(ok)
      assert.matches("player broke", why)
      assert.equal("canceled", s.state())
      local _, message = s.finish()
      assert.matches("on_audio raised", message)
    end)

    it("a session referenced nowhere is collected safely, its out file removed", function()
      local path = dir .. "/dropped.mp3"
      do
        local s = client.live({ out = path, on_audio = function() end })
        s.send("Nobody keeps this session.")
        s.flush()
        until_open(s)
      end
      for _ = 1, 10 do fish.step(0.01) end
      collectgarbage()
      collectgarbage()
      for _ = 1, 5 do fish.step(0.01) end
      assert.equal("", listdir(dir))
      -- the server saw the connection go
      assert.is_true(sessions()[1].ended)
      -- and the engine still works
      local s = client.live({ on_audio = function() end })
      s.send("Still here.")
      assert.is_true(s.finish())
    end)
  end)
end)
