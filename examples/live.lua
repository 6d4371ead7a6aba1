-- Live TTS: speak a paragraph while it is still being written, the way an
-- LLM streams its answer. One task plays the LLM: it sends the text a few
-- words at a time, pausing between sentences. The session flushes at each
-- sentence end (auto_flush), so each sentence is spoken as soon as it is
-- complete, and the audio goes into a file as it arrives.
--
--   lua5.4 examples/live.lua [output.mp3]
local fish = require("fish")

local out = arg and arg[1] or "live.mp3"

local paragraph = {
  "Live speech starts before the text is finished. ",
  "Each sentence is sent as soon as it is written, ",
  "and its audio comes back while the next one is still on its way. ",
  "That is how a voice assistant can answer without a long pause.",
}

local blocks, bytes = 0, 0

local session = assert(fish.live{
  reference_id = os.getenv("FISH_REFERENCE_ID"), -- nil: the server's default voice
  format = "mp3",
  auto_flush = true,
  out = out,
  -- A player would queue the audio here; it runs while fish waits, in
  -- the task that waits in finish(), never from the network code.
  on_audio = function(audio)
    blocks, bytes = blocks + 1, bytes + #audio
  end,
})

local writer = fish.spawn(function()
  for _, sentence in ipairs(paragraph) do
    -- A few words at a time, as tokens come out of a model.
    for words in sentence:gmatch("%S+%s*") do
      assert(session.send(words))
      fish.sleep(0.02)
    end
    fish.sleep(0.2) -- the model "thinks" between sentences
  end
  -- No more text: wait for the last audio and the server's finish.
  return assert(session.finish())
end)

-- Outside a task, wait drives fish until the task is done, and raises the
-- task's error if it failed (fish.run would only report it on stderr).
writer:wait()
print(("live: wrote %s (%d bytes in %d blocks)"):format(out, bytes, blocks))
