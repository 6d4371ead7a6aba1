-- Small helpers shared by the API modules: argument errors that point at
-- the caller's line, type checks, and URL encoding.
local core = require("fish.core")
local utf8_bad = core.utf8_bad

local util = {}

-- Options every API call accepts besides its own fields.
util.CALL_OPTIONS = {
  "retries", "timeout", "connect_timeout", "first_byte_timeout", "idle_timeout", "cancel",
  "headers", "query", "api_key",
}

-- Raise `message` at the first stack frame outside fish's own Lua files, so
-- the error names the caller's line rather than ours. Lua 5.1 leaves a
-- "(tail call)" frame where one of ours tail-called another (a client's
-- lazily loaded calls do): skipped like C frames.
function util.raise(message)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info then break end
    local src = info.source or ""
    if info.what ~= "C" and info.what ~= "tail" and not src:find("[/\\]fish[/\\][%w_]+%.lua$") then break end
    level = level + 1
  end
  error(message, level)
end

-- A whole number that fits a 64-bit integer (msgpack's and C's). 2^63 and
-- math.huge are whole floats, but no integer type can hold them.
function util.is_integer(v)
  if type(v) ~= "number" then return false end
  if math.type and math.type(v) == "integer" then return true end -- luacheck: ignore 143 (5.3+)
  return v == math.floor(v) and v >= -2 ^ 63 and v < 2 ^ 63
end

-- The longest wait fish hands to C: 24 days, the most milliseconds a 32-bit
-- long holds. Longer limits (math.huge included) mean "no limit" in practice.
util.MAX_SECONDS = 2147483

-- A number of seconds: a non-negative number, never NaN (NaN passes every
-- comparison, so it would slip through `v < 0` and then never expire).
-- Returns it clamped to MAX_SECONDS.
function util.check_seconds(fn, what, v)
  if type(v) ~= "number" or v ~= v or v < 0 then
    util.raise(("%s: %s must be a non-negative number of seconds, got %s"):format(fn, what, tostring(v)))
  end
  if v > util.MAX_SECONDS then return util.MAX_SECONDS end
  return v
end

-- A path that audio may be written to, checked before anything is sent (and
-- billed): a string naming a regular file or nothing yet, in a directory
-- that exists and is writable. A FIFO or a device would be replaced by a
-- regular file on rename, so existing non-regular targets are refused.
function util.check_output_path(fn, field, path)
  local function refuse(why) util.raise(("%s: field '%s' %s"):format(fn, field, why)) end
  if type(path) ~= "string" or path == "" then refuse("must be a file path (a non-empty string)") end
  if path:find("\0", 1, true) then refuse("contains a NUL byte") end
  if path:sub(-1) == "/" then refuse(path .. " names a directory, not a file") end
  local target = core.stat(path)
  if target and target.type ~= "file" then
    refuse(("%s exists and is a %s, not a regular file"):format(path, target.type))
  end
  local dir = path:match("^(.*)/[^/]*$") or "."
  if dir == "" then dir = "/" end
  local info, why = core.stat(dir)
  if not info then refuse("cannot be written: " .. why) end
  if info.type ~= "directory" then refuse(("cannot be written: %s is not a directory"):format(dir)) end
  if not info.writable then refuse(("cannot be written: the directory %s is not writable"):format(dir)) end
end

-- A positive whole number of bytes, for size caps.
function util.check_byte_count(fn, name, v)
  if not util.is_integer(v) or v < 1 then
    util.raise(("%s: option '%s' must be a whole number of bytes >= 1, got %s"):format(fn, name, tostring(v)))
  end
  return v
end

-- Valid UTF-8: the API decodes text as UTF-8 and answers a bad byte with an
-- unhelpful "Could not parse msgpack body". Returns true, or false and the
-- byte position of the first bad sequence. Overlong forms, surrogates and
-- code points past U+10FFFF are bad, as in RFC 3629.
function util.utf8_valid(s)
  -- In C: a Lua scan costs more than the rest of a call's checks.
  local at = utf8_bad(s)
  if at then return false, at end
  return true
end

-- A text field: a string of valid UTF-8.
function util.check_text(fn, field, v)
  if type(v) ~= "string" then util.raise(("%s: field '%s' must be a string, got %s"):format(fn, field, type(v))) end
  local ok, at = util.utf8_valid(v)
  if not ok then
    util.raise(("%s: field '%s' is not valid UTF-8 (bad byte at position %d)"):format(fn, field, at))
  end
  return v
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
      local did_you_mean = hint and (" (did you mean '" .. hint .. "'?)") or ""
      util.raise(("%s: unknown field '%s'%s"):format(fn, tostring(key), did_you_mean))
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

