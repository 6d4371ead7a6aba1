-- fish.live's `out = path`: the session's audio goes into a temporary file
-- beside the target, renamed over it when the session finishes, removed
-- when it fails, is canceled, or is collected unfinished. So `path` only
-- ever holds a whole session's audio (or what it held before), as with
-- fish.convert's `out`.
local core = require("fish.core")

local live_out = {}

local Out = {}
Out.__index = Out

-- Beside the target, so the rename stays on one file system; a name no
-- other writer in this process uses, and not a file that exists.
local counter = 0
local function temp_path_for(path)
  while true do
    counter = counter + 1
    local temp = ("%s.%x-%d.live.part"):format(path, math.floor(core.now() * 1e6) % 0x7fffffff, counter)
    if not core.stat(temp) then return temp end
  end
end

-- A value whose finaliser runs `fn` when it is collected. A table's __gc
-- runs on 5.2+ only; 5.1 and LuaJIT finalise userdata, made by newproxy.
local newproxy = newproxy -- luacheck: ignore 113 (5.1 and LuaJIT only)
local function on_collect(fn)
  if newproxy then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() fn() end
    return proxy
  end
  return setmetatable({}, { __gc = function() fn() end })
end

-- Open the temporary file for `path` (already checked by
-- util.check_output_path). Returns the writer, or nil, message.
function live_out.open(path)
  local temp = temp_path_for(path)
  local f, why = io.open(temp, "wb")
  if not f then return nil, "cannot create " .. temp .. ": " .. tostring(why) end
  local self = setmetatable({ path = path, temp = temp, file = f, bytes = 0 }, Out)
  -- Dropped unfinished (the session was collected): leave nothing behind.
  -- The finaliser knows only the file and its name, never the writer, or
  -- the writer could not be collected.
  local state = { file = f, temp = temp, done = false }
  self.state = state
  self.guard = on_collect(function()
    if state.done then return end
    pcall(state.file.close, state.file) -- the file may have been finalised first
    os.remove(state.temp)
  end)
  return self
end

function Out:write(bytes)
  local ok, why = self.file:write(bytes)
  if not ok then return nil, ("cannot write %s: %s"):format(self.temp, tostring(why)) end
  self.bytes = self.bytes + #bytes
  return true
end

-- Move the audio into place. Returns true, or nil, message (the temporary
-- file is removed then).
function Out:commit()
  if self.state.done then return nil, "the output was already closed" end
  self.state.done = true
  local ok, why = self.file:close()
  if ok then ok, why = os.rename(self.temp, self.path) end
  if not ok then
    os.remove(self.temp)
    return nil, ("cannot move the audio into place at %s: %s"):format(self.path, tostring(why))
  end
  return true
end

-- Give up: remove the temporary file. Idempotent.
function Out:discard()
  if self.state.done then return end
  self.state.done = true
  pcall(self.file.close, self.file)
  os.remove(self.temp)
end

return live_out
