-- Out of memory inside the C core: every Lua allocation the core makes may
-- raise "not enough memory", and whatever it had done by then must stay
-- consistent (no handle left in libcurl's multi that no object owns, no
-- freed entry still listed). spec/support/oom_host.c is a Lua 5.4 host
-- whose allocator fails on demand; spec/support/oom_case.lua makes the K-th
-- allocation of each case fail, for K = 1..MAX_K, and carries on. Under
-- `make test-asan` (the core built with the sanitizers) a use after free
-- fails the run; in every 5.4 pass a crash or a hang does.
local abi = require("support.abi")
local files = require("support.files")
local harness = require("support.core_harness")

local q = files.quote
local ROOT = require("support.server").ROOT
local HOST = ROOT .. "/build/oom/oom_host"
local CASES = { "add", "add_live", "watch", "request", "collect", "writer" }
local MAX_K = 10

local function describe_5_4(name, fn)
  if abi.version ~= "5.4" or type(jit) == "table" then
    pending(name .. ": the host is built against Lua 5.4; checked in that pass")
    return
  end
  describe(name, fn)
end

describe_5_4("out of memory in the C core", function()
  local srv

  setup(function()
    -- Outside the sanitizer preload (make test-asan): the compiler must not get it.
    local ok, out = files.run("mkdir -p " .. q(ROOT .. "/build/oom") .. " && cc -O1 -g -std=c99 "
      .. q(ROOT .. "/spec/support/oom_host.c") .. " -o " .. q(HOST)
      .. " $(pkg-config --cflags --libs lua5.4 2>/dev/null || echo -I/usr/include/lua5.4 -llua5.4)")
    assert(ok, "building oom_host: " .. out)
    srv = harness.start()
  end)

  teardown(function()
    if srv then srv.stop() end
  end)

  for _, case in ipairs(CASES) do
    it("leaves " .. case .. " consistent whichever allocation fails", function()
      for k = 1, MAX_K do
        -- The child inherits LD_PRELOAD and ASAN_OPTIONS under test-asan,
        -- and loads the build this pass tests (LUA_CPATH).
        local cmd = ("timeout 30 %s %s %s %d %s 2>&1; echo \"exit=$?\""):format(q(HOST),
          q(ROOT .. "/spec/support/oom_case.lua"), case, k, q(srv.url))
        local out = files.capture(cmd)
        local context = ("%s, allocation %d: %s"):format(case, k, out)
        assert.is_nil(out:find("AddressSanitizer", 1, true), context)
        assert.is_nil(out:find("runtime error", 1, true), context)
        assert.matches("survived\nexit=0", out, nil, nil, context)
      end
    end)
  end
end)
