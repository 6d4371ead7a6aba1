-- The msgpack half of fish.core: exact bytes out, safe decoding in.
-- Runs on Lua 5.4 and LuaJIT: busted --lua=lua5.4 / busted --lua=luajit
local core = require("fish.core")

local has_int_subtype = math.type ~= nil -- 5.3+: integers and floats differ

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local function bytes_of(fn)
  local w = core.mp_writer()
  fn(w)
  local out = w:result()
  w:close()
  return out
end

local function enc(v)
  return hex(bytes_of(function(w) w:value(v) end))
end

local function bin(s) return setmetatable({ s }, { __fish_bin = true }) end

-- Runs fn and returns the error message it raised; fails when it does not.
local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- fish-api.md Appendix A.
local GOLDEN = {
  hello = "8fa474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e63657390a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
  ref_id_speed = "de0011a474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e63657390ac7265666572656e63655f6964a3616263a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a770726f736f647982a57370656564cb3ff8000000000000a6766f6c756d65cb0000000000000000a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
  references = "8fa474657874a548656c6c6fac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e6365739182a5617564696fc403010203a474657874a3726566a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
  ws_start = "82a56576656e74a57374617274a772657175657374de0012a474657874a0ac6368756e6b5f6c656e677468ccc8a6666f726d6174a36d7033ab73616d706c655f72617465c0ab6d70335f62697472617465cc80ac6f7075735f6269747261746520aa7265666572656e63657390ac7265666572656e63655f6964c0a96e6f726d616c697a65c3a76c6174656e6379a862616c616e636564a770726f736f6479c0a5746f705f70cb3fe6666666666666ab74656d7065726174757265cb3fe6666666666666ae6d61785f6e65775f746f6b656e73cd0400b272657065746974696f6e5f70656e616c7479cb3ff3333333333333b06d696e5f6368756e6b5f6c656e67746832bc636f6e646974696f6e5f6f6e5f70726576696f75735f6368756e6b73c3b46561726c795f73746f705f7468726573686f6c64cb3ff0000000000000",
  asr_en = "83a5617564696fc4020102b169676e6f72655f74696d657374616d7073c2a86c616e6775616765a2656e",
}

