-- Small helpers shared by the API modules: argument errors that point at
-- the caller's line, type checks, and URL encoding.
local util = {}

-- Options every API call accepts besides its own fields.
util.CALL_OPTIONS = { "retries", "timeout", "connect_timeout", "first_byte_timeout", "idle_timeout", "cancel" }

-- Raise `message` at the first stack frame outside fish's own Lua files, so
-- the error names the caller's line rather than ours.
function util.raise(message)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info then break end
    local src = info.source or ""
    if info.what ~= "C" and not src:find("[/\\]fish[/\\][%w_]+%.lua$") then break end
    level = level + 1
  end
  error(message, level)
end

function util.is_integer(v)
  if type(v) ~= "number" then return false end
  if math.type then return math.type(v) == "integer" or v == math.floor(v) end
  return v == math.floor(v) and v > -2 ^ 63 and v < 2 ^ 63
end

-- The option table of a call: a table, or an error naming the function.
function util.check_table(fn, args)
  if type(args) ~= "table" then
    util.raise(("%s: expected a table of options, got %s"):format(fn, type(args)))
  end
  return args
end

-- Closest name from `names`, for "did you mean" hints on unknown fields.
function util.closest(name, names)
  local best, best_distance
  for _, candidate in ipairs(names) do
    local a, b = name, candidate
    local previous = {}
    for j = 0, #b do previous[j] = j end
    for i = 1, #a do
      local current = { [0] = i }
      for j = 1, #b do
        local cost = a:byte(i) == b:byte(j) and 0 or 1
        current[j] = math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
      end
      previous = current
    end
    local distance = previous[#b]
    if distance <= math.max(2, math.floor(#candidate / 3)) and (not best_distance or distance < best_distance) then
      best, best_distance = candidate, distance
    end
  end
  return best
end

-- Raise for every key of `args` that `known` does not list.
function util.check_known(fn, args, known, names)
  for key in pairs(args) do
    if not known[key] then
      local hint = type(key) == "string" and util.closest(key, names)
      util.raise(("%s: unknown field '%s'%s"):format(fn, tostring(key), hint and (" (did you mean '" .. hint .. "'?)") or ""))
    end
  end
end

-- Check a call's option table: a table whose keys are `fields` or the
-- call options every API call takes. The known set is built once per list.
local known_sets = setmetatable({}, { __mode = "k" })
function util.check_fields(fn, args, fields)
  util.check_table(fn, args)
  local entry = known_sets[fields]
  if not entry then
    local known, names = {}, {}
    for _, list in ipairs({ fields, util.CALL_OPTIONS }) do
      for _, name in ipairs(list) do
        known[name] = true
        names[#names + 1] = name
      end
    end
    entry = { known, names }
    known_sets[fields] = entry
  end
  util.check_known(fn, args, entry[1], entry[2])
end

-- RFC 3986 percent-encoding of everything but unreserved characters.
function util.percent_encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

return util
