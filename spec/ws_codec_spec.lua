-- The RFC 6455 codec in src/ws.c, byte for byte, through the internal
-- test bindings core.ws_test_* (src/ws_test.c): SHA-1 and the accept key,
-- the frame encoder, the incremental frame decoder, and the parser of the
-- answer to the Upgrade request. spec/live_socket_spec.lua runs the same
-- code over real sockets against a WebSocket library nobody here wrote.
local core = require("fish.core")

local char, byte, rep = string.char, string.byte, string.rep

-- A server frame (unmasked) with the length written in `width` bytes
-- (0: the 7-bit form, 2 or 8), so every encoding can be tried.
local function frame(opcode, payload, opts)
  opts = opts or {}
  local b0 = (opts.fin == false and 0 or 0x80) + (opts.rsv or 0) + opcode
  local len = #payload
  local width = opts.width or (len < 126 and 0 or len < 65536 and 2 or 8)
  local head
  if width == 0 then
    head = char(b0, len)
  elseif width == 2 then
    head = char(b0, 126, math.floor(len / 256), len % 256)
  else
    local bytes = {}
    local v = len
    for i = 8, 1, -1 do
      bytes[i] = v % 256
      v = math.floor(v / 256)
    end
    if opts.top_bit then bytes[1] = bytes[1] + 0x80 end
    head = char(b0, 127, (table.unpack or unpack)(bytes)) -- luacheck: ignore 143
  end
  return head .. payload
end

local function decode(bytes, max, piece)
  return core.ws_test_decode(bytes, max or 1024 * 1024, piece)
end

-- The events as one line each, to compare whole sequences at a glance.
local function summary(events)
  local lines = {}
  for i, e in ipairs(events) do
    if e.event == "message" or e.event == "ping" or e.event == "pong" then
      lines[i] = e.event .. " " .. #e.data .. " " .. (#e.data <= 16 and e.data or e.data:sub(1, 8) .. "...")
    elseif e.event == "close" then
      lines[i] = "close " .. e.code .. " " .. e.reason
    else
      lines[i] = "error " .. e.kind
    end
  end
  return table.concat(lines, "\n")
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", byte(c)) end))
end

describe("ws codec: SHA-1 and the accept key", function()
  it("matches the FIPS 180 / RFC 3174 test vectors", function()
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.ws_test_sha1("abc"))
    assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", core.ws_test_sha1(""))
    assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
      core.ws_test_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("34aa973cd4c4daa4f61eeb2bdbad27316534016f", core.ws_test_sha1(rep("a", 1000000)))
    -- RFC 3174 test 4: "0123456701234567012345670123456701234567012345670123456701234567" x 10
    assert.equal("dea356a2cddd90c7a7ecedc5ebb563934f460452",
      core.ws_test_sha1(rep("01234567", 80)))
  end)

  it("agrees with openssl at every padding boundary", function()
    local tmp = os.tmpname()
    for _, n in ipairs({ 1, 55, 56, 57, 63, 64, 65, 119, 120, 128 }) do
      local data = {}
      for i = 1, n do data[i] = char((i * 37 + n) % 256) end
      data = table.concat(data)
      local f = assert(io.open(tmp, "wb"))
      f:write(data)
      f:close()
      local pipe = assert(io.popen("env -u LD_PRELOAD openssl dgst -sha1 -r " .. tmp))
      local out = pipe:read("*a")
      pipe:close()
      assert.equal(out:match("^(%x+)"), core.ws_test_sha1(data), "length " .. n)
    end
    os.remove(tmp)
  end)

  it("gives RFC 6455's accept key for its example nonce", function()
    assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", core.ws_test_accept("dGhlIHNhbXBsZSBub25jZQ=="))
  end)
end)

