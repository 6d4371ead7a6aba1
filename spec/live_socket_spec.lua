-- Live sockets (src/live.c) end to end over real TCP, driven the way the
-- Lua layer drives them: engine:perform and engine:poll. The peer,
-- spec/support/ws_peer.py, runs Debian's python3-websockets, so the client
-- is checked against a WebSocket implementation nobody here wrote, plus a
-- raw mode for byte-level faults no library would produce.
local core = require("fish.core")
local cjson = require("cjson")
local files = require("support.files")
local server = require("spec.support.server")

local PEER = server.ROOT .. "/spec/support/ws_peer.py"
local quote = files.quote

local function sh(cmd)
  return (files.capture("env -u LD_PRELOAD " .. cmd .. " 2>&1"):gsub("%s+$", ""))
end

-- A CA and a certificate for 127.0.0.1 that it signed, in dir.
local function make_certificates(dir)
  local ca, ca_key = dir .. "/ca.pem", dir .. "/ca.key"
  sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=fish-ws-ca"
    .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    .. " -keyout %s -out %s"):format(quote(ca_key), quote(ca)))
  local key, csr, cert, ext = dir .. "/srv.key", dir .. "/srv.csr", dir .. "/srv.pem", dir .. "/srv.ext"
  files.write(ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
  sh(("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1"
    .. " -keyout %s -out %s"):format(quote(key), quote(csr)))
  sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s"):format(
    quote(csr), quote(ca), quote(ca_key), quote(ext), quote(cert)))
  assert(files.exists(cert), "openssl made no server certificate")
  return ca, cert, key
end

local function start_peer(tls_cert, tls_key)
  local log = os.tmpname()
  local cmd = "env -u LD_PRELOAD " .. server.PYTHON .. " " .. quote(PEER)
    .. (tls_cert and " --tls " .. quote(tls_cert) .. " " .. quote(tls_key) or "")
    .. " 2>" .. quote(log) .. " & echo PID $!"
  local pipe = assert(io.popen(cmd, "r"))
  local pid, port, raw, tls
  for line in pipe:lines() do
    pid = pid or line:match("^PID (%d+)")
    if not port then port, raw, tls = line:match("^LISTENING (%d+) (%d+) (%d+)") end
    if pid and port then break end
  end
  if not port then
    local f = io.open(log)
    error("ws_peer did not start: " .. (f and f:read("*a") or "?"))
  end
  return {
    pid = pid, pipe = pipe, log = log,
    ws = "ws://127.0.0.1:" .. port, raw = "ws://127.0.0.1:" .. raw,
    wss = tls ~= "0" and "wss://127.0.0.1:" .. tls or nil,
  }
end

local function stop_peer(peer)
  os.execute("kill " .. peer.pid .. " 2>/dev/null")
  peer.pipe:close()
  os.remove(peer.log)
end

-- Step the engine until done() is true; every changed id is counted.
local function drive(engine, done, seconds)
  local deadline = core.now() + (seconds or 20)
  local changed_ids = {}
  while true do
    local changed = {}
    engine:perform({}, changed)
    for _, id in ipairs(changed) do changed_ids[id] = (changed_ids[id] or 0) + 1 end
    if done() then return changed_ids end
    if core.now() > deadline then error("timed out waiting", 2) end
    engine:poll(0.2)
  end
end

