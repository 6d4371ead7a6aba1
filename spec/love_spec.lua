-- A packaged LÖVE game loads fish. The spec zips spec/support/love (main.lua,
-- conf.lua) with fish's Lua files and the LuaJIT build of core.so into a
-- .love, as a game ships, and runs it with Debian's love (11.x, LuaJIT)
-- headless against the local server. The game copies the native libraries
-- out of the archive into its save directory, loads them with
-- package.loadlib, converts in a fish task stepped from love.update, and
-- prints one "FISH-LOVE ..." line.
--
-- LÖVE embeds LuaJIT, so one run per suite is enough: the LuaJIT pass runs
-- it, the Lua 5.4 pass shows it as pending.
local server = require("support.server")
local files = require("support.files")
local love_host = require("support.love_host")

local q = files.quote
local run = love_host.run
local ROOT = server.ROOT
local GAME = ROOT .. "/spec/support/love"
local CORE = ROOT .. "/build/luajit/fish/core.so"
local TEXT = "Spoken from inside a packaged game." -- the game speaks FISH_LOVE_TEXT
local TTS_DELAY = 0.3

-- lua-cjson's module for the 5.1 ABI, the one this LuaJIT loads: the game
-- ships it beside core.so, as a game for players without lua-cjson must.
local function cjson_library()
  local path = package.searchpath("cjson", package.cpath)
  assert(path, "lua-cjson for LuaJIT not found on package.cpath (Debian: apt-get install lua-cjson)")
  return path
end

-- The .love: a zip with main.lua and conf.lua at the top, fish's Lua files
-- as fish/*.lua (LÖVE's require finds fish/init.lua for "fish"), and the
-- native libraries under native/.
local function build_love(path)
  local entries = { GAME .. "/main.lua", "main.lua", GAME .. "/conf.lua", "conf.lua",
    CORE, "native/core.so", cjson_library(), "native/cjson.so" }
  for name in files.capture("ls " .. q(ROOT .. "/src/fish")):gmatch("[^\n]+") do
    if name:match("%.lua$") then
      entries[#entries + 1] = ROOT .. "/src/fish/" .. name
      entries[#entries + 1] = "fish/" .. name
    end
  end
  local script = "import sys, zipfile\n" ..
    "with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n" ..
    "    for i in range(2, len(sys.argv), 2): z.write(sys.argv[i], sys.argv[i + 1])\n"
  local args = {}
  for i, e in ipairs(entries) do args[i] = q(e) end
  local ok, out = run("env -u LD_PRELOAD " .. q(server.PYTHON) .. " -c " .. q(script) .. " " .. q(path) ..
    " " .. table.concat(args, " "))
  assert(ok, "could not build " .. path .. ":\n" .. out)
end

local skip = love_host.missing()
if skip then
  pending("LÖVE game (spec/support/love): skipped, " .. skip)
else
  describe("a packaged LÖVE game (spec/support/love) #hosts", function()
    local srv, dir

    setup(function()
      local ok, out = run("make -s -C " .. q(ROOT) .. " LUA=luajit")
      assert(ok and files.exists(CORE),
        "make LUA=luajit failed (LuaJIT headers: Debian package libluajit2-5.1-dev):\n" .. out)
      srv = server.start({ tts_delay = TTS_DELAY })
      dir = files.tmpdir()
    end)

    teardown(function()
      if srv then srv:stop() end
      if dir then files.remove_tree(dir) end
    end)

    it("copies core.so out of the .love, loads it and speaks through the local server", function()
      local game = dir .. "/game.love"
      build_love(game)
      run("mkdir -m 700 " .. q(dir .. "/runtime"))
      -- HOME and XDG_DATA_HOME in the temp dir, so the save directory
      -- (XDG_DATA_HOME/love/<identity>) is not the user's. conf.lua turns
      -- off the window, graphics and audio modules: no display, no X.
      local cmd = ("cd %s && env HOME=%s XDG_DATA_HOME=%s XDG_RUNTIME_DIR=%s FISH_API_KEY=%s FISH_BASE_URL=%s "
        .. "FISH_LOVE_TEXT=%s timeout -k 2 60 love %s </dev/null"):format(q(dir), q(dir), q(dir .. "/data"),
        q(dir .. "/runtime"), q(srv.api_key), q(srv.url), q(TEXT), q(game))
      local ok, out = run(cmd)

      local bytes, samples, frames = out:match("FISH%-LOVE OK bytes=(%d+) samples=(%d+) frames=(%d+)")
      assert(bytes, "the game printed no FISH-LOVE OK line:\n" .. out)
      assert.is_true(ok, "love exited with an error:\n" .. out)
      bytes, samples, frames = tonumber(bytes), tonumber(samples), tonumber(frames)

      -- LÖVE decoded the whole WAV: a 44-byte header, then 16-bit mono samples.
      assert.is_true(samples > 0, out)
      assert.equal(44 + 2 * samples, bytes)
      -- The server held its answer back 0.3 s; fish.step(0) returned each
      -- frame meanwhile, so the conversion spanned more than one frame.
      assert.is_true(frames > 1, "the conversion finished within a single love.update: " .. out)

      -- The audio came from the local server, asked for by the game.
      local sent = srv:requests_for("POST", "/v1/tts")
      assert.equal(1, #sent)
      assert.equal(TEXT, sent[1].msgpack.text)
      assert.equal("wav", sent[1].msgpack.format)
      assert.equal("Bearer " .. srv.api_key, sent[1].headers.authorization)

      -- The library was loaded from the copy in the temp save directory.
      local copy = dir .. "/data/love/fish-love-spec/core.so"
      assert.is_true(files.read(copy) == files.read(CORE), "no copy of core.so at " .. copy)
    end)
  end)
end
