-- Loose timing bounds prove overlap and absence of busy waiting on a normal
-- run. Under valgrind or ASan (FISH_TEST_SLOW=1) everything is many times
-- slower: the specs still run every call and check every result, but skip
-- the bounds on elapsed and CPU time.
local timing = {}

timing.slow = os.getenv("FISH_TEST_SLOW") == "1"

-- assert(cond, message) unless timing is unreliable here.
function timing.check(cond, message)
  if not timing.slow then assert(cond, message) end
end

return timing
