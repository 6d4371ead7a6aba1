-- fish.file(path): audio or an image given by path. The bytes are read by C
-- at send time (streamed from disk for uploads), never loaded into Lua.
local core = require("fish.core")
local util = require("fish.util")

local File = {}
File.__index = File
File.__name = "fish.file"

function File:__tostring()
  return "fish.file(" .. self.path .. ")"
end

local file = {}

-- Only a regular, non-empty file can be a sample: stat says so without
-- opening it (io.open on a FIFO would block forever), and refuses what
-- would read forever (/dev/zero) or upload nothing (a directory).
local function regular_file(path)
  local info, why = core.stat(path)
  if not info then return nil, "cannot use " .. why end
  if info.type ~= "file" then return nil, ("%s is a %s, not a regular file"):format(path, info.type) end
  if info.size == 0 then return nil, path .. " is empty" end
  return info
end

function file.new(path)
  if type(path) ~= "string" or path == "" then
    util.raise("fish.file: argument 1 must be a path string, got " .. type(path))
  end
  if path:find("\0", 1, true) then util.raise("fish.file: the path contains a NUL byte") end
  local info, why = regular_file(path)
  if not info then util.raise("fish.file: " .. why) end
  return setmetatable({ path = path, size = info.size }, File)
end

-- Before a call sends a file: it must still be the file fish.file saw. A
-- file that changed size since would put other bytes on the wire than the
-- caller meant (and the C side fails one that changes during the upload).
function file.check(f, fn, field)
  local info, why = regular_file(f.path)
  if not info then util.raise(("%s: field '%s' %s"):format(fn, field, why)) end
  if info.size ~= f.size then
    util.raise(("%s: field '%s' %s changed size since fish.file (%d bytes, now %d)")
      :format(fn, field, f.path, f.size, info.size))
  end
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
