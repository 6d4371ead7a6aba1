-- A packaged LÖVE game that speaks through fish. spec/love_spec.lua zips it
-- with fish's Lua files (fish/*.lua), fish's core.so and lua-cjson's
-- cjson.so (native/) into a .love and runs it headless; the game prints one
-- line starting with FISH-LOVE and quits.
io.stdout:setvbuf("no") -- the spec reads stdout, also if the game is killed

local TIME_LIMIT = 30 -- seconds; the spec's own limit is longer

-- A .love is a zip, and the OS cannot dlopen a library inside a zip: copy the
-- library from the archive into the save directory (a real directory) and
-- load it from there. The copy is written only when it differs: rewriting a
-- library this process has already loaded would crash it.
local function extract(archive_path)
  local bytes = assert(love.filesystem.read(archive_path))
  local name = archive_path:match("[^/]+$")
  if love.filesystem.read(name) ~= bytes then assert(love.filesystem.write(name, bytes)) end
  return love.filesystem.getSaveDirectory() .. "/" .. name
end

local function finish(line, status)
  print(line)
  love.event.quit(status)
end

local fish, task, frames, started

function love.load()
  -- Everything comes from the archive: no system Lua C modules.
  package.cpath = ""
  local core_so, cjson_so = extract("native/core.so"), extract("native/cjson.so")
  package.preload["fish.core"] = assert(package.loadlib(core_so, "luaopen_fish_core"))
  package.preload["cjson"] = assert(package.loadlib(cjson_so, "luaopen_cjson"))
  package.preload["cjson.safe"] = assert(package.loadlib(cjson_so, "luaopen_cjson_safe"))

  -- The Lua files load from the archive through LÖVE's own require.
  fish = require("fish") -- FISH_API_KEY and FISH_BASE_URL from the environment
  frames, started = 0, love.timer.getTime()
  task = fish.spawn(function()
    local text = os.getenv("FISH_LOVE_TEXT") or "The gate opens at dawn."
    local audio, message = fish.convert{ text = text, format = "wav" }
    return audio, message
  end)
end

function love.update()
  frames = frames + 1
  fish.step(0) -- moves the transfer along and returns at once
  local done, audio, message = task:result()
  if done then
    if not audio then return finish("FISH-LOVE FAIL " .. tostring(message), 1) end
    -- The game can use the bytes: LÖVE decodes them as it would any sound.
    local sound = love.sound.newSoundData(love.filesystem.newFileData(audio, "line.wav"))
    finish(("FISH-LOVE OK bytes=%d samples=%d frames=%d"):format(#audio, sound:getSampleCount(), frames), 0)
  elseif love.timer.getTime() - started > TIME_LIMIT then
    finish("FISH-LOVE FAIL no audio after " .. TIME_LIMIT .. " s", 1)
  end
end

function love.errorhandler(message)
  print("FISH-LOVE ERROR " .. debug.traceback(tostring(message), 2))
end
