-- The TTS/ASR request body is never copied whole (issue 10): tts.encode and
-- asr.encode return the msgpack writer, and core.request sends it as it
-- stands, fish.file references read from disk and large strings from
-- themselves while sending. The bytes on
-- the wire are those of the string body they replace, retries resend them,
-- and a file that changes size fails the call as io / file_changed.
local fish = require("fish")
local core = require("fish.core")
local http = require("fish.http")
local tts = require("fish.tts")
local asr = require("fish.asr")
local server = require("support.server")
local files = require("support.files")
local harness = require("support.core_harness")

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"

local function result_of(w)
  local s = w:result()
  w:close()
  return s
end

describe("request bodies", function()
  local srv, limits, client, dir

  setup(function()
    srv = server.start()
    limits = harness.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 1 })
    dir = files.tmpdir()
  end)

  teardown(function()
    client.close()
    srv:stop()
    limits.stop()
    files.remove_tree(dir)
  end)

  local real_backoff = http._backoff
  before_each(function()
    srv:reset()
    http._backoff = function() return 0.01 end
  end)
  after_each(function() http._backoff = real_backoff end)

  describe("w:bin_file_ref", function()
    it("writes what w:bin_file writes, reading nothing until asked", function()
      for _, size in ipairs({ 0, 1, 255, 256, 65535, 65536, 300000 }) do
        local path = dir .. "/ref.bin"
        files.write(path, ("\7"):rep(size))
        local a, b = core.mp_writer(), core.mp_writer()
        a:map(1):str("audio")
        b:map(1):str("audio")
        assert.is_true(a:bin_file(path, size))
        assert.is_true(b:bin_file_ref(path, size))
        a:str("tail")
        b:str("tail")
        assert.equal(a:size(), b:size())
        assert.equal(result_of(a), result_of(b), "size " .. size)
      end
    end)

    it("refuses what w:bin_file refuses, leaving the writer as it was", function()
      local path = dir .. "/short.bin"
      files.write(path, "abc")
      local w = core.mp_writer():int(1)
      local ok, msg = w:bin_file_ref(path, 4)
      assert.is_nil(ok)
      assert.equal(path .. " is 3 bytes, expected 4", msg)
      ok, msg = w:bin_file_ref(dir .. "/missing.bin")
      assert.is_nil(ok)
      assert.matches("cannot open '.*missing.bin': No such file", msg)
      ok, msg = w:bin_file_ref(dir)
      assert.is_nil(ok)
      assert.matches("not a regular file", msg)
      assert.equal("\1", result_of(w))
    end)

    it("is frozen once a request sends it, and outlives the writer's close", function()
      local path = dir .. "/frozen.bin"
      files.write(path, ("f"):rep(1000))
      local w = core.mp_writer():map(1):str("a")
      assert.is_true(w:bin_file_ref(path))
      local expected = w:result()
      local r = core.request({ url = limits.url .. "/upload", method = "POST", body = w })
      assert.has_error(function() w:str("more") end, "msgpack: the writer's bytes are being sent by a request")
      w:close()
      collectgarbage()
      harness.run(r)
      assert.is_nil(r:result())
      local e = harness.find(limits.log(), "upload")
      assert.equal(#expected, e.declared)
      assert.equal(#expected, e.received)
      r:close()
      assert.has_error(function() core.request({ url = limits.url .. "/upload", method = "POST", body = w }) end)
    end)

    it("is sent by custom methods too, and refused on GET", function()
      local w = core.mp_writer():str(("p"):rep(5000))
      local r = harness.run(core.request({ url = limits.url .. "/upload", method = "PATCH", body = w }))
      assert.is_nil(r:result())
      assert.equal(5003, harness.find(limits.log(), "upload").received)
      r:close()
      assert.has_error(function() core.request({ url = limits.url .. "/upload", body = w }) end,
        "a GET request cannot carry a body")
      w:close()
    end)

    it("is not frozen by a request that failed to be made", function()
      local w = core.mp_writer():map(1):str("a")
      assert.has_error(function() core.request({ url = limits.url .. "/upload", body = w }) end,
        "a GET request cannot carry a body")
      assert.has_error(function()
        core.request({ url = limits.url .. "/upload", method = "POST", body = w, sink = "file" })
      end, "a file sink needs 'path'")
      w:str("b") -- still writable
      local r = harness.run(core.request({ url = limits.url .. "/upload", method = "POST", body = w }))
      assert.is_nil(r:result())
      assert.equal(#"\129\161a\161b", harness.find(limits.log(), "upload").received)
      r:close()
      w:close()
    end)

    it("refuses a writer that an options table's __index wrote to while the request was made", function()
      local w = core.mp_writer():str("x")
      local options = setmetatable({ url = limits.url .. "/upload", method = "POST", body = w }, {
        __index = function(_, key)
          if key == "sink" then w:str(("y"):rep(100000)) end -- moves the buffer libcurl would read
        end,
      })
      assert.has_error(function() core.request(options) end,
        "option 'body': the writer changed while the request was made")
      w:close()
    end)
  end)

  describe("w:bin with a large string", function()
    -- The same bytes as a copying encode (w:value's __fish_bin), on both
    -- sides of the size where w:bin stops copying.
    it("writes what a copy writes, beside files and small strings", function()
      local path = dir .. "/mixed.bin"
      files.write(path, ("\9"):rep(70000))
      for _, size in ipairs({ 0, 65535, 65536, 65537, 300000 }) do
        local bytes = ("%d"):format(size):rep(size):sub(1, size)
        local a, b = core.mp_writer(), core.mp_writer()
        for _, w in ipairs({ a, b }) do w:map(3):str("audio") end
        a:value(setmetatable({ bytes }, { __fish_bin = true }))
        b:bin(bytes)
        for _, w in ipairs({ a, b }) do w:str("file") end
        assert.is_true(a:bin_file(path))
        assert.is_true(b:bin_file_ref(path))
        for _, w in ipairs({ a, b }) do w:str("tail"):bin(bytes) end
        assert.equal(a:size(), b:size())
        assert.is_true(result_of(a) == result_of(b), "size " .. size)
      end
    end)

    -- The writer refers to the string instead of copying it: nobody but the
    -- request holds it once the caller, the arguments and the writer have
    -- let go. Freed memory reused by other strings would show on the wire
    -- (and under ASan, as a use after free).
    it("is held by the request that sends it, after the writer is closed and collected", function()
      local text = ("held by the request "):rep(20000)
      local w = tts.encode({ text = "x", format = "wav", references = { { audio = text, text = "t" } } })
      local expected = w:result()
      local r = core.request({ url = srv.url .. "/v1/tts", method = "POST", body = w,
        headers = { "Authorization: Bearer " .. srv.api_key, "Content-Type: application/msgpack" } })
      text = nil -- luacheck: ignore 311
      w:close()
      w = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      local churn = {}
      for i = 1, 20 do churn[i] = ("%d"):format(i):rep(400000) end
      harness.run(r)
      assert.is_nil(r:result())
      assert.equal(200, r:status())
      r:close()
      local sent = server.body(srv:last_request("/v1/tts"))
      assert.equal(#expected, #sent)
      assert.is_true(sent == expected)
      assert.equal(20, #churn)
    end)
  end)

  describe("on the wire", function()
    local function args_with(audio)
      return { text = "Same bytes", format = "wav", references = { { audio = audio, text = "a reference" } } }
    end

    it("is the same for a fish.file reference and the same bytes inline", function()
      local bytes = files.read(REFERENCE_WAV)
      assert(client.convert(args_with(fish.file(REFERENCE_WAV))))
      local from_file = server.body(srv:last_request("/v1/tts"))
      assert(client.convert(args_with(bytes)))
      local inline = server.body(srv:last_request("/v1/tts"))
      assert.equal(server.hex(inline), server.hex(from_file))
      assert.equal(from_file, result_of(tts.encode(args_with(fish.file(REFERENCE_WAV)))))
      assert.equal(from_file, result_of(tts.encode(args_with(bytes))))
    end)

    it("is the same for ASR from a file and from bytes", function()
      local bytes = files.read(REFERENCE_WAV)
      local a = result_of(asr.encode({ audio = fish.file(REFERENCE_WAV), language = "en" }))
      local b = result_of(asr.encode({ audio = bytes, language = "en" }))
      assert.equal(a, b)
      assert(client.asr.transcribe({ audio = fish.file(REFERENCE_WAV), language = "en" }))
      assert.equal(a, server.body(srv:last_request("/v1/asr")))
    end)

    it("is resent byte for byte by a retry", function()
      srv:fault("/v1/tts", { status = 503, headers = { ["Retry-After"] = "0" } })
      local args = args_with(fish.file(REFERENCE_WAV))
      local audio, _, err = client.convert(args)
      assert.is_nil(err)
      assert.truthy(audio)
      local sent = srv:requests_for("POST", "/v1/tts")
      assert.equal(2, #sent)
      local first, second = server.body(sent[1]), server.body(sent[2])
      assert.equal(#first, #second)
      assert.is_true(first == second)
      assert.is_true(first == result_of(tts.encode(args)))
    end)
  end)

  describe("a file that changes size", function()
    local path
    local function reference(content)
      path = dir .. "/changing.wav"
      files.write(path, content)
      return fish.file(path)
    end

    it("between encode and send fails the call as io / file_changed", function()
      local audio = reference(files.read(REFERENCE_WAV))
      srv:fault("/v1/tts", { status = 503 }) -- no Retry-After: the back-off below runs
      http._backoff = function()
        files.write(path, files.read(REFERENCE_WAV) .. "grown")
        return 0.01
      end
      local got, _, err = client.convert({ text = "x", references = { { audio = audio, text = "t" } } })
      assert.is_nil(got)
      assert.equal("io", err.kind)
      assert.equal("file_changed", err.cause)
      assert.matches("changing.wav changed size during the upload", err.message, 1, true)
      assert.equal(1, #srv:requests_for("POST", "/v1/tts")) -- the second never reached the handler
    end)

    it("during the send (grows, shrinks) fails the request as file_changed, never sending more", function()
      for _, content in ipairs({ ("y"):rep(400000), ("y"):rep(1000) }) do
        local w = tts.encode({ text = "x", references = { { audio = reference(("x"):rep(300000)), text = "t" } } })
        local r = core.request({ url = limits.url .. "/upload", method = "POST", body = w })
        files.write(path, content)
        harness.run(r)
        local kind, msg = r:result()
        assert.equal("file_changed", kind)
        assert.equal(path .. " changed size during the upload", msg)
        local e = harness.find(limits.log(), "upload")
        assert.is_true(e.received < e.declared, "received " .. e.received .. " of " .. e.declared)
        r:close()
        w:close()
      end
    end)

    it("or is removed, fails as io / read before any byte of the body", function()
      local w = tts.encode({ text = "x", references = { { audio = reference(("x"):rep(3000)), text = "t" } } })
      os.remove(path)
      local r = harness.run(core.request({ url = limits.url .. "/upload", method = "POST", body = w }))
      local kind, msg = r:result()
      assert.equal("read", kind)
      assert.matches("No such file", msg)
      local e = harness.find(limits.log(), "upload")
      assert.equal(0, e and e.received or 0)
      r:close()
      w:close()
    end)
  end)

  describe("memory", function()
    -- Peak RSS (VmHWM) growth, in KB, of a child that sends the reference
    -- `audio` (a Lua expression, after `setup`), measured after a warm-up
    -- call so that loading fish and libcurl is not counted; nil when
    -- `setup` printed NO_RESET. A body copied whole would add 30 MB at least.
    local function peak_growth_kb(setup, audio)
      local out = harness.child(dir, ([[
        local fish = require("fish")
        local function hwm()
          for line in io.lines("/proc/self/status") do
            local kb = line:match("^VmHWM:%%s+(%%d+)")
            if kb then return tonumber(kb) end
          end
        end
        local client = fish.new({ api_key = %q, base_url = %q, retries = 0 })
        assert(client.convert({ text = "warm up", format = "pcm" }))
        %s
        collectgarbage()
        local before = hwm()
        local got, err = client.convert({ text = "big", format = "pcm",
          references = { { audio = %s, text = "t" } } })
        assert(got, tostring(err))
        print("GROWTH_KB " .. (hwm() - before))
        client.close()
      ]]):format(srv.api_key, srv.url, setup, audio))
      if out:match("NO_RESET") then return nil end
      local growth = tonumber(out:match("GROWTH_KB (%d+)"))
      assert(growth, out)
      return growth
    end

    it("a 30 MB fish.file reference grows the peak RSS by well under 30 MB", function()
      if not files.read("/proc/self/status") then return pending("no /proc/self/status") end
      local big = dir .. "/big.wav"
      local fh = assert(io.open(big, "wb"))
      local chunk = ("\1\2\3\4"):rep(256 * 1024)
      for _ = 1, 30 do fh:write(chunk) end
      fh:close()
      local growth = peak_growth_kb("", ("fish.file(%q)"):format(big))
      print(("\n30 MB fish.file reference: peak RSS grew by %.1f MB"):format(growth / 1024))
      assert.is_true(growth < 8 * 1024, "peak RSS grew by " .. growth .. " KB")
      os.remove(big)
      srv:reset() -- drop the captured 30 MB body
    end)

    -- The same for a 30 MB Lua string: it is sent from the string itself,
    -- so a copy of it anywhere (writer, request) would add 30 MB.
    it("a 30 MB Lua string reference grows the peak RSS by well under 30 MB", function()
      if not files.read("/proc/self/status") then return pending("no /proc/self/status") end
      -- string.rep's own buffer made the peak 60 MB already: start the peak
      -- again after it (writing 5 to clear_refs, Linux 4.0+).
      local growth = peak_growth_kb([[
        local audio = ("\1\2\3\4"):rep(30 * 256 * 1024)
        collectgarbage()
        local refs = io.open("/proc/self/clear_refs", "w")
        if not (refs and refs:write("5") and refs:close()) then print("NO_RESET") return end]], "audio")
      if not growth then return pending("/proc/self/clear_refs cannot reset the peak") end
      print(("\n30 MB Lua string reference: peak RSS grew by %.1f MB"):format(growth / 1024))
      assert.is_true(growth < 8 * 1024, "peak RSS grew by " .. growth .. " KB")
      srv:reset()
    end)
  end)
end)
