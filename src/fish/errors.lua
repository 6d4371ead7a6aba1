-- Error objects for failures of the network or the API. Programming errors
-- (a wrong type, an unknown field) are raised with error() instead. Public
-- calls return failures as `nil, message, err`, the convention of luv,
-- cqueues and lua-http: `message` is a string, so `"failed: " .. message`,
-- io.stderr:write(message), ngx.say(message) and assert() work on every ABI;
-- `err` is the object below, for code that branches on err.kind.
local json = require("fish.json")

local errors = {}

-- Every kind an error object can have; the API reference documents each.
errors.KINDS = {
  "auth", "permission", "not_found", "rate_limit", "server", "http",
  "network", "timeout", "canceled", "failed", "invalid_response", "too_large", "io", "resources",
}

local Error = {}
Error.__index = Error
Error.__name = "fish.error"

-- The HTTP reason phrases of the statuses the API and proxies answer with,
-- as words: "HTTP 402 payment_required" reads without a table at hand.
local STATUS_NAMES = {
  [400] = "bad_request", [401] = "unauthorized", [402] = "payment_required", [403] = "forbidden",
  [404] = "not_found", [405] = "method_not_allowed", [408] = "request_timeout", [409] = "conflict",
  [413] = "content_too_large", [415] = "unsupported_media_type", [422] = "unprocessable_content",
  [429] = "too_many_requests", [500] = "internal_server_error", [501] = "not_implemented",
  [502] = "bad_gateway", [503] = "service_unavailable", [504] = "gateway_timeout",
}

-- One line that says what failed, never the API key: it is built from the
-- call, the status and the server's words, which scrub() already cleaned.
-- Line breaks are folded, because they would split log records.
function Error:__tostring()
  local head
  local status = type(self.status) == "number" and self.status or 0
  if status > 0 and (status < 200 or status >= 300) then
    head = ("HTTP %d"):format(status)
    if STATUS_NAMES[status] then head = head .. " " .. STATUS_NAMES[status] end
  else
    head = tostring(self.kind)
    if self.cause and self.cause ~= self.kind then head = head .. " (" .. tostring(self.cause) .. ")" end
  end
  local text = (tostring(self.message or ""):gsub("[\r\n]+", " "))
  if text ~= "" and text ~= self.kind and text ~= ("HTTP " .. status) then
    head = head .. ": " .. text
  end
  return (self.call or "fish") .. ": " .. head
end

function errors.is(value)
  return getmetatable(value) == Error
end

-- The public shape of a failure: nil, the one-line message, the object.
-- `call` names the public function ("fish.convert") when the error does not
-- name one yet.
function errors.fail(err, call)
  if call and not err.call then err.call = call end
  return nil, tostring(err), err
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

local text_of = json.text_of

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

-- The message from an error body, whichever of the shapes the API uses:
-- {status, message[, reason]}, {detail = ...}, a JSON array, or plain text.
-- `secrets` are removed before the message is cut to one short line: a key
-- the cut split in two could no longer be found whole (errors.redact runs
-- later, on the cut message). `truncated`: the body is the head of a longer
-- one, so a secret may also end it.
function errors.message_from_body(body, secrets, truncated)
  if body == nil or body == "" then return nil, nil end
  local function one_line_of(text)
    return one_line(errors.scrub(text, secrets or {}, truncated), 300)
  end
  local decoded = json.decode(body)
  if type(decoded) == "table" then
    if #decoded > 0 then return describe_validation_list(decoded), decoded end
    local message = decoded.message
    if type(message) == "table" then message = json.encode(message) end
    if type(decoded.detail) == "table" then
      message = message or describe_validation_list(decoded.detail[1] and decoded.detail or { decoded.detail })
    elseif decoded.detail ~= nil then
      message = message or decoded.detail
    end
    if type(message) == "string" and type(decoded.reason) == "string" and decoded.reason ~= "" then
      message = message .. " (" .. decoded.reason .. ")"
    end
    if message ~= nil then return one_line_of(text_of(message)), decoded end
    return one_line_of(body), decoded
  end
  return one_line_of(body), nil
end

