-- JSON for the rest of fish: lua-cjson when it is installed, else Neovim's
-- built-in vim.json (the same cjson code, compiled into Neovim), so a Neovim
-- plugin needs no extra native rock. decode never raises: a bad body is the
-- server's fault, and callers turn nil into an error object.
local json = {}

local backend, null

local ok, cjson = pcall(require, "cjson.safe")
if ok then
  backend, null = cjson, cjson.null
  json.name = "cjson"
elseif type(vim) == "table" and type(vim.json) == "table" then
  local vim_json = vim.json
  backend = {
    encode = function(value)
      local done, text = pcall(vim_json.encode, value)
      if done then return text end
      return nil
    end,
    decode = function(text)
      local done, value = pcall(vim_json.decode, text)
      if done then return value end
      return nil
    end,
  }
  null = vim.NIL
  json.name = "vim.json"
else
  error("fish needs a JSON library: install lua-cjson (apt-get install lua-cjson, or luarocks install lua-cjson), "
    .. "or run inside Neovim, which has vim.json built in", 0)
end

-- The value a JSON null decodes to (truthy: see drop_nulls).
json.null = null

function json.encode(value)
  return backend.encode(value)
end

-- Fields the server sent as null become nil, so `if voice.description then`
-- means what it says: cjson.null and vim.NIL are both truthy. Array slots
-- keep their null, so positions in a list do not shift.
function json.drop_nulls(value)
  if type(value) ~= "table" then return value end
  for k, v in pairs(value) do
    if v == null and type(k) == "string" then
      value[k] = nil
    else
      json.drop_nulls(v)
    end
  end
  return value
end

-- The decoded value with nulls dropped, or nil when the text is not JSON
-- (or is a bare null).
function json.decode(text)
  if type(text) ~= "string" then return nil end
  local value = backend.decode(text)
  if value == null then return nil end
  return json.drop_nulls(value)
end

-- Any decoded JSON value as text: a table as its JSON, never "table: 0x...".
-- Whole numbers print without ".0": on Lua 5.3+ cjson decodes every number as
-- a float, which would turn a 422's loc ["references", 0] into "references.0.0".
function json.text_of(value)
  if type(value) == "table" then return json.encode(value) or "?" end
  if value == null then return "null" end
  if type(value) == "number" and value == math.floor(value) and math.abs(value) < 2 ^ 53 then
    return ("%d"):format(value)
  end
  return tostring(value)
end

return json
