-- Start and stop the bundled Fish-compatible server from specs, and talk to
-- its /_test/ control API. Control calls go through the curl command line
-- tool, not through fish, so a broken fish cannot fake a passing test.
local cjson = require("cjson")

local server = {}
server.__index = server

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/server%.lua$")) or "."
server.ROOT = ROOT
server.SCRIPT = ROOT .. "/spec/support/fish_server.py"
server.PYTHON = os.getenv("FISH_TEST_PYTHON") or "/usr/bin/python3"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
server.shell_quote = shell_quote

-- server.start{ api_key =, train_delay =, tts_delay = } -> handle
function server.start(opts)
  opts = opts or {}
  local key = opts.api_key or "test-key-0123456789"
  local log = os.tmpname()
  -- env -u LD_PRELOAD: under `make test-asan` the sanitizer runtime is
  -- preloaded for the Lua interpreter; the server must not inherit it.
  local args = { "env -u LD_PRELOAD", server.PYTHON, shell_quote(server.SCRIPT), "--port 0", "--api-key", shell_quote(key) }
  if opts.train_delay then args[#args + 1] = "--train-delay " .. opts.train_delay end
  if opts.tts_delay then args[#args + 1] = "--tts-delay " .. opts.tts_delay end
  -- The shell prints the server's pid, the server prints its port.
  local cmd = table.concat(args, " ") .. " 2>" .. shell_quote(log) .. " & echo PID $!"
  local pipe = assert(io.popen(cmd, "r"))
  local pid, port
  for line in pipe:lines() do
    pid = pid or line:match("^PID (%d+)")
    port = port or line:match("^LISTENING (%d+)")
    if pid and port then break end
  end
  if not port then
    local f = io.open(log)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    error("fish test server did not start: " .. text)
  end
  local self = setmetatable({
    pid = pid,
    port = tonumber(port),
    api_key = key,
    pipe = pipe,
    log = log,
  }, server)
  self.url = "http://127.0.0.1:" .. self.port
  return self
end

function server:stop()
  if not self.pid then return end
  self:close_live_probe()
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.pipe:close()
  os.remove(self.log)
  self.pid = nil
end

-- curl the control API; returns the decoded JSON answer.
function server:control(method, path, body)
  local tmp
  local cmd = { "env -u LD_PRELOAD curl -sS --max-time 30 -X", method }
  if body ~= nil then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(cjson.encode(body))
    f:close()
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary @" .. shell_quote(tmp)
  end
  cmd[#cmd + 1] = shell_quote(self.url .. path)
  local pipe = assert(io.popen(table.concat(cmd, " "), "r"))
  local out = pipe:read("*a")
  pipe:close()
  if tmp then os.remove(tmp) end
  local ok, decoded = pcall(cjson.decode, out)
  if not ok then error("control call " .. path .. " answered: " .. out) end
  return decoded
end

function server:reset() return self:control("POST", "/_test/reset", {}) end
function server:requests() return self:control("GET", "/_test/requests") end
function server:stats() return self:control("GET", "/_test/stats") end
function server:config(settings) return self:control("POST", "/_test/config", settings) end
function server:fail_voice(id) return self:control("POST", "/_test/voices/" .. id .. "/fail", {}) end

-- The recorded live TTS sessions (WebSocket), oldest first. `opts.path` keeps
-- one endpoint's; `opts.wait` (seconds, default 2) first waits until no
-- session is still running, so the client's close code is in.
function server:live_sessions(opts)
  opts = opts or {}
  local q = "?wait=" .. (opts.wait or 2)
  if opts.path then q = q .. "&path=" .. opts.path end
  return self:control("GET", "/_test/live" .. q)
end

-- Run spec/support/live_probe.py (a python3-websockets client) with a script
-- table (see that file); returns its decoded JSON result. `url` defaults to
-- this server's /v1/tts/live (or `script.path`), with this server's key in
-- Authorization. After server:open_live_probe() the scripts go to one
-- long-running probe process instead of a new one each.
server.PROBE = ROOT .. "/spec/support/live_probe.py"

local function probe_json(self, script)
  local function fill(s)
    s.url = s.url or ("ws://127.0.0.1:" .. self.port .. (s.path or "/v1/tts/live"))
    s.path = nil
    if s.headers == nil then s.headers = { Authorization = "Bearer " .. self.api_key } end
  end
  if script.parallel then
    for _, s in ipairs(script.parallel) do fill(s) end
  else
    fill(script)
  end
  return cjson.encode(script)
end

function server:open_live_probe()
  if self.prober then return end
  local fifo = os.tmpname()
  os.remove(fifo)
  assert(os.execute("mkfifo " .. shell_quote(fifo)))
  local out = assert(io.popen(("env -u LD_PRELOAD %s %s --serve %s"):format(
    server.PYTHON, shell_quote(server.PROBE), shell_quote(fifo)), "r"))
  local input = assert(io.open(fifo, "w")) -- blocks until the probe opens its end
  self.prober = { fifo = fifo, out = out, input = input }
end

function server:close_live_probe()
  local p = self.prober
  if not p then return end
  self.prober = nil
  p.input:close() -- EOF: the probe exits
  p.out:close()
  os.remove(p.fifo)
end

-- Send a script to the open probe; server:live_probe_result() reads its
-- answer. Between the two, a spec can look at the server while it runs.
function server:live_probe_send(script)
  assert(self.prober, "server:open_live_probe() first")
  self.prober.input:write(probe_json(self, script), "\n")
  self.prober.input:flush()
end

function server:live_probe_result()
  local line = self.prober.out:read("*l")
  local ok, decoded = pcall(cjson.decode, line or "")
  if not ok then error("live probe answered: " .. tostring(line)) end
  return decoded
end

function server:live_probe(script)
  if self.prober then
    self:live_probe_send(script)
    return self:live_probe_result()
  end
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(probe_json(self, script))
  f:close()
  local pipe = assert(io.popen(("env -u LD_PRELOAD %s %s < %s"):format(
    server.PYTHON, shell_quote(server.PROBE), shell_quote(tmp)), "r"))
  local out = pipe:read("*a")
  pipe:close()
  os.remove(tmp)
  local ok, decoded = pcall(cjson.decode, out)
  if not ok then error("live probe answered: " .. out) end
  return decoded
end

-- Queue a fault: server:fault("/v1/tts", { status = 500 }, { times = 2 })
function server:fault(path, fault, opts)
  opts = opts or {}
  return self:control("POST", "/_test/faults", {
    path = path,
    method = opts.method,
    times = opts.times or 1,
    fault = fault,
  })
end

-- Captured requests for one method and exact path, in arrival order.
function server:requests_for(method, path)
  local found = {}
  for _, r in ipairs(self:requests()) do
    if r.method == method and r.path == path then found[#found + 1] = r end
  end
  return found
end

-- The last request the server received (optionally only those for `path`).
function server:last_request(path)
  local all = self:requests()
  for i = #all, 1, -1 do
    if not path or all[i].path == path then return all[i] end
  end
end

-- ---- byte helpers for wire checks ---------------------------------------------

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, #B64 do B64_INDEX[B64:byte(i)] = i - 1 end

function server.base64_decode(s)
  s = s:gsub("[^%w%+/]", "")
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    bits = bits * 64 + B64_INDEX[s:byte(i)]
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      local byte = math.floor(bits / 2 ^ nbits) % 256
      out[#out + 1] = string.char(byte)
      bits = bits % 2 ^ nbits
    end
  end
  return table.concat(out)
end

function server.hex(bytes)
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

function server.unhex(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- The raw body bytes of a captured request.
function server.body(captured)
  return server.base64_decode(captured.body_b64 or "")
end

return server