-- errors.new{ kind=, message=, status=, body=, ... }
function errors.new(fields)
  local err = setmetatable(fields, Error)
  err.status = err.status or 0
  err.message = err.message or err.kind
  return err
end

-- An error for an HTTP answer outside 2xx. The caller still redacts it
-- (errors.redact): `secrets` only keeps them out of the one-line message.
function errors.from_http(status, body, truncated, secrets)
  local message, decoded = errors.message_from_body(body, secrets, truncated)
  return errors.new({
    kind = errors.kind_for_status(status),
    status = status,
    message = message or ("HTTP " .. status),
    body = body,
    json = decoded,
    body_truncated = truncated or nil,
  })
end

-- The length of a copy of `secret` at text position i, where each byte may
-- also be JSON-escaped (\u00XX, and \/ \\ \" for their characters), or nil.
-- A server that echoes the key inside a JSON string may escape any of it.
local ESCAPED = { [47] = "/", [92] = "\\", [34] = '"' }
local function match_at(text, i, secret)
  local j = i
  for k = 1, #secret do
    local want, got = secret:byte(k), text:byte(j)
    if got == want then
      j = j + 1
    elseif got == 92 then
      local after = text:sub(j + 1, j + 1)
      local hex = after == "u" and text:sub(j + 2, j + 5) or nil
      if hex and #hex == 4 and hex:find("^%x%x%x%x$") and tonumber(hex, 16) == want then
        j = j + 6
      elseif ESCAPED[want] and after == ESCAPED[want] then
        j = j + 2
      else
        return nil
      end
    else
      return nil
    end
  end
  return j - i
end

local REDACTED = "<redacted>"

-- Remove secrets from any text we are about to show, in plain or JSON-escaped
-- form. `secrets` is one key or a list of them (a call's own api_key and its
-- client's). With `cut` (the text is the head of something longer, as a
-- capped error body is), a tail that starts a secret is removed too: a key
-- split by the cap still leaks.
function errors.scrub(text, secrets, cut)
  if type(text) ~= "string" then return text end
  if type(secrets) ~= "table" then secrets = { secrets } end
  for _, secret in ipairs(secrets) do
    if type(secret) == "string" and secret ~= "" then
      local out, i, first = {}, 1, secret:byte(1)
      local from = 1
      while i <= #text do
        local b = text:byte(i)
        local n = (b == first or b == 92) and match_at(text, i, secret) or nil
        if n then
          out[#out + 1] = text:sub(from, i - 1)
          out[#out + 1] = REDACTED
          i = i + n
          from = i
        else
          i = i + 1
        end
      end
      out[#out + 1] = text:sub(from)
      text = table.concat(out)
      if cut then
        for n = math.min(#secret - 1, #text), 4, -1 do
          if text:sub(-n) == secret:sub(1, n) then
            text = text:sub(1, -n - 1) .. REDACTED
            break
          end
        end
      end
    end
  end
  return text
end

-- Every string in a decoded JSON value (keys too), scrubbed in place.
local function scrub_value(value, secrets)
  if type(value) == "string" then return errors.scrub(value, secrets) end
  if type(value) ~= "table" then return value end
  local renamed = {}
  for k, v in pairs(value) do
    value[k] = scrub_value(v, secrets)
    if type(k) == "string" then
      local clean = errors.scrub(k, secrets)
      if clean ~= k then renamed[k] = clean end
    end
  end
  for k, clean in pairs(renamed) do
    value[clean], value[k] = value[k], nil
  end
  return value
end

-- Fields that carry outside text: what the server or libcurl said. The
-- others (kind, call, cause, timeout...) are fish's own words.
local OUTSIDE_FIELDS = { "message", "body", "json", "location" }

-- The error with the secrets removed from every field that carries outside
-- text, the decoded JSON body included: the one place errors are cleaned
-- before they leave fish.
function errors.redact(err, secrets)
  if type(err) ~= "table" then return err end
  for _, k in ipairs(OUTSIDE_FIELDS) do
    if k == "body" then
      err.body = errors.scrub(err.body, secrets, err.body_truncated)
    else
      err[k] = scrub_value(err[k], secrets)
    end
  end
  return err
end

return errors
