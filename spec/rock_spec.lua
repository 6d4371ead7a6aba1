-- The rock: every rockspec in rockspec/ builds and installs with luarocks
-- make, lists every module, C source and dependency, and the versioned one
-- agrees with fish._VERSION, its git tag and CHANGELOG.md.
--
-- LuaRocks' server may be out of reach, so builds use --deps-mode=none and
-- load lua-cjson from the system (Debian's lua-cjson); the `dependencies`
-- list is checked by reading the rockspecs instead.
local server = require("support.server")
local files = require("support.files")

local ROOT = server.ROOT
local q = files.quote

-- The running ABI: "luajit", or "5.1" to "5.4". LuaJIT loads modules built
-- for the 5.1 ABI, so its rock is built with --lua-version=5.1.
local abi = require("support.abi")
local ABI = abi.lua == "luajit" and "luajit" or abi.version
local LUA_VERSION, LUA = abi.version, abi.lua
-- Checks that read files only give the same answer on every ABI: they run
-- in one pass per suite run.
local ONCE = "5.4"

-- Variables that would change what the probe's interpreter loads.
local UNSET_LUA_ENV = "-u LUA_INIT -u LUA_PATH -u LUA_CPATH"
for _, v in ipairs({ "5_2", "5_3", "5_4" }) do
  UNSET_LUA_ENV = UNSET_LUA_ENV .. (" -u LUA_INIT_%s -u LUA_PATH_%s -u LUA_CPATH_%s"):format(v, v, v)
end

local run = files.run

-- Lua 5.1's loadfile takes no environment; its setfenv does that job.
local setfenv = rawget(_G, "setfenv")

-- A rockspec is Lua assignments: run it in an empty environment, so it can
-- reach nothing, and return the globals it set.
local function load_rockspec(path)
  local env = {}
  local chunk, err
  if setfenv then
    chunk, err = loadfile(path)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = loadfile(path, "t", env)
  end
  assert(chunk, err)
  chunk()
  return env
end

local function ends_with(s, suffix)
  return s:sub(-#suffix) == suffix
end

local function names_ending(dir, suffix)
  local found = {}
  for _, name in ipairs(files.entries(ROOT .. "/" .. dir)) do
    if ends_with(name, suffix) then found[#found + 1] = name end
  end
  table.sort(found)
  return found
end

local ROCKSPECS = names_ending("rockspec", ".rockspec")
local SCM = "fish-audio-scm-1.rockspec"

local function rockspec(name)
  return load_rockspec(ROOT .. "/rockspec/" .. name)
end

local function versioned()
  local found = {}
  for _, name in ipairs(ROCKSPECS) do
    if name ~= SCM then found[#found + 1] = name end
  end
  return found
end

-- "1.2.3" -> { 1, 2, 3 }, compared number by number.
local function newer(a, b)
  local x, y = {}, {}
  for n in a:gmatch("%d+") do x[#x + 1] = tonumber(n) end
  for n in b:gmatch("%d+") do y[#y + 1] = tonumber(n) end
  for i = 1, math.max(#x, #y) do
    if (x[i] or 0) ~= (y[i] or 0) then return (x[i] or 0) > (y[i] or 0) end
  end
  return false
end

local function once(name, fn)
  if ABI == ONCE then
    it(name, fn)
  else
    pending(name .. ": the same on every ABI, so checked once, in the Lua " .. ONCE .. " pass")
  end
end

describe("the rock", function()
  once("rockspec/ holds the scm rockspec and one for fish._VERSION, each named after its contents", function()
    local scm_found = false
    for _, name in ipairs(ROCKSPECS) do
      local spec = rockspec(name)
      assert.equals(spec.package .. "-" .. spec.version .. ".rockspec", name)
      assert.equals("fish-audio", spec.package)
      if name == SCM then scm_found = true end
    end
    assert.is_true(scm_found, "rockspec/" .. SCM .. " is missing")
    assert.is_true(#versioned() >= 1, "no versioned rockspec in rockspec/")
  end)

  once("each rockspec depends on lua >= 5.1 and lua-cjson, and nothing else", function()
    for _, name in ipairs(ROCKSPECS) do
      local spec = rockspec(name)
      local deps = spec.dependencies
      assert.equals("table", type(deps), name)
      local lua, cjson = 0, 0
      for _, dep in ipairs(deps) do
        if dep == "lua >= 5.1" then
          lua = lua + 1
        elseif dep:match("^lua%-cjson$") or dep:match("^lua%-cjson%s") then
          cjson = cjson + 1
        else
          error(name .. ": unexpected dependency '" .. dep .. "'")
        end
      end
      assert.equals(1, lua, name .. ": needs exactly one 'lua >= 5.1'")
      assert.equals(1, cjson, name .. ": needs exactly one lua-cjson entry")
      -- Only list entries count for LuaRocks: no keyed extras.
      local count = 0
      for _ in pairs(deps) do count = count + 1 end
      assert.equals(#deps, count, name)
      -- libcurl is a system library: found by luarocks, never a rock.
      assert.same({ CURL = { library = "curl" } }, spec.external_dependencies, name)
    end
  end)

  once("each rockspec installs exactly src/fish/*.lua and src/fish/cli/*.lua, and fish.core from exactly src/*.c",
      function()
    local expected = {}
    for _, file in ipairs(names_ending("src/fish", ".lua")) do
      local base = file:sub(1, -5)
      expected[base == "init" and "fish" or "fish." .. base] = "src/fish/" .. file
    end
    -- The fish-audio command's modules.
    local cli = names_ending("src/fish/cli", ".lua")
    assert.is_true(#cli > 0, "no src/fish/cli/*.lua under " .. ROOT)
    for _, file in ipairs(cli) do expected["fish.cli." .. file:sub(1, -5)] = "src/fish/cli/" .. file end
    local c_sources = {}
    for _, file in ipairs(names_ending("src", ".c")) do c_sources[#c_sources + 1] = "src/" .. file end
    assert.is_true(#c_sources > 0 and expected.fish ~= nil, "no sources found under " .. ROOT)

    for _, name in ipairs(ROCKSPECS) do
      local build = rockspec(name).build
      assert.equals("builtin", build.type, name)
      local lua_modules, core = {}, nil
      for module, source in pairs(build.modules) do
        if module == "fish.core" then core = source else lua_modules[module] = source end
      end
      assert.same(expected, lua_modules, name .. ": build.modules against src/fish/*.lua")
      assert.equals("table", type(core), name .. ": fish.core is missing")
      local sources = {}
      for i, source in ipairs(core.sources) do sources[i] = source end
      table.sort(sources)
      assert.same(c_sources, sources, name .. ": fish.core sources against src/*.c")
      assert.same({ "curl" }, core.libraries, name)
    end
  end)

  once("each rockspec installs the fish-audio command from src/bin/fish-audio", function()
    assert.is_true(files.exists(ROOT .. "/src/bin/fish-audio"), "src/bin/fish-audio is missing")
    for _, name in ipairs(ROCKSPECS) do
      local install = rockspec(name).build.install
      assert.equals("table", type(install), name .. ": build.install is missing")
      assert.same({ ["fish-audio"] = "src/bin/fish-audio" }, install.bin, name .. ": build.install.bin")
    end
  end)

  once("a versioned rockspec differs from the scm one only in version and source tag", function()
    local scm = rockspec(SCM)
    for _, name in ipairs(versioned()) do
      local spec = rockspec(name)
      local version = spec.version:match("^(%d+%.%d+%.%d+)%-%d+$")
      assert.truthy(version, name .. ": version '" .. tostring(spec.version) .. "' is not X.Y.Z-N")
      assert.same({ url = scm.source.url, tag = "v" .. version }, spec.source, name)
      for _, field in ipairs({ "rockspec_format", "package", "description", "dependencies",
                               "external_dependencies", "build" }) do
        assert.same(scm[field], spec[field], name .. ": " .. field .. " differs from " .. SCM)
      end
      local keys = {}
      for key in pairs(spec) do keys[#keys + 1] = key end
      table.sort(keys)
      assert.same({ "build", "dependencies", "description", "external_dependencies", "package",
                    "rockspec_format", "source", "version" }, keys, name)
    end
  end)

  once("fish._VERSION, the newest versioned rockspec and the top CHANGELOG entry agree", function()
    local fish = require("fish")
    local version = tostring(fish._VERSION):match("^fish (%d+%.%d+%.%d+)$")
    assert.truthy(version, "fish._VERSION is '" .. tostring(fish._VERSION) .. "', not 'fish X.Y.Z'")

    local newest
    for _, name in ipairs(versioned()) do
      local v = rockspec(name).version:match("^(%d+%.%d+%.%d+)")
      if not newest or newer(v, newest) then newest = v end
    end
    assert.equals(version, newest, "the newest rockspec in rockspec/ is not fish._VERSION's")

    -- Keep a Changelog: an "Unreleased" section may sit above the releases.
    local changelog = assert(files.read(ROOT .. "/CHANGELOG.md"), "CHANGELOG.md is missing")
    local top
    for heading in changelog:gmatch("\n## %[([^%]]+)%]") do
      if heading ~= "Unreleased" then top = heading break end
    end
    assert.equals(version, top, "the top release in CHANGELOG.md")
  end)

  once("LICENSE is the MIT licence the rockspecs name", function()
    local license = assert(files.read(ROOT .. "/LICENSE"), "LICENSE is missing")
    assert.truthy(license:match("^MIT License\n"), "LICENSE does not start with 'MIT License'")
    assert.truthy(license:find("Permission is hereby granted, free of charge", 1, true))
    for _, name in ipairs(ROCKSPECS) do
      assert.equals("MIT", rockspec(name).description.license, name)
    end
  end)

  once("luarocks lint accepts each rockspec", function()
    for _, name in ipairs(ROCKSPECS) do
      local ok, out = run("luarocks lint " .. q(ROOT .. "/rockspec/" .. name))
      assert.is_true(ok, name .. ":\n" .. out)
    end
  end)

  -- The build itself depends on the ABI's headers: it runs in every pass.
  describe("luarocks make --lua-version=" .. LUA_VERSION .. ", loaded by " .. LUA, function()
    local dir

    setup(function() dir = files.tmpdir() end)
    teardown(function() files.remove_tree(dir) end)

    -- Load each listed module with the tree in front of the default paths,
    -- and insist that it came from the tree. Lua 5.1 has no
    -- package.searchpath, so the probe walks the path the way require does.
    local PROBE = [[
local lua_dir, lib_dir = arg[1], arg[2]
package.path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;" .. package.path
package.cpath = lib_dir .. "/?.so;" .. package.cpath
local function find(name, path)
  local file = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local candidate = template:gsub("%?", file)
    local f = io.open(candidate)
    if f then f:close() return candidate end
  end
end
for i = 3, #arg do
  local name = arg[i]
  local c = name == "fish.core"
  local file, within = find(name, c and package.cpath or package.path), c and lib_dir or lua_dir
  if not file or file:sub(1, #within + 1) ~= within .. "/" then
    error(name .. " loads from " .. tostring(file) .. ", not from " .. within, 0)
  end
  -- fish.nvim drives Neovim's own loop: outside Neovim it only has to compile.
  if name == "fish.nvim" then assert(loadfile(file)) else require(name) end
end
io.write("loaded ", require("fish")._VERSION, " with ", require("fish.core").curl_version())
]]

    for _, name in ipairs(ROCKSPECS) do
      it("installs " .. name .. " into a tree that loads every module", function()
        local work = dir .. "/" .. name
        local source, tree = work .. "/source", work .. "/tree"
        -- luarocks compiles inside the source directory (objects and
        -- fish/core.so land there): build from a copy.
        local ok, out = run(("mkdir -p %s && cp -r %s %s %s && cd %s && " ..
          "luarocks make --deps-mode=none --lua-version=%s --tree=%s rockspec/%s")
          :format(q(source), q(ROOT .. "/src"), q(ROOT .. "/rockspec"), q(source), q(source),
                  LUA_VERSION, q(tree), q(name)))
        assert.is_true(ok, out)
        assert.truthy(out:find("is now installed in", 1, true), out)

        local modules = {}
        for module in pairs(rockspec(name).build.modules) do modules[#modules + 1] = module end
        table.sort(modules)
        files.write(work .. "/probe.lua", PROBE)
        local args = { q(work .. "/probe.lua"), q(tree .. "/share/lua/" .. LUA_VERSION),
                       q(tree .. "/lib/lua/" .. LUA_VERSION) }
        for _, module in ipairs(modules) do args[#args + 1] = q(module) end
        -- Default search paths only (plus the tree), run from outside the
        -- checkout, so the project's own src/ and build/ cannot stand in.
        local loaded, msg = run(("cd %s && env %s %s %s")
          :format(q(work), UNSET_LUA_ENV, LUA, table.concat(args, " ")))
        assert.is_true(loaded, msg)
        assert.matches("^loaded fish %d+%.%d+%.%d+ with %d+%.%d+", msg)

        -- The command, through the wrapper LuaRocks writes into the tree's
        -- bin/, with no Lua paths set: the script finds the tree's modules
        -- from where it lies.
        local ran, help = run(("cd %s && env %s %s --help")
          :format(q(work), UNSET_LUA_ENV, q(tree .. "/bin/fish-audio")))
        assert.is_true(ran, help)
        assert.matches("usage: fish%-audio <command>", help)
      end)
    end
  end)
end)
