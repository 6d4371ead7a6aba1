-- fish.file(path): audio or an image given by path. The bytes are read by C
-- at send time (streamed from disk for uploads), never loaded into Lua.
local util = require("fish.util")

local File = {}
File.__index = File
File.__name = "fish.file"

function File:__tostring()
  return "fish.file(" .. self.path .. ")"
end

local file = {}

function file.new(path)
  if type(path) ~= "string" or path == "" then
    util.raise("fish.file: argument 1 must be a path string, got " .. type(path))
  end
  local handle, why = io.open(path, "rb")
  if not handle then util.raise("fish.file: cannot open " .. tostring(why)) end
  local size = handle:seek("end")
  handle:close()
  return setmetatable({ path = path, size = size }, File)
end

function file.is(value)
  return getmetatable(value) == File
end

-- Only Windows separates directories with a backslash: on POSIX "a\\b.wav"
-- is one file name and keeps it.
local SEPARATORS = package.config:sub(1, 1) == "\\" and "[^/\\]+$" or "[^/]+$"

-- The last component of the path, for multipart filenames.
function file.basename(f)
  return f.path:match(SEPARATORS) or f.path
end

return file
