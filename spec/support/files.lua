-- File and process helpers shared by the specs.
local files = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
files.quote = quote

function files.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

function files.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function files.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function files.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

-- The output of a shell command (stdout only).
function files.capture(cmd)
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("*a")
  pipe:close()
  return out
end

-- Run a shell command outside the sanitizer preload (under make test-asan
-- only the Lua interpreter gets it; make, luarocks and compilers must not).
-- Returns whether it exited 0, and everything it printed.
function files.run(cmd)
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c " .. quote(cmd) .. " 2>&1; echo \"exit=$?\""))
  local out = pipe:read("*a")
  pipe:close()
  return out:match("exit=(%d+)%s*$") == "0", out
end

function files.tmpdir()
  return (files.capture("mktemp -d"):gsub("%s+$", ""))
end

function files.remove_tree(dir)
  os.execute("rm -rf " .. quote(dir))
end

-- Every entry of `dir` whose name starts with `prefix` (default: all),
-- hidden ones included: a temporary download is named <out>.<id>.part.
function files.entries(dir, prefix)
  prefix = prefix or ""
  local found = {}
  for name in files.capture("ls -A " .. quote(dir)):gmatch("[^\n]+") do
    if name:sub(1, #prefix) == prefix then found[#found + 1] = name end
  end
  return found
end

return files
