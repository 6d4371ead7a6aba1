-- Helpers for specs that drive fish.core directly (core_limits_spec.lua,
-- core_tls_spec.lua): start limits_server.py, read its log, run one
-- core.request to the end through fish.loop, and run Lua in a child process
-- (for what a spec cannot do to its own process: environment variables,
-- descriptor limits, os.exit, a private mount namespace).
local cjson = require("cjson")
local abi = require("support.abi")
local files = require("support.files")
local server = require("support.server")

local harness = {}
local quote = files.quote

harness.SCRIPT = server.ROOT .. "/spec/support/limits_server.py"

-- harness.start{ "--proxy" } or { "--tls", cert, key } -> { url, port, stop, log }
function harness.start(args)
  local words = { "env -u LD_PRELOAD", server.PYTHON, quote(harness.SCRIPT) }
  for _, a in ipairs(args or {}) do words[#words + 1] = quote(a) end
  local pipe = assert(io.popen(table.concat(words, " ") .. " & echo PID $!"))
  local pid, port
  for line in pipe:lines() do
    pid = pid or line:match("^PID (%d+)")
    port = port or line:match("^LISTENING (%d+)")
    if pid and port then break end
  end
  assert(port, "limits_server.py did not start")
  local tls = args and args[1] == "--tls"
  local srv = { port = tonumber(port), url = (tls and "https" or "http") .. "://127.0.0.1:" .. port }
  function srv.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    pipe:close()
  end
  -- The server's log of requests (decoded JSON), emptied by the read.
  function srv.log()
    local insecure = tls and " -k" or ""
    local out = files.capture("env -u LD_PRELOAD curl -sS --noproxy '*' --max-time 10" .. insecure
      .. " " .. quote(srv.url .. "/_log?clear=1"))
    return cjson.decode(out)
  end
  return srv
end

-- The first entry of a server log that has `key`.
function harness.find(log, key)
  for _, entry in ipairs(log) do
    if entry[key] ~= nil then return entry end
  end
end

-- Start a request and wait until it has finished. `on_progress` runs
-- whenever new bytes may have arrived (as http.lua's streams do).
function harness.run(request, on_progress)
  local loop = require("fish.loop")
  loop.start(request)
  loop.await(request, nil, on_progress)
  return request
end

-- core.request(opts) run to the end; returns the request and its result.
function harness.fetch(opts, on_progress)
  local r = harness.run(require("fish.core").request(opts), on_progress)
  return r, r:result()
end

-- Lua source that loads this checkout's fish in a child interpreter: the
-- same fish.core as this process (under make test-asan, the ASan build).
function harness.prelude()
  local root = server.ROOT
  return ("package.path = %q .. package.path; package.cpath = %q\n"):format(
    root .. "/src/?.lua;" .. root .. "/src/?/init.lua;" .. root .. "/spec/?.lua;", package.cpath)
end

-- Run `source` in a child interpreter; `wrap` (optional) is a shell prefix
-- such as "ulimit -n 64;" or "env X=1". Returns its stdout and exit status.
function harness.child(dir, source, wrap)
  local script = dir .. "/child.lua"
  files.write(script, harness.prelude() .. source)
  local cmd = ("%s %s %s 2>&1; echo EXIT $?"):format(wrap or "", abi.interpreter, quote(script))
  local out = files.capture("sh -c " .. quote(cmd))
  local status = tonumber(out:match("EXIT (%d+)%s*$"))
  return out:gsub("EXIT %d+%s*$", ""), status
end

function harness.have(tool)
  return files.capture("command -v " .. tool .. " 2>/dev/null"):match("%S+") ~= nil
end

return harness
