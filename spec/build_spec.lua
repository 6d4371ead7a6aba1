-- Building and installing for the running Lua: make install (PREFIX,
-- DESTDIR) into that ABI's directories, and a module that never links
-- against liblua. (spec/rock_spec.lua covers luarocks make.)
local abi = require("support.abi")
local server = require("support.server")
local tmpdir = require("support.files").tmpdir

local ROOT = server.ROOT
local q = server.shell_quote
local LUA, ABI, BUILD = abi.lua, abi.version, abi.build

local run = require("support.files").run

-- Load fish from an installed tree only (no project paths), print a marker.
local function loads_from(lua_dir, lib_dir)
  local probe = ([[
    package.path = %q .. '/?.lua;' .. %q .. '/?/init.lua;' .. package.path
    package.cpath = %q .. '/?.so;' .. package.cpath
    -- package.searchpath is 5.2+ (and LuaJIT); Lua 5.1 searches the same way.
    local searchpath = package.searchpath or function(name, path)
      for template in path:gmatch('[^;]+') do
        local file = template:gsub('%%?', (name:gsub('%%.', '/')))
        local f = io.open(file, 'rb')
        if f then f:close() return file end
      end
    end
    local fish = require('fish'); require('fish.core')
    assert(searchpath('fish.core', package.cpath):find(%q, 1, true))
    assert(searchpath('fish', package.path):find(%q, 1, true))
    io.write('loaded ', fish.VERSION)
  ]]):format(lua_dir, lua_dir, lib_dir, lib_dir, lua_dir)
  return run(("LUA_PATH=';;' LUA_CPATH=';;' %s -e %s"):format(LUA, q(probe)))
end

describe("build and install", function()
  local dir

  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("make install puts Lua files and core.so under PREFIX, honouring DESTDIR", function()
    local ok, out = run(("make -s -C %s install LUA=%s PREFIX=/opt/fish DESTDIR=%s"):format(q(ROOT), LUA, q(dir)))
    assert.is_true(ok, out)
    local prefix = dir .. "/opt/fish"
    local loaded, msg = loads_from(prefix .. "/share/lua/" .. ABI, prefix .. "/lib/lua/" .. ABI)
    assert.is_true(loaded, msg)
    assert.matches("loaded %d+%.%d+%.%d+", msg)
  end)

  it("the module does not link against liblua", function()
    local ok, out = run("ldd " .. q(ROOT .. "/" .. BUILD .. "/fish/core.so"))
    assert.is_true(ok, out)
    assert.is_nil(out:find("liblua", 1, true), out)
    assert.is_nil(out:find("libluajit", 1, true), out)
    assert.truthy(out:find("libcurl", 1, true), out)
  end)
end)