describe("ws codec: the frame encoder", function()
  local mask = char(0x37, 0xfa, 0x21, 0x3d)

  it("masks the payload with the key it writes (RFC 6455 5.7's 'Hello')", function()
    -- RFC 6455 5.7: a masked "Hello" is 0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58
    local f = core.ws_test_frame(1, "Hello", mask)
    assert.equal("818537fa213d7f9f4d5158", hex(f))
  end)

  it("writes 7, 16 and 64-bit lengths at their edges", function()
    local cases = {
      { 0, "8280" }, { 125, "82fd" }, { 126, "82fe007e" }, { 65535, "82feffff" },
      { 65536, "82ff0000000000010000" },
    }
    for _, case in ipairs(cases) do
      local n, head = case[1], case[2]
      local f = core.ws_test_frame(2, rep("x", n), mask)
      assert.equal(head .. hex(mask), hex(f:sub(1, #head / 2 + 4)), "length " .. n)
      assert.equal(#head / 2 + 4 + n, #f)
    end
  end)
end)

describe("ws codec: the frame decoder", function()
  it("refuses a negative or NaN message limit (no unsigned type holds one)", function()
    for _, max in ipairs({ -1, 0 / 0 }) do
      local ok, err = pcall(core.ws_test_decode, "", max)
      assert.is_false(ok)
      assert.matches("must be a non%-negative number", err)
    end
  end)

  it("reads 7, 16 and 64-bit lengths whole and in any pieces", function()
    for _, n in ipairs({ 0, 1, 125, 126, 127, 65535, 65536, 70000 }) do
      local payload = rep("ab", n):sub(1, n)
      for _, width in ipairs({ 0, 2, 8 }) do
        if width > 0 or n < 126 then
          if width ~= 2 or n < 65536 then
            local bytes = frame(2, payload, { width = width })
            for _, piece in ipairs({ 0, 1, 3, 7, 4096 }) do
              if piece ~= 1 or n <= 1000 then
                local events, used = decode(bytes, nil, piece)
                assert.equal(1, #events, n .. "/" .. width .. "/" .. piece)
                assert.equal("message", events[1].event)
                assert.equal(payload, events[1].data)
                assert.equal(#bytes, used)
              end
            end
          end
        end
      end
    end
  end)

  it("reassembles continuations, answering a ping that arrives between fragments", function()
    local bytes = frame(2, "ab", { fin = false }) .. frame(0, "cd", { fin = false })
      .. frame(9, "are you there") .. frame(0, "", { fin = false }) .. frame(0, "ef")
      .. frame(2, "next")
    for _, piece in ipairs({ 0, 1, 2, 5 }) do
      assert.equal("ping 13 are you there\nmessage 6 abcdef\nmessage 4 next", summary(decode(bytes, nil, piece)))
    end
  end)

  it("reassembles a message of 10,000 one-byte fragments", function()
    local parts = { frame(2, "0", { fin = false }) }
    for i = 1, 9998 do parts[#parts + 1] = frame(0, tostring(i % 10), { fin = false }) end
    parts[#parts + 1] = frame(0, "9")
    local events = decode(table.concat(parts), 10000)
    assert.equal(1, #events)
    assert.equal(10000, #events[1].data)
    assert.equal("01234", events[1].data:sub(1, 5))
  end)

  it("drops text messages, fragmented or not, and keeps the binary ones around them", function()
    local bytes = frame(1, "hello") .. frame(2, "one") .. frame(1, "a", { fin = false })
      .. frame(10, "p") .. frame(0, "b") .. frame(2, "two")
    assert.equal("message 3 one\npong 1 p\nmessage 3 two", summary(decode(bytes)))
  end)

  it("reads close frames with and without a code, and stops there", function()
    local events, used = decode(frame(8, char(3, 232) .. "bye") .. frame(2, "late"))
    assert.equal("close 1000 bye", summary(events))
    assert.equal(2 + 5, used)
    assert.equal("close 0 ", summary(decode(frame(8, ""))))
    assert.equal("close 4000 ", summary(decode(frame(8, char(15, 160)))))
    -- UTF-8 reasons of every length of sequence pass.
    local reason = "caf\195\169 \226\130\172 \240\159\144\159"
    assert.equal("close 1001 " .. reason, summary(decode(frame(8, char(3, 233) .. reason))))
  end)

  it("caps a message at max_message, counting every fragment", function()
    assert.equal("message 100 abababab...", summary(decode(frame(2, rep("ab", 50)), 100)))
    assert.equal("error too_large", summary(decode(frame(2, rep("ab", 50) .. "c"), 100)))
    local fragments = frame(2, rep("x", 60), { fin = false }) .. frame(0, rep("y", 41))
    assert.equal("error too_large", summary(decode(fragments, 100)))
    -- Text counts too: it is read, if not kept.
    assert.equal("error too_large", summary(decode(frame(1, rep("t", 101)), 100)))
    -- Fails on the header, before any of the payload arrives.
    local events, used = decode(frame(2, rep("z", 1000)):sub(1, 4), 100)
    assert.equal("error too_large", summary(events))
    assert.equal(4, used)
  end)

  it("refuses frames RFC 6455 forbids a server to send", function()
    local bad = {
      masked = char(0x82, 0x85, 1, 2, 3, 4) .. "hello",
      reserved_bits = frame(2, "x", { rsv = 0x40 }),
      unknown_opcode = frame(3, "x"),
      unknown_control = frame(11, "x"),
      long_control = frame(9, rep("p", 126)),
      fragmented_control = frame(9, "p", { fin = false }),
      lone_continuation = frame(0, "x"),
      interleaved_message = frame(2, "a", { fin = false }) .. frame(2, "b"),
      top_bit_length = frame(2, "", { width = 8, top_bit = true }),
      one_byte_close = frame(8, "x"),
      reserved_close_code = frame(8, char(3, 237)), -- 1005 never goes on the wire
      low_close_code = frame(8, char(3, 231)),
      close_reason_latin1 = frame(8, char(3, 232) .. "caf\233"),
      close_reason_overlong = frame(8, char(3, 232) .. "\192\175"),
      close_reason_surrogate = frame(8, char(3, 232) .. "\237\160\128"),
      close_reason_cut = frame(8, char(3, 232) .. "\226\130"),
    }
    for name, bytes in pairs(bad) do
      local events = decode(bytes)
      assert.equal("error protocol", summary(events), name)
      assert.is_string(events[1].message)
    end
  end)

  it("refuses a masked frame as soon as its second byte is read", function()
    local events, used = decode(char(0x82, 0xff))
    assert.equal("error protocol", summary(events))
    assert.equal(2, used)
  end)
end)

describe("ws codec: the answer to the Upgrade request", function()
  local accept = core.ws_test_accept("dGhlIHNhbXBsZSBub25jZQ==")
  local ok_head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Accept: " .. accept .. "\r\n\r\n"

  it("accepts a proper 101 and says where the frames start", function()
    local head = core.ws_test_head(ok_head .. "\130\1x", accept)
    assert.is_true(head.complete)
    assert.equal(101, head.status)
    assert.equal(#ok_head, head.head_len)
    assert.is_nil(head.upgrade_error)
    assert.equal("websocket", head.headers.upgrade)
  end)

  it("waits for the blank line, however the head is cut", function()
    for i = 1, #ok_head - 1 do
      local head = core.ws_test_head(ok_head:sub(1, i), accept)
      assert.is_false(head.complete, "cut at " .. i)
      assert.is_nil(head.error)
    end
  end)

  it("takes header names in any case, list-valued Connection, and bare LF lines", function()
    local head = core.ws_test_head("HTTP/1.1 101 OK\nUPGRADE: WebSocket\nconnection: keep-alive, upgrade\n"
      .. "sec-websocket-accept:" .. accept .. "  \n\n", accept)
    assert.is_true(head.complete)
    assert.is_nil(head.upgrade_error)
  end)

  it("refuses a 101 with a wrong or missing accept, upgrade or connection, or an unasked extension", function()
    local cases = {
      ok_head:gsub(accept:gsub("%p", "%%%0"), "x" .. accept:sub(2)),
      ok_head:gsub("Upgrade: websocket\r\n", ""),
      ok_head:gsub("Upgrade: websocket", "Upgrade: h2c"),
      ok_head:gsub("Connection: Upgrade", "Connection: keep-alive"),
      ok_head:gsub("Sec%-WebSocket%-Accept: [^\r]*\r\n", ""),
      ok_head:gsub("\r\n\r\n$", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
      (ok_head:gsub("\r\n\r\n$", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n")),
    }
    for i, bytes in ipairs(cases) do
      local head = core.ws_test_head(bytes, accept)
      assert.is_true(head.complete, i)
      assert.is_string(head.upgrade_error, i)
    end
  end)

  it("refuses malformed heads", function()
    local cases = {
      "HTTP/2 101\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 1x1 OK\r\n\r\n", "HTTP/1.1 101OK\r\n\r\n",
      "HTTP/1.1 101 OK\r\nno colon here\r\n\r\n", "HTTP/1.1 101 OK\r\n: empty name\r\n\r\n",
      "HTTP/1.1 101 OK\r\nA: b\r\n folded\r\n\r\n", "HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n",
      "HTTP/1.1 101 OK\r\nX: a\rb\r\n\r\n",
    }
    for _, bytes in ipairs(cases) do
      local head = core.ws_test_head(bytes, accept)
      assert.is_false(head.complete, bytes)
      assert.is_string(head.error, bytes)
    end
  end)

  it("refuses a head over 32 KiB, ended or not", function()
    local long = "HTTP/1.1 101 OK\r\nX: " .. rep("a", 33 * 1024)
    assert.is_string(core.ws_test_head(long).error)
    assert.is_string(core.ws_test_head(long .. "\r\n\r\n").error)
    local many = { "HTTP/1.1 101 OK\r\n" }
    for i = 1, 101 do many[#many + 1] = "X-" .. i .. ": 1\r\n" end
    assert.is_string(core.ws_test_head(table.concat(many) .. "\r\n").error)
  end)

  it("reads a refusal's body by Content-Length, chunked, or until the close", function()
    local json = '{"status":401,"message":"Invalid api key"}'
    local by_length = "HTTP/1.1 401 Unauthorized\r\nContent-Length: " .. #json .. "\r\n\r\n" .. json
    local head = core.ws_test_head(by_length)
    assert.equal(401, head.status)
    assert.is_true(head.body_complete)
    assert.equal(json, head.body)
    assert.is_false(core.ws_test_head(by_length:sub(1, -2)).body_complete)
    -- Bytes past the declared length are not part of it.
    assert.equal(json, core.ws_test_head(by_length .. "junk").body)

    local chunked = "HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    head = core.ws_test_head(chunked)
    assert.is_true(head.body_complete)
    assert.equal("hello, world", head.body)
    head = core.ws_test_head(chunked:sub(1, 80))
    assert.is_false(head.body_complete)
    assert.is_true(core.ws_test_head(chunked:sub(1, 80), nil, true).body_complete)
    assert.is_string(core.ws_test_head("HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").body_error)
    assert.is_string(core.ws_test_head("HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. rep("f", 20) .. "\r\n").body_error)

    local until_close = "HTTP/1.0 503 Busy\r\n\r\nbusy"
    assert.is_false(core.ws_test_head(until_close).body_complete)
    head = core.ws_test_head(until_close, nil, true)
    assert.is_true(head.body_complete)
    assert.equal("busy", head.body)

    assert.is_true(core.ws_test_head("HTTP/1.1 204 No Content\r\n\r\n").body_complete)
    assert.is_string(core.ws_test_head("HTTP/1.1 401 X\r\nContent-Length: 1x\r\n\r\n").body_error)
  end)

  it("keeps at most 64 KiB of a refusal's body", function()
    local big = rep("e", 100 * 1024)
    local head = core.ws_test_head("HTTP/1.1 413 X\r\nContent-Length: " .. #big .. "\r\n\r\n" .. big)
    assert.is_true(head.body_complete)
    assert.equal(64 * 1024, #head.body)
  end)
end)
