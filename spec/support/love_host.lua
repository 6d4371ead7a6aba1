-- What the LÖVE specs (love_spec, love_live_spec) share: running a shell
-- command for its output and status, and whether Debian's love 11 is here
-- to run a game with.
local love_host = {}

-- Run a shell command; returns ok and everything it printed. The status
-- comes through the output: LuaJIT's pipe:close() does not report it.
function love_host.run(cmd)
  local pipe = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"exit=$?\"", "r"))
  local out = pipe:read("*a")
  pipe:close()
  local status = out:match("exit=(%d+)%s*$")
  return status == "0", (out:gsub("exit=%d+%s*$", ""))
end

-- Why a LÖVE game cannot run here, or nil when it can. LÖVE embeds LuaJIT,
-- so one run per suite is enough: the LuaJIT pass runs the games, the other
-- passes show them as pending.
function love_host.missing()
  if type(jit) ~= "table" then
    return "runs in the LuaJIT pass only (LÖVE embeds LuaJIT)"
  end
  local ok, out = love_host.run("love --version")
  if not ok then return "love is not installed (Debian: apt-get install love)" end
  if not out:match("LOVE 11%.") then return "needs LÖVE 11, found: " .. out:gsub("%s+$", "") end
end

return love_host
