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

function fish.live(...)
  return fish.default().live(...)
end

-- fish.voices.create(...) is fish.default().voices.create(...), and so on.
local function forward(namespace, names)
  local t = {}
  for _, name in ipairs(names) do
    t[name] = function(first, ...)
      local target = fish.default()[namespace]
      if first == t then return target[name](...) end
      return target[name](first, ...)
    end
  end
  return t
end

fish.voices = forward("voices", { "create", "get", "update", "delete", "list", "each", "wait_trained" })
fish.asr = forward("asr", { "transcribe" })
fish.account = forward("account", { "credits", "package" })

return fish
