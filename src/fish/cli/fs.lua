-- The few file-system and process facts fish-audio needs that plain Lua
-- lacks (a directory listing, mkdir -p, is this a terminal, our pid),
-- asked of the POSIX shell, so the tool needs no extra native rock.
local fs = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
fs.quote = quote

-- os.execute's success on every Lua: 5.1 and LuaJIT return the status
-- number, 5.2+ return true/nil, "exit", code.
function fs.execute(cmd)
  local first, _, code = os.execute(cmd)
  if type(first) == "number" then return first == 0 end
  return first == true and (code == nil or code == 0)
end

function fs.capture(cmd)
  local pipe = io.popen(cmd)
  if not pipe then return nil end
  local out = pipe:read("*a")
  pipe:close()
  return out
end

-- Is file descriptor `fd` (1 stdout, 2 stderr) a terminal? Asked once by
-- the caller, not per write.
function fs.isatty(fd)
  return fs.execute(("test -t %d"):format(fd))
end

-- A regular file we can read. (io.open alone also opens directories, and
-- would block on a FIFO.)
function fs.is_file(path)
  return fs.execute(("test -f %s && test -r %s"):format(quote(path), quote(path)))
end

-- Cheap existence check for files fish-audio itself wrote.
function fs.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function fs.is_dir(path)
  return fs.execute(("test -d %s"):format(quote(path)))
end

function fs.mkdir_p(path)
  return fs.execute(("mkdir -p -- %s 2>/dev/null"):format(quote(path)))
end

-- Every name in `dir`, hidden ones included.
function fs.list(dir)
  local names = {}
  local out = fs.capture(("LC_ALL=C ls -A -- %s 2>/dev/null"):format(quote(dir))) or ""
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  return names
end

function fs.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

-- Why `path` cannot be written as a new or replaced file ("is a
-- directory", ...), or nil. Commands ask before anything is sent (and
-- billed), so that a typo in a flag costs nothing.
function fs.unwritable(path)
  if fs.is_dir(path) then return "is a directory" end
  local dir = fs.dirname(path)
  if not fs.is_dir(dir) then return "no such directory: " .. dir end
  if not fs.execute(("test -w %s"):format(quote(dir))) then return "cannot write in " .. dir end
  return nil
end

-- Write a whole file through a temporary name and rename it into place, so
-- a reader (or a crash) never sees half of it. The temporary name is ours
-- alone (pid and a count), never a file of the user's, and it is removed
-- whatever fails.
local temp_count = 0
function fs.write_atomic(path, data)
  temp_count = temp_count + 1
  local temp = ("%s.%s-%d.tmp"):format(path, fs.pid() or "0", temp_count)
  local f, why = io.open(temp, "wb")
  if not f then return nil, why end
  local ok, werr = f:write(data)
  local closed, cerr = f:close()
  if not ok or not closed then
    os.remove(temp)
    return nil, werr or cerr
  end
  local renamed, rerr = os.rename(temp, path)
  if not renamed then
    os.remove(temp)
    return nil, rerr
  end
  return true
end

-- The pid of this process: the shell that io.popen starts is our child, so
-- its $PPID is us. Asked once.
local own_pid
function fs.pid()
  own_pid = own_pid or (fs.capture("echo $PPID") or ""):match("%d+")
  return own_pid
end

-- Is a process with this pid running a fish-audio? Where /proc exists, a
-- reused pid that now belongs to another program does not count.
function fs.process_alive(pid)
  if not tostring(pid):match("^%d+$") then return false end
  if not fs.execute(("kill -0 %s 2>/dev/null"):format(pid)) then return false end
  local cmdline = fs.read("/proc/" .. pid .. "/cmdline")
  if cmdline and cmdline ~= "" then return cmdline:find("fish-audio", 1, true) ~= nil end
  return true
end

function fs.dirname(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir == nil then return "." end
  return dir == "" and "/" or dir
end

function fs.join(dir, name)
  if name:sub(1, 1) == "/" then return name end
  if dir == "." or dir == "" then return name end
  return (dir:gsub("/+$", "")) .. "/" .. name
end

return fs
