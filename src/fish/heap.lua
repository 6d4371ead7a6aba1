-- A binary min-heap of timed entries: the earliest `at` on top, entries with
-- the same `at` in the order they were pushed. Each entry knows its slot, so
-- removing one that is no longer wanted (a sleep cut short, a request that
-- finished before its deadline) costs O(log n) and leaves nothing behind.
-- `visits` counts the entries looked at, so tests can check the work is
-- logarithmic without timing anything.
local heap = {}
heap.__index = heap

function heap.new()
  return setmetatable({ n = 0, pushed = 0, visits = 0 }, heap)
end

local function before(a, b)
  if a.at ~= b.at then return a.at < b.at end
  return a.seq < b.seq
end

local function place(self, entry, i)
  self[i] = entry
  entry.heap_index = i
end

local function sift_up(self, i)
  local entry = self[i]
  while i > 1 do
    local parent = (i - i % 2) / 2
    local above = self[parent]
    self.visits = self.visits + 1
    if not before(entry, above) then break end
    place(self, above, i)
    i = parent
  end
  place(self, entry, i)
end

local function sift_down(self, i)
  local entry, n = self[i], self.n
  while true do
    local child = 2 * i
    if child > n then break end
    local right = child + 1
    if right <= n then
      self.visits = self.visits + 1
      if before(self[right], self[child]) then child = right end
    end
    self.visits = self.visits + 1
    if not before(self[child], entry) then break end
    place(self, self[child], i)
    i = child
  end
  place(self, entry, i)
end

-- Add `entry` (a table with a number `at`) and return it.
function heap:push(entry)
  local at = entry.at
  if type(at) ~= "number" or at ~= at then error("heap: entry.at must be a number, got " .. tostring(at), 2) end
  if entry.heap_index then error("heap: entry is already in a heap", 2) end
  self.pushed = self.pushed + 1
  entry.seq = self.pushed
  self.n = self.n + 1
  self[self.n] = entry
  sift_up(self, self.n)
  return entry
end

-- The earliest entry, or nil.
function heap:peek()
  if self.n > 0 then self.visits = self.visits + 1 end
  return self[1]
end

-- Remove `entry` wherever it is. Returns true if it was in this heap.
function heap:remove(entry)
  local i = entry.heap_index
  if not i or self[i] ~= entry then return false end
  entry.heap_index = nil
  local last = self[self.n]
  self[self.n] = nil
  self.n = self.n - 1
  if last ~= entry then
    place(self, last, i)
    if i > 1 and before(last, self[(i - i % 2) / 2]) then
      sift_up(self, i)
    else
      sift_down(self, i)
    end
  end
  return true
end

-- Remove and return the earliest entry, or nil.
function heap:pop()
  local top = self[1]
  if top then self:remove(top) end
  return top
end

-- Move `entry` to a new time (in the heap or not).
function heap:update(entry, at)
  self:remove(entry)
  entry.at = at
  return self:push(entry)
end

function heap:size()
  return self.n
end

return heap
