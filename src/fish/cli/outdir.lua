-- The batch output directory's bookkeeping: a lock so that two batches do
-- not write (and clean up) the same directory at once, the removal of temp
-- files a killed run left behind, and the state file that remembers which
-- request made each audio file.
--
-- Files in DIR besides the audio:
--   .fish-audio.lock          the pid of the batch writing here
--   .fish-audio-state.jsonl   one {"id","hash","length"} per line, the last
--                             line for an id wins; appended (and flushed) as
--                             each row finishes, so a kill loses at most the
--                             line being written, which is then skipped
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local json = require("fish.json")

local outdir = {}

local LOCK = ".fish-audio.lock"
local STATE = ".fish-audio-state.jsonl"

-- fish.convert{ out = P } streams into "P.<hex>-<n>.part" beside P and
-- renames it on success; a killed process leaves it behind.
local PART = "%.%x+%-%d+%.part$"

local OutDir = {}
OutDir.__index = OutDir

function outdir.open(dir)
  if not fs.is_dir(dir) and not fs.mkdir_p(dir) then
    failure.usage(("cannot create the output directory %s"):format(dir))
  end
  local self = setmetatable({ dir = dir, lock = fs.join(dir, LOCK), state_path = fs.join(dir, STATE) }, OutDir)
  local pid = fs.pid() or "0"
  local holder = (fs.read(self.lock) or ""):match("%d+")
  if holder and holder ~= pid and fs.process_alive(holder) then
    failure.usage(("another fish-audio batch (pid %s) is writing to %s; if none is running, remove %s")
      :format(holder, dir, self.lock))
  end
  local f, why = io.open(self.lock, "wb")
  if not f then failure.usage(("cannot write to the output directory %s: %s"):format(dir, tostring(why))) end
  f:write(pid, "\n")
  f:close()
  return self
end

function OutDir:path(name)
  return fs.join(self.dir, name)
end

-- Remove what a killed run left: audio temp files (<id>.<format>.<hex>-<n>.part)
-- and a half-written state rewrite. Returns how many were removed.
function OutDir:remove_stale()
  local removed = 0
  for _, name in ipairs(fs.list(self.dir)) do
    if name:match(PART) or name == STATE .. ".tmp" then
      if os.remove(self:path(name)) then removed = removed + 1 end
    end
  end
  return removed
end

-- id -> { hash =, length = }: the request that made each file. (Also
-- for --dry-run, which neither locks nor changes DIR.)
function outdir.load_state_of(dir)
  local state = {}
  local text = fs.read(fs.join(dir, STATE)) or ""
  for line in text:gmatch("[^\n]+") do
    local entry = json.decode(line)
    if type(entry) == "table" and type(entry.id) == "string" and type(entry.hash) == "string" then
      state[entry.id] = { hash = entry.hash, length = tonumber(entry.length) }
    end
  end
  return state
end

function OutDir:load_state()
  return outdir.load_state_of(self.dir)
end

local function entry_line(id, entry)
  return json.encode({ id = id, hash = entry.hash, length = entry.length }) .. "\n"
end

-- Rewrite the state file with one line per id (atomically), then keep it
-- open for appending.
function OutDir:start_state(state)
  local ids = {}
  for id in pairs(state) do ids[#ids + 1] = id end
  table.sort(ids)
  local lines = {}
  for i, id in ipairs(ids) do lines[i] = entry_line(id, state[id]) end
  local ok, why = fs.write_atomic(self.state_path, table.concat(lines))
  if not ok then failure.usage(("cannot write %s: %s"):format(self.state_path, tostring(why))) end
  self.state_file = io.open(self.state_path, "ab")
  if not self.state_file then failure.usage(("cannot write %s"):format(self.state_path)) end
end

function OutDir:record(id, entry)
  self.state_file:write(entry_line(id, entry))
  self.state_file:flush()
end

function OutDir:close()
  if self.state_file then
    self.state_file:close()
    self.state_file = nil
  end
  os.remove(self.lock)
end

return outdir
