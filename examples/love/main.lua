-- A LÖVE 11 game whose character speaks a line while the line is still
-- being written, as an LLM writes it: the words go to fish.live a few at a
-- time, the PCM audio coming back is played through a queueable source, and
-- the captions follow the word timings at the source's play position.
-- Nothing here waits: fish.step(0) in love.update moves the session along.
-- README.md beside this file says how to run it.
--
-- It prints machine-readable lines (FISH-LOVE-LIVE ...) for
-- spec/love_live_spec.lua, which runs it headless.
io.stdout:setvbuf("no") -- the lines must get out even if the game is killed

local ffi = require("ffi")

local found, fish = pcall(require, "fish")
if not found then
  error("fish is not reachable: set LUA_PATH and LUA_CPATH to a built tree (see examples/love/README.md)\n"
    .. tostring(fish), 0)
end

local RATE = 24000        -- samples a second; the source and the session agree on it
local BUFFERS = 32        -- OpenAL buffers in the source (LÖVE allows up to 64)
local START_AHEAD = 0.2   -- seconds of audio queued before play(): fewer starved restarts
local TIME_LIMIT = 30     -- seconds until the game gives up (the spec waits 60)
-- At most 60 frames a second. A display's vsync paces the frames anyway; a
-- headless run has none and would spin a core, starving the audio thread
-- and the network of CPU time.
local FRAME = 1 / 60

local SPEAKER = "Captain Ryn"
local LINE = os.getenv("FISH_LOVE_LIVE_LINE")
  or "The bridge is out. We take the mountain road tonight, so stay close to me."
-- The LLM stand-in's pace: a pause after each word, a longer one after a sentence.
local WORD_GAP, SENTENCE_GAP = 0.12, 0.4
-- "played": quit once the line has been heard; "finish": quit as soon as the
-- session has finished (all audio received), without playing the rest.
local EXIT = os.getenv("FISH_LOVE_LIVE_EXIT") or "played"
-- Headless runs (the spec) quit on an error instead of showing LÖVE's error screen.
local HEADLESS = os.getenv("FISH_LOVE_LIVE_HEADLESS") == "1"

local clock = love.timer.getTime
local started_at

-- What the spec reads. Times are seconds since love.load.
local stats = {
  frames = 0, max_frame = 0,                 -- every frame of the run
  session_frames = 0, session_max_frame = 0, -- the frames until the session finished
  max_update = 0,                            -- the longest love.update while the session ran
  max_step = 0,                              -- the longest fish.step(0)
  live_call = 0,                             -- how long fish.live{...} took
  blocks = 0, odd_blocks = 0, misnumbered = 0, received = 0,
  queued_bytes = 0, queued_blocks = 0, plays = 0,
}

-- ---- the writer: stands in for an LLM producing the line ------------------

