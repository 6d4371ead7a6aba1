-- The Lua ABI the specs run under (busted --lua=X) and this checkout's
-- build for it. The one place that maps the running interpreter to:
--   abi.lua          Debian's command and the Makefile's LUA= value
--                    ("lua5.1" ... "lua5.4", "luajit")
--   abi.version      the ABI, as in share/lua/<version> ("5.1" for LuaJIT)
--   abi.build        the build directory, relative to the checkout
--   abi.cpath        package.cpath entry for that build's fish/core.so
--   abi.interpreter  what specs run child scripts with: abi.lua, or
--                    FISH_TEST_LUA when set
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/abi%.lua$")) or "."

local abi = {}
if type(jit) == "table" then
  abi.lua, abi.version, abi.build = "luajit", "5.1", "build/luajit"
else
  abi.version = assert(_VERSION:match("^Lua (5%.%d)$"), "unknown Lua: " .. _VERSION)
  abi.lua, abi.build = "lua" .. abi.version, "build/" .. abi.version
end
abi.cpath = ROOT .. "/" .. abi.build .. "/?.so"
abi.interpreter = os.getenv("FISH_TEST_LUA") or abi.lua

return abi
