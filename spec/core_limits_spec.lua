-- Hardening of the C core (issue 9), tested on fish.core itself: size caps
-- on kept bodies, temporary files that never outlive their request, NaN and
-- huge numbers, core.stat, files that change size during an upload, proxies
-- that never come from the environment, and clear failures for limits that
-- libcurl reports as something else. The public API on top is tested by the
-- Lua layer's specs.
local core = require("fish.core")
local files = require("support.files")
local harness = require("support.core_harness")

local quote = files.quote
local NAN = 0 / 0

local function sh(cmd)
  return (files.capture(cmd .. " 2>&1"):gsub("%s+$", ""))
end

-- Octal permission bits of a path, as the stat tool sees them.
local function mode_of(path)
  return tonumber(sh("stat -c %a " .. quote(path)), 8)
end

describe("fish.core limits", function()
  local srv, dir

  setup(function()
    srv = harness.start()
    dir = files.tmpdir()
  end)

  teardown(function()
    srv.stop()
    files.remove_tree(dir)
  end)

  before_each(function() srv.log() end)

  describe("max_bytes", function()
    it("stops an endless 2xx body kept in memory and reports too_large", function()
      local r, kind, msg = harness.fetch({ url = srv.url .. "/endless", max_bytes = 100000 })
      assert.equal("too_large", kind)
      assert.equal("the answer exceeded 100000 bytes", msg)
      local held = r:buffered()
      assert.is_true(held <= 100000, "kept " .. held .. " bytes")
      r:close()
    end)

    it("never says 'Failure writing output' for the cap", function()
      local r, kind, msg = harness.fetch({ url = srv.url .. "/chunked/5000", max_bytes = 10 })
      assert.equal("too_large", kind)
      assert.is_nil(msg:find("Failure writing", 1, true))
      r:close()
    end)

    for _, row in ipairs({
      -- route, cap, expected failure (nil: the whole body arrives)
      { "/length/1000", 1000, nil },
      { "/length/1001", 1000, "too_large" },
      { "/chunked/1000", 1000, nil },
      { "/chunked/1001", 1000, "too_large" },
      { "/length/0", 0, nil },
      { "/chunked/1", 0, "too_large" },
    }) do
      it(("%s with max_bytes = %d: %s"):format(row[1], row[2], row[3] or "kept whole"), function()
        local r, kind = harness.fetch({ url = srv.url .. row[1], max_bytes = row[2] })
        assert.equal(row[3], kind)
        if not row[3] then assert.equal(tonumber(row[1]:match("%d+$")), #(r:take() or "")) end
        r:close()
      end)
    end

    it("refuses a declared Content-Length over the cap before reading the body", function()
      local r, kind, msg = harness.fetch({ url = srv.url .. "/length/50000000", max_bytes = 1000 })
      assert.equal("too_large", kind)
      assert.equal("the answer exceeded 1000 bytes", msg)
      assert.equal(0, (r:progress()))
      r:close()
    end)

    it("counts only untaken bytes for a stream, so a consumer that keeps up never hits it", function()
      local r
      local taken = 0
      r = core.request({ url = srv.url .. "/length/20000000", sink = "stream", max_bytes = 4000000 })
      harness.run(r, function() taken = taken + #(r:take() or "") end)
      assert.is_nil(r:result())
      taken = taken + #(r:take() or "")
      assert.equal(20000000, taken)
      r:close()
    end)

    it("stops a stream whose consumer never takes", function()
      local r, kind = harness.fetch({ url = srv.url .. "/endless", sink = "stream", max_bytes = 300000 })
      assert.equal("too_large", kind)
      r:close()
    end)

    it("is an integer >= 0", function()
      for _, bad in ipairs({ -1, 1.5, NAN, "10" }) do
        local ok, err = pcall(core.request, { url = srv.url, max_bytes = bad })
        assert.is_false(ok, tostring(bad))
        assert.matches("max_bytes", err)
      end
    end)
  end)

  describe("the buffer sink", function()
    it("reserves its buffer once from Content-Length instead of doubling from 256 B", function()
      local r, kind = harness.fetch({ url = srv.url .. "/length/1000000" })
      assert.is_nil(kind)
      local len, cap = r:buffered()
      assert.equal(1000000, len)
      assert.equal(1000000, cap)
      r:close()
    end)

    it("reserves no more than max_bytes", function()
      local r = harness.fetch({ url = srv.url .. "/length/300000", max_bytes = 2000000 })
      local _, cap = r:buffered()
      assert.equal(300000, cap)
      r:close()
    end)

    it("does not trust a huge Content-Length for its reservation", function()
      local r, kind = harness.fetch({ url = srv.url .. "/claim/1000000000000" })
      assert.equal("network", kind) -- the server hung up after 10 bytes
      local len, cap = r:buffered()
      assert.equal(10, len)
      assert.is_true(cap <= 64 * 1024 * 1024, "reserved " .. cap)
      r:close()
    end)
  end)

  describe("the file sink's temporary file", function()
    local n = 0
    local function names()
      n = n + 1
      return dir .. "/out" .. n .. ".wav.part", dir .. "/out" .. n .. ".wav"
    end

    it("is removed by close() unless committed", function()
      local temp, target = names()
      local r, kind = harness.fetch({ url = srv.url .. "/length/5000", sink = "file", path = temp, target = target })
      assert.is_nil(kind)
      assert.is_true(files.exists(temp))
      r:close()
      assert.is_false(files.exists(temp))
      assert.is_false(files.exists(target))
    end)

    it("is moved into place by commit(target), after which close() leaves it", function()
      local temp, target = names()
      local r = harness.fetch({ url = srv.url .. "/length/5000", sink = "file", path = temp, target = target })
      assert.is_true(r:commit(target))
      r:close()
      assert.is_false(files.exists(temp))
      assert.equal(5000, files.size(target))
    end)

    it("replaces an existing target and keeps its mode (a 0600 file stays 0600)", function()
      local temp, target = names()
      files.write(target, "old")
      sh("chmod 600 " .. quote(target))
      local r = core.request({ url = srv.url .. "/length/5000", sink = "file", path = temp, target = target })
      harness.run(r)
      assert.equal(tonumber("600", 8), mode_of(temp))
      assert.is_true(r:commit(target))
      r:close()
      assert.equal(tonumber("600", 8), mode_of(target))
      assert.equal(5000, files.size(target))
    end)

    it("gets the target's mode even when the umask would narrow it", function()
      local temp, target = names()
      files.write(target, "old")
      sh("chmod 664 " .. quote(target))
      local out = harness.child(dir, ([[
        local h = require("support.core_harness")
        local r = h.fetch({ url = %q, sink = "file", path = %q, target = %q })
        print(assert(r:commit(%q)))
      ]]):format(srv.url .. "/length/10", temp, target, target), "umask 077;")
      assert.matches("true", out)
      assert.equal(tonumber("664", 8), mode_of(target))
    end)

    it("without an existing target, gets 0666 less the umask", function()
      local temp, target = names()
      local out = harness.child(dir, ([[
        local h = require("support.core_harness")
        local r = h.fetch({ url = %q, sink = "file", path = %q, target = %q })
        print(assert(r:commit(%q)))
      ]]):format(srv.url .. "/length/10", temp, target, target), "umask 027;")
      assert.matches("true", out)
      assert.equal(tonumber("640", 8), mode_of(target))
    end)

    it("is removed when the request is collected without close()", function()
      local temp, target = names()
      do
        local r = core.request({ url = srv.url .. "/length/5000", sink = "file", path = temp, target = target })
        harness.run(r)
      end
      assert.is_true(files.exists(temp))
      collectgarbage()
      collectgarbage()
      assert.is_false(files.exists(temp))
    end)

    it("is removed after a canceled transfer", function()
      local temp = names()
      local r = core.request({ url = srv.url .. "/endless", sink = "file", path = temp })
      local loop = require("fish.loop")
      loop.start(r)
      loop.wait_until(function() return (r:progress()) > 100000 end)
      r:cancel()
      assert.is_true(files.exists(temp))
      r:close()
      assert.is_false(files.exists(temp))
    end)

    it("is removed when the script calls os.exit mid-transfer", function()
      local temp = names()
      local out, status = harness.child(dir, ([[
        local core, loop = require("fish.core"), require("fish.loop")
        local r = core.request({ url = %q, sink = "file", path = %q })
        loop.start(r)
        loop.wait_until(function() return (r:progress()) > 100000 end)
        local f = io.open(%q, "rb")
        print(f and "part exists" or "no part")
        os.exit(3)
      ]]):format(srv.url .. "/endless", temp, temp))
      assert.equal(3, status, out)
      assert.matches("part exists", out)
      assert.is_false(files.exists(temp))
    end)

    it("is never opened over an existing file, and such a file is left alone", function()
      local temp = names()
      files.write(temp, "a stranger's file")
      local r, kind, msg = harness.fetch({ url = srv.url .. "/length/10", sink = "file", path = temp })
      assert.equal("write", kind)
      assert.matches("File exists", msg)
      r:close()
      assert.equal("a stranger's file", files.read(temp))
    end)

    it("cannot be committed after a failed transfer, and is not created for one", function()
      local temp, target = names()
      local r = harness.fetch({ url = srv.url .. "/no-such-route", sink = "file", path = temp, target = target })
      assert.equal(404, r:status())
      local ok, msg = r:commit(target)
      assert.is_nil(ok)
      assert.matches("did not succeed", msg)
      r:close()
      assert.is_false(files.exists(temp))
      assert.is_false(files.exists(target))
    end)

    it("commit is refused while running, without a file sink, and twice", function()
      local temp, target = names()
      local r = core.request({ url = srv.url .. "/endless", sink = "file", path = temp })
      assert.has_error(function() r:commit(target) end)
      r:close()
      local b = harness.fetch({ url = srv.url .. "/length/1" })
      assert.has_error(function() b:commit(target) end)
      b:close()
      local f = harness.fetch({ url = srv.url .. "/length/1", sink = "file", path = temp })
      assert.is_true(f:commit(target))
      assert.has_error(function() f:commit(target) end)
      f:close()
    end)

    it("creates an empty file on commit for an empty 2xx body", function()
      local temp, target = names()
      local r = harness.fetch({ url = srv.url .. "/length/0", sink = "file", path = temp })
      assert.is_true(r:commit(target))
      r:close()
      assert.equal(0, files.size(target))
    end)

    it("reports a failed rename as nil, message and still removes the temp file", function()
      local temp = names()
      local r = harness.fetch({ url = srv.url .. "/length/10", sink = "file", path = temp })
      local ok, msg = r:commit(dir .. "/no/such/dir/out.wav")
      assert.is_nil(ok)
      assert.matches("no/such/dir", msg)
      r:close()
      assert.is_false(files.exists(temp))
    end)
  end)

  describe("numbers", function()
    it("engine:poll(NaN) is an argument error", function()
      local e = core.engine()
      local ok, err = pcall(e.poll, e, NAN)
      assert.is_false(ok)
      assert.matches("bad argument", err)
      assert.matches("NaN", err)
      -- Huge is clamped: woken first, it returns at once instead of
      -- failing on an overflowed timeout.
      e:wakeup()
      e:poll(math.huge)
      e:poll(-math.huge)
      e:close()
    end)

    it("NaN options are argument errors naming the option", function()
      for _, key in ipairs({ "connect_timeout", "error_body_limit" }) do
        local ok, err = pcall(core.request, { url = srv.url, [key] = NAN })
        assert.is_false(ok)
        assert.matches(key, err)
        assert.matches("NaN", err)
      end
    end)

    it("huge values are clamped, not overflowed", function()
      local r, kind = harness.fetch({ url = srv.url .. "/length/10", connect_timeout = math.huge,
        error_body_limit = math.huge, max_bytes = 2 ^ 62 })
      assert.is_nil(kind)
      r:close()
      r, kind = harness.fetch({ url = srv.url .. "/length/10", connect_timeout = 1e300 })
      assert.is_nil(kind)
      r:close()
    end)
  end)

  describe("core.stat", function()
    it("names the type, size and mode, following links unless asked not to", function()
      local f = dir .. "/stat-file"
      files.write(f, "12345")
      sh("chmod 640 " .. quote(f))
      sh("ln -sf " .. quote(f) .. " " .. quote(dir .. "/stat-link"))
      sh("mkfifo " .. quote(dir .. "/stat-fifo"))
      sh("mkdir -p " .. quote(dir .. "/stat-dir"))
      local st = assert(core.stat(f))
      assert.same({ type = "file", size = 5, mode = tonumber("640", 8), writable = true }, st)
      assert.equal("file", core.stat(dir .. "/stat-link").type)
      assert.equal("link", core.stat(dir .. "/stat-link", true).type)
      assert.equal("fifo", core.stat(dir .. "/stat-fifo").type)
      assert.equal("directory", core.stat(dir .. "/stat-dir").type)
      assert.equal("char", core.stat("/dev/null").type)
      if math.type then assert.equal("integer", math.type(st.size)) end
    end)

    it("says whether the path is writable (access W_OK)", function()
      local ro = dir .. "/ro"
      sh("mkdir -p " .. quote(ro) .. " && touch " .. quote(ro .. "/f"))
      -- root may write anything, so read-only is shown by a read-only mount.
      if sh("unshare -m true && echo yes") ~= "yes" then
        pending("needs unshare -m for a read-only mount")
        return
      end
      local wrap = ("unshare -m sh -c 'mount --bind %s %s && mount -o remount,ro,bind %s %s && exec \"$0\" \"$1\"' ")
        :format(ro, ro, ro, ro)
      local out = harness.child(dir, ([[
        local core = require("fish.core")
        print("ro", core.stat(%q).writable, "rw", core.stat(%q).writable)
      ]]):format(ro .. "/f", dir .. "/stat-file"), wrap)
      assert.matches("ro%s+false%s+rw%s+true", out)
    end)

    it("answers nil and a message naming the path for a missing one", function()
      local st, msg = core.stat(dir .. "/missing")
      assert.is_nil(st)
      assert.matches("missing", msg)
      assert.matches("No such file", msg)
    end)

    it("refuses a path with a NUL byte instead of truncating it", function()
      local ok, err = pcall(core.stat, dir .. "\0/etc")
      assert.is_false(ok)
      assert.matches("NUL", err)
    end)
  end)

  describe("NUL bytes in strings passed to libcurl or the OS", function()
    local good = { url = "http://127.0.0.1:1/" }
    local function with(extra)
      local t = {}
      for k, v in pairs(good) do t[k] = v end
      for k, v in pairs(extra) do t[k] = v end
      return t
    end
    for name, opts in pairs({
      url = with({ url = "http://127.0.0.1:1/\0evil" }),
      path = with({ sink = "file", path = "/tmp/a\0b" }),
      target = with({ sink = "file", path = "/tmp/ab", target = "/tmp/a\0b" }),
      ca_file = with({ ca_file = "/etc/ssl\0x" }),
      proxy = with({ proxy = "http://127.0.0.1:1\0x" }),
      header = with({ headers = { "X-A: b\0c" } }),
      method = with({ method = "PATCH\0X" }),
      ["mime name"] = with({ method = "POST", mime = { { name = "a\0b", data = "x" } } }),
      ["mime filename"] = with({ method = "POST", mime = { { name = "a", data = "x", filename = "f\0g" } } }),
      ["mime type"] = with({ method = "POST", mime = { { name = "a", data = "x", type = "a/b\0c" } } }),
      ["mime file"] = with({ method = "POST", mime = { { name = "a", file = "/etc/hostname\0x" } } }),
    }) do
      it("is an argument error in the " .. name, function()
        local ok, err = pcall(core.request, opts)
        assert.is_false(ok)
        assert.matches("NUL", err)
      end)
    end

    it("is fine in mime data and bodies, which carry lengths", function()
      local r, kind = harness.fetch({ url = srv.url .. "/upload", method = "POST", body = "a\0b" })
      assert.is_nil(kind)
      r:close()
      assert.equal(3, harness.find(srv.log(), "upload").received)
      r = harness.fetch({ url = srv.url .. "/upload", method = "POST", mime = { { name = "n", data = "a\0b" } } })
      assert.is_nil(r:result())
      assert.equal(200, r:status())
      r:close()
    end)
  end)

  describe("files that change size during an upload", function()
    local function upload_file(content)
      local path = dir .. "/upload.bin"
      files.write(path, content)
      return path
    end

    local function upload(path, size)
      return core.request({ url = srv.url .. "/upload", method = "POST",
        mime = { { name = "audio", file = path, size = size, filename = "a.wav", type = "audio/wav" } } })
    end

    local function last_upload()
      return harness.find(srv.log(), "upload")
    end

    it("send exactly the recorded size when unchanged", function()
      local path = upload_file(("x"):rep(300000))
      local r = harness.run(upload(path, 300000))
      assert.is_nil(r:result())
      assert.equal(200, r:status())
      local e = last_upload()
      assert.equal(e.declared, e.received)
      assert.equal(0, e.extra)
      assert.is_true(e.declared > 300000)
      r:close()
    end)

    it("fail with file_changed when the file grows, never sending more than declared", function()
      local path = upload_file(("x"):rep(300000))
      local r = upload(path, 300000)
      files.write(path, ("y"):rep(400000))
      harness.run(r)
      local kind, msg = r:result()
      assert.equal("file_changed", kind)
      assert.equal(path .. " changed size during the upload", msg)
      local e = last_upload()
      assert.is_true(e.received < e.declared, "received " .. e.received .. " of " .. e.declared)
      r:close()
    end)

    it("fail with file_changed when the file shrinks", function()
      local path = upload_file(("x"):rep(300000))
      local r = upload(path, 300000)
      files.write(path, ("y"):rep(1000))
      harness.run(r)
      assert.equal("file_changed", (r:result()))
      local e = last_upload()
      assert.is_true(e.received < e.declared)
      r:close()
    end)

    it("raise at creation, naming the path, when the size differs from the recorded one", function()
      local path = upload_file("12345")
      local ok, err = pcall(upload, path, 4)
      assert.is_false(ok)
      assert.matches(path, err, 1, true)
      assert.matches("is 5 bytes, expected 4", err)
    end)

    it("raise at creation, naming the path, for a missing file or one that is not a regular file", function()
      local ok, err = pcall(upload, dir .. "/nope.wav")
      assert.is_false(ok)
      assert.matches("nope%.wav", err)
      assert.matches("No such file", err)
      sh("mkfifo " .. quote(dir .. "/fifo.wav"))
      ok, err = pcall(upload, dir .. "/fifo.wav")
      assert.is_false(ok)
      assert.matches("fifo%.wav", err)
      assert.matches("not a regular file", err)
    end)
  end)

  describe("w:bin_file(path, size)", function()
    it("reads a file of the expected size", function()
      local path = dir .. "/bin.dat"
      files.write(path, "abc")
      local w = core.mp_writer()
      assert.is_true(w:bin_file(path, 3))
      assert.equal("\196\3abc", w:result())
    end)

    it("fails, leaving the writer as it was, when the size differs", function()
      local path = dir .. "/bin.dat"
      files.write(path, "abcd")
      local w = core.mp_writer()
      w:int(1)
      local ok, msg = w:bin_file(path, 3)
      assert.is_nil(ok)
      assert.equal(path .. " is 4 bytes, expected 3", msg)
      assert.equal(1, w:size())
    end)

    it("refuses what is not a regular file, without blocking on a FIFO", function()
      sh("mkfifo " .. quote(dir .. "/bin.fifo"))
      for _, path in ipairs({ dir, dir .. "/bin.fifo" }) do
        local ok, msg = core.mp_writer():bin_file(path)
        assert.is_nil(ok)
        assert.matches("not a regular file", msg)
      end
    end)
  end)

  describe("proxies", function()
    local proxy
    setup(function() proxy = harness.start({ "--proxy" }) end)
    teardown(function() proxy.stop() end)
    before_each(function() proxy.log() end)

    it("go through `proxy` when given", function()
      local r, kind = harness.fetch({ url = srv.url .. "/echo", proxy = proxy.url, headers = { "Authorization: Bearer k1" } })
      assert.is_nil(kind)
      local log = proxy.log()
      assert.equal(1, #log)
      assert.equal("GET", log[1].proxy)
      assert.equal(srv.url .. "/echo", log[1].target)
      r:close()
    end)

    it("tunnel with proxy_tunnel, and the CONNECT carries none of the request's headers", function()
      local r, kind = harness.fetch({ url = srv.url .. "/echo", proxy = proxy.url, proxy_tunnel = true,
        headers = { "Authorization: Bearer k2" } })
      assert.is_nil(kind)
      assert.matches("Bearer k2", r:take())
      local log = proxy.log()
      assert.equal("CONNECT", log[1].proxy)
      assert.equal("127.0.0.1:" .. srv.port, log[1].target)
      assert.is_nil(log[1].head:find("Bearer", 1, true))
      r:close()
    end)

    it("never come from the environment: absent or \"\" means none, and no_proxy is not read", function()
      local script = ([[
        local h = require("support.core_harness")
        local _, a = h.fetch({ url = %q })
        local _, b = h.fetch({ url = %q, proxy = "" })
        local _, c = h.fetch({ url = %q, proxy = %q })
        print("done", a, b, c)
      ]]):format(srv.url .. "/echo", srv.url .. "/echo", srv.url .. "/echo", proxy.url)
      local env = ("env http_proxy=%s HTTP_PROXY=%s ALL_PROXY=%s all_proxy=%s no_proxy=127.0.0.1 NO_PROXY=127.0.0.1 ")
        :format(proxy.url, proxy.url, proxy.url, proxy.url)
      local out = harness.child(dir, script, env)
      assert.matches("done%s+nil%s+nil%s+nil", out)
      local log = proxy.log()
      assert.equal(1, #log, "the proxy saw " .. #log .. " requests")
    end)

    it("must be a string, and proxy_tunnel a boolean", function()
      assert.has_error(function() core.request({ url = srv.url, proxy = 1 }) end)
      assert.has_error(function() core.request({ url = srv.url, proxy_tunnel = "yes" }) end)
    end)
  end)

  describe("clear failures", function()
    it("a response header line over 100 KB is too_large, not 'Out of memory'", function()
      local r, kind, msg = harness.fetch({ url = srv.url .. "/header/200000" })
      assert.equal("too_large", kind)
      assert.matches("response header", msg)
      r:close()
    end)

    it("response headers over libcurl's total are too_large", function()
      local r, kind, msg = harness.fetch({ url = srv.url .. "/headers/400" })
      assert.equal("too_large", kind)
      assert.matches("response headers", msg)
      r:close()
    end)

    it("a request line over 1 MB is too_large, naming the URL's length", function()
      local url = srv.url .. "/echo?title=" .. ("t"):rep(2 * 1024 * 1024)
      local r, kind, msg = harness.fetch({ url = url })
      assert.equal("too_large", kind)
      assert.matches("request", msg)
      assert.matches(tostring(#url), msg, 1, true)
      r:close()
    end)

    it("a URL over libcurl's 8 MB is an argument error with its length and the limit", function()
      local url = srv.url .. "/echo?title=" .. ("t"):rep(9 * 1000 * 1000)
      local ok, err = pcall(core.request, { url = url })
      assert.is_false(ok)
      assert.matches(tostring(#url), err, 1, true)
      assert.matches("8000000", err, 1, true)
    end)

    it("running out of file descriptors is 'resources', not a refused connection", function()
      local out = harness.child(dir, ([[
        local core, h = require("fish.core"), require("support.core_harness")
        require("fish.loop").engine()
        local held = {}
        while true do
          local f = io.open("/dev/null", "rb")
          if not f then break end
          held[#held + 1] = f
        end
        local _, kind, msg = h.fetch({ url = %q })
        print("connect:", kind, msg)
        -- One descriptor free: the socket takes it, the output file cannot.
        held[#held]:close()
        held[#held] = nil
        local _, kind2, msg2 = h.fetch({ url = %q, sink = "file", path = %q })
        print("file:", kind2, msg2)
      ]]):format(srv.url .. "/length/10", srv.url .. "/length/10", dir .. "/fd.part"), "ulimit -n 64;")
      assert.matches("connect:%s+resources%s+out of file descriptors", out)
      assert.matches("file:%s+resources%s+out of file descriptors", out)
    end)
  end)
end)