local writer = { pieces = {}, next = 1, at = 0 }
for word in LINE:gmatch("%S+%s*") do writer.pieces[#writer.pieces + 1] = word end

-- ---- the player: PCM blocks into a queueable source -------------------------

local player = {
  pending = {},   -- SoundData waiting for a free buffer in the source
  inside = {},    -- sample counts of the buffers in the source, oldest first
  done = 0,       -- samples in buffers the source has finished with
  queued = 0,     -- samples handed to the source
  received = 0,   -- samples received from the session
  position = 0,   -- samples played; never goes back
}

local function new_player()
  player.source = love.audio.newQueueableSource(RATE, 16, 1, BUFFERS)
  -- With no audio device (no sound card, no OpenAL backend) LÖVE's sources
  -- accept nothing: a fresh source shows no free buffer. The captions then
  -- follow a clock, so the line can still be read.
  player.audible = player.source:getFreeBufferCount() > 0
end

-- One block from on_audio. With format = "pcm" fish hands over whole 16-bit
-- samples, which LÖVE's SoundData stores as native int16: the bytes copy
-- straight in (Fish's PCM is little-endian, as x86 and ARM are). Only whole
-- samples are copied all the same, so a stray odd byte could never write
-- past the SoundData's end.
local function add_audio(bytes, info)
  local samples = (#bytes - #bytes % 2) / 2
  if samples == 0 then return end
  player.received = player.received + samples
  if not player.audible then return end
  local sound = love.sound.newSoundData(samples, info.rate, info.bits, info.channels)
  ffi.copy(sound:getFFIPointer(), bytes, samples * 2)
  player.pending[#player.pending + 1] = sound
end

-- Each frame: count the buffers the source has finished, move pending blocks
-- into free buffers, work out the play position, and start (or restart)
-- playing. `ending`: no more audio will come.
local function update_player(ending, dt)
  local source = player.source
  if not player.audible then
    if player.playing or player.received >= START_AHEAD * RATE or (ending and player.received > 0) then
      player.playing = true
      player.position = math.min(player.received, player.position + dt * RATE)
    end
    return
  end
  -- A finished buffer is freed by LÖVE; the oldest ones finish first.
  local in_source = BUFFERS - source:getFreeBufferCount()
  while #player.inside > in_source do
    player.done = player.done + table.remove(player.inside, 1)
  end
  while player.pending[1] and source:getFreeBufferCount() > 0 do
    local sound = player.pending[1]
    if not source:queue(sound) then break end
    table.remove(player.pending, 1)
    local samples = sound:getSampleCount()
    player.inside[#player.inside + 1] = samples
    player.queued = player.queued + samples
    stats.queued_bytes = stats.queued_bytes + sound:getSize()
    stats.queued_blocks = stats.queued_blocks + 1
  end
  -- tell() counts within the buffer being played, so the finished buffers
  -- are added. A stopped (starved) source says 0: all its buffers are done.
  local playing = source:isPlaying()
  local position = player.done + (playing and source:tell("samples") or 0)
  if position > player.position then player.position = position end
  -- A source that ran out of audio stops and stays stopped until play().
  local ahead = player.queued - player.position
  if not playing and ahead > 0 and (ahead >= START_AHEAD * RATE or ending) then
    if source:play() then
      stats.plays = stats.plays + 1
      stats.first_play = stats.first_play or (clock() - started_at)
    end
  end
end

local function drained()
  return not player.pending[1] and player.position >= player.received
end

-- ---- captions: the word timings at the play position ------------------------

-- Each chunk the server synthesises (a sentence here, thanks to auto_flush)
-- has its own timing snapshots; a new one replaces the last (it grows as the
-- chunk's audio comes, and may be corrected). Times are absolute.
local captions = {
  chunks = {},   -- chunk_seq -> words
  order = {},    -- chunk_seqs in the order they came (the order of the audio)
  seen = {},     -- chunk_seq -> how many of its words are on screen
  shown = {},    -- every word as it appeared: { text, start, at }
  current = nil, -- the chunk on screen
}

local function on_alignment(words, info)
  -- A chunk is known by its chunk_seq (by where it starts, should a server
  -- leave that out).
  local seq = info.chunk_seq or info.chunk_offset or 0
  if not captions.chunks[seq] then
    captions.order[#captions.order + 1] = seq
    captions.seen[seq] = 0
  end
  captions.chunks[seq] = words
end

local function update_captions()
  local now = player.position / RATE
  for _, seq in ipairs(captions.order) do
    local words = captions.chunks[seq]
    local i = captions.seen[seq] + 1
    while words[i] and words[i].start <= now do
      local w = words[i]
      -- For the spec: where the source was when the word appeared.
      captions.shown[#captions.shown + 1] = { text = w.text, start = w.start, at = player.position / RATE }
      captions.seen[seq], captions.current = i, seq
      i = i + 1
    end
    if words[i] then break end -- a later chunk's words come after this one's
  end
end

local function caption_text()
  local seq = captions.current
  if not seq then return "" end
  local words, text = captions.chunks[seq], {}
  -- A correction may have fewer words than are already on screen.
  for i = 1, math.min(captions.seen[seq], #words) do text[i] = words[i].text end
  return table.concat(text, " ")
end

-- ---- the session ---------------------------------------------------------------

local session, finisher, result

local function report(status)
  for i, w in ipairs(captions.shown) do
    print(("FISH-LOVE-LIVE CAPTION n=%d start=%.3f at=%.3f word=%s"):format(i, w.start, w.at, w.text))
  end
  print(("FISH-LOVE-LIVE %s frames=%d max_frame_ms=%.1f session_frames=%d session_max_frame_ms=%.1f "
    .. "max_update_ms=%.2f max_step_ms=%.2f live_call_ms=%.2f session_ms=%d "
    .. "blocks=%d odd_blocks=%d misnumbered=%d received_bytes=%d "
    .. "queued_bytes=%d queued_blocks=%d played_samples=%d rate=%d plays=%d first_play_ms=%d "
    .. "last_text_ms=%d captions=%d audio=%s state=%s"):format(status,
    stats.frames, stats.max_frame * 1000, stats.session_frames, stats.session_max_frame * 1000,
    stats.max_update * 1000, stats.max_step * 1000, stats.live_call * 1000,
    (stats.finished or clock() - started_at) * 1000,
    stats.blocks, stats.odd_blocks, stats.misnumbered, stats.received,
    stats.queued_bytes, stats.queued_blocks, player.position, RATE, stats.plays,
    (stats.first_play or -1) * 1000, (stats.last_text or -1) * 1000, #captions.shown,
    player.audible and "openal" or "none", session and session.state() or "none"))
end

local function quit(status, message)
  if message then print("FISH-LOVE-LIVE FAIL " .. message) end
  report(status)
  love.event.quit(status == "OK" and 0 or 1)
  quit = function() end -- the last frames before the quit takes effect say nothing more
end

function love.load()
  started_at = clock()
  love.graphics.setFont(love.graphics.newFont(22))
  new_player()
  local t = clock()
  session = fish.live{
    reference_id = os.getenv("FISH_REFERENCE_ID"), -- nil: the API's default voice
    format = "pcm", sample_rate = RATE,
    timestamps = true,   -- word timings, for the captions
    auto_flush = true,   -- each sentence is spoken as soon as it is written
    on_audio = function(bytes, info)
      stats.blocks = stats.blocks + 1
      if #bytes % 2 ~= 0 then stats.odd_blocks = stats.odd_blocks + 1 end
      if info.bytes ~= stats.received then stats.misnumbered = stats.misnumbered + 1 end
      stats.received = stats.received + #bytes
      add_audio(bytes, info)
    end,
    on_alignment = on_alignment,
  }
  stats.live_call = clock() - t -- it returns at once: connecting goes on in fish.step
  writer.at = clock() - started_at
end

-- The writer sends the next piece when its time has come. After the last
-- one, a task waits in finish(): it sends stop and is woken by fish.step as
-- the rest of the audio and the server's finish come in.
local function update_writer(now)
  while writer.pieces[writer.next] and now >= writer.at do
    local piece = writer.pieces[writer.next]
    local ok, message = session.send(piece)
    if not ok then return quit("FAIL", message) end
    stats.last_text = now
    writer.next = writer.next + 1
    writer.at = writer.at + (piece:match("[.!?]%s*$") and SENTENCE_GAP or WORD_GAP)
  end
  if not writer.pieces[writer.next] and not finisher then
    finisher = fish.spawn(function() return session.finish() end)
  end
end

local frame_start, last_update, last_draw = 0, 0, 0
-- Whether the session was running when the last frame began (love.load
-- started it before the first).
local last_running = true

-- dt is the time since the last frame began: its update, draw, present and
-- the frame cap. It is the session's if the session was running when that
-- frame began, so a frame that waited for the finish counts. A slow one is
-- printed with the time that frame's update (where fish runs) and draw took.
local function count_frame(dt, now)
  stats.frames = stats.frames + 1
  stats.max_frame = math.max(stats.max_frame, dt)
  if last_running then
    stats.session_frames = stats.session_frames + 1
    stats.session_max_frame = math.max(stats.session_max_frame, dt)
  end
  if dt > 0.05 then
    print(("FISH-LOVE-LIVE SLOW frame=%d at_ms=%d frame_ms=%.1f update_ms=%.2f draw_ms=%.2f in_session=%s"):format(
      stats.frames, now * 1000, dt * 1000, last_update * 1000, last_draw * 1000, tostring(last_running)))
  end
end

local function update(now, dt)
  local t = clock()
  fish.step(0) -- moves the session along, runs on_audio and on_alignment; never waits
  stats.max_step = math.max(stats.max_step, clock() - t)

  if not result then update_writer(now) end
  if finisher and not result then
    local done, ok, message = finisher:result()
    if done then
      result = { ok = ok, message = message }
      stats.finished = now
      if not ok then return quit("FAIL", message) end
    end
  end
  update_player(result ~= nil, dt)
  update_captions()

  if result and (EXIT == "finish" or drained()) then return quit("OK") end
  if now > TIME_LIMIT then quit("FAIL", ("the line took longer than %d s"):format(TIME_LIMIT)) end
end

function love.update(dt)
  frame_start = clock()
  local now = frame_start - started_at
  count_frame(dt, now)
  last_running = not result
  update(now, dt)
  last_update = clock() - frame_start
  if last_running then stats.max_update = math.max(stats.max_update, last_update) end
end

function love.draw()
  local draw_start = clock()
  local w, h = love.graphics.getDimensions()
  local g = love.graphics
  g.clear(0.08, 0.09, 0.12)
  g.setColor(0.55, 0.58, 0.65)
  g.print(("written %d/%d words   heard %.1f of %.1f s"):format(writer.next - 1, #writer.pieces,
    player.position / RATE, player.received / RATE), 20, 16, 0, 0.7)
  g.setColor(0.16, 0.18, 0.26)
  g.rectangle("fill", 16, h - 150, w - 32, 134, 8)
  g.setColor(1, 0.8, 0.35)
  g.print(SPEAKER, 32, h - 140)
  g.setColor(1, 1, 1)
  g.printf(caption_text(), 32, h - 104, w - 64)
  last_draw = clock() - draw_start
  local left = frame_start + FRAME - clock()
  if left > 0 then love.timer.sleep(left) end
end

function love.keypressed(key)
  if key == "escape" then love.event.quit(0) end
end

function love.quit()
  -- Leaving early: drop the session (the protocol has no cancel event; the
  -- socket is closed).
  if session and not result then session.cancel() end
end

local show_error = love.errorhandler
function love.errorhandler(message)
  print("FISH-LOVE-LIVE ERROR " .. debug.traceback(tostring(message), 2))
  if not HEADLESS then return show_error(message) end
end
