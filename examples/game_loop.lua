-- The frame-loop pattern (LÖVE, Defold, any engine with an update tick):
-- start work in load, call fish.step(0) every frame, use the audio when it
-- is ready. fish.step(0) never waits, so frames keep their pace.
--
--   lua5.4 examples/game_loop.lua [output-file]
--
-- In LÖVE the three functions below are love.load, love.update and
-- love.draw; here a plain loop stands in for the engine.
local fish = require("fish")

local out = arg and arg[1] or "game_line.mp3"
local game = { frame = 0, line = nil, received = 0 }

local function load()
  game.speech = fish.spawn(function()
    return fish.convert{
      text = "Welcome, traveller. The gate opens at dawn.",
      reference_id = os.getenv("FISH_VOICE_ID"),
      out = out,
      -- Runs from fish.step, never from inside libcurl: a loading bar can
      -- read game.received (and the total, when the answer has a length).
      on_progress = function(_, _, received, total)
        game.received, game.total = received, total
      end,
    }
  end)
end

local function update(dt) -- luacheck: ignore 212 (a real game would use dt)
  game.frame = game.frame + 1
  fish.step(0) -- move transfers along; returns at once
  -- A finished task hands back what convert returned: path, size on
  -- success, nil, message, err on failure.
  local done, path, message = game.speech:result()
  if done and not game.line then
    game.line = path or ("failed: " .. message)
  end
end

local function draw() end -- render the frame; audio plays when game.line is set

-- The simulated engine: ~60 frames a second until the line is ready.
load()
while not game.line do
  update(1 / 60)
  draw()
  fish.sleep(1 / 60) -- stands in for vsync; a real engine waits here itself
end
print(("game loop: %d frames while speaking, %d bytes received; %s"):format(game.frame, game.received, game.line))
