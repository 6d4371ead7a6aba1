-- The error convention: every public call that fails on the network or at
-- the API returns nil, message, err. `message` is a one-line string that
-- names the call; `err` is the object. Lua habits ("x" .. message,
-- io.stderr:write(message), assert(...)) then work on every ABI.
local fish = require("fish")
local errors = require("fish.errors")
local server = require("support.server")
local files = require("support.files")
local abi = require("support.abi")

-- Run a Lua script in a child interpreter of this ABI, with fish on its
-- paths; returns everything it printed (stdout and stderr) and its exit code.
local function run_child(script, env)
  local path = os.tmpname()
  files.write(path, script)
  local cmd = ("%s %s %s 2>&1; echo \"exit=$?\""):format(env or "", abi.interpreter, files.quote(path))
  local out = files.capture(cmd)
  os.remove(path)
  return out:gsub("exit=(%d+)%s*$", ""), tonumber(out:match("exit=(%d+)%s*$"))
end

describe("the error convention", function()
  local srv, client, dead

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    -- Nothing listens on port 1: every call fails to connect.
    dead = fish.new({ api_key = "k", base_url = "http://127.0.0.1:1", retries = 0 })
  end)

  teardown(function()
    client.close()
    dead.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  it("returns nil, a string message, and the error object", function()
    srv:fault("/v1/tts", { status = 402, body = { status = 402, message = "Insufficient API credit" } })
    local audio, message, err = client.convert({ text = "Hi", format = "pcm" })
    assert.is_nil(audio)
    assert.is_string(message)
    assert.equal("fish.convert: HTTP 402 payment_required: Insufficient API credit", message)
    assert.is_true(fish.is_error(err))
    assert.equal("http", err.kind)
    assert.equal(402, err.status)
    assert.equal("Insufficient API credit", err.message)
    assert.equal("fish.convert", err.call)
    assert.equal(message, tostring(err))
    -- What Lua habits do with a failure's second value.
    assert.equal("failed: " .. message, "failed: " .. message)
    local out = os.tmpname()
    local f = assert(io.open(out, "w"))
    assert.truthy(f:write(message))
    f:close()
    assert.equal(message, files.read(out))
    os.remove(out)
    assert.equal(message, ("%s"):format(message))
  end)

  it("names the failing call, whichever public call it is", function()
    local sample = fish.file(server.ROOT .. "/examples/reference.wav")
    local calls = {
      { "fish.convert", function(c) return c.convert({ text = "x" }) end },
      { "fish.voices.create", function(c) return c.voices.create({ title = "t", voices = { sample } }) end },
      { "fish.voices.get", function(c) return c.voices.get("id") end },
      { "fish.voices.update", function(c) return c.voices.update("id", { title = "t" }) end },
      { "fish.voices.delete", function(c) return c.voices.delete("id") end },
      { "fish.voices.list", function(c) return c.voices.list() end },
      { "fish.voices.wait_trained", function(c) return c.voices.wait_trained("id", { timeout = 1 }) end },
      { "fish.asr.transcribe", function(c) return c.asr.transcribe({ audio = sample }) end },
      { "fish.account.credits", function(c) return c.account.credits() end },
      { "fish.account.package", function(c) return c.account.package() end },
    }
    for _, call in ipairs(calls) do
      local result, message, err = call[2](dead)
      assert.is_nil(result, call[1])
      assert.is_string(message, call[1])
      assert.equal(call[1] .. ": network (connect): ", message:sub(1, #call[1] + 21), message)
      assert.equal("network", err.kind)
      assert.equal(call[1], err.call)
      assert.equal(message, tostring(err))
    end
  end)

  it("gives the module-level calls the same three values", function()
    local saved_key, saved_url = os.getenv("FISH_API_KEY"), os.getenv("FISH_BASE_URL")
    assert(saved_key == nil and saved_url == nil, "the suite must run without FISH_API_KEY")
    local out = run_child(([[
      package.path = %q
      package.cpath = %q
      local fish = require("fish")
      local audio, message, err = fish.convert{ text = "Hi", retries = 0 }
      print(audio, type(message), message == tostring(err), err.kind, err.call)
    ]]):format(package.path, package.cpath),
      "FISH_API_KEY=k FISH_BASE_URL=http://127.0.0.1:1")
    assert.matches("nil\tstring\ttrue\tnetwork\tfish%.convert", out)
  end)

  it("raises a plain string error with a traceback through assert, on this ABI", function()
    srv:fault("/v1/tts", { status = 402, body = { status = 402, message = "Insufficient API credit" } })
    local out, code = run_child(([[
      package.path = %q
      package.cpath = %q
      local fish = require("fish")
      local c = fish.new({ api_key = %q, base_url = %q, retries = 0 })
      assert(c.convert{ text = "Hi", format = "pcm" })
    ]]):format(package.path, package.cpath, srv.api_key, srv.url), "")
    assert.is_true(code ~= 0, out)
    assert.matches("fish%.convert: HTTP 402 payment_required: Insufficient API credit", out)
    assert.matches("stack traceback", out)
    assert.is_nil(out:find("error object is not a string", 1, true), out)
  end)

  it("keeps each line single and free of the key, with or without a status", function()
    local err = errors.new({ kind = "network", cause = "connect", message = "a\r\nb" })
    assert.equal("fish: network (connect): a b", tostring(err))
    err = errors.new({ kind = "timeout", timeout = "idle", message = "no data for 1s" })
    err.call = "fish.voices.get"
    assert.equal("fish.voices.get: timeout: no data for 1s", tostring(err))
    err = errors.new({ kind = "invalid_response", status = 200, message = "the server answered 200 with an empty body" })
    assert.equal("fish: invalid_response: the server answered 200 with an empty body", tostring(err))
    err = errors.from_http(418, "")
    assert.equal("fish: HTTP 418", tostring(err))
    local _, message, same = errors.fail(errors.from_http(503, "busy"), "fish.convert")
    assert.equal("fish.convert: HTTP 503 service_unavailable: busy", message)
    assert.equal("fish.convert", same.call)
  end)

  it("lists every kind an error can have", function()
    local kinds = {}
    for _, kind in ipairs(errors.KINDS) do kinds[kind] = true end
    for _, status in ipairs({ 400, 401, 402, 403, 404, 422, 429, 500, 503 }) do
      assert.is_true(kinds[errors.kind_for_status(status)], "status " .. status)
    end
    for _, kind in ipairs({ "network", "timeout", "canceled", "failed", "invalid_response", "io" }) do
      assert.is_true(kinds[kind], kind)
    end
  end)

  it("makes voices.each raise the error object of a failed page, naming the call", function()
    local ok, err = pcall(function()
      for _ in dead.voices.each() do end
    end)
    assert.is_false(ok)
    assert.is_true(fish.is_error(err))
    assert.equal("network", err.kind)
    assert.equal("fish.voices.each", err.call)
    assert.matches("^fish%.voices%.each: network", tostring(err))
  end)

  it("makes task:wait on a canceled task return nil, message, err", function()
    srv:config({ tts_delay = 5 })
    local task = fish.spawn(function() return client.convert({ text = "slow", format = "pcm" }) end)
    fish.step(0)
    assert.is_true(task:cancel())
    fish.run()
    local a, b = task:wait()
    -- The task ran to its end: what convert returned is its result.
    assert.is_nil(a)
    assert.matches("^fish%.convert: canceled", b)
    local never = fish.spawn(function() fish.sleep(10) end)
    never:cancel()
    fish.run()
    local result, message, err = never:wait()
    assert.is_nil(result)
    assert.equal("task:wait: canceled: the task was canceled", message)
    assert.equal("canceled", err.kind)
  end)

  it("returns whole numbers as integers where Lua has them", function()
    local audio = assert(client.convert({ text = "integers", format = "pcm" }))
    local path = os.tmpname()
    local written, size = assert(client.convert({ text = "integers", format = "pcm", out = path }))
    assert.equal(path, written)
    assert.equal(#audio, size)
    local count = assert(client.convert({ text = "integers", format = "pcm", on_chunk = function() end }))
    os.remove(path)
    if math.type then
      assert.equal("integer", math.type(size))
      assert.equal("integer", math.type(count))
      assert.equal(#audio .. "", tostring(size))
    end
  end)
end)

describe("fish.pcall", function()
  local srv, client

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  it("lets calls inside it suspend their task, so tasks still overlap", function()
    srv:reset()
    srv:config({ tts_delay = 0.5 })
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = fish.spawn(function()
        return fish.pcall(client.convert, { text = "overlap " .. i, format = "pcm" })
      end)
    end
    fish.run()
    for i = 1, 3 do
      local ok, audio = tasks[i]:wait()
      assert.is_true(ok)
      assert.is_true(#audio > 0)
    end
    -- Had fish.pcall blocked instead of yielding, the server would have
    -- seen one conversion at a time.
    assert.is_true(srv:stats().max_concurrent_tts >= 2)
  end)

  it("catches an error raised after a yield, and passes every result through", function()
    local task = fish.spawn(function()
      local ok, why = fish.pcall(function()
        fish.sleep(0.01)
        error("after the yield", 0)
      end)
      local ok2, a, b, c = fish.pcall(function(x) fish.sleep(0.01) return x, nil, 3 end, 1)
      return ok, why, ok2, a, b, c
    end)
    fish.run()
    local ok, why, ok2, a, b, c = task:wait()
    assert.is_false(ok)
    assert.equal("after the yield", why)
    assert.is_true(ok2)
    assert.equal(1, a)
    assert.is_nil(b)
    assert.equal(3, c)
  end)

  it("catches a bad argument to a fish call", function()
    local ok, why = fish.pcall(client.convert, { text = 5 })
    assert.is_false(ok)
    assert.matches("field 'text' must be a string", why)
  end)
end)

describe("fish._VERSION", function()
  it("follows the name-and-version convention of socket._VERSION", function()
    assert.matches("^fish %d+%.%d+%.%d+$", fish._VERSION)
    assert.equal("fish " .. fish.VERSION, fish._VERSION)
  end)
end)

describe("JSON", function()
  local function child_json(prelude)
    return run_child(([[
      package.path = %q
      package.cpath = %q
      %s
      local ok, json = pcall(require, "fish.json")
      if not ok then print("raised", json) return end
      local v = json.decode('{"a":1,"b":null,"c":[1,null,3]}')
      print(json.name, v.a == 1, v.b, #v.c, json.decode("not json"), json.encode({ 1, 2 }))
    ]]):format(package.path, package.cpath, prelude), "")
  end

  it("comes from cjson when it is installed", function()
    local out = child_json("")
    assert.matches("^cjson\ttrue\tnil\t3\tnil\t%[1,2%]", out)
  end)

  it("falls back to vim.json when cjson is missing, and drops vim.NIL fields", function()
    -- A stand-in for Neovim's vim table: vim.json is cjson built into
    -- Neovim, with vim.NIL as its null.
    local out = child_json([[
      local real = require("cjson")
      local NIL = setmetatable({}, { __name = "vim.NIL" })
      local function swap(v)
        if v == real.null then return NIL end
        if type(v) == "table" then for k, x in pairs(v) do v[k] = swap(x) end end
        return v
      end
      vim = { NIL = NIL, json = {
        decode = function(s) return swap(real.decode(s)) end,
        encode = function(v) return real.encode(v) end,
      } }
      package.loaded["cjson"], package.loaded["cjson.safe"] = nil, nil
      package.preload["cjson.safe"] = function() error("module 'cjson.safe' not found") end
    ]])
    assert.matches("^vim%.json\ttrue\tnil\t3\tnil\t%[1,2%]", out)
  end)

  it("says what to install when neither is there", function()
    local out = child_json([[
      package.preload["cjson.safe"] = function() error("module 'cjson.safe' not found") end
    ]])
    assert.matches("^raised\tfish needs a JSON library: install lua%-cjson", out)
  end)

  it("works inside real Neovim without lua-cjson", function()
    if os.execute("command -v nvim >/dev/null 2>&1") ~= true and os.execute("command -v nvim >/dev/null 2>&1") ~= 0 then
      return pending("nvim is not installed")
    end
    if type(jit) ~= "table" then return pending("Neovim is LuaJIT: checked in the LuaJIT pass") end
    local script, result = os.tmpname(), os.tmpname()
    files.write(script, ([[
      package.path = %q .. ";" .. package.path
      package.preload["cjson.safe"] = function() error("module 'cjson.safe' not found") end
      local json = require("fish.json")
      local v = json.decode('{"a":1,"b":null}')
      local f = io.open(%q, "w")
      f:write(json.name, " ", tostring(v.a == 1), " ", tostring(v.b), "\n")
      f:close()
    ]]):format(server.ROOT .. "/src/?.lua;" .. server.ROOT .. "/src/?/init.lua", result))
    files.capture("env -u LD_PRELOAD HOME=/tmp timeout 30 nvim --headless -u NONE -i NONE -c "
      .. files.quote("luafile " .. script) .. " -c 'qa!' 2>&1")
    local out = files.read(result) or ""
    os.remove(script)
    os.remove(result)
    assert.matches("vim%.json true nil", out)
  end)
end)