-- The Python SDK's TTS body, written field by field in its key order, the
-- way the Lua schema layer drives the writer. `refs` is a list of
-- {audio, text}; reference_id and speed are optional.
local function py_tts(w, opts)
  local n = 15 + (opts.reference_id and 1 or 0) + (opts.speed and 1 or 0)
  w:map(n)
  w:str("text"):str(opts.text)
  w:str("chunk_length"):int(200)
  w:str("format"):str("mp3")
  w:str("mp3_bitrate"):int(128)
  w:str("opus_bitrate"):int(32)
  w:str("references"):array(#opts.refs)
  for _, r in ipairs(opts.refs) do
    w:map(2):str("audio"):bin(r[1]):str("text"):str(r[2])
  end
  if opts.reference_id then w:str("reference_id"):str(opts.reference_id) end
  w:str("normalize"):bool(true)
  w:str("latency"):str("balanced")
  if opts.speed then
    w:str("prosody"):map(2):str("speed"):float(opts.speed):str("volume"):float(0)
  end
  w:str("top_p"):float(0.7)
  w:str("temperature"):float(0.7)
  w:str("max_new_tokens"):int(1024)
  w:str("repetition_penalty"):float(1.2)
  w:str("min_chunk_length"):int(50)
  w:str("condition_on_previous_chunks"):bool(true)
  w:str("early_stop_threshold"):float(1)
end

describe("msgpack writer", function()
  describe("int", function()
    local cases = {
      { 0, "00" }, { 1, "01" }, { 127, "7f" },
      { 128, "cc80" }, { 255, "ccff" },
      { 256, "cd0100" }, { 65535, "cdffff" },
      { 65536, "ce00010000" }, { 4294967295, "ceffffffff" },
      { 4294967296, "cf0000000100000000" },
      { -1, "ff" }, { -32, "e0" },
      { -33, "d0df" }, { -128, "d080" },
      { -129, "d1ff7f" }, { -32768, "d18000" },
      { -32769, "d2ffff7fff" }, { -2147483648, "d280000000" },
      { -2147483649, "d3ffffffff7fffffff" },
    }
    -- Integer literals, so they are integers for w:value on 5.4 too.
    for _, c in ipairs(cases) do
      it(string.format("writes %.0f as %s", c[1], c[2]), function()
        assert.equal(c[2], hex(bytes_of(function(w) w:int(c[1]) end)))
        -- w:value picks the same shortest form for an integer.
        assert.equal(c[2], enc(c[1]))
      end)
    end

    if has_int_subtype then
      it("covers the whole int64 range on Lua 5.4", function()
        assert.equal("cf7fffffffffffffff", hex(bytes_of(function(w) w:int(math.maxinteger) end)))
        assert.equal("d38000000000000000", hex(bytes_of(function(w) w:int(math.mininteger) end)))
      end)
    end

    it("accepts a whole float and rejects a fractional one", function()
      assert.equal("03", hex(bytes_of(function(w) w:int(3.0) end)))
      local w = core.mp_writer()
      assert.matches("no integer representation", error_of(function() w:int(1.5) end))
      assert.matches("no integer representation", error_of(function() w:int(2 ^ 63) end))
      assert.matches("no integer representation", error_of(function() w:int(0 / 0) end))
      assert.equal(0, w:size())
    end)
  end)

  describe("float", function()
    it("is always float64, even when whole", function()
      assert.equal("cb3ff0000000000000", hex(bytes_of(function(w) w:float(1) end)))
      assert.equal("cb0000000000000000", hex(bytes_of(function(w) w:float(0) end)))
      assert.equal("cb3fe6666666666666", hex(bytes_of(function(w) w:float(0.7) end)))
      assert.equal("cbbff8000000000000", hex(bytes_of(function(w) w:float(-1.5) end)))
      assert.equal("cb7ff0000000000000", hex(bytes_of(function(w) w:float(math.huge) end)))
    end)

    it("is what w:value writes for a non-integer", function()
      assert.equal("cb3ff8000000000000", enc(1.5))
      if has_int_subtype then assert.equal("cb3ff0000000000000", enc(1.0)) end
    end)
  end)

  describe("str and bin", function()
    local function check(method, len, header)
      local payload = string.rep("x", len)
      local out = bytes_of(function(w) w[method](w, payload) end)
      assert.equal(header, hex(out:sub(1, #header / 2)))
      assert.equal(#header / 2 + len, #out)
      assert.equal(payload, out:sub(#header / 2 + 1))
    end

    it("uses fixstr, str8, str16, str32 at the boundaries", function()
      check("str", 0, "a0")
      check("str", 31, "bf")
      check("str", 32, "d920")
      check("str", 255, "d9ff")
      check("str", 256, "da0100")
      check("str", 65535, "daffff")
      check("str", 65536, "db00010000")
    end)

    it("uses bin8, bin16, bin32 at the boundaries", function()
      check("bin", 0, "c400")
      check("bin", 31, "c41f")
      check("bin", 32, "c420")
      check("bin", 255, "c4ff")
      check("bin", 256, "c50100")
      check("bin", 65535, "c5ffff")
      check("bin", 65536, "c600010000")
    end)

    it("keeps embedded zero bytes", function()
      assert.equal("a3610062", hex(bytes_of(function(w) w:str("a\0b") end)))
      assert.equal("c403000100", hex(bytes_of(function(w) w:bin("\0\1\0") end)))
    end)
  end)

  describe("headers and scalars", function()
    it("writes map and array headers in their shortest form", function()
      local function hdr(method, n) return hex(bytes_of(function(w) w[method](w, n) end)) end
      assert.equal("80", hdr("map", 0))
      assert.equal("8f", hdr("map", 15))
      assert.equal("de0010", hdr("map", 16))
      assert.equal("deffff", hdr("map", 65535))
      assert.equal("df00010000", hdr("map", 65536))
      assert.equal("dfffffffff", hdr("map", 2 ^ 32 - 1))
      assert.equal("90", hdr("array", 0))
      assert.equal("9f", hdr("array", 15))
      assert.equal("dc0010", hdr("array", 16))
      assert.equal("dd00010000", hdr("array", 65536))
    end)

    it("writes nil and booleans", function()
      assert.equal("c0c3c2", hex(bytes_of(function(w) w:null():bool(true):bool(false) end)))
    end)

    it("chains every mutator and reports its size", function()
      local w = core.mp_writer()
      assert.equal(w, w:map(1):str("k"):array(2):int(1):float(2):bool(true):null():bin("")
        :value("v"))
      assert.equal(20, w:size())
      assert.equal("81a16b9201cb4000000000000000c3c0c400a176", hex(w:result()))
      -- result() does not consume: the writer keeps its bytes.
      assert.equal(w:result(), w:result())
      w:close()
    end)
  end)

  describe("argument checks", function()
    local w = core.mp_writer()
    local cases = {
      { "int", "1", "integer expected, got string" },
      { "int", nil, "integer expected, got nil" },
      { "float", "1", "number expected, got string" },
      { "str", 1, "string expected, got number" },
      { "bin", false, "string expected, got boolean" },
      { "bin_file", 1, "string expected, got number" },
      { "bool", 0, "boolean expected, got number" },
      { "map", -1, "count out of range" },
      { "map", 2 ^ 32, "count out of range" },
      { "array", 1.5, "no integer representation" },
    }
    for _, c in ipairs(cases) do
      it(string.format("w:%s(%s) raises", c[1], tostring(c[2])), function()
        local msg = error_of(function() w[c[1]](w, c[2]) end)
        assert.matches("bad argument", msg, 1, true)
        assert.matches(c[3], msg, 1, true)
        assert.equal(0, w:size())
      end)
    end

    it("names the method in the message", function()
      assert.matches("bad argument #1 to 'str'", error_of(function() w:str({}) end), 1, true)
    end)

    it("rejects something that is not a writer", function()
      assert.matches("fish.mp_writer expected", error_of(function() w.int({}, 1) end), 1, true)
    end)

    it("rejects a path with a NUL byte", function()
      assert.matches("NUL", error_of(function() w:bin_file("a\0b") end), 1, true)
    end)
  end)

  describe("close", function()
    it("is idempotent and makes later use a clear error", function()
      local w = core.mp_writer():int(1)
      w:close()
      w:close()
      assert.matches("closed writer", error_of(function() w:int(1) end), 1, true)
      assert.matches("closed writer", error_of(function() w:result() end), 1, true)
      assert.matches("closed", tostring(w), 1, true)
    end)

    it("runs from __gc", function()
      for _ = 1, 100 do core.mp_writer():str(string.rep("x", 10000)) end
      collectgarbage()
      collectgarbage()
    end)

    if _VERSION == "Lua 5.4" then
      it("runs from __close on Lua 5.4", function()
        local chunk = assert(load([[
          local core = ...
          local keep
          do
            local w <close> = core.mp_writer():int(1)
            keep = w
          end
          return keep
        ]]))
        local w = chunk(core)
        assert.matches("closed writer", error_of(function() w:size() end), 1, true)
      end)
    end
  end)

  describe("Python SDK golden vectors (fish-api.md Appendix A)", function()
    it("text='Hello' with every default", function()
      local out = bytes_of(function(w) py_tts(w, { text = "Hello", refs = {} }) end)
      assert.equal(GOLDEN.hello, hex(out))
    end)

    it("reference_id='abc', speed=1.5", function()
      local out = bytes_of(function(w)
        py_tts(w, { text = "Hello", refs = {}, reference_id = "abc", speed = 1.5 })
      end)
      assert.equal(GOLDEN.ref_id_speed, hex(out))
    end)

    it("one inline reference", function()
      local out = bytes_of(function(w)
        py_tts(w, { text = "Hello", refs = { { "\1\2\3", "ref" } } })
      end)
      assert.equal(GOLDEN.references, hex(out))
    end)

    it("WS start event with nils (map16 of 18 keys)", function()
      local out = bytes_of(function(w)
        w:map(2):str("event"):str("start"):str("request"):map(18)
        w:str("text"):str("")
        w:str("chunk_length"):int(200)
        w:str("format"):str("mp3")
        w:str("sample_rate"):null()
        w:str("mp3_bitrate"):int(128)
        w:str("opus_bitrate"):int(32)
        w:str("references"):array(0)
        w:str("reference_id"):null()
        w:str("normalize"):bool(true)
        w:str("latency"):str("balanced")
        w:str("prosody"):null()
        w:str("top_p"):float(0.7)
        w:str("temperature"):float(0.7)
        w:str("max_new_tokens"):int(1024)
        w:str("repetition_penalty"):float(1.2)
        w:str("min_chunk_length"):int(50)
        w:str("condition_on_previous_chunks"):bool(true)
        w:str("early_stop_threshold"):float(1)
      end)
      assert.equal(GOLDEN.ws_start, hex(out))
    end)

    it("ASR body", function()
      local out = bytes_of(function(w)
        w:map(3):str("audio"):bin("\1\2"):str("ignore_timestamps"):bool(false)
         :str("language"):str("en")
      end)
      assert.equal(GOLDEN.asr_en, hex(out))
    end)
  end)

  describe("bin_file", function()
    local path
    before_each(function() path = os.tmpname() end)
    after_each(function() os.remove(path) end)

    local function write_file(data)
      local f = assert(io.open(path, "wb"))
      f:write(data)
      f:close()
    end

    local function check_file(data, header)
      write_file(data)
      local w = core.mp_writer():int(7)
      assert.is_true(w:bin_file(path))
      local out = w:result()
      assert.equal("07" .. header, hex(out:sub(1, 1 + #header / 2)))
      assert.equal(data, out:sub(2 + #header / 2))
      -- The same bytes as writing the contents with w:bin.
      assert.equal(bytes_of(function(x) x:int(7):bin(data) end), out)
      w:close()
    end

    it("streams a small file as bin8", function()
      check_file("\1\2\3\0\255", "c405")
    end)

    it("streams an empty file", function() check_file("", "c400") end)

    it("picks bin16 and bin32 by the file's size", function()
      check_file(string.rep("ab", 150), "c5012c")
      -- Larger than one 64 KiB read chunk, to cross a chunk boundary.
      local big = {}
      for i = 1, 70000 do big[i] = string.char(i % 256) end
      check_file(table.concat(big), "c600011170")
    end)

    it("returns nil and a message naming a missing path", function()
      os.remove(path)
      local w = core.mp_writer():int(1)
      local ok, err = w:bin_file(path)
      assert.is_nil(ok)
      assert.matches("cannot open '" .. path .. "'", err, 1, true)
      assert.matches("No such file", err, 1, true)
      assert.equal("01", hex(w:result())) -- nothing half-written
    end)

    it("returns nil and a message for a directory", function()
      local w = core.mp_writer()
      local ok, err = w:bin_file("/")
      assert.is_nil(ok)
      assert.matches("'/'", err, 1, true)
      assert.equal(0, w:size())
    end)
  end)

  describe("value", function()
    it("encodes scalars", function()
      assert.equal("c0", enc(nil))
      assert.equal("c3", enc(true))
      assert.equal("c2", enc(false))
      assert.equal("a26869", enc("hi"))
      assert.equal("c0", enc(core.mp_null))
    end)

    it("encodes a sequence as an array", function()
      assert.equal("9301a161c3", enc({ 1, "a", true }))
      assert.equal("9301c003", enc({ 1, core.mp_null, 3 }))
    end)

    it("encodes an empty table as an empty map", function()
      assert.equal("80", enc({}))
    end)

    it("sorts map keys by bytes", function()
      local t = { b = 1, a = 2, aa = 3, B = 4, [""] = 5 }
      assert.equal("85a005a14204a16102a2616103a16201", enc(t))
      -- Deterministic whatever the insertion order.
      local u = {}
      for _, k in ipairs({ "aa", "", "b", "B", "a" }) do u[k] = t[k] end
      assert.equal(enc(t), enc(u))
    end)

    it("sorts nested maps too", function()
      assert.equal("81a17a82a17802a17901", enc({ z = { y = 1, x = 2 } }))
    end)

    it("writes a __fish_bin table as bin", function()
      assert.equal("c403010203", enc(bin("\1\2\3")))
      assert.equal("81a5617564696fc400", enc({ audio = bin("") }))
    end)

    it("ignores metamethods other than __fish_bin", function()
      local proxy = setmetatable({}, {
        __index = function() return 1 end,
        __pairs = function() error("must not be called") end,
      })
      assert.equal("80", enc(proxy))
    end)

    it("rejects tables it cannot represent, naming the problem", function()
      local w = core.mp_writer():int(1)
      local cases = {
        { { 1, x = 2 }, "found a number key" },
        { { 1, nil, 3 }, "neither a sequence" },
        { { [true] = 1 }, "found a boolean key" },
        { { [1.5] = 1 }, "found a number key" },
        { { f = print }, "cannot encode a function" },
        { { co = coroutine.create(function() end) }, "cannot encode a thread" },
        { { w }, "cannot encode a userdata" },
        { setmetatable({ 1 }, { __fish_bin = true }), "needs a string at [1]" },
      }
      for _, c in ipairs(cases) do
        local msg = error_of(function() w:value(c[1]) end)
        assert.matches("bad argument #1 to 'value'", msg, 1, true)
        assert.matches(c[2], msg, 1, true)
      end
      -- A failed value leaves no partial bytes behind.
      assert.equal("01", hex(w:result()))
    end)

    it("limits nesting to 64 tables and catches cycles", function()
      local function nest(n)
        local t = {}
        for _ = 2, n do t = { t } end
        return t
      end
      assert.equal(string.rep("91", 63) .. "80", enc(nest(64)))
      local w = core.mp_writer()
      assert.matches("more than 64 deep", error_of(function() w:value(nest(65)) end), 1, true)
      local cyc = {}
      cyc.self = cyc
      assert.matches("cycle", error_of(function() w:value(cyc) end), 1, true)
      assert.equal(0, w:size())
    end)

    it("requires an argument", function()
      local w = core.mp_writer()
      assert.matches("value expected", error_of(function() w:value() end), 1, true)
    end)
  end)
end)

describe("mp_decode", function()
  local decode = core.mp_decode
  local null = core.mp_null

  local function dec(h) return decode(unhex(h)) end

  it("exports mp_null as a light userdata", function()
    assert.equal("userdata", type(null))
    assert.equal(null, dec("c0"))
  end)

  it("decodes every int form", function()
    local cases = {
      { "00", 0 }, { "7f", 127 }, { "cc80", 128 }, { "cd0100", 256 },
      { "ce00010000", 65536 }, { "cf0000000100000000", 2 ^ 32 },
      { "ff", -1 }, { "e0", -32 }, { "d0df", -33 }, { "d1ff7f", -129 },
      { "d2ffff7fff", -32769 }, { "d3ffffffff7fffffff", -2 ^ 31 - 1 },
      { "d0ff", -1 }, { "d1ffff", -1 }, { "d2ffffffff", -1 },
      { "d3ffffffffffffffff", -1 }, { "cc01", 1 },
    }
    for _, c in ipairs(cases) do
      local v = dec(c[1])
      assert.equal(c[2], v)
      if has_int_subtype then assert.equal("integer", math.type(v)) end
    end
  end)

  if has_int_subtype then
    it("keeps the int64 extremes exact and turns uint64 above them into floats", function()
      assert.equal(math.maxinteger, dec("cf7fffffffffffffff"))
      assert.equal(math.mininteger, dec("d38000000000000000"))
      local big = dec("cfffffffffffffffff")
      assert.equal("float", math.type(big))
      assert.equal(2 ^ 64, big)
    end)
  end

  it("decodes floats", function()
    assert.equal(1.5, dec("ca3fc00000"))
    assert.equal(0.7, dec("cb3fe6666666666666"))
    local one = dec("cb3ff0000000000000")
    assert.equal(1, one)
    if has_int_subtype then assert.equal("float", math.type(one)) end
  end)

  it("decodes str and bin to strings, nil to mp_null, booleans", function()
    assert.equal("Hello", dec("a548656c6c6f"))
    assert.equal("", dec("a0"))
    assert.equal("\1\2\3", dec("c403010203"))
    assert.equal("ab", dec("da00026162"))
    assert.equal("ab", dec("c6000000026162"))
    assert.is_true(dec("c3"))
    assert.is_false(dec("c2"))
  end)

  it("decodes ext and fixext to {ext, data}", function()
    assert.same({ ext = 5, data = "A" }, dec("d40541"))
    assert.same({ ext = 2, data = "ab" }, dec("d5026162"))
    assert.same({ ext = 0, data = "01234567" }, dec("d7003031323334353637"))
    assert.same({ ext = -1, data = "\0\0\0\1" }, dec("d6ff00000001"))
    assert.same({ ext = 1, data = string.rep("\7", 16) }, dec("d801" .. string.rep("07", 16)))
    assert.same({ ext = -128, data = "" }, dec("c70080"))
    assert.same({ ext = 2, data = "xy" }, dec("c800020278" .. "79"))
    assert.same({ ext = 3, data = "z" }, dec("c9000000010" .. "37a"))
  end)

  it("keeps nils in arrays so the length survives", function()
    local t = dec("9301c003")
    assert.equal(3, #t)
    assert.equal(null, t[2])
  end)

  it("decodes maps with scalar keys", function()
    assert.same({ [1] = "a", [true] = 2, [1.5] = 3, s = 4 },
      dec("8401a161c302cb3ff800000000000003a17304"))
    -- bin keys become strings too
    assert.same({ k = 1 }, dec("81c4016b01"))
  end)

  it("decodes the golden TTS bodies", function()
    local t = dec(GOLDEN.ref_id_speed)
    assert.equal("Hello", t.text)
    assert.equal("abc", t.reference_id)
    assert.equal(1.5, t.prosody.speed)
    assert.equal(0, t.prosody.volume)
    assert.same({}, t.references)
    assert.equal(200, t.chunk_length)
    local r = dec(GOLDEN.references)
    assert.same({ { audio = "\1\2\3", text = "ref" } }, r.references)
    local ws = dec(GOLDEN.ws_start)
    assert.equal(null, ws.request.sample_rate)
  end)

  it("round-trips through w:value", function()
    local values = {
      0, -1, 1.5, "s", true, false,
      { 1, 2, 3 },
      { a = { 1, 2, { b = "x" } }, c = true, d = 1.5, e = "s", f = {} },
      { string.rep("k", 40), { n = -70000 } },
    }
    for _, v in ipairs(values) do
      local bytes = bytes_of(function(w) w:value(v) end)
      local back = decode(bytes)
      assert.same(v, back)
      -- And re-encoding what we decoded gives the same bytes.
      assert.equal(hex(bytes), enc(back))
    end
  end)

  describe("malformed input", function()
    local function bad(h, pattern)
      local v, err = dec(h)
      assert.is_nil(v)
      assert.is_string(err)
      assert.matches("^msgpack: .+ at byte %d+$", err)
      if pattern then assert.equal(pattern, err) end
    end

    it("returns nil and a message for empty input", function()
      bad("", "msgpack: truncated input at byte 0")
    end)

    it("rejects 0xc1 and says where", function()
      bad("c1", "msgpack: invalid byte 0xc1 at byte 0")
      bad("9201c1", "msgpack: invalid byte 0xc1 at byte 2")
    end)

    it("rejects trailing bytes", function()
      bad("0102", "msgpack: trailing bytes at byte 1")
      bad("90c0", "msgpack: trailing bytes at byte 1")
    end)

    it("rejects every strict prefix of a golden vector", function()
      local full = unhex(GOLDEN.references)
      for n = 0, #full - 1 do
        local v, err = decode(full:sub(1, n))
        assert.is_nil(v)
        assert.matches("^msgpack: .+ at byte %d+$", err)
      end
    end)

    it("rejects truncated scalars of every width", function()
      for _, h in ipairs({ "cc", "cd00", "ce000000", "cf00000000000000", "d0", "d1ff",
                           "d2ffffff", "d3ffffffffffffff", "ca000000", "cb00000000000000",
                           "a1", "d901", "d90261", "da0001", "db00000001", "c401", "c5",
                           "c6000000", "c7", "c701", "c70101", "d4", "d401", "d8010000",
                           "dc00", "dd000000", "de00", "df000000" }) do
        bad(h)
      end
    end)

    it("rejects nil, NaN and container keys", function()
      bad("81c001", "msgpack: nil map key at byte 1")
      bad("81cb7ff800000000000001", "msgpack: NaN map key at byte 1")
      bad("81ca7fc0000001", "msgpack: NaN map key at byte 1")
      bad("819001", "msgpack: map key is not a scalar at byte 1")
      bad("818001", "msgpack: map key is not a scalar at byte 1")
      bad("81d4010101", "msgpack: map key is not a scalar at byte 1")
    end)

    it("limits nesting to 128", function()
      local ok = decode(string.rep("\145", 128) .. "\192")
      assert.is_table(ok)
      local v, err = decode(string.rep("\145", 129) .. "\192")
      assert.is_nil(v)
      assert.equal("msgpack: nesting deeper than 128 at byte 128", err)
      -- Far deeper input fails the same way, without a C stack overflow.
      v, err = decode(string.rep("\145", 100000))
      assert.is_nil(v)
      assert.matches("nesting deeper than 128", err, 1, true)
    end)

    it("checks declared lengths against the bytes left before allocating", function()
      bad("ddffffffff", "msgpack: declared length exceeds input at byte 0")
      bad("dfffffffff", "msgpack: declared length exceeds input at byte 0")
      bad("dbffffffff", "msgpack: truncated input at byte 0")
      bad("c6ffffffff", "msgpack: truncated input at byte 0")
      bad("c9ffffffff01", "msgpack: truncated input at byte 0")
      bad("9fc0", "msgpack: declared length exceeds input at byte 0")
      -- A map needs two bytes per entry: 3 entries cannot fit in 5 bytes.
      bad("83c0c0c0c0c0", "msgpack: declared length exceeds input at byte 0")
      -- An array claiming a million elements in 16 bytes must not make a
      -- million-slot table first.
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      bad("dd000f4240" .. string.rep("c0", 11))
      local grew = collectgarbage("count") - before
      collectgarbage("restart")
      assert.is_true(grew < 256, "decoder allocated " .. grew .. " KiB")
    end)

    it("raises only for a non-string argument", function()
      assert.matches("string expected", error_of(function() decode(nil) end), 1, true)
      assert.matches("string expected", error_of(function() decode(12) end), 1, true)
    end)
  end)
end)
