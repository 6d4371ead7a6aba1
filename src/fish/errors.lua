-- Error objects for failures of the network or the API. Programming errors
-- (a wrong type, an unknown field) are raised with error() instead; these are
-- returned as `nil, err`, the convention of luv, lua-http and lua-resty-http.
local cjson = require("cjson.safe")

local errors = {}

local Error = {}
Error.__index = Error
Error.__name = "fish.error"

-- One line, never the API key: the message is built from the status and the
-- server's words, and scrub() removes the key in case the server echoes it.
function Error:__tostring()
  local head = "fish: " .. tostring(self.kind)
  if type(self.status) == "number" and self.status > 0 then head = head .. " (HTTP " .. self.status .. ")" end
  -- One line whatever the message holds (a transport message, a caller's
  -- errors.new): line breaks would split log records.
  return head .. ": " .. (tostring(self.message):gsub("[\r\n]+", " "))
end

function errors.is(value)
  return getmetatable(value) == Error
end

-- Kinds by HTTP status, as the Python SDK's exception classes map them.
local KIND_BY_STATUS = { [401] = "auth", [403] = "permission", [404] = "not_found", [429] = "rate_limit" }

function errors.kind_for_status(status)
  if KIND_BY_STATUS[status] then return KIND_BY_STATUS[status] end
  if status >= 500 then return "server" end
  return "http"
end

local function one_line(text, limit)
  text = tostring(text):gsub("[\r\n\t]+", " "):gsub("^%s+", ""):gsub("%s+$", "")
  if #text > limit then text = text:sub(1, limit) .. "..." end
  return text
end

-- Any decoded JSON value as text: a table as its JSON, never "table: 0x...".
-- Whole numbers print without ".0": on Lua 5.4 cjson decodes every number as
-- a float, which would turn a 422's loc ["references", 0] into "references.0.0".
local function text_of(value)
  if type(value) == "table" then return cjson.encode(value) or "?" end
  if value == cjson.null then return "null" end
  if type(value) == "number" and value == math.floor(value) and math.abs(value) < 2 ^ 53 then
    return ("%d"):format(value)
  end
  return tostring(value)
end

-- A readable line from a 422 list: "text: field required; format: ..."
-- Whatever the server put in it, this never raises.
local function describe_validation_list(list)
  local parts = {}
  for i = 1, math.min(#list, 5) do
    local item = list[i]
    if type(item) == "table" then
      local where
      if type(item.loc) == "table" then
        local names = {}
        for j, name in ipairs(item.loc) do names[j] = text_of(name) end
        where = table.concat(names, ".")
      end
      local msg = text_of(item.msg or item.message or item)
      parts[#parts + 1] = where and (where .. ": " .. msg) or msg
    else
      parts[#parts + 1] = text_of(item)
    end
  end
  if #list > 5 then parts[#parts + 1] = ("and %d more"):format(#list - 5) end
  return table.concat(parts, "; ")
end

-- JSON null decodes to cjson.null, which is truthy: drop such fields, as
-- client.drop_nulls does for answers, so err.json reads the same way.
local function drop_nulls(value)
  if type(value) ~= "table" then return value end
  for k, v in pairs(value) do
    if v == cjson.null and type(k) == "string" then
      value[k] = nil
    else
      drop_nulls(v)
    end
  end
  return value
end

-- The message from an error body, whichever of the shapes the API uses:
-- {status, message[, reason]}, {detail = ...}, a JSON array, or plain text.
function errors.message_from_body(body)
  if body == nil or body == "" then return nil, nil end
  local decoded = drop_nulls(cjson.decode(body))
  if type(decoded) == "table" then
    if #decoded > 0 then return describe_validation_list(decoded), decoded end
    local message = decoded.message
    if type(message) == "table" then message = cjson.encode(message) end
    if type(decoded.detail) == "table" then
      message = message or describe_validation_list(decoded.detail[1] and decoded.detail or { decoded.detail })
    elseif decoded.detail ~= nil then
      message = message or decoded.detail
    end
    if type(message) == "string" and type(decoded.reason) == "string" and decoded.reason ~= "" then
      message = message .. " (" .. decoded.reason .. ")"
    end
    if message ~= nil then return one_line(text_of(message), 300), decoded end
    return one_line(body, 300), decoded
  end
  return one_line(body, 300), nil
end

-- errors.new{ kind=, message=, status=, body=, ... }
function errors.new(fields)
  local err = setmetatable(fields, Error)
  err.status = err.status or 0
  err.message = err.message or err.kind
  return err
end

-- An error for an HTTP answer outside 2xx.
function errors.from_http(status, body, truncated)
  local message, decoded = errors.message_from_body(body)
  return errors.new({
    kind = errors.kind_for_status(status),
    status = status,
    message = message or ("HTTP " .. status),
    body = body,
    json = decoded,
    body_truncated = truncated or nil,
  })
end

-- Remove a secret from any text we are about to show. With `cut` (the text
-- is the head of something longer, as a capped error body is), a tail that
-- starts the secret is removed too: a key split by the cap still leaks.
function errors.scrub(text, secret, cut)
  if not secret or secret == "" or type(text) ~= "string" then return text end
  local start = 1
  while true do
    local i, j = text:find(secret, start, true)
    if not i then break end
    text = text:sub(1, i - 1) .. "<redacted>" .. text:sub(j + 1)
    start = i + #"<redacted>"
  end
  if cut then
    for n = math.min(#secret - 1, #text), 4, -1 do
      if text:sub(-n) == secret:sub(1, n) then return text:sub(1, -n - 1) .. "<redacted>" end
    end
  end
  return text
end

return errors
