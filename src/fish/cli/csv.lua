-- A CSV reader (RFC 4180): comma-separated, fields in double quotes may
-- hold commas, line breaks and doubled quotes (""), lines end in LF or
-- CRLF, a UTF-8 byte order mark is skipped. Blank lines are skipped.
--
-- csv.parse(text) -> records | nil, line, reason
--   records[i] = { line = <line the record starts on>, fields = { ... } }
local csv = {}

local function blank(record)
  return #record == 1 and record[1] == ""
end

function csv.parse(text)
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  local records = {}
  local pos, line, size = 1, 1, #text
  while pos <= size do
    local record, start_line = {}, line
    while true do
      local field
      if text:sub(pos, pos) == '"' then
        local pieces = {}
        pos = pos + 1
        while true do
          local quote = text:find('"', pos, true)
          if not quote then return nil, start_line, "a quoted field is never closed" end
          local piece = text:sub(pos, quote - 1)
          local _, breaks = piece:gsub("\n", "")
          line = line + breaks
          pieces[#pieces + 1] = piece
          if text:sub(quote + 1, quote + 1) == '"' then
            pieces[#pieces + 1] = '"'
            pos = quote + 2
          else
            pos = quote + 1
            break
          end
        end
        field = table.concat(pieces)
        local after = text:sub(pos, pos)
        if after ~= "," and after ~= "\r" and after ~= "\n" and after ~= "" then
          return nil, line, "text after the closing quote of a field"
        end
      else
        local stop = text:find("[,\r\n]", pos) or size + 1
        field = text:sub(pos, stop - 1)
        if field:find('"', 1, true) then
          return nil, line, 'a quote (") inside a field that does not start with one'
        end
        pos = stop
      end
      record[#record + 1] = field
      local separator = text:sub(pos, pos)
      if separator ~= "," then
        if separator == "\r" then pos = pos + 1 end
        if text:sub(pos, pos) == "\n" then pos = pos + 1 end
        line = line + 1
        break
      end
      pos = pos + 1
    end
    if not blank(record) then records[#records + 1] = { line = start_line, fields = record } end
  end
  return records
end

return csv
