-- Request watchdogs: first_byte (from the start until the first response
-- byte), idle (between bytes) and total, each in seconds and optional. Each
-- watched request has one entry on a min-heap, at the earliest time one of
-- its limits could end it. A step looks only at the entries that are due:
-- an idle limit's entry that comes due while bytes still flow is moved to
-- the new time, and a finished request's entry is removed when its
-- completion is seen.
local core = require("fish.core")
local heap = require("fish.heap")

local now_fn = core.now

local deadlines = {}

local WEAK_VALUES = { __mode = "v" }
local due = heap.new()
local entry_of = setmetatable({}, { __mode = "k" }) -- request -> its heap entry
local expired = setmetatable({}, { __mode = "k" })  -- request -> which limit ended it

-- When could `limits` end this request, and by which limit? nil if never.
local function next_deadline(request, limits)
  local _, started, first_byte_at, last_activity = request:progress()
  local at, why
  if limits.total then at, why = started + limits.total, "total" end
  if first_byte_at == 0 and limits.first_byte then
    local t = started + limits.first_byte
    if at == nil or t < at then at, why = t, "first_byte" end
  elseif first_byte_at > 0 and limits.idle then
    local t = last_activity + limits.idle
    if at == nil or t < at then at, why = t, "idle" end
  end
  -- The idle limit starts at the first byte, which nothing announces: until
  -- it comes, look again one idle period later (no idle deadline can be
  -- earlier than that).
  if first_byte_at == 0 and limits.idle then
    local t = now_fn() + math.max(limits.idle, 0.01)
    if at == nil or t < at then at, why = t, nil end
  end
  return at, why
end

function deadlines.watch(request, limits)
  if not (limits and (limits.first_byte or limits.idle or limits.total)) then return end
  -- The entry holds its request weakly: a request dropped mid-transfer is
  -- still collected (and its transfer canceled by its __gc). One weak
  -- table per request, not an entry plus a weak box: the limits are
  -- copied in as numbers, which weak values do not drop, and the entry
  -- serves as next_deadline's limits. The heap's fields are made here too,
  -- so that its push does not have to grow the table.
  local entry = setmetatable({ request, at = 0, seq = 0, heap_index = false,
    first_byte = limits.first_byte, idle = limits.idle, total = limits.total }, WEAK_VALUES)
  entry.at = next_deadline(request, entry)
  entry_of[request] = entry
  due:push(entry)
end

-- The request has finished: it needs no watchdog any more.
function deadlines.forget(request)
  local entry = entry_of[request]
  if entry then
    entry_of[request] = nil
    due:remove(entry)
  end
end

-- A limit enforced elsewhere (loop's wait in C) ended the request.
function deadlines.mark_expired(request, why)
  expired[request] = why
end

-- Which limit canceled this request ("first_byte", "idle", "total"), if any.
function deadlines.expired(request)
  return expired[request]
end

-- Cancel every watched request past one of its limits, through `cancel`
-- (which also wakes its waiter). Returns the nearest deadline left, or nil.
function deadlines.enforce(now, cancel)
  while true do
    local entry = due:peek()
    if not entry or entry.at > now then return entry and entry.at end
    due:remove(entry)
    local request = entry[1]
    if request == nil then -- luacheck: ignore 542 (collected: nothing to watch)
    elseif request:state() ~= "running" then
      entry_of[request] = nil
    else
      local at, why = next_deadline(request, entry)
      if why and at <= now then
        entry_of[request] = nil
        expired[request] = why
        cancel(request)
      elseif at then
        entry.at = at
        due:push(entry)
      else
        entry_of[request] = nil
      end
    end
  end
end

-- For tests: how many deadlines are held, and how many heap entries were
-- looked at so far.
function deadlines.stats()
  return due:size(), due.visits
end

return deadlines
