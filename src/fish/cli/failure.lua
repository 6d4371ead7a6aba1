-- How fish-audio fails: every failure is one line on stderr and an exit
-- code that tells a script what kind of failure it was.
--
--   1  the API or the network failed (and anything unexpected)
--   2  usage: a bad flag, a missing key, a bad manifest, a missing file
--   3  a batch finished, but some rows failed
--   130  interrupted (Ctrl-C), as shells report a SIGINT
--
-- Commands raise a failure value with failure.usage / failure.api; main
-- catches it, prints its message and exits with its code.
local failure = {}

local unpack = table.unpack or unpack -- luacheck: ignore 113 143

failure.API = 1
failure.USAGE = 2
failure.PARTIAL = 3
failure.INTERRUPTED = 130

local Failure = {}
Failure.__index = Failure
function Failure:__tostring() return self.message end

function failure.new(code, message)
  return setmetatable({ code = code, message = message }, Failure)
end

function failure.is(value)
  return getmetatable(value) == Failure
end

function failure.usage(message)
  error(failure.new(failure.USAGE, message), 0)
end

function failure.api(message)
  error(failure.new(failure.API, message), 0)
end

-- fish raises argument errors with the position of the calling line
-- ("/path/fish/cli/say.lua:40: fish.file: ..."): a user needs the part
-- after it.
function failure.strip_position(message)
  return (tostring(message):gsub("^[^\n]-:%d+: ", ""))
end

-- The standalone interpreters (lua.c, luajit.c) turn Ctrl-C into a Lua
-- error whose message ends in "interrupted!"; it may arrive wrapped by
-- fish's task loop ("fish task failed: ...").
function failure.is_interrupt(err)
  return type(err) == "string" and err:find("interrupted!", 1, true) ~= nil
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Call fn(...); an argument error fish raises there (an unwritable -o, a
-- sample that vanished) comes from what the user typed, so it becomes a
-- usage failure. Ctrl-C and failures pass through untouched.
function failure.protect(fn, ...)
  local results = pack(pcall(fn, ...))
  if results[1] then return unpack(results, 2, results.n) end
  local err = results[2]
  if failure.is(err) or failure.is_interrupt(err) then error(err, 0) end
  failure.usage(failure.strip_position(err))
end

return failure
