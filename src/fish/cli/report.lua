-- The batch report: JSON Lines, one object per manifest row, written (and
-- flushed) as each row is settled, so a killed run still leaves a true
-- report of what it finished. Keys come in a fixed order, so the file
-- reads well in a terminal:
--   {"id":"intro","row":1,"line":2,"status":"ok","file":"out/intro.mp3","bytes":18811,"attempts":1}
--   {"id":"outro","row":2,"line":3,"status":"skipped","file":"out/outro.mp3"}
--   {"id":"bad","row":3,"line":4,"status":"failed","attempts":1,
--    "error":{"kind":"http","status":400,"message":"fish.convert: HTTP 400 bad_request: Reference not found"}}
local json = require("fish.json")

local report = {}

-- {"k":v,...} with the keys in the order given; nil values are left out.
function report.object(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    local value = kv[2]
    if value ~= nil then
      if type(value) == "table" and value[1] ~= nil and type(value[1]) == "table" then
        value = report.object(value)
      elseif type(value) == "number" and value == math.floor(value) then
        value = ("%d"):format(value)
      else
        -- cjson writes "/" as "\/": valid, but paths read badly. Every "/"
        -- in its output is escaped, so "\/" is always exactly that escape.
        value = (json.encode(value):gsub("\\/", "/"))
      end
      parts[#parts + 1] = json.encode(kv[1]) .. ":" .. value
    end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local Report = {}
Report.__index = Report

function report.open(path)
  local f, why = io.open(path, "wb")
  if not f then return nil, why end
  return setmetatable({ file = f, path = path }, Report)
end

-- row: the manifest row; result: { status =, file =, bytes =, attempts =, error = err }
function Report:write(row, result)
  local err = result.error
  local line = report.object({
    { "id", row.id }, { "row", row.number }, { "line", row.line }, { "status", result.status },
    { "file", result.file }, { "bytes", result.bytes }, { "attempts", result.attempts },
    { "error", err and {
      { "kind", err.kind }, { "status", err.status }, { "message", err.message },
    } or nil },
  })
  self.file:write(line, "\n")
  self.file:flush()
end

function Report:close()
  self.file:close()
end

return report
