-- ca_file is the whole trust store, and a proxy tunnel keeps the key inside
-- TLS (issue 9), tested on fish.core itself against a real TLS server.
--
-- The system store cannot be changed safely, and libcurl does not read
-- OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR: it names Debian's store itself
-- (CURLOPT_CAINFO /etc/ssl/certs/ca-certificates.crt, CURLOPT_CAPATH
-- /etc/ssl/certs). So a child process gets a private mount namespace
-- (unshare -m) in which a temporary store is mounted over /etc/ssl/certs.
local files = require("support.files")
local harness = require("support.core_harness")

local quote = files.quote

local function sh(cmd)
  return (files.capture(cmd .. " 2>&1"):gsub("%s+$", ""))
end

describe("fish.core TLS", function()
  local dir, ca, other, tls
  local usable = harness.have("openssl")
  local private_mounts = usable
    and sh("d=$(mktemp -d) && unshare -m sh -c \"mount --bind $d /etc/ssl/certs\" && rmdir $d && echo yes") == "yes"

  -- A CA (certificate and key) named `name`.
  local function make_ca(name)
    local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
    sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=%s"
      .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
      .. " -keyout %s -out %s"):format(name, quote(key), quote(cert)))
    assert(files.exists(cert), "openssl made no CA certificate")
    return { cert = cert, key = key }
  end

  -- A certificate for 127.0.0.1 signed by `signer`.
  local function make_server_cert(signer)
    local key, csr, cert, ext = dir .. "/srv.key", dir .. "/srv.csr", dir .. "/srv.pem", dir .. "/srv.ext"
    files.write(ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    sh(("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1"
      .. " -keyout %s -out %s"):format(quote(key), quote(csr)))
    sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s"):format(
      quote(csr), quote(signer.cert), quote(signer.key), quote(ext), quote(cert)))
    assert(files.exists(cert), "openssl made no server certificate")
    return cert, key
  end

  setup(function()
    if not usable then return end
    dir = files.tmpdir()
    ca, other = make_ca("fish-system-ca"), make_ca("fish-other-ca")
    tls = harness.start({ "--tls", make_server_cert(ca) })
  end)

  teardown(function()
    if tls then tls.stop() end
    if dir then files.remove_tree(dir) end
  end)

  local function tls_it(name, fn, needs_mounts)
    if not usable then
      pending(name .. " (needs the openssl tool)")
    elseif needs_mounts and not private_mounts then
      pending(name .. " (needs unshare -m and mount --bind, as root)")
    else
      it(name, fn)
    end
  end

  tls_it("ca_file excludes the system store: a CA found only there is refused", function()
    -- A system-like store that trusts `ca`: the bundle file and the hashed
    -- directory, as Debian's ca-certificates lays them out.
    local store = dir .. "/store"
    sh("mkdir -p " .. quote(store))
    local hash = sh("openssl x509 -hash -noout -in " .. quote(ca.cert))
    sh(("cp %s %s && cp %s %s"):format(quote(ca.cert), quote(store .. "/" .. hash .. ".0"),
      quote(ca.cert), quote(store .. "/ca-certificates.crt")))
    local out = harness.child(dir, ([[
      local h = require("support.core_harness")
      for _, case in ipairs({ { "system" }, { "other", %q }, { "own", %q } }) do
        local r, kind, msg = h.fetch({ url = %q, ca_file = case[2] })
        print(case[1], kind or "ok", r:status(), msg)
        r:close()
      end
    ]]):format(other.cert, ca.cert, tls.url .. "/length/3"),
      ("unshare -m sh -c 'mount --bind %s /etc/ssl/certs && exec \"$0\" \"$1\"' "):format(store))
    -- Without ca_file the server is trusted through the (mounted) system
    -- store; with ca_file naming another CA that store is not consulted.
    assert.matches("system%s+ok%s+200", out)
    assert.matches("other%s+tls%s+0", out)
    assert.matches("own%s+ok%s+200", out)
  end, true)

  tls_it("OpenSSL's SSL_CERT_FILE and SSL_CERT_DIR add nothing, with or without ca_file", function()
    local env_dir = dir .. "/env-store"
    sh("mkdir -p " .. quote(env_dir))
    local hash = sh("openssl x509 -hash -noout -in " .. quote(ca.cert))
    sh(("cp %s %s"):format(quote(ca.cert), quote(env_dir .. "/" .. hash .. ".0")))
    local out = harness.child(dir, ([[
      local h = require("support.core_harness")
      for _, case in ipairs({ { "default" }, { "other", %q } }) do
        local r, kind = h.fetch({ url = %q, ca_file = case[2] })
        print(case[1], kind or "ok")
        r:close()
      end
    ]]):format(other.cert, tls.url .. "/length/3"),
      ("env SSL_CERT_FILE=%s SSL_CERT_DIR=%s "):format(quote(ca.cert), quote(env_dir)))
    assert.matches("default%s+tls", out)
    assert.matches("other%s+tls", out)
  end)

  tls_it("the real system store does not know the test CA (so the store above is what trusted it)", function()
    local r, kind = harness.fetch({ url = tls.url .. "/length/3" })
    assert.equal("tls", kind)
    r:close()
  end)

  tls_it("a proxy tunnel carries an https request without seeing the key", function()
    local proxy = harness.start({ "--proxy" })
    local secret = "sk-fish-tunnel-" .. tostring(os.time())
    local r, kind, msg = harness.fetch({ url = tls.url .. "/echo", proxy = proxy.url, proxy_tunnel = true,
      ca_file = ca.cert, headers = { "Authorization: Bearer " .. secret } })
    local log = proxy.log()
    proxy.stop()
    assert.is_nil(kind, msg)
    assert.matches(secret, r:take(), 1, true) -- the server got it...
    r:close()
    assert.equal(1, #log)
    assert.equal("CONNECT", log[1].proxy)
    assert.is_nil(log[1].head:find(secret, 1, true)) -- ...the proxy did not
    assert.is_true(#log[1].tunnel > 0)
    assert.is_nil(log[1].tunnel:find(secret, 1, true))
  end)
end)
