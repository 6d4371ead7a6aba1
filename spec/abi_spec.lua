-- Every Lua ABI: `make LUA=<this Lua>` builds a module this interpreter
-- loads, an unknown LUA stops make, and counts come back as integers where
-- the ABI has them (5.3 and 5.4). `make test` runs this under all five Luas.
local abi = require("support.abi")
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")

local q = server.shell_quote
local ROOT = server.ROOT

local run = require("support.files").run

-- An integer in the ABI's sense: the integer subtype on 5.3+, a whole
-- number before (5.1, 5.2 and LuaJIT have only floats).
local function assert_integer(v, what)
  assert.is_number(v, what)
  if math.type then
    assert.equal("integer", math.type(v), what .. " is " .. tostring(v))
  else
    assert.equal(math.floor(v), v, what)
  end
end

describe("the build for " .. abi.lua, function()
  it("make LUA=" .. abi.lua .. " builds " .. abi.build .. "/fish/core.so, which " .. abi.lua .. " loads", function()
    local ok, out = run(("make -s -C %s LUA=%s"):format(q(ROOT), abi.lua))
    assert.is_true(ok, out)
    -- Nothing but this build on the paths: no stray module can stand in.
    local probe = "local core = require('fish.core'); io.write('loaded ', core.version, ' on ', _VERSION)"
    ok, out = run(("LUA_PATH=';;' LUA_CPATH=%s %s -e %s"):format(q(abi.cpath), abi.lua, q(probe)))
    assert.is_true(ok, out)
    assert.matches("loaded %d+%.%d+%.%d+ on Lua 5%.%d", out)
  end)

  it("make with an unknown LUA stops and names the Luas it builds for", function()
    local ok, out = run(("make -s -C %s LUA=lua9.9"):format(q(ROOT)))
    assert.is_false(ok, out)
    assert.matches("LUA=lua9.9 is not a Lua fish builds for", out, 1, true)
    assert.matches("lua5.1 lua5.2 lua5.3 lua5.4 luajit", out, 1, true)
  end)
end)

describe("integer results on " .. abi.lua, function()
  it("epoch seconds and HTTP dates are integers", function()
    assert_integer(core.epoch(), "core.epoch()")
    local t = core.http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    assert_integer(t, "core.http_date(...)")
    assert.equal(784111777, t)
  end)

  it("a msgpack writer's size is an integer", function()
    local w = core.mp_writer()
    w:value({ text = "Hello" })
    assert_integer(w:size(), "w:size()")
    assert.equal(#w:result(), w:size())
    w:close()
  end)

  it("convert's byte count is an integer, the size of the file written", function()
    local srv = server.start()
    local dir = files.tmpdir()
    local client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    local path = dir .. "/out.pcm"
    local ok, out, bytes = pcall(client.convert, { text = "Counted bytes", format = "pcm", out = path })
    local size = files.size(path)
    client.close()
    srv:stop()
    files.remove_tree(dir)
    assert.is_true(ok, out)
    assert.equal(path, out)
    assert_integer(bytes, "the byte count")
    assert.equal(size, bytes)
    assert.is_true(bytes > 0)
  end)
end)