describe("live sockets", function()
  local peer, engine, dir, ca

  setup(function()
    dir = files.tmpdir()
    local cert, key
    if sh("command -v openssl") ~= "" then ca, cert, key = make_certificates(dir) end
    peer = start_peer(cert, key)
  end)
  teardown(function()
    stop_peer(peer)
    files.remove_tree(dir)
  end)
  before_each(function() engine = core.engine() end)
  after_each(function() engine:close() end)

  local function connect(path, opts, base)
    opts = opts or {}
    opts.url = (base or peer.ws) .. path
    local sock = core.live_socket(opts)
    local id = engine:add_live(sock)
    return sock, id
  end

  local function open(path, opts, base)
    local sock, id = connect(path, opts, base)
    drive(engine, function() return sock:state() ~= "connecting" and sock:state() ~= "handshake" end)
    assert.equal("open", sock:state(), (select(2, sock:failure())))
    return sock, id
  end

  local function next_message(sock)
    local message
    drive(engine, function()
      message = sock:receive()
      return message ~= nil or sock:state() == "closed"
    end)
    return message
  end

  it("opens, sending the caller's headers, and reports the change", function()
    local sock, id = connect("/headers?x=1", {
      headers = { "Authorization: Bearer secret-key", "model: s1", "User-Agent: fish-spec/1" },
    })
    assert.is_number(id)
    assert.equal("connecting", sock:state())
    local changes = drive(engine, function() return sock:state() == "open" end)
    assert.is_truthy(changes[id])
    local status, headers = sock:handshake()
    assert.equal(101, status)
    assert.equal("websocket", headers.upgrade:lower())
    local connected = sock:activity()
    assert.is_number(connected)
    assert.is_number(sock:fd())
    local seen = cjson.decode(next_message(sock))
    assert.equal("/headers?x=1", seen.path)
    assert.equal("Bearer secret-key", seen.headers.authorization)
    assert.equal("s1", seen.headers.model)
    assert.equal("fish-spec/1", seen.headers["user-agent"])
    assert.equal("13", seen.headers["sec-websocket-version"])
    assert.is_nil(seen.headers["sec-websocket-extensions"])
    assert.is_nil(seen.headers["sec-websocket-protocol"])
    local _, last_byte, last_message = sock:activity()
    assert.is_true(last_byte >= connected and last_message >= connected)
    assert.equal(1, engine:live_count())
    assert.equal(0, engine:count())
    sock:close()
    assert.equal(0, engine:live_count())
  end)

  it("keeps the news of a perform without a changed table for the next one with it", function()
    local sock, id = connect("/echo")
    local deadline = core.now() + 20
    while sock:state() ~= "open" do
      assert.is_true(core.now() < deadline, "never opened")
      engine:perform({})
      engine:poll(0.2)
    end
    local changed = {}
    engine:perform({}, changed)
    assert.same({ id }, changed)
    changed = {}
    engine:perform({}, changed)
    assert.same({}, changed)
  end)

  it("echoes 1 B to 3 MB messages both ways, whatever their length encoding", function()
    local sock = open("/echo")
    for _, n in ipairs({ 1, 125, 126, 65535, 65536, 3 * 1024 * 1024 }) do
      local payload = string.rep("fish", math.ceil(n / 4)):sub(1, n - 1) .. string.char(n % 256)
      assert.is_true(sock:send(payload))
      local back = next_message(sock)
      assert.equal(n, back and #back, "echo of " .. n .. " bytes")
      assert.is_true(back == payload, "echo of " .. n .. " bytes differs")
    end
    assert.equal(0, sock:pending())
  end)

  it("wakes engine:poll for a live socket's message (the fd is among poll's extra fds)", function()
    local sock = open("/echo")
    drive(engine, function() return sock:pending() == 0 end)
    sock:send("wake up")
    assert.equal(0, sock:pending())
    -- Nothing else runs in this engine: only the socket's fd can end this
    -- poll before its 30 s. The bound tells woken from not woken, no more.
    local started = core.now()
    engine:poll(30)
    assert.is_true(core.now() - started < 25, "poll slept through the message")
    assert.equal("wake up", next_message(sock))
  end)

  it("reads a message larger than one step's read budget over several steps", function()
    local sock = open("/send/20000000")
    local message = next_message(sock)
    assert.equal(20000000, message and #message)
    assert.is_nil(message:find("[^x]"))
  end)

  it("keeps messages sent before the handshake and writes them once open", function()
    local sock = connect("/echo")
    sock:send("first")
    sock:send("second")
    assert.is_true(sock:pending() > 0)
    assert.equal("first", next_message(sock))
    assert.equal("second", next_message(sock))
    assert.equal("open", sock:state())
  end)

  it("reassembles a fragmented message from websockets", function()
    local sock = open("/fragments")
    assert.equal("abcdef", next_message(sock))
  end)

  it("answers a ping with a matching pong, as websockets checks", function()
    local sock = open("/ping")
    assert.equal("pong ok", next_message(sock))
  end)

  it("answers a ping between the fragments of a message (raw peer checks the pong)", function()
    local sock = open("/ping_between", nil, peer.raw)
    assert.equal("abcd", next_message(sock))
    assert.equal("pong ok", next_message(sock))
    drive(engine, function() return sock:state() == "closed" end)
    assert.is_nil(sock:failure())
    assert.equal(1000, (sock:close_info()))
  end)

  it("answers the server's close, keeping its code and reason", function()
    -- The peer closes at once: the socket may open and close in one step.
    local sock, id = connect("/close/4001/done_here")
    local changes = drive(engine, function() return sock:state() == "closed" end)
    assert.is_truthy(changes[id])
    assert.equal(101, (sock:handshake()))
    assert.is_nil(sock:failure())
    local code, reason = sock:close_info()
    assert.equal(4001, code)
    assert.equal("done_here", reason)
    assert.is_nil(sock:receive())
  end)

  it("closes from our side with a code and reason the peer echoes", function()
    local sock = open("/echo")
    sock:send("last words")
    assert.equal("last words", next_message(sock))
    sock:send("more")
    sock:shutdown(4002, "bye now")
    assert.equal("closing", sock:state())
    drive(engine, function() return sock:state() == "closed" end)
    assert.is_nil(sock:failure())
    local code, reason = sock:close_info()
    assert.equal(4002, code)
    assert.equal("bye now", reason)
    -- websockets reads "more" before the close frame; whether it echoes
    -- it before answering the close is its business. Nothing else came.
    local rest = sock:receive()
    assert.is_true(rest == nil or rest == "more")
    assert.is_nil(sock:receive())
  end)

  it("checks shutdown's arguments", function()
    local sock = open("/echo")
    assert.has_error(function() sock:shutdown(1005) end)
    assert.has_error(function() sock:shutdown(999) end)
    assert.has_error(function() sock:shutdown(1000, string.rep("r", 124)) end)
    assert.equal("open", sock:state())
  end)

  it("reports a refusal's status, headers and JSON body (401 and 429)", function()
    for _, status in ipairs({ 401, 429 }) do
      local sock, id = connect("/refuse/" .. status)
      local changes = drive(engine, function() return sock:state() == "closed" end)
      assert.is_truthy(changes[id])
      local kind, message = sock:failure()
      assert.equal("refused", kind)
      assert.matches(tostring(status), message)
      local got, headers, body = sock:handshake()
      assert.equal(status, got)
      assert.equal("application/json", headers["content-type"])
      if status == 429 then assert.equal("7", headers["retry-after"]) end
      local decoded = cjson.decode(body)
      assert.equal(status, decoded.status)
      assert.equal("refused by ws_peer", decoded.message)
      assert.is_nil(sock:activity())
    end
  end)

  it("reads a chunked refusal body", function()
    local sock = connect("/refuse_chunked", nil, peer.raw)
    drive(engine, function() return sock:state() == "closed" end)
    assert.equal("refused", (sock:failure()))
    local status, _, body = sock:handshake()
    assert.equal(429, status)
    assert.equal('{"status": 429, "message": "slow down"}', body)
  end)

  it("refuses a 101 with the wrong Sec-WebSocket-Accept", function()
    local sock = connect("/bad_accept", nil, peer.raw)
    drive(engine, function() return sock:state() == "closed" end)
    local kind, message = sock:failure()
    assert.equal("protocol", kind)
    assert.matches("Sec%-WebSocket%-Accept", message)
    assert.equal(101, (sock:handshake()))
  end)

  it("fails on a masked server frame", function()
    local sock = connect("/masked")
    drive(engine, function() return sock:state() == "closed" end)
    assert.equal(101, (sock:handshake()))
    local kind, message = sock:failure()
    assert.equal("protocol", kind)
    assert.matches("masked", message)
  end)

  it("fails with network when the peer drops without a close frame, keeping what came", function()
    local sock = open("/echo")
    sock:send("kept")
    assert.equal("kept", next_message(sock))
    sock:close()
    sock = open("/drop")
    sock:send("go")
    drive(engine, function() return sock:state() == "closed" end)
    assert.equal("network", (sock:failure()))
    assert.is_nil(sock:close_info())
  end)

  it("fails with network when the connection ends right after the 101", function()
    local sock = connect("/head_then_drop", nil, peer.raw)
    drive(engine, function() return sock:state() == "closed" end)
    assert.equal(101, (sock:handshake()))
    assert.equal("network", (sock:failure()))
  end)

  it("fails with too_large on a message over max_message, keeping earlier ones", function()
    local sock = open("/echo", { max_message = 1000 })
    sock:send(string.rep("a", 1000))
    assert.equal(1000, #next_message(sock))
    sock:send(string.rep("b", 1001))
    drive(engine, function() return sock:state() == "closed" end)
    local kind, message = sock:failure()
    assert.equal("too_large", kind)
    assert.matches("1000", message)
  end)

  it("keeps messages received before a failure readable", function()
    local sock = open("/echo", { max_message = 10 })
    sock:send("short")
    sock:send(string.rep("x", 11))
    drive(engine, function() return sock:state() == "closed" end)
    assert.equal("too_large", (sock:failure()))
    assert.equal("short", sock:receive())
  end)

  it("fails with timeout when the connection (here its TLS handshake) outlasts connect_timeout", function()
    -- The raw peer reads the ClientHello as the start of an HTTP head and
    -- waits for the rest, so TLS never completes.
    local sock, id = connect("/silent", { connect_timeout = 0.3 }, peer.raw:gsub("^ws:", "wss:"))
    local changes = drive(engine, function() return sock:state() == "closed" end)
    assert.is_truthy(changes[id])
    local kind, message = sock:failure()
    assert.equal("timeout", kind)
    assert.matches("[Tt]imeout", message)
  end)

  it("fails with network when nothing listens on the port", function()
    -- Port 1 (tcpmux) has no listener on a test machine.
    local sock, id = connect("", nil, "ws://127.0.0.1:1")
    local changes = drive(engine, function() return sock:state() == "closed" end)
    assert.is_truthy(changes[id])
    local kind, message = sock:failure()
    assert.equal("network", kind)
    assert.is_string(message)
    assert.is_nil(sock:fd())
  end)

  it("close and collection mid-session, with output queued, are safe; close is idempotent", function()
    local sock = open("/echo")
    for _ = 1, 20 do sock:send(string.rep("q", 200000)) end
    sock:close()
    sock:close()
    assert.equal("closed", sock:state())
    assert.has_error(function() sock:send("x") end, "live socket is closed")
    -- Every question still has an answer after close.
    local status, headers, body = sock:handshake()
    assert.equal(101, status)
    assert.same({}, headers)
    assert.equal("", body)
    assert.is_nil(sock:receive())
    assert.is_nil(sock:failure())
    assert.is_nil(sock:fd())
    assert.equal(0, sock:pending())
    assert.is_number((sock:activity()))
    assert.is_nil(sock:close_info())
    assert.is_string(tostring(sock))
    local ok, err = pcall(sock.shutdown, sock)
    assert.is_false(ok)
    assert.matches("live socket is closed", err)
    assert.equal(0, engine:live_count())
    drive(engine, function() return true end)

    -- Dropped while connecting and while open, with output queued: made
    -- in a function so that no stack slot keeps them.
    local function abandon()
      local waiting = connect("/silent", nil, peer.raw)
      waiting:send(string.rep("w", 100000))
      local talking = open("/echo")
      talking:send(string.rep("w", 1000000))
      assert.equal(2, engine:live_count())
    end
    abandon()
    collectgarbage()
    collectgarbage()
    assert.equal(0, engine:live_count())
    drive(engine, function() return true end)
  end)

  it("send after a failure or shutdown", function()
    local sock = open("/echo")
    sock:shutdown()
    assert.is_true(sock:send("dropped: a close frame went out"))
    drive(engine, function() return sock:state() == "closed" end)
    assert.has_error(function() sock:send("x") end, "live socket is closed")
  end)

  it("engine:close() ends its sockets, which stay safe to use", function()
    local sock = open("/echo")
    local other = core.engine()
    local pending = core.live_socket({ url = peer.raw .. "/silent" })
    other:add_live(pending)
    other:close()
    engine:close()
    assert.equal("closed", sock:state())
    assert.equal("network", (sock:failure()))
    assert.equal("closed", pending:state())
    assert.has_error(function() sock:send("x") end)
    sock:close()
    pending:close()
    engine = core.engine()
  end)

  it("speaks wss with ca_file, on HTTP/1.1 although the server's ALPN prefers h2", function()
    if not peer.wss then return pending("needs the openssl tool") end
    local sock = open("/headers", { ca_file = ca, headers = { "Authorization: Bearer k" } }, peer.wss)
    local seen = cjson.decode(next_message(sock))
    assert.equal("http/1.1", seen.alpn)
    assert.equal("Bearer k", seen.headers.authorization)
    -- Large messages cross many TLS records: every decrypted byte is read
    -- before the socket waits again.
    for _, n in ipairs({ 70000, 3 * 1024 * 1024 }) do
      local payload = string.rep("tls!", n / 4)
      sock:send(payload)
      local back = next_message(sock)
      assert.is_true(back == payload, "TLS echo of " .. n .. " bytes")
    end
    sock:shutdown()
    drive(engine, function() return sock:state() == "closed" end)
    assert.is_nil(sock:failure())
  end)

  it("keeps TLS checks on: a certificate from an unknown CA fails as network", function()
    if not peer.wss then return pending("needs the openssl tool") end
    -- Debian's store, which never signed the peer's certificate.
    local sock = connect("/echo", { ca_file = "/etc/ssl/certs/ca-certificates.crt" }, peer.wss)
    drive(engine, function() return sock:state() == "closed" end)
    local kind, message = sock:failure()
    assert.equal("network", kind)
    assert.matches("certificate", message)
  end)

  it("goes through an HTTP proxy by CONNECT, so the proxy never sees the key", function()
    local log = dir .. "/proxy.log"
    files.write(log, "")
    local proxy = io.popen(("env -u LD_PRELOAD %s %s %s 2>/dev/null"):format(server.PYTHON,
      quote(server.ROOT .. "/spec/support/fake_proxy.py"), quote(log)))
    local port, pid = proxy:read("*l"):match("LISTENING (%d+) (%d+)")
    local sock = connect("/echo", {
      proxy = "http://127.0.0.1:" .. port, headers = { "Authorization: Bearer secret-key" },
    })
    drive(engine, function() return sock:state() == "closed" end)
    os.execute("kill " .. pid)
    proxy:close()
    -- The fake proxy hangs up after reading the request: no tunnel.
    assert.equal("network", (sock:failure()))
    local seen = files.read(log)
    assert.matches("^CONNECT 127%.0%.0%.1:%d+ HTTP/1%.1", seen)
    assert.not_matches("secret%-key", seen)
    assert.not_matches("Upgrade", seen)
  end)

  it("refuses bad options, naming them", function()
    local function refused(opts, pattern)
      local ok, err = pcall(core.live_socket, opts)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    refused({}, "'url' is required")
    refused({ url = "http://127.0.0.1/x" }, "ws:// or wss://")
    refused({ url = "ws://" }, "'url'")
    refused({ url = peer.ws, headers = { "X: a\r\nInjected: 1" } }, "CR, LF or NUL")
    refused({ url = peer.ws, headers = { "X: a\0b" } }, "CR, LF or NUL")
    refused({ url = peer.ws, headers = { "no colon" } }, "Name: value")
    refused({ url = peer.ws, headers = { "Sec-WebSocket-Key: x" } }, "set by the socket")
    refused({ url = peer.ws, headers = { 42 } }, "must be a string")
    refused({ url = peer.ws, max_message = 0 }, "max_message")
    refused({ url = peer.ws, max_message = 1.5 }, "max_message")
    refused({ url = peer.ws, connect_timeout = "1" }, "connect_timeout")
    local sock = core.live_socket({ url = peer.ws .. "/echo" })
    engine:add_live(sock)
    assert.has_error(function() engine:add_live(sock) end)
  end)
end)
