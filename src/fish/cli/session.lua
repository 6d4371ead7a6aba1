-- The fish client a command talks through. The key comes from
-- --api-key-file FILE (its first line) or from FISH_API_KEY, never from a
-- flag's value: argv is visible to every user of the machine (ps) and lands
-- in shell history. FISH_BASE_URL selects the server, as for the module.
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")

local session = {}

function session.api_key(options)
  local path = options.api_key_file
  if path then
    local text = fs.is_file(path) and fs.read(path)
    if not text then failure.usage(("cannot read the API key file %s"):format(path)) end
    local key = text:match("^[ \t]*([^\r\n]-)[ \t]*\r?\n") or text:match("^%s*(.-)%s*$")
    if key == "" then failure.usage(("the API key file %s is empty"):format(path)) end
    return key
  end
  local key = os.getenv("FISH_API_KEY")
  if not key or key == "" then
    failure.usage("no API key: set FISH_API_KEY, or pass --api-key-file FILE")
  end
  return key
end

-- session.client(options[, extra]) -> a fish client; `extra` adds options
-- of fish.new. A bad FISH_BASE_URL (or a key with a line break) is a usage
-- error, told in fish's words without the Lua position.
function session.client(options, extra)
  local fish = require("fish")
  local config = { api_key = session.api_key(options) }
  for k, v in pairs(extra or {}) do config[k] = v end
  local ok, client = pcall(fish.new, config)
  if not ok then failure.usage(failure.strip_position(client)) end
  return client
end

return session
