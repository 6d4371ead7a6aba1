-- One-shot voice cloning: the reference audio and its exact transcript
-- travel with the call; nothing is stored on the server.
--
--   lua5.4 examples/oneshot.lua [output-file]
--
-- Uses FISH_API_KEY (and FISH_BASE_URL, if set; `make demo` points it at
-- the bundled local server when no key is set).
local fish = require("fish")

local here = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
local out = arg and arg[1] or "oneshot.mp3"

local transcript = assert(io.open(here .. "/reference.txt")):read("*l")

local path, size = assert(fish.convert{
  text = "Hello! I am speaking in a voice cloned from a few seconds of audio.",
  references = {
    { audio = fish.file(here .. "/reference.wav"), text = transcript },
  },
  format = "mp3",
  out = out, -- streamed to a temporary file, renamed into place on success
})
print(("one-shot: wrote %s (%d bytes)"):format(path, size))
