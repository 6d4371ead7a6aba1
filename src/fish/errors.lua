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
  local head = "fish: " .. self.kind
  if self.status and self.status > 0 then head = head .. " (HTTP " .. self.status .. ")" end
  return head .. ": " .. self.message
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

-- A readable line from a 422 list: "text: field required; format: ..."
local function describe_validation_list(list)
  local parts = {}
  for i = 1, math.min(#list, 5) do
    local item = list[i]
    if type(item) == "table" then
      local where = type(item.loc) == "table" and table.concat(item.loc, ".") or nil
      local msg = item.msg or item.message or cjson.encode(item)
      parts[#parts + 1] = where and (where .. ": " .. tostring(msg)) or tostring(msg)
    else
      parts[#parts + 1] = tostring(item)
    end
  end
  if #list > 5 then parts[#parts + 1] = ("and %d more"):format(#list - 5) end
  return table.concat(parts, "; ")
end

-- The message from an error body, whichever of the shapes the API uses:
-- {status, message[, reason]}, {detail = ...}, a JSON array, or plain text.
function errors.message_from_body(body)
  if body == nil or body == "" then return nil, nil end
  local decoded = cjson.decode(body)
  if type(decoded) == "table" then
    if #decoded > 0 then return describe_validation_list(decoded), decoded end
    local message = decoded.message
    if type(decoded.detail) == "table" then
      message = message or describe_validation_list(decoded.detail[1] and decoded.detail or { decoded.detail })
    elseif decoded.detail ~= nil then
      message = message or decoded.detail
    end
    if type(message) == "string" and type(decoded.reason) == "string" and decoded.reason ~= "" then
      message = message .. " (" .. decoded.reason .. ")"
    end
    if message ~= nil and message ~= cjson.null then return one_line(message, 300), decoded end
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

-- Remove a secret from any text we are about to show.
function errors.scrub(text, secret)
  if not secret or secret == "" or type(text) ~= "string" then return text end
  local start = 1
  while true do
    local i, j = text:find(secret, start, true)
    if not i then return text end
    text = text:sub(1, i - 1) .. "<redacted>" .. text:sub(j + 1)
    start = i + #"<redacted>"
  end
end

return errors
