-- A persistent voice: upload the reference audio once, wait until the
-- server has trained it, then speak in it by id as often as you like.
--
--   lua5.4 examples/persistent.lua [output-file]
--
-- Uses FISH_API_KEY (and FISH_BASE_URL, if set; `make demo` points it at
-- the bundled local server when no key is set). The voice stays in your
-- account: reuse its id as reference_id, or delete it with
-- fish.voices.delete(id).
local fish = require("fish")

local here = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
local out = arg and arg[1] or "persistent.mp3"

local transcript = assert(io.open(here .. "/reference.txt")):read("*l")

local voice = assert(fish.voices.create{
  title = "My Voice",
  voices = { fish.file(here .. "/reference.wav") }, -- streamed from disk
  texts = { transcript },
})
print(("persistent: created voice %s"):format(voice.id))

voice = assert(fish.voices.wait_trained(voice, {
  timeout = 300,
  on_state = function(state) print("voice state: " .. state) end,
}))

local path, size = assert(fish.convert{
  text = "My voice is ready to use.",
  reference_id = voice.id,
  out = out, -- streamed to a temporary file, renamed into place on success
})
print(("persistent: wrote %s (%d bytes)"):format(path, size))
