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
    return assert(fish.convert{
      text = line,
      references = { { audio = sample, text = transcript } },
      out = ("%s/task-%d.mp3"):format(dir, i),
    })
  end)
end

fish.run() -- drives every task until all are done; raises if one failed

print("trained voice: " .. trainer:wait().id)
for i, task in ipairs(speakers) do
  local path, size = task:wait()
  print(("task %d: wrote %s (%d bytes)"):format(i, path, size))
end
