-- The fish client a command talks through. The key comes from
-- --api-key-file FILE (its first line) or from FISH_API_KEY, never from a
-- flag's value: argv is visible to every user of the machine (ps) and lands
-- in shell history. FISH_BASE_URL selects the server, as for the module.
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")

local session = {}

-- The key file's first line. A pipe works too (`--api-key-file <(pass show
-- fish)`, /dev/stdin): only its first line is read, so the writer need not
-- close it first.
function session.api_key(options)
  local path = options.api_key_file
  if path then
    local f = not fs.is_dir(path) and io.open(path, "rb")
    local line = f and f:read("*l")
    if f then f:close() end
    if not f then failure.usage(("cannot read the API key file %s"):format(path)) end
    local key = (line or ""):match("^%s*(.-)%s*$")
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
-- error, named as the user set it: the variable or the key file, not
-- fish.new's option.
function session.client(options, extra)
  local fish = require("fish")
  local config = { api_key = session.api_key(options) }
  for k, v in pairs(extra or {}) do config[k] = v end
  local ok, client = pcall(fish.new, config)
  if not ok then
    local key_source = options.api_key_file and ("the key in " .. options.api_key_file) or "FISH_API_KEY"
    local message = failure.strip_position(client)
      :gsub("^fish%.new: option 'base_url'", "FISH_BASE_URL", 1)
      :gsub("^fish%.new: option 'api_key'", key_source, 1)
    failure.usage(message)
  end
  return client
end

return session
