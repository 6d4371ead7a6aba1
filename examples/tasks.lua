-- Fish tasks: train a voice while two one-shot conversions run, all at
-- once in one Lua state. Each fish call suspends only its own task.
--
--   lua5.4 examples/tasks.lua [output-directory]
local fish = require("fish")

local here = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
local dir = arg and arg[1] or "."
local transcript = assert(io.open(here .. "/reference.txt")):read("*l")
local sample = fish.file(here .. "/reference.wav")

local trainer = fish.spawn(function()
  local voice = assert(fish.voices.create{ title = "Task voice", voices = { sample }, texts = { transcript } })
  return assert(fish.voices.wait_trained(voice, { interval = 0.5 }))
end)

local speakers = {}
for i, line in ipairs({ "First sentence, spoken meanwhile.", "Second sentence, spoken meanwhile." }) do
  speakers[i] = fish.spawn(function()
    -- fish.pcall, not pcall: the call inside suspends this task, and PUC
    -- Lua 5.1's pcall cannot be suspended. A failure (a raised error, or the
    -- message that assert raises) stays with this speaker.
    local ok, path, size = fish.pcall(function()
      return assert(fish.convert{
        text = line,
        references = { { audio = sample, text = transcript } },
        out = ("%s/task-%d.mp3"):format(dir, i),
      })
    end)
    if not ok then return nil, path end
    return path, size
  end)
end

-- Outside a task, wait drives every task until this one is done, and
-- raises its error if it failed (fish.run would only report it on stderr).
-- The speakers catch their own errors: waiting on them returns them.
print("trained voice: " .. trainer:wait().id)
for i, task in ipairs(speakers) do
  local path, size_or_message = task:wait()
  if path then
    print(("task %d: wrote %s (%d bytes)"):format(i, path, size_or_message))
  else
    print(("task %d: failed: %s"):format(i, size_or_message))
  end
end
