-- The local server's live TTS endpoints (/v1/tts/live and /with-timestamp),
-- checked on their own with spec/support/live_probe.py, a client built on
-- Debian's python3-websockets. fish's C client is not involved here, so a
-- bug on either side cannot hide one on the other.
local cjson = require("cjson")
local server = require("support.server")

local null = cjson.null

local function start(request) return { send = { event = "start", request = request or { text = "" } } } end
local function text(t) return { send = { event = "text", text = t } } end
local FLUSH = { send = { event = "flush" } }
local STOP = { send = { event = "stop" } }
local function wait_audio(n) return { wait = { event = "audio", count = n or 1 } } end

-- Messages of one event name, in order.
local function only(result, name)
  local out = {}
  for _, m in ipairs(result.messages) do
    if m.event == name then out[#out + 1] = m end
  end
  return out
end

local function last_message(result) return result.messages[#result.messages] end

-- Bytes of s16le mono audio for `text`, as the server sizes it: 0.05 s per
-- character, at least 0.2 s.
local function pcm_bytes(str, rate)
  return math.floor(math.max(0.2, 0.05 * #str) * rate + 0.5) * 2
end

local function frames_of(result, op)
  local out = {}
  for _, f in ipairs(result.frames) do
    if f.op == op then out[#out + 1] = f end
  end
  return out
end

describe("the local server's live TTS", function()
  local srv

  setup(function()
    srv = server.start()
    srv:open_live_probe() -- one probe process for the whole file: much faster
  end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function probe(script) return srv:live_probe(script) end

  describe("a session on /v1/tts/live", function()
    it("answers flush with audio at once, stop with finish, then a close frame", function()
      local r = probe({ steps = {
        start({ text = "", format = "pcm", sample_rate = 16000 }),
        text("Hello world."), FLUSH, wait_audio(),
        text("Again"), STOP,
      } })
      assert.are.equal(101, r.status)
      assert.are.equal(null, r.handshake_error)
      local finish = last_message(r)
      assert.are.equal("finish", finish.event)
      assert.are.equal("stop", finish.reason)
      -- Sample rate honoured: 0.6 s + 0.25 s of 16-bit mono at 16 kHz.
      assert.are.equal(pcm_bytes("Hello world.", 16000) + pcm_bytes("Again", 16000), r.audio_len)
      assert.are.same({ code = 1000, reason = "" }, { code = r.close.code, reason = r.close.reason })
      assert.is_true(r.eof)
      assert.are.equal("CLOSED", r.state)
      -- Audio for the flush came before the stop was sent: the server did not wait for it.
      local flush_sent = r.steps[3].t
      local first = only(r, "audio")[1]
      assert.is_true(first.t < r.steps[5].t)
      assert.is_true(first.t - flush_sent < 0.5)
    end)

    it("keeps events a client sent along with its upgrade request", function()
      local r = probe({ eager = { { event = "start", request = { text = "", format = "pcm" } },
        { event = "text", text = "Early bird" }, { event = "stop" } } })
      assert.are.equal(101, r.status)
      assert.are.equal("stop", last_message(r).reason)
      assert.are.equal(pcm_bytes("Early bird", 44100), r.audio_len)
    end)

    it("sizes the audio by the text and defaults to 44.1 kHz PCM", function()
      local function total(str)
        return probe({ steps = { start({ text = "", format = "pcm" }), text(str), STOP } }).audio_len
      end
      local short, long = total("Hi there"), total(string.rep("A longer sentence. ", 4))
      assert.are.equal(pcm_bytes("Hi there", 44100), short)
      assert.are.equal(pcm_bytes(string.rep("A longer sentence. ", 4), 44100), long)
      assert.is_true(long > 5 * short)
    end)

    it("sends each synthesis as a whole file of the asked format (mp3 by default, wav, opus)", function()
      local heads = {}
      for _, fmt in ipairs({ "mp3", "wav", "opus" }) do
        local req = { text = "" }
        if fmt ~= "mp3" then req.format = fmt end
        local r = probe({ steps = { start(req), text("One."), FLUSH, wait_audio(), text("Two."), STOP } })
        assert.are.equal("stop", last_message(r).reason)
        heads[fmt] = {}
        for _, m in ipairs(only(r, "audio")) do heads[fmt][#heads[fmt] + 1] = m.audio_head end
      end
      assert.are.equal("fffb90c4", heads.mp3[1]:sub(1, 8))
      assert.are.equal("52494646", heads.wav[1]:sub(1, 8)) -- RIFF
      assert.are.equal("4f676753", heads.opus[1]:sub(1, 8)) -- OggS
      -- Each synthesis is a file of its own: two WAV headers, two Ogg streams.
      local function starts(list, magic)
        local n = 0
        for _, h in ipairs(list) do
          if h:sub(1, 8) == magic then n = n + 1 end
        end
        return n
      end
      assert.are.equal(2, starts(heads.wav, "52494646"))
      assert.are.equal(2, starts(heads.opus, "4f676753"))
    end)

    it("synthesises on its own once the buffer reaches chunk_length characters", function()
      local r = probe({ steps = {
        start({ text = "", format = "pcm", chunk_length = 100 }),
        text(string.rep("word ", 19)), { sleep = 0.2 }, -- 95 characters: nothing yet
        text("more "), wait_audio(), STOP,
      } })
      local audio = only(r, "audio")
      assert.is_true(#audio > 0)
      assert.is_true(audio[1].t > r.steps[3].t) -- after the 100th character, not before
      assert.is_true(audio[1].t <= r.steps[#r.steps].t) -- before stop was sent
      assert.are.equal(pcm_bytes(string.rep("word ", 20), 44100), r.audio_len)
    end)

    it("takes text given in start as the beginning of the buffer", function()
      local r = probe({ steps = { start({ text = "Hello", format = "pcm", sample_rate = 8000 }), STOP } })
      assert.are.equal(pcm_bytes("Hello", 8000), r.audio_len)
    end)

    it("serves many sessions at once without blocking the HTTP side", function()
      -- Ten sessions at once, each stalled for 0.8 s after its first audio.
      srv:fault("/v1/tts/live", { stall = 0.8, after_audio = 1 }, { times = 10 })
      local scripts = {}
      for i = 1, 10 do
        scripts[i] = { steps = { start({ text = "", format = "pcm" }), text("Hello there " .. i), STOP } }
      end
      srv:live_probe_send({ parallel = scripts })
      -- While they are stalled, the HTTP side answers.
      local stats
      for _ = 1, 50 do
        stats = srv:stats()
        if stats.active_live == 10 then break end
      end
      -- env -u LD_PRELOAD: under `make test-asan` the sanitizer runtime is
      -- preloaded into every child, and curl hangs with it.
      local tts = io.popen(("env -u LD_PRELOAD curl -s --max-time 10 -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %s' "
        .. "-H 'Content-Type: application/json' -d '{\"text\":\"hi\"}' %s/v1/tts"):format(srv.api_key, srv.url))
      local tts_status = tts:read("*a")
      tts:close()
      local results = srv:live_probe_result()
      assert.are.equal(10, stats.active_live)
      assert.are.equal("200", tts_status)
      assert.are.equal(10, #srv:live_sessions())
      for i, r in ipairs(results) do
        assert.are.equal("stop", last_message(r).reason)
        assert.are.equal(pcm_bytes("Hello there " .. i, 44100), r.audio_len)
      end
    end)
  end)

  describe("/v1/tts/live/with-timestamp", function()
    it("adds content, a cumulative alignment per chunk, chunk_seq, its offset and time", function()
      local r = probe({ path = "/v1/tts/live/with-timestamp", steps = {
        start({ text = "", format = "pcm", sample_rate = 16000 }),
        text("Hello big wide world."), FLUSH, wait_audio(), text("Bye now."), STOP,
      } })
      local audio = only(r, "audio")
      local by_seq = { [0] = {}, [1] = {} }
      for _, m in ipairs(audio) do
        assert.is_number(m.time)
        assert.is_number(m.chunk_audio_offset_sec)
        table.insert(by_seq[m.chunk_seq], m)
      end
      assert.is_true(#by_seq[0] >= 2)
      assert.is_true(#by_seq[1] >= 1)
      assert.are.equal("Hello big wide world.", by_seq[0][1].content)
      assert.are.equal(0, by_seq[0][1].chunk_audio_offset_sec)
      -- The second chunk starts where the first one's audio ended (21 chars = 1.05 s).
      assert.are.equal(1.05, by_seq[1][1].chunk_audio_offset_sec)
      -- The snapshot grows within a chunk; null means "unchanged"; the last one has every word.
      local seen, counts = nil, {}
      for _, m in ipairs(by_seq[0]) do
        if m.alignment ~= null then
          assert.are.equal(1.05, m.alignment.audio_duration)
          counts[#counts + 1] = #m.alignment.segments
          seen = m.alignment
        end
      end
      assert.is_true(#counts >= 2 and counts[1] < counts[#counts])
      local words = {}
      for i, seg in ipairs(seen.segments) do
        words[i] = seg.text
        assert.is_true(seg.start < seg["end"])
        if i > 1 then assert.is_true(seen.segments[i - 1]["end"] <= seg.start) end
      end
      assert.are.same({ "Hello", "big", "wide", "world." }, words)
      assert.is_true(seen.segments[4]["end"] <= 1.05)
      assert.are.equal("stop", last_message(r).reason)
    end)

    it("sends an empty-audio event that only corrects the alignment on demand", function()
      srv:fault("/v1/tts/live/with-timestamp", { alignment_fix = true })
      local r = probe({ path = "/v1/tts/live/with-timestamp", steps = {
        start({ text = "", format = "pcm" }), text("Two words"), STOP,
      } })
      local audio = only(r, "audio")
      local fix = audio[#audio]
      assert.are.equal(0, fix.audio_len)
      assert.are.equal(0, fix.chunk_seq)
      local segs = fix.alignment.segments
      assert.are.equal(segs[1]["end"], segs[2].start) -- the gap is closed
      assert.are.equal("finish", last_message(r).event)
    end)

    it("runs another start on the same socket after finish when asked to keep it open", function()
      srv:fault("/v1/tts/live/with-timestamp", { keep_open = true })
      local r = probe({ path = "/v1/tts/live/with-timestamp", steps = {
        start({ text = "", format = "pcm" }), text("First."), STOP, { wait = "finish" },
        start({ text = "", format = "pcm" }), text("Second one."), STOP,
        { wait = { event = "finish", count = 2 } }, { close = { code = 1000 } },
      } })
      local finishes, seqs = only(r, "finish"), {}
      assert.are.equal(2, #finishes)
      for _, m in ipairs(only(r, "audio")) do seqs[#seqs + 1] = m.chunk_seq end
      assert.are.equal(0, seqs[#seqs]) -- chunk_seq restarts with the new start
      assert.are.equal(pcm_bytes("First.", 44100) + pcm_bytes("Second one.", 44100), r.audio_len)
    end)
  end)

  describe("the handshake", function()
    it("refuses a wrong key with the API's plain-text 401, and records the attempt", function()
      local r = probe({ headers = { Authorization = "Bearer nope" }, steps = { start() } })
      assert.are.equal(401, r.status)
      assert.are.equal("No permission -- see authorization schemes", r.body)
      assert.matches("text/plain", r.headers["content-type"])
      assert.are.equal(1, #srv:requests_for("GET", "/v1/tts/live"))
      assert.are.equal(0, #srv:live_sessions())
    end)

    it("refuses a missing Sec-WebSocket-Key or a wrong version with 400", function()
      local r = probe({ drop_headers = { "Sec-WebSocket-Key" } })
      assert.are.equal(400, r.status)
      assert.matches("Sec%-WebSocket%-Key", r.body)
      r = probe({ headers = { Authorization = "Bearer " .. srv.api_key, ["Sec-WebSocket-Version"] = "8" } })
      assert.are.equal(400, r.status)
    end)

    it("leaves the other upgrade checks to the library: no Connection: Upgrade gets 426", function()
      local r = probe({ headers = { Authorization = "Bearer " .. srv.api_key, Connection = "keep-alive" } })
      assert.are.equal(426, r.status)
      assert.are.equal("websocket", r.headers.upgrade)
    end)

    it("hangs up before answering on a close or reset fault", function()
      srv:fault("/v1/tts/live", { close = true })
      srv:fault("/v1/tts/live", { reset = "before_headers" })
      for _ = 1, 2 do
        local r = probe({ steps = { start() } })
        assert.are.equal(null, r.status)
        assert.is_true(r.eof)
      end
      assert.are.equal(2, #srv:requests_for("GET", "/v1/tts/live"))
      assert.are.equal(0, #srv:live_sessions())
    end)

    it("answers a plain GET with the API's 404, and 404s every upgrade in self-hosted mode", function()
      local out = io.popen(("env -u LD_PRELOAD curl -s --max-time 10 -w ' %%{http_code}' "
        .. "-H 'Authorization: Bearer %s' %s/v1/tts/live"):format(
        srv.api_key, srv.url)):read("*a")
      assert.are.equal('{"status": 404, "message": "Not Found"} 404', out)
      srv:config({ live = false })
      local r = probe({ path = "/v1/tts/live/with-timestamp" })
      assert.are.equal(404, r.status)
      assert.are.equal(0, #srv:live_sessions())
    end)

    it("refuses on demand with a status, headers and body", function()
      srv:fault("/v1/tts/live", { status = 429, headers = { ["Retry-After"] = "3" },
        body = { status = 429, message = "Too many connections" } })
      srv:fault("/v1/tts/live", { status = 402, body = "Insufficient API credit" })
      local r = probe({})
      assert.are.equal(429, r.status)
      assert.are.equal("3", r.headers["retry-after"])
      assert.are.same({ status = 429, message = "Too many connections" }, cjson.decode(r.body))
      r = probe({})
      assert.are.equal(402, r.status)
      assert.are.equal("Insufficient API credit", r.body)
      assert.matches("text/plain", r.headers["content-type"])
      assert.are.equal(101, probe({ steps = { start(), STOP } }).status) -- the faults are used up
    end)

    it("adds fault headers to the 101, and delays it on demand", function()
      srv:fault("/v1/tts/live", { headers = { ["X-Generation-Id"] = "gen-1" }, delay = 0.3 })
      local r = probe({ steps = { start(), STOP } })
      assert.are.equal(101, r.status)
      assert.are.equal("gen-1", r.headers["x-generation-id"])
      assert.is_true(r.steps[1].t >= 0.28) -- the first step runs once the 101 is in
    end)

    it("sends a wrong Sec-WebSocket-Accept on demand", function()
      srv:fault("/v1/tts/live", { bad_accept = true })
      local r = probe({ steps = { start() } })
      assert.are.equal(101, r.status)
      assert.matches("Sec%-WebSocket%-Accept", r.handshake_error)
    end)

    it("records the handshake headers, the events in order and the client's close", function()
      local r = probe({
        headers = { Authorization = "Bearer " .. srv.api_key, model = "s1", ["User-Agent"] = "probe/1" },
        steps = { start({ text = "", format = "pcm" }), text("A "), text("B"), FLUSH, wait_audio(),
          { close = { code = 4000, reason = "bye" } } },
      })
      assert.are.equal(4000, r.close.code) -- the library echoes the client's code
      local s = srv:live_sessions()[1]
      assert.are.equal("/v1/tts/live", s.path)
      assert.are.equal("Bearer " .. srv.api_key, s.headers.authorization)
      assert.are.equal("s1", s.headers.model)
      assert.are.equal("probe/1", s.headers["user-agent"])
      local names = {}
      for i, e in ipairs(s.events) do names[i] = e.event end
      assert.are.same({ "start", "text", "text", "flush" }, names)
      assert.are.equal("B", s.events[3].text)
      assert.are.same({ text = "", format = "pcm" }, s.events[1].request)
      assert.are.same({ code = 4000, reason = "bye" }, s.client_close)
      assert.is_true(s.masked)
      assert.is_true(s.ended)
      assert.is_true(s.audio_events > 0)
    end)

    it("records an unmasked client frame, which the library refuses with 1002", function()
      local r = probe({ steps = { start(), { send_unmasked = { event = "stop" } } } })
      assert.are.equal(1002, r.close.code)
      local s = srv:live_sessions()[1]
      assert.is_false(s.masked)
      assert.matches("masking", s.protocol_error)
    end)

    it("answers the client's pings", function()
      local r = probe({ steps = { start(), { ping = "are-you-there" }, { sleep = 0.1 }, STOP } })
      assert.are.equal(1, #frames_of(r, "pong"))
      assert.are.same({ "are-you-there" }, srv:live_sessions()[1].pings_received)
    end)
  end)

  describe("event order", function()
    it("ends /v1/tts/live with finish/error and a message on an event before start", function()
      local r = probe({ steps = { text("Hello"), STOP } })
      local m = last_message(r)
      assert.are.same({ "finish", "error" }, { m.event, m.reason })
      assert.matches("before start", m.message)
      assert.are.equal(1000, r.close.code)
      assert.are.equal(1, #srv:live_sessions()[1].errors_sent)
    end)

    it("ends /with-timestamp with an error event on a second start", function()
      local r = probe({ path = "/v1/tts/live/with-timestamp", steps = { start(), start(), STOP } })
      local m = last_message(r)
      assert.are.equal("error", m.event)
      assert.matches("twice", m.message)
      assert.are.equal(0, #only(r, "finish"))
      -- The stop arrived with the second start; it is recorded as ignored.
      local ev = srv:live_sessions()[1].events
      assert.are.same({ "start", "start", "stop" }, { ev[1].event, ev[2].event, ev[3].event })
      assert.are.equal("after stop", ev[3].ignored)
    end)

    it("validates start like /v1/tts and names the bad fields", function()
      local r = probe({ steps = { start({ text = "", format = "flac", sample_rate = 1 }) } })
      local m = last_message(r)
      assert.are.equal("error", m.reason)
      assert.matches("format", m.message)
      r = probe({ steps = { start({ text = "", reference_id = "no-such-voice" }) } })
      assert.are.equal("Reference not found", last_message(r).message)
      r = probe({ steps = { { send = { event = "start" } } } })
      assert.matches("request", last_message(r).message)
    end)

    it("refuses a message that is not a msgpack map with an event", function()
      local r = probe({ steps = { { send_bytes_b64 = "wcHB" } } })
      assert.matches("Invalid message", last_message(r).message)
      assert.are.equal("invalid", srv:live_sessions()[1].events[1].kind)
    end)

    it("ignores and records unknown events and text frames", function()
      local r = probe({ steps = { start({ text = "", format = "pcm" }), { send = { event = "cancel" } },
        { send_text = "hello?" }, text("Still fine."), STOP } })
      assert.are.equal("stop", last_message(r).reason)
      assert.are.equal(pcm_bytes("Still fine.", 44100), r.audio_len)
      local ev = srv:live_sessions()[1].events
      assert.are.same({ "cancel", "unknown event" }, { ev[2].event, ev[2].ignored })
      assert.are.same({ "text_frame", "hello?" }, { ev[3].kind, ev[3].text })
    end)
  end)

  describe("faults", function()
    local PCM = { text = "", format = "pcm" }
    local LONG = string.rep("Some words here. ", 4) -- 3.4 s of PCM, about 37 events of 8 KiB

    it("finish with reason error and a message after N audio events", function()
      srv:fault("/v1/tts/live", { finish_error = "GPU on fire", after_audio = 2 })
      local r = probe({ steps = { start(PCM), text(LONG), STOP } })
      assert.are.equal(2, #only(r, "audio"))
      local m = last_message(r)
      assert.are.same({ "finish", "error", "GPU on fire" }, { m.event, m.reason, m.message })
      assert.are.equal(1000, r.close.code)
    end)

    it("an error event, under `message` or `error`", function()
      srv:fault("/v1/tts/live", { error_event = "Too many sessions" })
      srv:fault("/v1/tts/live", { error_event = "Busy", error_key = "error" })
      local r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.same({ "error", "Too many sessions" }, { last_message(r).event, last_message(r).message })
      assert.are.equal(0, #only(r, "audio"))
      r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.equal("Busy", last_message(r).error)
    end)

    it("drops the TCP connection mid-stream, with FIN or RST, and no close frame", function()
      srv:fault("/v1/tts/live", { drop = "fin", after_audio = 3 })
      local r = probe({ steps = { start(PCM), text(LONG), STOP } })
      assert.are.equal(3, #only(r, "audio"))
      assert.are.equal(null, r.close)
      assert.is_true(r.eof)
      srv:fault("/v1/tts/live", { drop = "rst", after_audio = 1 })
      r = probe({ steps = { start(PCM), text(LONG), STOP } })
      assert.are.equal(1, #only(r, "audio"))
      assert.are.equal(null, r.close)
      assert.is_true(r.eof)
      assert.are.equal("dropped (rst)", srv:live_sessions()[2]["end"])
    end)

    it("finishes with no close frame, as the real server often does", function()
      srv:fault("/v1/tts/live", { no_close_frame = true })
      local r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.equal("stop", last_message(r).reason)
      assert.are.equal(null, r.close)
      assert.is_true(r.eof)
    end)

    it("closes with a chosen code and reason", function()
      srv:fault("/v1/tts/live", { close_code = 4001, close_reason = "done here" })
      local r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.same({ 4001, "done here" }, { r.close.code, r.close.reason })
    end)

    it("fragments every message into continuation frames, with a ping inside", function()
      srv:fault("/v1/tts/live", { fragment = 1000, ping = 2 })
      local r = probe({ steps = { start(PCM), text("Hello world."), STOP } })
      assert.are.equal(pcm_bytes("Hello world.", 44100), r.audio_len)
      local audio = only(r, "audio")
      assert.are.equal(9, audio[1].frames) -- 8214 bytes in frames of 1000
      -- Frame order: binary (not fin), the ping, then the continuations.
      assert.are.same({ "binary", false }, { r.frames[1].op, r.frames[1].fin })
      assert.are.equal("ping", r.frames[2].op)
      assert.are.equal("cont", r.frames[3].op)
      assert.are.same({ "fish-ping-1", "fish-ping-2" }, r.pings)
      local s = srv:live_sessions()[1]
      assert.are.same({ "fish-ping-1", "fish-ping-2" }, s.pings_sent)
      assert.are.equal(2, #s.pongs)
      assert.are.equal("fish-ping-2", s.pongs[2].data)
    end)

    it("pings on a timer while the session is idle, and records the pongs", function()
      srv:fault("/v1/tts/live", { ping_every = 0.1 })
      local r = probe({ steps = { start(PCM), { sleep = 0.45 }, text("Hi"), STOP } })
      assert.are.equal("stop", last_message(r).reason)
      assert.is_true(#r.pings >= 3)
      local s = srv:live_sessions()[1]
      assert.are.equal(#s.pings_sent, #s.pongs)
      assert.are.equal(s.pings_sent[1], s.pongs[1].data)
    end)

    it("sends one oversized message of exactly N bytes before the audio", function()
      srv:fault("/v1/tts/live", { oversized = 200000 })
      local r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.equal(200000, r.messages[1].size)
      assert.are.equal("audio", r.messages[1].event)
      assert.are.equal("stop", last_message(r).reason)
    end)

    it("stalls after N audio events with the socket open, then goes on", function()
      srv:fault("/v1/tts/live", { stall = 0.6, after_audio = 2 })
      local r = probe({ steps = { start(PCM), text("Hello world."), STOP } })
      local audio = only(r, "audio")
      assert.is_true(audio[3].t - audio[2].t >= 0.55)
      assert.is_true(audio[2].t - audio[1].t < 0.4) -- margin for a busy machine
      assert.are.equal("stop", last_message(r).reason)
      assert.is_true(srv:live_sessions()[1].stalled)
    end)

    it("stalls inside a frame: half of it written, the rest after the stall", function()
      srv:fault("/v1/tts/live", { stall = 0.5, stall_mid_frame = true, after_audio = 1 })
      local r = probe({ steps = { start(PCM), text("Hello world."), STOP } })
      local audio = only(r, "audio")
      assert.is_true(audio[2].t - audio[1].t >= 0.45)
      assert.are.equal(pcm_bytes("Hello world.", 44100), r.audio_len)
    end)

    it("a client that gives up during a stall is recorded", function()
      srv:fault("/v1/tts/live", { stall = 5, after_audio = 1 })
      probe({ steps = { start(PCM), text("Hello world."), FLUSH, wait_audio(), { sleep = 0.2 },
        { close = { code = 1001, reason = "too slow" } } }, timeout = 2 })
      local s = srv:live_sessions()[1]
      assert.are.same({ code = 1001, reason = "too slow" }, s.client_close)
      assert.are.equal(1, s.audio_events)
    end)

    it("splits PCM at odd byte counts", function()
      srv:fault("/v1/tts/live", { audio_chunk = 1001 })
      local r = probe({ steps = { start({ text = "", format = "pcm", sample_rate = 8000 }), text("Hello"), STOP } })
      local sizes = {}
      for i, m in ipairs(only(r, "audio")) do sizes[i] = m.audio_len end
      assert.are.same({ 1001, 1001, 1001, 997 }, sizes) -- 4000 bytes
      srv:config({ live_chunk = 1501 }) -- the same, server-wide
      r = probe({ steps = { start({ text = "", format = "pcm", sample_rate = 8000 }), text("Hello"), STOP } })
      assert.are.equal(1501, only(r, "audio")[1].audio_len)
    end)

    it("waits before each synthesis's first audio when a delay is set", function()
      srv:fault("/v1/tts/live", { audio_delay = 0.4 })
      local r = probe({ steps = { start(PCM), text("Hi"), FLUSH, wait_audio(), STOP } })
      local gap = only(r, "audio")[1].t - r.steps[3].t
      assert.is_true(gap >= 0.38, "gap " .. gap)
      srv:config({ live_delay = 0.3 })
      r = probe({ steps = { start(PCM), text("Hi"), FLUSH, wait_audio(), STOP } })
      assert.is_true(only(r, "audio")[1].t - r.steps[3].t >= 0.28)
    end)

    it("sends a text frame and an unknown event before the audio", function()
      srv:fault("/v1/tts/live", { text_frame = "ignore me", send_event = { event = "log", message = "x" } })
      local r = probe({ steps = { start(PCM), text("Hi"), STOP } })
      assert.are.equal("ignore me", r.messages[1].text_frame)
      assert.are.same({ "log", "x" }, { r.messages[2].event, r.messages[2].message })
      assert.are.equal("audio", r.messages[3].event)
    end)

    it("refuses unknown or ill-typed live fault fields", function()
      assert.matches("drop", srv:fault("/v1/tts/live", { drop = "sideways" }).message)
      assert.matches("fragment", srv:fault("/v1/tts/live", { fragment = 0 }).message)
      assert.matches("close_code", srv:fault("/v1/tts/live", { close_code = 1006 }).message)
      assert.matches("unknown", srv:fault("/v1/tts/live", { stal = 1 }).message)
    end)
  end)
end)