-- RFC 3986 percent-encoding of everything but unreserved characters. The
-- ranges are spelt out: %w follows the C locale, and under a Latin-1 locale
-- it would pass bytes such as 0xE9 through unencoded.
function util.percent_encode(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- { {name, value}, ... } as name=value&... (query strings and form bodies).
function util.form_encode(pairs_list)
  local out = {}
  for _, kv in ipairs(pairs_list) do
    out[#out + 1] = util.percent_encode(kv[1]) .. "=" .. util.percent_encode(kv[2])
  end
  return table.concat(out, "&")
end

-- The keys of a table in a stable order, so that the same options always
-- give the same bytes on the wire.
function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- A value that goes into an HTTP header. CR or LF would end the header and
-- start another (or a second request on the same connection); NUL would
-- silently cut the value short in libcurl.
function util.check_header_value(fn, what, value)
  if type(value) ~= "string" then
    util.raise(("%s: %s must be a string, got %s"):format(fn, what, type(value)))
  end
  if value:find("[\r\n]") or value:find("\0", 1, true) then
    util.raise(("%s: %s must not contain CR, LF or NUL"):format(fn, what))
  end
  return value
end

-- Headers fish sets itself, and the option that sets each instead.
local OWN_HEADERS = {
  authorization = "api_key", ["user-agent"] = "user_agent", model = "model",
  ["content-type"] = false, ["content-length"] = false, ["transfer-encoding"] = false,
  host = false, expect = false, connection = false,
}

-- headers = { ["traceparent"] = "00-...", ... } as a map from the lower-case
-- name to the header line. Names are RFC 9110 tokens; values pass
-- check_header_value. An empty value is sent as an empty header ("Name;"
-- is libcurl's spelling: "Name:" would remove the header instead).
function util.header_lines(fn, headers)
  if type(headers) ~= "table" then
    util.raise(fn .. ": option 'headers' must be a table of name = value strings")
  end
  local lines = {}
  for _, name in ipairs(util.sorted_keys(headers)) do
    if type(name) ~= "string" or not name:find("^[!#$%%&'*+%-.^_`|~0-9A-Za-z]+$") then
      util.raise(("%s: option 'headers' has an invalid header name %q"):format(fn, tostring(name)))
    end
    local lower = name:lower()
    local own = OWN_HEADERS[lower]
    if own ~= nil then
      util.raise(("%s: option 'headers' cannot set %s%s"):format(fn, name,
        own and (" (use the '" .. own .. "' option)") or ": fish sets it"))
    end
    local value = util.check_header_value(fn, ("header '%s'"):format(name), headers[name])
    lines[lower] = value == "" and (name .. ";") or (name .. ": " .. value)
  end
  return lines
end

-- query = { key = value | { value, ... } } as {name, value} pairs: a list
-- repeats its key (tag=a&tag=b), booleans are true/false.
function util.query_pairs(fn, query)
  if type(query) ~= "table" then util.raise(fn .. ": option 'query' must be a table of name = value") end
  local function text(name, v)
    if type(v) == "boolean" then return v and "true" or "false" end
    if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then
      return util.is_integer(v) and ("%d"):format(v) or ("%.17g"):format(v)
    end
    if type(v) == "string" then return v end
    util.raise(("%s: option 'query' value for '%s' must be a string, number or boolean"):format(fn, name))
  end
  local out = {}
  for _, name in ipairs(util.sorted_keys(query)) do
    if type(name) ~= "string" or name == "" then
      util.raise(fn .. ": option 'query' keys must be non-empty strings")
    end
    local value = query[name]
    if type(value) == "table" then
      for i = 1, util.sequence_length(fn, "query." .. name, value) do out[#out + 1] = { name, text(name, value[i]) } end
    else
      out[#out + 1] = { name, text(name, value) }
    end
  end
  return out
end

-- The length of a proper sequence: keys 1..n and nothing else. ipairs
-- stops at the first hole and # may or may not, so a list with holes would
-- be checked one way and sent another.
function util.sequence_length(fn, field, list)
  local n = 0
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then
      util.raise(("%s: field '%s' must be a list (keys 1..n), found key %s"):format(fn, field, tostring(k)))
    end
    if k > n then n = k end
  end
  for i = 1, n do
    if list[i] == nil then util.raise(("%s: field '%s' has a hole at [%d]"):format(fn, field, i)) end
  end
  return n
end

return util
