-- The API reference and the LuaLS types are one file, src/types/fish.lua.
-- These specs hold it to the live API: every public function, method and
-- field that fish has at run time is documented there (a description, a
-- ---@param for each parameter, a ---@return), nothing documented is
-- missing from fish, every error kind is listed, every option documented is
-- one the call accepts, and `make docs` turns the file into HTML that names
-- each function.
local fish = require("fish")
local errors = require("fish.errors")
local server = require("support.server")

local ROOT = server.ROOT
-- The running Lua, as busted --lua and the Makefile's LUA= name it.
local LUA = type(jit) == "table" and "luajit" or ("lua" .. _VERSION:match("5%.%d"))
local DEFINITIONS = ROOT .. "/src/types/fish.lua"

-- Public names that are not API: token:watch is how fish's HTTP layer
-- registers a request with the token it was given.
local INTERNAL = { ["token:watch"] = true }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- ---- the definition file as data ------------------------------------------------

local function field_name(raw)
  raw = raw:gsub("%?$", "")
  local quoted = raw:match('^%["(.-)"%]$')
  if quoted then return quoted end
  if raw:sub(1, 1) == "[" then return nil end -- an index signature such as [string]
  return raw
end

-- What one comment block says: its description lines, ---@param names,
-- ---@param types and how many ---@return lines.
local function read_block(lines, defs)
  local doc = { described = false, params = {}, param_types = {}, returns = 0 }
  local class, alias, kind
  for _, line in ipairs(lines) do
    -- LDoc's own tags, on plain comment lines: a class declared in such a
    -- block heads a section of the reference rather than being a table.
    kind = kind or line:match("^%-%- @(%w+)")
    local tag, rest = line:match("^%-%-%-@(%w+)%s*(.*)$")
    if not tag and line:match("^%-%-%-%s*[^%s@|]") then doc.described = true end
    if tag == "param" then
      local name, ty = rest:match("^(%S+)%s+(%S+)")
      name = (name or rest):gsub("%?$", "")
      doc.params[#doc.params + 1] = name
      doc.param_types[name] = ty or ""
    elseif tag == "return" then
      doc.returns = doc.returns + 1
    elseif tag == "class" then
      local name, parent = rest:match("^([%w_.]+)%s*:?%s*([%w_.]*)")
      class = { name = name, parent = parent ~= "" and parent or nil, fields = {}, ldoc = kind }
      defs.classes[name] = class
    elseif tag == "field" and class then
      local raw, ty = rest:match("^(%S+)%s+(%S+)")
      local name = raw and field_name(raw)
      if name then class.fields[name] = ty end
    elseif tag == "alias" then
      alias = {}
      defs.aliases[rest:match("^[%w_.]+")] = alias
    elseif alias and line:match('^%-%-%-|%s*"') then
      alias[#alias + 1] = line:match('^%-%-%-|%s*"([^"]+)"')
    end
  end
  return doc, class
end

local function split_params(list)
  local params = {}
  for name in list:gmatch("[^,%s]+") do params[#params + 1] = name end
  return params
end

-- classes: name -> { fields = { name -> type }, parent = name }
-- aliases: name -> { value, ... }
-- functions: "voices.create" -> { table, sep, name, params, doc }
-- tables: local table variable -> the class declared on it
-- assigned: "Client.convert" -> "fish.convert"
local function parse(text)
  local defs = { classes = {}, aliases = {}, functions = {}, tables = {}, assigned = {} }
  local block = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    if line:match("^%-%-") then
      block[#block + 1] = line
    else
      local doc, class = read_block(block, defs)
      local t, sep, name, params = line:match("^function ([%w_]+)([.:])([%w_]+)%(([^)]*)%)%s*end%s*$")
      local var = line:match("^local ([%w_]+) = {}%s*$")
      local target_var, target_name, source = line:match("^([%w_]+)%.([%w_]+) = ([%w_]+%.[%w_]+)%s*$")
      if t then
        defs.functions[t .. sep .. name] = {
          table = t, sep = sep, name = name, params = split_params(params), doc = doc,
        }
      elseif var and class then
        defs.tables[var] = class.name
      elseif target_var then
        defs.assigned[target_var .. "." .. target_name] = source
      end
      block = {}
    end
  end
  return defs
end

-- Everything a class offers: its fields (with its parents') and the
-- functions defined on, or assigned to, the table it is declared on.
local function members_of(defs, class_name)
  local members = {}
  local class = defs.classes[class_name]
  while class do
    for name, ty in pairs(class.fields) do
      if not members[name] then members[name] = { type = ty } end
    end
    class = class.parent and defs.classes[class.parent]
  end
  for var, bound in pairs(defs.tables) do
    if bound == class_name then
      for _, fn in pairs(defs.functions) do
        if fn.table == var then members[fn.name] = { fn = fn } end
      end
      for key, source in pairs(defs.assigned) do
        local t, name = key:match("^([%w_]+)%.([%w_]+)$")
        if t == var then members[name] = { fn = defs.functions[source], source = source } end
      end
    end
  end
  return members
end

-- ---- the live API against the definitions ---------------------------------------------

-- The keys an object offers: its own (module, client, namespaces), or the
-- methods its metatable serves (task, token: their own keys are state).
local function offered(obj, methods_only)
  local keys = {}
  if methods_only then
    local index = getmetatable(obj).__index
    for k, v in pairs(index) do
      if type(k) == "string" and type(v) == "function" and k:sub(1, 2) ~= "__" then keys[k] = v end
    end
  else
    for k, v in pairs(obj) do keys[k] = v end
  end
  return keys
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- Walk a live object and its class side by side. Problems go to `problems`;
-- each documented function found is recorded in `found` (public name -> def).
local function check_object(defs, path, obj, class_name, methods_only, problems, found)
  local members = members_of(defs, class_name)
  local sep = methods_only and ":" or "."
  local keys = offered(obj, methods_only)
  local names = {}
  for k in pairs(keys) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v, m = keys[k], members[k]
    local name = path .. (type(v) == "function" and sep or ".") .. k
    if INTERNAL[name] then -- luacheck: ignore 542
      -- not API
    elseif not m then
      problems[#problems + 1] = name .. " is not in the definition file (class " .. class_name .. ")"
    elseif type(v) == "function" then
      local fn = m.fn
      if not fn then
        problems[#problems + 1] = name .. " is a function but is declared as a field of " .. class_name
      else
        local what = fn.table .. fn.sep .. fn.name
        if fn.sep ~= sep then
          problems[#problems + 1] = ("%s is called with '%s' but defined as %s"):format(name, sep, what)
        end
        if not fn.doc.described then problems[#problems + 1] = what .. " has no description" end
        if not same_list(fn.doc.params, fn.params) then
          problems[#problems + 1] = ("%s: ---@param lines name (%s), the signature (%s)"):format(
            what, table.concat(fn.doc.params, ", "), table.concat(fn.params, ", "))
        end
        if fn.doc.returns == 0 then problems[#problems + 1] = what .. " has no ---@return" end
        found[name] = fn
      end
    elseif type(v) == "table" and not getmetatable(v) then
      local class = m.type and m.type:gsub("%?$", "")
      if not (class and defs.classes[class]) then
        problems[#problems + 1] = name .. " is a table, but its field in " .. class_name .. " names no class"
      else
        check_object(defs, name, v, class, false, problems, found)
      end
    elseif not m.type then
      problems[#problems + 1] = name .. " is a value, but " .. class_name .. " defines it as a function"
    end
  end
  for k in pairs(members) do
    if keys[k] == nil and obj[k] == nil then
      problems[#problems + 1] = path .. "." .. k .. " is documented in " .. class_name .. " but fish has no such thing"
    end
  end
end

-- ---- option tables -----------------------------------------------------------------------

local function option_fields(defs, class_name)
  local fields = {}
  for name, m in pairs(members_of(defs, class_name)) do
    if m.type then fields[#fields + 1] = name end
  end
  table.sort(fields)
  return fields
end

-- The option-table class of each parameter (named fish.*Args or fish.*Options).
local function option_params(fn)
  local list = {}
  for i, name in ipairs(fn.params) do
    local ty = fn.doc.param_types[name] or ""
    for class in ty:gmatch("[%w_.]+") do
      if class:match("Args$") or class:match("Options$") then list[#list + 1] = { index = i, class = class } end
    end
  end
  return list
end

local function call_with(fn, def, index, options)
  local args = {}
  for i = 1, #def.params do args[i] = "voice-id" end
  args[index] = options
  return pcall(fn, (table.unpack or unpack)(args, 1, #def.params)) -- luacheck: ignore 143
end

describe("the definition file (src/types/fish.lua)", function()
  local defs, client, task, token, session

  setup(function()
    defs = parse(read(DEFINITIONS))
    client = fish.new({ api_key = "k", base_url = "http://127.0.0.1:1", retries = 0 })
    task = fish.spawn(function() end)
    fish.run()
    token = fish.cancel_token()
    -- A live session to nowhere (port 1): never opens, which is all a walk needs.
    session = client.live({})
  end)

  teardown(function()
    session.cancel()
    client.close()
  end)

  local function check_all()
    local problems, found = {}, {}
    check_object(defs, "fish", fish, "fishlib", false, problems, found)
    check_object(defs, "client", client, "fish.Client", false, problems, found)
    check_object(defs, "task", task, "fish.Task", true, problems, found)
    check_object(defs, "token", token, "fish.CancelToken", true, problems, found)
    check_object(defs, "session", session, "fish.LiveSession", false, problems, found)
    return problems, found
  end

  it("documents every public function, method and field, and nothing fish lacks", function()
    local problems, found = check_all()
    assert.are.same({}, problems)
    -- The walk reached the whole API, not just its top.
    for _, name in ipairs({ "fish.new", "fish.convert", "fish.voices.wait_trained", "client.asr.transcribe",
      "client.account.package", "client.close", "task:wait", "token:cancel", "client.live", "session.finish" }) do
      assert.is_table(found[name], name)
    end
  end)

  it("documents every function it defines (a description, each ---@param, a ---@return)", function()
    local problems = {}
    for key, fn in pairs(defs.functions) do
      if not fn.doc.described then problems[#problems + 1] = key .. " has no description" end
      if not same_list(fn.doc.params, fn.params) then problems[#problems + 1] = key .. ": ---@param lines differ" end
      if fn.doc.returns == 0 then problems[#problems + 1] = key .. " has no ---@return" end
    end
    table.sort(problems)
    assert.are.same({}, problems)
  end)

  it("lists every error kind in fish.ErrorKind, and no other", function()
    assert.is_table(errors.KINDS, "require('fish.errors').KINDS")
    local documented = {}
    for _, kind in ipairs(defs.aliases["fish.ErrorKind"] or {}) do documented[#documented + 1] = kind end
    local kinds = {}
    for i, kind in ipairs(errors.KINDS) do kinds[i] = kind end
    table.sort(documented)
    table.sort(kinds)
    assert.are.same(kinds, documented)
  end)

  it("documents only options that each call accepts", function()
    local _, found = check_all()
    local problems, probed = {}, 0
    local names = {}
    for name in pairs(found) do names[#names + 1] = name end
    table.sort(names)
    -- One live function per definition, a client's where there is one: the
    -- module's would use the default client and need FISH_API_KEY.
    local live = {}
    for _, name in ipairs(names) do
      local def = found[name]
      local key = def.table .. def.sep .. def.name
      if not live[key] or name:match("^client%.") then live[key] = { name = name, def = def } end
    end
    local function lookup(name)
      local head, rest = name:match("^(%w+)%.(.*)$")
      local obj = ({ fish = fish, client = client })[head]
      for part in rest:gmatch("[^.]+") do obj = obj and obj[part] end
      return obj
    end
    for _, entry in pairs(live) do
      local fn = entry.name:match("^%w+%.") and lookup(entry.name)
      for _, param in ipairs(fn and option_params(entry.def) or {}) do
        -- The probe means something only if an unknown field is refused.
        local ok, err = call_with(fn, entry.def, param.index, { zz_not_an_option = true })
        if ok or not tostring(err):find("unknown field 'zz_not_an_option'", 1, true) then
          problems[#problems + 1] = entry.name .. " does not refuse an unknown field: " .. tostring(err)
        end
        for _, field in ipairs(option_fields(defs, param.class)) do
          local done, why = call_with(fn, entry.def, param.index, { [field] = {} })
          probed = probed + 1
          if not done and tostring(why):find("unknown field '" .. field .. "'", 1, true) then
            problems[#problems + 1] = ("%s refuses %s.%s, which the definition file documents"):format(
              entry.name, param.class, field)
          end
          -- fish.new may have made a client.
          if done and type(why) == "table" and why.close then why.close() end
        end
      end
    end
    table.sort(problems)
    assert.are.same({}, problems)
    assert.is_true(probed > 50, "only " .. probed .. " options probed")
  end)
end)

describe("make docs", function()
  local ONCE = "lua5.4"

  local function run(cmd)
    local pipe = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
    local out = pipe:read("*a")
    pipe:close()
    return out:match("exit=(%d+)%s*$") == "0", out
  end

  if LUA ~= ONCE then
    pending("make docs: the same on every ABI, so checked once, in the " .. ONCE .. " pass")
    return
  end
  if not run("command -v ldoc") then
    pending("make docs: ldoc is not installed (Debian: apt-get install lua-ldoc)")
    return
  end

  it("writes an HTML reference that names every public function, type and error kind", function()
    local pipe = io.popen("mktemp -d")
    local dir = pipe:read("*l")
    pipe:close()
    -- Not under the sanitizer's preload, nor the enclosing make's flags.
    local ok, out = run(("cd %s && env -u LD_PRELOAD -u MAKEFLAGS -u MFLAGS make -s docs LUA=%s DOCS_DIR=%s"):format(
      server.shell_quote(ROOT), ONCE, server.shell_quote(dir)))
    local html = ok and read(dir .. "/index.html") or ""
    os.execute("rm -rf " .. server.shell_quote(dir))
    assert.is_true(ok, out)

    local defs = parse(read(DEFINITIONS))
    local missing = {}
    local function want(anchor)
      -- LDoc writes item anchors as name = "x" and section anchors as name="x".
      if not (html:find('<a name = "' .. anchor .. '">', 1, true) or html:find('<a name="' .. anchor .. '">', 1, true))
      then
        missing[#missing + 1] = anchor
      end
    end
    for _, fn in pairs(defs.functions) do
      want(fn.table == "fish" and fn.name or (fn.table .. fn.sep .. fn.name))
    end
    for name, class in pairs(defs.classes) do
      local short = name:gsub("^fish%.", "")
      if class.ldoc == "type" then
        want("Class_" .. short)
      elseif class.ldoc == nil then
        want(short)
      end
    end
    for name in pairs(defs.aliases) do want((name:gsub("^fish%.", ""))) end
    for _, kind in ipairs(defs.aliases["fish.ErrorKind"]) do
      if not html:find('class="parameter">' .. kind .. "</span>", 1, true) then missing[#missing + 1] = kind end
    end
    table.sort(missing)
    assert.are.same({}, missing)
    -- LuaLS's own tags never reach the reader.
    assert.is_nil(html:find("@class", 1, true))
    assert.is_nil(html:find("@meta", 1, true))
  end)
end)
