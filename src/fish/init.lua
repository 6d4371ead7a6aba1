-- fish: Fish Audio text-to-speech and voice cloning for Lua.
--
--   local fish = require("fish")
--   local audio = assert(fish.convert{ text = "Hello", reference_id = "..." })
--
-- Failures of the network or the API return nil, message, err: message is a
-- one-line string, err the error object (err.kind, err.status, ...).
--
-- Module-level calls use a default client configured from FISH_API_KEY and
-- FISH_BASE_URL; fish.new{...} makes others. See README.md for every option.
local client = require("fish.client")
local file = require("fish.file")
local loop = require("fish.loop")
local errors = require("fish.errors")

local fish = {
  _NAME = "fish",
  -- "fish 0.1.0", as socket._VERSION is "LuaSocket 3.0.0"; VERSION is the
  -- bare number, for comparisons.
  _VERSION = "fish " .. client.VERSION,
  VERSION = client.VERSION,
  new = client.new,
  file = file.new,
  -- tasks: many calls at once in one Lua state
  spawn = loop.spawn,
  run = loop.run,
  step = loop.step,
  sleep = function(seconds)
    loop.check_seconds("fish.sleep", "seconds", seconds)
    loop.sleep(seconds)
  end,
  on_error = loop.on_error,
  pcall = loop.pcall,
  is_error = errors.is,
  cancel_token = loop.new_token,
}

-- The default client is made on first use, so that requiring fish never
-- fails for want of a key.
local default_client
function fish.default()
  if not default_client or default_client.closed() then default_client = client.new() end
  return default_client
end

function fish.convert(...)
  return fish.default().convert(...)
end

-- fish.voices.create(...) is fish.default().voices.create(...), fish.live(...)
-- is fish.default().live(...), and so on for every call a client offers.
local function forward(namespace, name)
  return function(first, ...)
    local target = fish.default()
    if namespace then target = target[namespace] end
    if namespace and first == fish[namespace] then return target[name](...) end
    return target[name](first, ...)
  end
end

for _, extension in ipairs(client.EXTENSIONS) do
  local namespace = extension.namespace
  local owner = fish
  if namespace then
    owner = {}
    fish[namespace] = owner
  end
  for _, name in ipairs(extension.calls) do owner[name] = forward(namespace, name) end
end

return fish
