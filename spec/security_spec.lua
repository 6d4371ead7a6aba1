-- The API key stays secret, the bearer token never follows a redirect, TLS
-- is checked, a key is not sent in clear text to a remote host, and closed
-- clients stay closed.
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")
local run, write_file, mkdtemp = files.capture, files.write, files.tmpdir

-- Lua source that finds this checkout's fish from any directory, for scripts
-- run in a child interpreter.
local function child_prelude()
  local root = server.ROOT
  return ("package.path = %q .. package.path; package.cpath = %q .. package.cpath\n"):format(
    root .. "/src/?.lua;" .. root .. "/src/?/init.lua;", require("support.abi").cpath .. ";")
end

-- A key no test text could contain by chance.
local function new_key()
  local hex = {}
  for i = 1, 32 do hex[i] = ("%x"):format(math.random(0, 15)) end
  return "sk-fish-" .. table.concat(hex) .. "-" .. tostring(os.time())
end

-- Every string reachable from `value`: strings, numbers, table keys and
-- values, and the tostring of anything with a metatable. Functions are
-- opaque, as they are to any printer.
local function strings_of(value, out, seen)
  out, seen = out or {}, seen or {}
  local t = type(value)
  if t == "string" then
    out[#out + 1] = value
  elseif t == "number" or t == "boolean" then
    out[#out + 1] = tostring(value)
  elseif t == "table" then
    if seen[value] then return out end
    seen[value] = true
    if getmetatable(value) then out[#out + 1] = tostring(value) end
    for k, v in pairs(value) do
      strings_of(k, out, seen)
      strings_of(v, out, seen)
    end
  elseif t == "userdata" then
    out[#out + 1] = tostring(value)
  end
  return out
end

local function assert_no_key(key, value, what)
  for _, s in ipairs(strings_of(value)) do
    assert.is_nil(s:find(key, 1, true), (what or "a value") .. " contains the API key: " .. s:sub(1, 200))
    -- Not even half of it (a body cut at 64 KiB could end inside the key).
    assert.is_nil(s:find(key:sub(1, math.floor(#key / 2)), 1, true), (what or "a value") .. " contains part of the key")
  end
end

describe("security", function()
  local KEY = new_key()
  local srv, client

  setup(function()
    srv = server.start({ api_key = KEY })
    client = fish.new({ api_key = KEY, base_url = srv.url, retries = 0 })
  end)

  teardown(function()
    client.close()
    srv:stop()
  end)

  before_each(function() srv:reset() end)

  describe("the API key", function()
    it("is sent as a bearer token (so the checks below look for the right thing)", function()
      assert(client.convert({ text = "authorised", format = "pcm" }))
      assert.equal("Bearer " .. KEY, srv:last_request("/v1/tts").headers.authorization)
    end)

    it("is redacted from an error body that echoes it, in text and in JSON", function()
      srv:fault("/v1/tts", { status = 401, body = "Invalid API key: " .. KEY .. " (expired)" })
      local _, _, err = client.convert({ text = "echo", format = "pcm" })
      assert.equal("auth", err.kind)
      assert.equal("Invalid API key: <redacted> (expired)", err.body)
      assert.equal("Invalid API key: <redacted> (expired)", err.message)
      assert_no_key(KEY, err, "a 401 error")
      assert_no_key(KEY, tostring(err), "tostring(err)")

      srv:fault("/v1/tts", { status = 403, body = { status = 403, message = "key " .. KEY .. " is revoked",
        reason = KEY, detail = { KEY, { key = KEY } } } })
      _, _, err = client.convert({ text = "echo", format = "pcm" })
      assert.equal("permission", err.kind)
      assert.matches("<redacted>", err.message)
      assert.is_table(err.json)
      assert.equal("<redacted>", err.json.reason)
      assert_no_key(KEY, err, "a 403 error")
      assert_no_key(KEY, tostring(err), "tostring(err)")
    end)

    it("is redacted even when the 64 KiB cap cuts the body inside the key", function()
      local body = string.rep("x", 64 * 1024 - 12) .. KEY .. string.rep("y", 1000)
      srv:fault("/v1/tts", { status = 500, body = body, content_type = "text/plain" })
      local _, _, err = client.convert({ text = "cut", format = "pcm" })
      assert.equal("server", err.kind)
      assert.is_true(err.body_truncated)
      assert.matches("<redacted>$", err.body)
      assert_no_key(KEY, err, "a truncated error")
    end)

    -- The message is the body's first 300 characters on one line: the key
    -- must go before that cut, or its head stays behind.
    it("leaves no piece of itself in a message that is cut inside the key", function()
      for _, lead in ipairs({ 280, 290, 295, 299 }) do
        local text = string.rep("a", lead) .. KEY .. " and more"
        for _, body in ipairs({ text, { status = 400, message = text } }) do
          srv:fault("/v1/tts", { status = 400, body = body })
          local _, message, err = client.convert({ text = "cut message", format = "pcm" })
          assert.equal(400, err.status)
          assert.is_nil(message:find(KEY:sub(1, 4), 1, true), "lead " .. lead .. ": " .. message:sub(-40))
          assert.is_nil(tostring(err):find(KEY:sub(1, 4), 1, true), "tostring(err), lead " .. lead)
          assert_no_key(KEY, err, "a 400 error")
        end
      end
    end)

    it("is redacted from a redirect's Location", function()
      srv:fault("/v1/tts", { redirect = "http://127.0.0.1:1/login?token=" .. KEY })
      local _, _, err = client.convert({ text = "redirect", format = "pcm" })
      assert.equal(302, err.status)
      assert.equal("http://127.0.0.1:1/login?token=<redacted>", err.location)
      assert_no_key(KEY, err, "a redirect error")
    end)

    it("appears in no error of any kind, nor in tostring of fish objects", function()
      local errs = {}
      local function collect(...)
        local result, msg, err = ...
        assert.equal(tostring(err), msg)
        assert.is_nil(result)
        assert.is_true(fish.is_error(err))
        errs[#errs + 1] = err
      end
      srv:fault("/v1/tts", { status = 500, body = { message = "boom " .. KEY } })
      collect(client.convert({ text = "server", format = "pcm" }))
      srv:fault("/v1/tts", { reset = "before_headers" }, { times = 2 })
      collect(client.convert({ text = "network", format = "pcm" }))
      srv:control("DELETE", "/_test/faults")
      srv:fault("/v1/tts", { slow_headers = 1 })
      collect(client.convert({ text = "timeout", format = "pcm", first_byte_timeout = 0.2 }))
      local token = fish.cancel_token()
      token:cancel()
      collect(client.convert({ text = "canceled", format = "pcm", cancel = token }))
      srv:fault("/model/seed-voice-1", { bad_json = true })
      collect(client.voices.get("seed-voice-1"))
      collect(client.voices.get("no-such-voice"))
      srv:fault("/model", { status = 422, body = { { loc = { "title" }, msg = KEY } } }, { method = "POST" })
      collect(client.voices.create({ title = "t", voices = { "RIFF" } }))
      local dead = fish.new({ api_key = KEY, base_url = "http://127.0.0.1:1", retries = 0 })
      collect(dead.convert({ text = "refused" }))
      local tls = fish.new({ api_key = KEY, base_url = "https://127.0.0.1:" .. srv.port, retries = 0 })
      collect(tls.convert({ text = "tls" }))

      local kinds = {}
      for _, err in ipairs(errs) do
        kinds[#kinds + 1] = err.kind
        assert_no_key(KEY, err, "a " .. err.kind .. " error")
        assert_no_key(KEY, tostring(err), "tostring of a " .. err.kind .. " error")
      end
      assert.same({ "server", "network", "timeout", "canceled", "invalid_response", "not_found", "http",
        "network", "network" }, kinds)

      local path = os.tmpname()
      write_file(path, "audio")
      for _, value in ipairs({ client, dead, tls, client.voices, client.asr, client.account, token,
        fish.cancel_token(), fish.file(path) }) do
        assert_no_key(KEY, tostring(value), "tostring(" .. tostring(value) .. ")")
        assert_no_key(KEY, value, tostring(value))
      end
      os.remove(path)
      dead.close()
      tls.close()
    end)

    it("appears in no output of a failing script, its traceback included", function()
      local script = os.tmpname()
      write_file(script, child_prelude() .. [[
        local fish = require("fish")
        local c = fish.default()
        print("client", c, c.voices, fish.cancel_token())
        local _, msg, err = c.convert({ text = "one", retries = 0 })
        print("error", msg, err, err.message, err.body)
        io.stderr:write("stderr ", tostring(err), "\n")
        local task = fish.spawn(function() return assert(c.convert({ text = "two", retries = 0 })) end)
        print("task", pcall(function() return task:wait() end))
        fish.spawn(function() error((select(2, c.convert({ text = "three", retries = 0 })))) end)
        print("run", pcall(fish.run))
        assert(c.convert({ text = "four", retries = 0 }))
      ]])
      srv:fault("/v1/tts", { status = 401, body = "bad key " .. KEY }, { times = 4 })
      local lua = require("support.abi").interpreter
      local out = run(("FISH_API_KEY=%s FISH_BASE_URL=%s %s %s 2>&1"):format(
        server.shell_quote(KEY), server.shell_quote(srv.url), lua, script))
      os.remove(script)
      -- The script ran to its uncaught error, printing every error on the way.
      assert.matches("client\tfish%.client", out)
      assert.matches("error\tfish%.convert: HTTP 401 unauthorized: bad key <redacted>\tfish%.convert: HTTP 401", out)
      assert.matches("stderr fish%.convert: HTTP 401 unauthorized", out)
      assert.matches("task\tfalse", out)
      -- The unwatched task's error went to the default handler, io.stderr.
      assert.matches("run\ttrue", out)
      assert.matches("fish task failed: ", out)
      assert.matches("stack traceback", out)
      assert.equal(4, #srv:requests())
      assert.is_nil(out:find(KEY, 1, true), "the output contains the API key:\n" .. out)
    end)

    it("is refused before any traffic when missing", function()
      local ok, msg = pcall(fish.new, { api_key = "", base_url = srv.url })
      assert.is_false(ok)
      assert.matches("no API key", msg)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("redirects", function()
    local other

    before_each(function() other = server.start({ api_key = KEY }) end)
    after_each(function() other:stop() end)

    for _, status in ipairs({ 301, 302, 303, 307, 308 }) do
      it("are not followed (" .. status .. "), so the token never reaches the target", function()
        local target = other.url .. "/v1/tts"
        srv:fault("/v1/tts", { redirect = target, status = status })
        local audio, _, err = client.convert({ text = "follow me", format = "pcm" })
        assert.is_nil(audio)
        assert.equal("http", err.kind)
        assert.equal(status, err.status)
        assert.equal(target, err.location)
        assert.matches("redirects are not followed", err.message)
        assert.equal(1, #srv:requests())
        assert.same({}, other:requests())
      end)
    end

    it("are not followed for GET calls either", function()
      srv:fault("/model/seed-voice-1", { redirect = other.url .. "/model/seed-voice-1", status = 301 })
      local voice, _, err = client.voices.get("seed-voice-1")
      assert.is_nil(voice)
      assert.equal(301, err.status)
      assert.same({}, other:requests())
    end)
  end)

  describe("TLS", function()
    it("is checked: https to a plain-http server fails as a network error", function()
      local c = fish.new({ api_key = KEY, base_url = "https://127.0.0.1:" .. srv.port, retries = 0 })
      local audio, _, err = c.convert({ text = "tls", format = "pcm" })
      c.close()
      assert.is_nil(audio)
      assert.equal("network", err.kind)
      assert.is_true(err.cause == "tls" or err.cause == "network", tostring(err.cause))
      assert.equal(0, err.status)
    end)

    it("takes a ca_file, and a missing one is an error, not a success", function()
      local c = fish.new({ api_key = KEY, base_url = "https://127.0.0.1:" .. srv.port, retries = 0,
        ca_file = "/nonexistent/fish-ca.pem" })
      local audio, _, err = c.convert({ text = "tls", format = "pcm" })
      c.close()
      assert.is_nil(audio)
      assert.equal("network", err.kind)
      assert.equal("tls", err.cause)
      assert.matches("fish%-ca%.pem", err.message)
    end)

    describe("against a real TLS server", function()
      local openssl = run("command -v openssl"):match("%S+")
      local dir

      -- A self-signed certificate for `san`, and a TLS server that answers
      -- POST /v1/tts with a few bytes of audio.
      local TLS_SERVER = [[
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"RIFF-tls-audio"
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("LISTENING %d" % srv.server_address[1], flush=True)
srv.serve_forever()
]]

      local function make_cert(name, san)
        local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
        local cmd = ("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
          .. " -subj /CN=fish-test -addext subjectAltName=%s -keyout %s -out %s 2>&1"):format(
          san, server.shell_quote(key), server.shell_quote(cert))
        run(cmd)
        assert(io.open(cert), "openssl made no certificate")
        return cert, key
      end

      local function start_tls(cert, key)
        local script = dir .. "/tls_server.py"
        write_file(script, TLS_SERVER)
        local pipe = assert(io.popen(("env -u LD_PRELOAD %s %s %s %s & echo PID $!"):format(server.PYTHON,
          server.shell_quote(script), server.shell_quote(cert), server.shell_quote(key))))
        local pid, port
        for line in pipe:lines() do
          pid = pid or line:match("^PID (%d+)")
          port = port or line:match("^LISTENING (%d+)")
          if pid and port then break end
        end
        assert(port, "the TLS server did not start")
        return {
          url = "https://127.0.0.1:" .. port,
          stop = function()
            os.execute("kill " .. pid .. " 2>/dev/null")
            pipe:close()
          end,
        }
      end

      setup(function() if openssl then dir = mkdtemp() end end)
      teardown(function() if dir then require("support.files").remove_tree(dir) end end)

      local function tls_it(name, fn)
        if openssl then it(name, fn) else pending(name .. " (needs the openssl tool)") end
      end

      tls_it("refuses an unknown CA, and trusts the one given by ca_file", function()
        local cert, key = make_cert("good", "IP:127.0.0.1")
        local tls = start_tls(cert, key)
        local untrusted = fish.new({ api_key = KEY, base_url = tls.url, retries = 0 })
        local audio, _, err = untrusted.convert({ text = "tls" })
        local trusted = fish.new({ api_key = KEY, base_url = tls.url, retries = 0, ca_file = cert })
        local ok_audio, ok_err = trusted.convert({ text = "tls" })
        tls.stop()
        untrusted.close()
        trusted.close()
        assert.is_nil(audio)
        assert.equal("network", err.kind)
        assert.equal("tls", err.cause)
        assert.is_nil(ok_err, ok_err and tostring(ok_err))
        assert.equal("RIFF-tls-audio", ok_audio)
      end)

      tls_it("checks the host name even for a trusted certificate", function()
        local cert, key = make_cert("otherhost", "DNS:not-this-host.example")
        local tls = start_tls(cert, key)
        local c = fish.new({ api_key = KEY, base_url = tls.url, retries = 0, ca_file = cert })
        local audio, _, err = c.convert({ text = "tls" })
        tls.stop()
        c.close()
        assert.is_nil(audio)
        assert.equal("network", err.kind)
        assert.equal("tls", err.cause)
      end)
    end)
  end)

  describe("plain http", function()
    it("is refused with a key for a host that is not loopback", function()
      for _, url in ipairs({ "http://example.com", "http://example.com:8080/v1", "http://10.0.0.1",
        "http://localhost.example.com" }) do
        local ok, msg = pcall(fish.new, { api_key = KEY, base_url = url })
        assert.is_false(ok, url .. " was accepted")
        assert.matches("plain http", msg)
        assert.is_nil(msg:find(KEY, 1, true))
      end
    end)

    it("refuses user information, which could hide the real host", function()
      for _, url in ipairs({ "http://127.0.0.1:1@example.com", "http://127.0.0.1@example.com", "https://user:pw@api.fish.audio" }) do
        local ok, msg = pcall(fish.new, { api_key = KEY, base_url = url, insecure = true })
        assert.is_false(ok, url .. " was accepted")
        assert.matches("user information", msg)
      end
    end)

    it("treats [::1] as loopback", function()
      local c = fish.new({ api_key = KEY, base_url = "http://[::1]:8080" })
      c.close()
    end)

    it("is allowed with insecure = true (nothing is sent here)", function()
      local c = fish.new({ api_key = KEY, base_url = "http://example.com", insecure = true })
      assert.equal("http://example.com", c.base_url)
      c.close()
    end)

    it("is allowed to loopback, where the bundled server lives", function()
      for _, url in ipairs({ "http://127.0.0.1:8080", "http://localhost:8080", "http://127.1.2.3" }) do
        local c = fish.new({ api_key = KEY, base_url = url })
        c.close()
      end
    end)

    it("https to a remote host is fine", function()
      fish.new({ api_key = KEY, base_url = "https://api.fish.audio" }).close()
    end)
  end)

  describe("closing", function()
    it("is harmless twice, and a closed client raises a clear error on use", function()
      local c = fish.new({ api_key = KEY, base_url = srv.url })
      assert(c.convert({ text = "before", format = "pcm" }))
      assert.is_false(c.closed())
      c.close()
      c.close()
      c:close()
      assert.is_true(c.closed())
      local calls = {
        { "fish.convert", function() return c.convert({ text = "after" }) end },
        { "fish.voices.get", function() return c.voices.get("seed-voice-1") end },
        { "fish.voices.list", function() return c.voices.list({}) end },
        { "fish.voices.create", function() return c.voices.create({ title = "t", voices = { "x" } }) end },
        { "fish.asr.transcribe", function() return c.asr.transcribe({ audio = "RIFF" }) end },
        { "fish.account.credits", function() return c.account.credits() end },
      }
      for _, call in ipairs(calls) do
        local ok, msg = pcall(call[2])
        assert.is_false(ok, call[1] .. " worked on a closed client")
        assert.matches(call[1]:gsub("%.", "%%.") .. ": this client is closed", msg)
      end
      assert.equal(1, #srv:requests())
    end)

    it("cancels a call that is running", function()
      local c = fish.new({ api_key = KEY, base_url = srv.url, retries = 2 })
      srv:fault("/v1/tts", { slow_headers = 2 })
      local result
      fish.spawn(function() result = { c.convert({ text = "slow", format = "pcm" }) } end)
      fish.spawn(function()
        local wake = core.now() + 0.2
        repeat fish.sleep(0.05) until core.now() >= wake
        c.close()
      end)
      local started = core.now()
      fish.run()
      assert.is_true(core.now() - started < 1.5)
      assert.is_nil(result[1])
      assert.equal("canceled", result[3].kind)
      assert.equal(1, #srv:requests())
    end)

    it("works with <close> on Lua 5.4", function()
      if _VERSION ~= "Lua 5.4" then pending("<close> is Lua 5.4 syntax") return end
      local chunk = assert(load([[
        local fish, url, key = ...
        local kept
        do
          local c <close> = fish.new({ api_key = key, base_url = url })
          kept = c
          assert(c.convert({ text = "scoped", format = "pcm" }))
        end
        return kept
      ]]))
      local c = chunk(fish, srv.url, KEY)
      assert.is_true(c.closed())
      assert.has_error(function() c.convert({ text = "after scope" }) end)
    end)
  end)
end)
