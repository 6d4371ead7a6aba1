-- `make bench`: fish beside a minimal C client on raw libcurl (raw.c), on
-- the same work, in the same run, against a fast local server (nginx with
-- the Lua module, nginx.conf here) that is not the bottleneck. Each
-- measurement runs BENCH_RUNS times (5 by default), raw C and fish on Lua
-- 5.4 and LuaJIT taking turns, and the table gives the medians and the
-- ratios fish / raw C. The floor rows run raw.c built against each Lua
-- (raw_lua), which also makes each answer a Lua string: what any binding
-- pays. The host rows (OpenResty, Neovim) have no raw C counterpart and run
-- on LuaJIT, the hosts' Lua.
--
--   lua5.4 spec/bench/run.lua
--
-- Environment: BENCH_RUNS (default 5); FISH_ROOT, the fish tree to measure
-- (default: this checkout; its src/ and build/, built here with make);
-- BENCH_CLI_DIR, where the fish-audio batch row writes (default /dev/shm);
-- BENCH_ONLY, a comma-separated list of job-name prefixes to run (seq,
-- instr, upload, latency, waiting, tasks, cli_batch, openresty, neovim, live); FISH_COMMIT, what to
-- call the measured tree in the report when it is not a git checkout.
-- Timings are never checked against anything: they are printed. A
-- measurement that fails is reported and makes the exit status 1.
-- Absolute paths, for nginx and nvim.
local function absolute(path)
  local pipe = assert(io.popen("cd '" .. path:gsub("'", "'\\''") .. "' && pwd", "r"))
  local dir = pipe:read("l")
  pipe:close()
  return assert(dir, "no such directory: " .. path)
end
local ROOT = absolute((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../..")
local BENCH = ROOT .. "/spec/bench"
local BUILD = ROOT .. "/build/bench"
local FISH = absolute(os.getenv("FISH_ROOT") or ROOT)
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "5") or 5
-- BENCH_ONLY=seq,openresty runs only the jobs whose names start so.
local ONLY = os.getenv("BENCH_ONLY")

local REF_BYTES = 30 * 1024 * 1024
local SEQ_SMALL, SMALL_BYTES = 2000, 20 * 1024
local SEQ_LARGE, LARGE_BYTES = 300, 1024 * 1024
local LATENCY_REQUESTS = 20
local WAITING, WAITING_DELAY, WAITING_FRAMES = 5000, 30, 120
local TASK_COUNTS = { 100, 1000, 20000 }
local HOST_DELAY = 3
local HOST_WAITING = { 200, 1000 }
local HOST_WINDOW = 2 -- seconds of CPU measured while every request waits

local LUAS = {
  { name = "lua5.4", dir = "5.4", cflags = "$(pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)",
    libs = "$(pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)" },
  { name = "luajit", dir = "luajit", cflags = "$(pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)",
    libs = "$(pkg-config --libs luajit 2>/dev/null || echo -lluajit-5.1)" },
}

-- ---- shell ---------------------------------------------------------------------

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Every command runs with the open-file limit raised to the hard limit:
-- 5,000 waiting requests need 5,000 sockets on each side.
local PRELUDE = "ulimit -n $(ulimit -Hn) 2>/dev/null; "

local function sh(cmd)
  local pipe = assert(io.popen("(" .. PRELUDE .. cmd .. ") 2>&1", "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok == true, out
end

local function must(cmd, what)
  local ok, out = sh(cmd)
  if not ok then error((what or cmd) .. " failed:\n" .. out, 0) end
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function note(...)
  io.stderr:write("bench: ", string.format(...), "\n")
  io.stderr:flush()
end

-- "key value" lines into a table (numbers where they are numbers).
local function parse(out)
  local t = {}
  for key, value in out:gmatch("([%w_]+) ([^\n]*)") do t[key] = tonumber(value) or value end
  return t
end

-- ---- build -------------------------------------------------------------------

-- raw.c built against a Lua: the floor rows' program.
local function raw_lua_of(lua) return BUILD .. "/" .. lua.dir .. "/raw_lua" end

local function build()
  for _, lua in ipairs(LUAS) do
    must("make -s -C " .. q(FISH) .. " LUA=" .. lua.name, "make LUA=" .. lua.name)
    must(("mkdir -p %s && cc -O2 -std=c99 -fPIC -shared %s %s -o %s"):format(q(BUILD .. "/" .. lua.dir), lua.cflags,
      q(BENCH .. "/benchclock.c"), q(BUILD .. "/" .. lua.dir .. "/benchclock.so")), "building benchclock for " .. lua.name)
  end
  local curl_cflags = "$(pkg-config --cflags libcurl 2>/dev/null)"
  local curl_libs = "$(pkg-config --libs libcurl 2>/dev/null || echo -lcurl) -lm"
  must(("cc -O2 -std=c99 %s %s -o %s %s"):format(curl_cflags, q(BENCH .. "/raw.c"), q(BUILD .. "/raw"), curl_libs),
    "building raw.c")
  -- raw.c that hands each answer to Lua as a string: the floor rows.
  for _, lua in ipairs(LUAS) do
    must(("cc -O2 -std=c99 -DRAW_LUA %s %s %s -o %s %s %s"):format(curl_cflags, lua.cflags, q(BENCH .. "/raw.c"),
      q(raw_lua_of(lua)), lua.libs, curl_libs), "building raw.c with " .. lua.name)
  end
  local ref = BUILD .. "/ref30.bin"
  local f = io.open(ref, "rb")
  local size = f and f:seek("end")
  if f then f:close() end
  if size ~= REF_BYTES then
    must(("head -c %d /dev/urandom > %s"):format(REF_BYTES, q(ref)), "making the 30 MB reference")
  end
end

note("building fish (%s) for lua5.4 and luajit, raw.c and benchclock", FISH)
build()
package.cpath = BUILD .. "/5.4/?.so;" .. package.cpath
local clock = require("benchclock")
local T0 = clock.now()

local function sleep(seconds)
  clock.sleep_until(clock.now() + seconds)
end

-- ---- nginx, as the user's own process ----------------------------------------------

local MODULES = "/usr/lib/nginx/modules"

local function missing_nginx()
  if not sh("command -v nginx >/dev/null") then return "nginx is not installed (Debian: nginx)" end
  for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if not read_file(MODULES .. "/" .. m) then return MODULES .. "/" .. m .. " is missing (Debian: libnginx-mod-http-lua)" end
  end
end

local function free_port()
  return tonumber((must(q(BUILD .. "/raw") .. " freeport"):match("(%d+)")))
end

local IS_ROOT = (select(2, sh("id -u")) or ""):match("^0%s") ~= nil

local Nginx = {}
Nginx.__index = Nginx

-- Start nginx in the foreground from a shell that waits for it, under
-- `timeout` as a safety net, with its own prefix under build/bench/.
local function start_nginx(name, template, values, env)
  local prefix = BUILD .. "/" .. name
  must("rm -rf " .. q(prefix) .. " && mkdir -p " .. q(prefix))
  -- A root master hands requests to workers running as nobody, who may not
  -- read the checkout: keep them as the user running the bench.
  values.PREFIX, values.USER = prefix, IS_ROOT and "user root;" or ""
  for _ = 1, 3 do
    values.PORT = tostring(free_port())
    local conf = read_file(BENCH .. "/" .. template):gsub("@([%u_]+)@", function(key)
      return assert(values[key], "no value for @" .. key .. "@")
    end)
    write_file(prefix .. "/nginx.conf", conf)
    local envs = ""
    for k, v in pairs(env or {}) do envs = envs .. k .. "=" .. q(v) .. " " end
    local cmd = ("%senv %stimeout -k 2 1800 nginx -p %s -c %s -e %s >%s 2>&1 & echo PID $!; wait"):format(
      PRELUDE, envs, q(prefix), q(prefix .. "/nginx.conf"), q(prefix .. "/error.log"), q(prefix .. "/stdout.log"))
    local pipe = assert(io.popen("sh -c " .. q(cmd), "r"))
    local pid = assert(pipe:read("l")):match("^PID (%d+)")
    local self = setmetatable({ name = name, pid = pid, pipe = pipe, prefix = prefix,
      url = "http://127.0.0.1:" .. values.PORT }, Nginx)
    for _ = 1, 50 do
      local ok, out = sh("curl -s --max-time 1 " .. q(self.url .. "/ping"))
      if ok and out:match("pong") then return self end
      if not sh("kill -0 " .. pid) then break end
      sleep(0.1)
    end
    local log = self:log()
    self:stop()
    if not log:match("Address already in use") then error(name .. ": nginx did not start:\n" .. log, 0) end
  end
  error(name .. ": nginx found no free port", 0)
end

function Nginx:log()
  return read_file(self.prefix .. "/error.log") or ""
end

-- The worker's pid (worker_processes 1): the master's child.
function Nginx:worker()
  local master = (read_file(self.prefix .. "/nginx.pid") or ""):match("%d+")
  if not master then return nil end
  local children = read_file("/proc/" .. master .. "/task/" .. master .. "/children")
  if children and children:match("%d+") then return children:match("%d+") end
  local _, list = sh("ls /proc") -- a kernel without the children file
  for pid in list:gmatch("%d+") do
    local stat = read_file("/proc/" .. pid .. "/stat") or ""
    if stat:match("^%d+ %b() %a (%d+)") == master then return pid end
  end
end

function Nginx:stop()
  if not self.pipe then return end
  sh("kill -TERM " .. self.pid)
  for _ = 1, 30 do
    if not sh("kill -0 " .. self.pid) then break end
    sleep(0.1)
  end
  if sh("kill -0 " .. self.pid) then sh("kill -KILL " .. self.pid) end
  self.pipe:close()
  self.pipe = nil
end

-- ---- the fast server's state ---------------------------------------------------

local server -- the fast nginx

local function server_waiting()
  local ok, out = sh("curl -s --max-time 5 " .. q(server.url .. "/_stats"))
  return ok and tonumber(out:match("waiting (%d+)")) or -1
end

-- Requests a program left behind (closed sockets) end in the server at
-- once (lua_check_client_abort); wait until they have.
local function server_idle()
  for _ = 1, 100 do
    if server_waiting() == 0 then return end
    sleep(0.1)
  end
  note("the fast server still holds %d delayed requests", server_waiting())
end

-- ---- the programs -----------------------------------------------------------------

-- program: raw.c's build to run (default BUILD/raw; the floor rows run
-- BUILD/<lua dir>/raw_lua).
local function raw(args, program)
  program = program or BUILD .. "/raw"
  local ok, out = sh(q(program) .. " " .. args)
  if not ok then error(program .. " " .. args .. ":\n" .. out, 0) end
  return parse(out)
end

-- wrapper: a command the interpreter runs under (valgrind), or nil.
local function fish_command(lua, args, wrapper)
  local env = ("LUA_PATH=%s LUA_CPATH=%s "):format(
    q(FISH .. "/src/?.lua;" .. FISH .. "/src/?/init.lua;;"),
    q(FISH .. "/build/" .. lua.dir .. "/?.so;" .. BUILD .. "/" .. lua.dir .. "/?.so;;"))
  return "env " .. env .. (wrapper and wrapper .. " " or "") .. lua.name .. " " .. q(BENCH .. "/fish_bench.lua") .. " "
    .. args
end

local function fish_bench(lua, args)
  local ok, out = sh(fish_command(lua, args))
  if not ok then error(lua.name .. " fish_bench.lua " .. args .. ":\n" .. out, 0) end
  return parse(out)
end

-- Instructions per request: callgrind's total for INSTR_HI requests minus
-- its total for INSTR_LO, over the difference, so that start-up cancels
-- out. Unlike CPU time on a shared VM the load does not move it, so it runs
-- once. command_of(n, wrapper) is the shell command that makes n requests
-- with the program under `wrapper`.
local INSTR_LO, INSTR_HI = 200, 600
local function instructions(command_of)
  return function()
    local totals = {}
    for _, n in ipairs({ INSTR_LO, INSTR_HI }) do
      local out_file = BUILD .. "/callgrind.out"
      os.remove(out_file)
      must(command_of(n, "valgrind --tool=callgrind --callgrind-out-file=" .. q(out_file)), "callgrind")
      local text = read_file(out_file) or ""
      totals[#totals + 1] = tonumber(text:match("\nsummary: (%d+)") or text:match("\ntotals: (%d+)"))
      os.remove(out_file)
    end
    if not (totals[1] and totals[2]) then error("callgrind wrote no total", 0) end
    return { instructions = (totals[2] - totals[1]) / (INSTR_HI - INSTR_LO) }
  end
end

-- ---- the measurements ---------------------------------------------------------------
-- Each job has a function per side ("raw", "lua5.4", "luajit") that makes
-- one measurement and returns its "key value" results.

local jobs = {}
-- once: measure in the first run only (a count the load does not move).
local function job(name, sides, once)
  if ONLY and ONLY ~= "" then
    local wanted = false
    for prefix in ONLY:gmatch("[^,%s]+") do
      if name:sub(1, #prefix) == prefix then wanted = true end
    end
    if not wanted then return end
  end
  jobs[#jobs + 1] = { name = name, sides = sides, once = once }
end

local function fish_sides(args_of)
  local t = {}
  for _, lua in ipairs(LUAS) do
    t[lua.name] = function() return fish_bench(lua, args_of()) end
  end
  return t
end

local function with_raw(raw_args_of, fish_args_of)
  local t = fish_sides(fish_args_of)
  t.raw = function() return raw(raw_args_of()) end
  return t
end

local function url(path) return server.url .. path end

-- The arguments of COUNT sequential requests for BYTES-byte answers: raw.c
-- takes the whole URL, fish_bench.lua the base_url.
local function raw_seq(mode, count, bytes)
  return ("%s %s %d %d"):format(mode, q(url("/n/" .. bytes .. "/v1/tts")), count, bytes)
end
local function fish_seq(mode, count, bytes) return ("%s %s %d %d"):format(mode, q(url("/n/" .. bytes)), count, bytes) end

-- raw.c built against each Lua (raw_lua): its side of a floor job.
local function floor_sides(args_of)
  local t = {}
  for _, lua in ipairs(LUAS) do
    t[lua.name] = function() return raw(args_of(), raw_lua_of(lua)) end
  end
  return t
end

job("seq_small", with_raw(function() return raw_seq("seq", SEQ_SMALL, SMALL_BYTES) end,
  function() return fish_seq("seq", SEQ_SMALL, SMALL_BYTES) end))

job("seq_large", with_raw(function() return raw_seq("seq", SEQ_LARGE, LARGE_BYTES) end,
  function() return fish_seq("seq", SEQ_LARGE, LARGE_BYTES) end))

-- The floor of the two rows above: raw C, plus each answer made a Lua
-- string (lua_pushlstring), as any binding that returns it must.
job("seq_small_floor", floor_sides(function() return raw_seq("seq_lua", SEQ_SMALL, SMALL_BYTES) end))
job("seq_large_floor", floor_sides(function() return raw_seq("seq_lua", SEQ_LARGE, LARGE_BYTES) end))

-- The same requests through fish's C core from a bare Lua loop, without the
-- API layer (fish_bench.lua core_seq): what the design's split into a C
-- core and a Lua layer costs before the layer does anything.
job("seq_small_core", fish_sides(function() return fish_seq("core_seq", SEQ_SMALL, SMALL_BYTES) end))
job("seq_large_core", fish_sides(function() return fish_seq("core_seq", SEQ_LARGE, LARGE_BYTES) end))

-- The 20 KB rows again, in instructions (callgrind), once.
do
  local sides, floor, core_only = {}, {}, {}
  sides.raw = instructions(function(n, wrapper)
    return wrapper .. " " .. q(BUILD .. "/raw") .. " " .. raw_seq("seq", n, SMALL_BYTES)
  end)
  for _, lua in ipairs(LUAS) do
    sides[lua.name] = instructions(function(n, wrapper)
      return fish_command(lua, fish_seq("seq", n, SMALL_BYTES), wrapper)
    end)
    core_only[lua.name] = instructions(function(n, wrapper)
      return fish_command(lua, fish_seq("core_seq", n, SMALL_BYTES), wrapper)
    end)
    floor[lua.name] = instructions(function(n, wrapper)
      return wrapper .. " " .. q(raw_lua_of(lua)) .. " " .. raw_seq("seq_lua", n, SMALL_BYTES)
    end)
  end
  job("instr_small", sides, true)
  job("instr_small_floor", floor, true)
  job("instr_small_core", core_only, true)
end

for _, kind in ipairs({ "string", "file" }) do
  job("upload_" .. kind, with_raw(
    function() return ("upload %s %s %s"):format(q(url("/n/1024/v1/tts")), q(BUILD .. "/ref30.bin"), kind) end,
    function() return ("upload %s %s %s"):format(q(url("/n/1024")), q(BUILD .. "/ref30.bin"), kind) end))
end

-- Latency: raw C blocking (the reference), raw C on curl_multi in the same
-- 60 fps loop, fish in the 60 fps loop; on a kept connection and on a new
-- one each time (the server closes it after every answer).
job("latency", with_raw(
  function() return ("latency %s %d"):format(q(url("/n/1024/v1/tts")), LATENCY_REQUESTS) end,
  function() return ("frames %s %d"):format(q(url("/n/1024")), LATENCY_REQUESTS) end))
job("latency_new", with_raw(
  function() return ("latency %s %d"):format(q(url("/close/n/1024/v1/tts")), LATENCY_REQUESTS) end,
  function() return ("frames %s %d"):format(q(url("/close/n/1024")), LATENCY_REQUESTS) end))
job("latency_raw_frames", { raw = function()
  return raw(("frames %s %d"):format(q(url("/n/1024/v1/tts")), LATENCY_REQUESTS))
end })

local function waiting_side(run)
  return function()
    local ok, result = pcall(run)
    server_idle()
    if not ok then error(result, 0) end
    return result
  end
end
do
  local sides = with_raw(
    function() return ("waiting %s %d %s %d"):format(q(url("/delay/" .. WAITING_DELAY .. "/v1/tts")), WAITING,
      q(url("/_stats")), WAITING_FRAMES) end,
    function() return ("waiting %s %d %s %d"):format(q(url("/delay/" .. WAITING_DELAY)), WAITING,
      q(url("/_stats")), WAITING_FRAMES) end)
  for side, run in pairs(sides) do sides[side] = waiting_side(run) end
  job("waiting", sides)
end

for _, n in ipairs(TASK_COUNTS) do
  job("tasks_" .. n, fish_sides(function() return "tasks " .. n end))
end

-- fish-audio batch as its own process, on both Luas (spec/bench/cli_batch.lua).
-- Its files go to tmpfs (/dev/shm) unless BENCH_CLI_DIR says where: the row
-- measures fish-audio, and a disk's file system adds its own cost of making
-- 1,000 files (ext4 here: inode allocation, an fsync each), which varies
-- with what the disk did before.
local CLI_ROWS, CLI_JOBS, CLI_DELAY = 1000, 16, 0.2
do
  local sides = {}
  for _, lua in ipairs(LUAS) do
    sides[lua.name] = function()
      local base = os.getenv("BENCH_CLI_DIR") or (sh("test -d /dev/shm -a -w /dev/shm") and "/dev/shm") or BUILD
      local work = base .. "/fish-bench-cli"
      local ok, out = sh(("lua5.4 %s %s %s %s %s %d %d %s %s"):format(q(BENCH .. "/cli_batch.lua"), lua.name, q(FISH),
        q(server.url), CLI_DELAY, CLI_ROWS, CLI_JOBS, q(work), q(BUILD .. "/5.4")))
      sh("rm -rf " .. q(work))
      if not ok then error("fish-audio batch on " .. lua.name .. ":\n" .. out, 0) end
      local result = parse(out)
      result.note = base ~= "/dev/shm" and ("files in " .. base) or nil
      return result
    end
  end
  job("cli_batch", sides)
end

-- ---- host rows ---------------------------------------------------------------------------

local openresty -- the host nginx running examples/openresty's handler

local function schedstat_ns(pid)
  local text = read_file("/proc/" .. pid .. "/schedstat")
  return text and tonumber(text:match("^(%d+)"))
end

-- N clients wait on the handler, which waits on the fast server's held
-- answer. Once every one of them waits there: the worker's CPU time over
-- HOST_WINDOW seconds; the answers are released HOST_DELAY seconds after
-- the last request arrived. (A held answer rather than a fixed delay: a
-- worker that is slow to pass the requests on still gets all N waiting.)
local function openresty_waiting(n)
  local worker = assert(openresty:worker(), "no nginx worker for the OpenResty row")
  sh("curl -s --max-time 5 " .. q(server.url .. "/_hold"))
  local load = assert(io.popen("(" .. PRELUDE .. q(BUILD .. "/raw") .. " load " ..
    q(openresty.url .. "/say?text=hello") .. " " .. n .. ") 2>&1", "r"))
  -- Until all n wait there, or their number has not grown for 3 s (a
  -- worker that cannot get them all there is measured with those it got).
  local t_start, waiting, most, grew_at = clock.now(), 0, 0, clock.now()
  while waiting < n and clock.now() - grew_at < 3 and clock.now() - t_start < 30 do
    sleep(0.02)
    waiting = server_waiting()
    if waiting > most then most, grew_at = waiting, clock.now() end
  end
  local c0, t0 = schedstat_ns(worker), clock.now()
  sleep(HOST_WINDOW)
  local c1, t1 = schedstat_ns(worker), clock.now()
  clock.sleep_until(t0 + HOST_DELAY)
  sh("curl -s --max-time 5 " .. q(server.url .. "/_release")) -- later arrivals are answered at once
  local result = parse(load:read("a"))
  load:close()
  server_idle()
  if waiting < n / 2 then
    error(("only %d of %d requests waited at the server at once, within %.0f s (the clients: %s ok, %s failed)")
      :format(most, n, t0 - t_start, tostring(result.ok), tostring(result.failed)), 0)
  end
  local note_text
  if waiting < n or result.ok ~= n then
    local why = {}
    for key, value in pairs(result) do
      if key:match("^failed_") then why[#why + 1] = key:sub(8) .. ": " .. value end
    end
    table.sort(why)
    note_text = ("%d of %d requests waited at the server at once after %.0f s; the clients: %s ok, %s failed%s")
      :format(waiting, n, t0 - t_start, tostring(result.ok), tostring(result.failed),
        #why > 0 and (" (" .. table.concat(why, ", ") .. ")") or "")
  end
  return { cpu_percent = (c1 - c0) / 1e9 / (t1 - t0) * 100, note = note_text }
end

for _, n in ipairs(HOST_WAITING) do
  job("openresty_" .. n, { luajit = function() return openresty_waiting(n) end })
end

local function neovim_waiting()
  local dir = BUILD .. "/nvim"
  must("rm -rf " .. q(dir) .. " && mkdir -p " .. q(dir))
  local env = {
    FISH_BENCH_ROOT = FISH, FISH_BENCH_RESULT = dir .. "/result", FISH_BENCH_OUT = dir .. "/say.mp3",
    FISH_API_KEY = "k", FISH_BASE_URL = server.url .. "/delay/" .. HOST_DELAY,
    XDG_STATE_HOME = dir, XDG_DATA_HOME = dir, XDG_CACHE_HOME = dir, XDG_CONFIG_HOME = dir,
    NVIM_LOG_FILE = dir .. "/nvim-internal.log",
  }
  local envs = ""
  for k, v in pairs(env) do envs = envs .. k .. "=" .. q(v) .. " " end
  sh("cd " .. q(dir) .. " && env " .. envs .. "timeout -k 2 30 nvim --headless --clean -u NONE -i NONE -n -c " ..
    q("luafile " .. BENCH .. "/nvim_wait.lua") .. " </dev/null >" .. q(dir .. "/nvim.log") .. " 2>&1")
  local result = parse(read_file(dir .. "/result") or "")
  if result.ok ~= "true" then
    error("nvim: " .. tostring(result.error or "no result") .. "\n" .. (read_file(dir .. "/nvim.log") or ""), 0)
  end
  return {
    wakeups_per_s = result.wakeups / result.seconds,
    cpu_percent = result.cpu_s / result.seconds * 100,
  }
end
job("neovim", { luajit = neovim_waiting })

-- ---- running --------------------------------------------------------------------------------

local SIDES = { "raw", "lua5.4", "luajit" }
local results = {}  -- job name -> side -> list of result tables
local failures = {} -- messages
local notes = {}    -- what a measurement that succeeded wants said
local skipped = {}  -- job name -> why

local function loadavg()
  return (read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?"
end

local function run_all()
  local why = missing_nginx()
  if why then error("the fast server needs nginx with the Lua module: " .. why, 0) end
  server = start_nginx("server", "nginx.conf", { BENCH_DIR = BENCH })
  if not sh("command -v luajit >/dev/null") then
    skipped["*luajit"] = "luajit is not installed (Debian: luajit2)"
  end
  local ok_or, err_or = pcall(function()
    openresty = start_nginx("openresty", "openresty.conf", {
      FISH_LUA = FISH .. "/src", FISH_LIB = FISH .. "/build/luajit", HANDLER_DIR = FISH .. "/examples/openresty",
    }, { FISH_API_KEY = "k", FISH_BASE_URL = server.url .. "/hold" })
  end)
  if not ok_or then
    for _, n in ipairs(HOST_WAITING) do skipped["openresty_" .. n] = err_or end
  end
  if not sh("command -v valgrind >/dev/null") then
    skipped.instr_small = "valgrind is not installed (Debian: valgrind)"
    skipped.instr_small_floor = skipped.instr_small
    skipped.instr_small_core = skipped.instr_small
  end
  local ok_nv, out_nv = sh("nvim --version")
  if not ok_nv or not out_nv:match("LuaJIT") then
    skipped.neovim = "nvim with LuaJIT is not installed (Debian: neovim)"
  end

  note("%d runs of %d measurements; about a minute a run", RUNS, #jobs)
  for r = 1, RUNS do
    local started = clock.now()
    for _, j in ipairs(jobs) do
      if not skipped[j.name] and not (j.once and r > 1) then
        results[j.name] = results[j.name] or {}
        -- Raw C and fish take turns: the order flips every run.
        local order = {}
        for i = 1, #SIDES do order[i] = SIDES[r % 2 == 1 and i or #SIDES + 1 - i] end
        for _, side in ipairs(order) do
          local fn = j.sides[side]
          if fn and not (side == "luajit" and skipped["*luajit"]) then
            local ok, result = pcall(fn)
            local list = results[j.name][side] or {}
            results[j.name][side] = list
            if ok then
              list[#list + 1] = result
              if result.note then notes[#notes + 1] = ("run %d, %s, %s: %s"):format(r, j.name, side, result.note) end
            else
              failures[#failures + 1] = ("run %d, %s, %s: %s"):format(r, j.name, side, tostring(result))
              note("FAILED run %d %s %s: %s", r, j.name, side, tostring(result):match("^[^\n]*"))
            end
          end
        end
      end
    end
    note("run %d of %d done in %.0f s (load average %s)", r, RUNS, clock.now() - started, loadavg())
  end
end

-- ---- the table -----------------------------------------------------------------------------

local function median(values)
  if #values == 0 then return nil end
  local v = {}
  for i = 1, #values do v[i] = values[i] end
  table.sort(v)
  local mid = (#v + 1) / 2
  return (v[math.floor(mid)] + v[math.ceil(mid)]) / 2
end

local function values(job_name, side, key)
  local list = results[job_name] and results[job_name][side] or {}
  local out = {}
  for _, result in ipairs(list) do
    if type(result[key]) == "number" then out[#out + 1] = result[key] end
  end
  return out
end

local function fmt_us(x) return x >= 100 and ("%.0f µs"):format(x) or ("%.1f µs"):format(x) end
local function fmt_k(x) return ("%.0fk"):format(x / 1000) end
local function fmt_ms(x) return x >= 100 and ("%.0f ms"):format(x) or x >= 10 and ("%.1f ms"):format(x) or ("%.2f ms"):format(x) end
local function fmt_s_ms(x) return fmt_ms(x * 1e3) end
local function fmt_mb(kb) return ("+%.1f MB"):format(kb / 1024) end
local function fmt_pct(x) return ("%.1f %%"):format(x) end
local function fmt_rate(x) return ("%.1f /s"):format(x) end

-- Each line: label, job, key, format, ratio kind, target; raw_job when the
-- raw column comes from another job, raw_key when from another key.
local lines = {
  { "CPU per request, 2,000 sequential 20 KB answers", "seq_small", "cpu_us", fmt_us, "ratio", "≤ 1.3×" },
  { "CPU per request, 300 sequential 1 MB answers", "seq_large", "cpu_us", fmt_us, "ratio", "≤ 1.3×" },
  { "… floor: raw C that makes each 20 KB answer a Lua string (no fish)", "seq_small_floor", "cpu_us", fmt_us,
    "ratio", "–", raw_job = "seq_small" },
  { "… floor: raw C that makes each 1 MB answer a Lua string (no fish)", "seq_large_floor", "cpu_us", fmt_us,
    "ratio", "–", raw_job = "seq_large" },
  { "… fish's C core alone, 20 KB answers, from a bare Lua loop (no API layer)", "seq_small_core", "cpu_us",
    fmt_us, "ratio", "–", raw_job = "seq_small" },
  { "… fish's C core alone, 1 MB answers, from a bare Lua loop (no API layer)", "seq_large_core", "cpu_us",
    fmt_us, "ratio", "–", raw_job = "seq_large" },
  { "Instructions per request, 20 KB answers (callgrind, one run)", "instr_small", "instructions", fmt_k, "ratio",
    "–" },
  { "… floor: raw C that makes each answer a Lua string (no fish)", "instr_small_floor", "instructions", fmt_k,
    "ratio", "–", raw_job = "instr_small" },
  { "… fish's C core alone, from a bare Lua loop (no API layer)", "instr_small_core", "instructions", fmt_k,
    "ratio", "–", raw_job = "instr_small" },
  { "Sending a 30 MB inline reference, Lua string: time", "upload_string", "seconds", fmt_s_ms, "ratio", "≤ 2×" },
  { "Sending a 30 MB inline reference, Lua string: peak RSS growth", "upload_string", "peak_kb", fmt_mb, nil, "–" },
  { "Sending a 30 MB inline reference, fish.file: time", "upload_file", "seconds", fmt_s_ms, "ratio", "≤ 2×" },
  { "Sending a 30 MB inline reference, fish.file: peak RSS growth", "upload_file", "peak_kb", fmt_mb, nil, "≤ +2 MB" },
  { "Latency, fish.spawn in a 60 fps fish.step(0) loop (raw: blocking)", "latency", "latency_ms", fmt_ms, "ratio",
    "≤ 16.7 ms (one frame)" },
  { "… the same, raw C: curl_multi_perform once a frame, same loop", "latency", "latency_ms", fmt_ms, "ratio",
    "≤ 16.7 ms (one frame)", raw_job = "latency_raw_frames" },
  { "… the same on a new connection each time (raw: blocking)", "latency_new", "latency_ms", fmt_ms, "ratio",
    "≤ 16.7 ms (one frame)" },
  { "fish.step(0) with 5,000 requests waiting: median", "waiting", "median_ms", fmt_ms, "ratio", "≤ 2× raw C" },
  { "fish.step(0) with 5,000 requests waiting: 90th percentile", "waiting", "p90_ms", fmt_ms, "ratio", "–" },
  { "fish.step(0) with 5,000 requests waiting: 99th percentile", "waiting", "p99_ms", fmt_ms, "ratio",
    "within the step's time budget" },
}
for _, n in ipairs(TASK_COUNTS) do
  lines[#lines + 1] = { ("Task scheduler, %s tasks (fish.sleep(0), return): CPU per task"):format(
    n >= 1000 and ("%d,%03d"):format(n // 1000, n % 1000) or tostring(n)),
    "tasks_" .. n, "cpu_us", fmt_us, "vs100", "flat from 100 to 20,000 tasks" }
end
lines[#lines + 1] = { "fish-audio batch, 1,000 rows, --jobs 16, answers held 200 ms: rows/s", "cli_batch",
  "rows_per_s", fmt_rate, nil, "≥ 72 /s" }
lines[#lines + 1] = { "… the same: share of the ideal 16 / 0.2 s = 80 rows/s", "cli_batch", "ideal_percent", fmt_pct,
  nil, "≥ 90 %" }
lines[#lines + 1] = { "… the same: CPU of the fish-audio process", "cli_batch", "cpu_percent", fmt_pct, nil,
  "< 10 % of a core" }
for _, n in ipairs(HOST_WAITING) do
  lines[#lines + 1] = { ("OpenResty worker, %s requests waiting on a 3 s held answer: CPU"):format(
    n >= 1000 and ("%d,%03d"):format(n // 1000, n % 1000) or tostring(n)),
    "openresty_" .. n, "cpu_percent", fmt_pct, nil, n == 1000 and "< 5 % of a core" or "–" }
end
lines[#lines + 1] = { "Neovim (examples/nvim), one request waiting 3 s: fish wakeups", "neovim", "wakeups_per_s",
  fmt_rate, nil, "no polling: woken by the socket" }
lines[#lines + 1] = { "Neovim (examples/nvim), one request waiting 3 s: editor CPU", "neovim", "cpu_percent",
  fmt_pct, nil, "–" }

-- ---- live TTS rows (fish.live): spec/bench/live_rows.lua -----------------------------
dofile(BENCH .. "/live_rows.lua")({ job = job, lines = lines, sh = sh, must = must, q = q, parse = parse,
  read_file = read_file, BENCH = BENCH, BUILD = BUILD, FISH = FISH, LUAS = LUAS, fmt_ms = fmt_ms })
-- ---- end of the live TTS rows ---------------------------------------------------------

local function cell(x, fmt)
  if x == nil then return "–" end
  return fmt(x)
end

local function print_table()
  local head = { "measured", "raw C", "fish (lua5.4)", "ratio", "fish (luajit)", "ratio", "target" }
  local rows, ranges = {}, {}
  local chosen = {} -- BENCH_ONLY leaves the others out
  for _, j in ipairs(jobs) do chosen[j.name] = true end
  for _, line in ipairs(lines) do
    local label, job_name, key, fmt, ratio_kind, target = line[1], line[2], line[3], line[4], line[5], line[6]
    if not chosen[job_name] then goto next_line end
    local raw_values = values(line.raw_job or job_name, "raw", line.raw_key or key)
    local raw_m = median(raw_values)
    local row = { label, cell(raw_m, fmt) }
    local range = { label, #raw_values > 0 and ("%s – %s"):format(fmt(math.min(table.unpack(raw_values))),
      fmt(math.max(table.unpack(raw_values)))) or "–" }
    for _, lua in ipairs(LUAS) do
      local v = values(job_name, lua.name, key)
      local m = median(v)
      row[#row + 1] = cell(m, fmt)
      local ratio = "–"
      if m and ratio_kind == "ratio" and raw_m and raw_m > 0 then
        ratio = ("%.2f×"):format(m / raw_m)
      elseif m and ratio_kind == "diff" and raw_m then -- live rows: fish - raw C, in ms
        ratio = ("%+.2f ms"):format(m - raw_m)
      elseif m and ratio_kind == "vs100" then
        local base = median(values("tasks_" .. TASK_COUNTS[1], lua.name, key))
        if base and base > 0 then ratio = ("%.2f× of 100"):format(m / base) end
      end
      row[#row + 1] = ratio
      range[#range + 1] = #v > 0 and ("%s – %s"):format(fmt(math.min(table.unpack(v))), fmt(math.max(table.unpack(v))))
        or "–"
    end
    row[#row + 1] = target
    rows[#rows + 1] = row
    ranges[#ranges + 1] = range
    ::next_line::
  end

  local function print_rows(header, body)
    local widths = {}
    for _, r in ipairs({ header, table.unpack(body) }) do
      for i, c in ipairs(r) do
        local w = utf8.len(c) or #c
        if not widths[i] or w > widths[i] then widths[i] = w end
      end
    end
    local function line_of(r)
      local cells = {}
      for i, c in ipairs(r) do cells[i] = c .. string.rep(" ", widths[i] - (utf8.len(c) or #c)) end
      return "| " .. table.concat(cells, " | ") .. " |"
    end
    print(line_of(header))
    local sep = {}
    for i = 1, #widths do sep[i] = string.rep("-", widths[i]) end
    print("|-" .. table.concat(sep, "-|-") .. "-|")
    for _, r in ipairs(body) do print(line_of(r)) end
  end

  print_rows(head, rows)
  print()
  print(("Range over the %d runs (lowest – highest):"):format(RUNS))
  print()
  print_rows({ "measured", "raw C", "fish (lua5.4)", "fish (luajit)" }, ranges)
end

local function commit_of(dir)
  if os.getenv("FISH_COMMIT") then return os.getenv("FISH_COMMIT") end
  local ok, top = sh("cd " .. q(dir) .. " && git rev-parse --show-toplevel")
  local _, here = sh("cd " .. q(dir) .. " && pwd -P")
  if not ok or top ~= here then return "in " .. dir .. " (not a git checkout)" end
  local out
  ok, out = sh("git -C " .. q(dir) .. " rev-parse --short HEAD")
  if not ok then return "in " .. dir .. " (no commit)" end
  local _, dirty = sh("git -C " .. q(dir) .. " status --porcelain -- src")
  return out:match("%S+") .. ((dirty or "") ~= "" and " (src/ has uncommitted changes)" or "")
end

local load_before = loadavg()
local ok, err = pcall(run_all)
if server then server:stop() end
if openresty then openresty:stop() end
if not ok then
  io.stderr:write("bench: ", tostring(err), "\n")
  os.exit(1)
end

local _, cpus = sh("nproc")
local _, os_name = sh(". /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\"")
local _, curl_version = sh("curl-config --version 2>/dev/null || curl --version | head -1")
print()
print(("fish %s, %d runs, medians; %s CPUs, %s, %s; load average %s before, %s after"):format(
  commit_of(FISH), RUNS, (cpus or "?"):match("%S+") or "?", (os_name or "?"):match("[^\n]+") or "?",
  (curl_version or "?"):match("[^\n]+") or "?", load_before, loadavg()))
print()
print_table()
for name, why in pairs(skipped) do print(("skipped %s: %s"):format(name, why)) end
for _, message in ipairs(notes) do print("note: " .. message) end
for _, message in ipairs(failures) do
  local head, count = {}, 0
  for line in message:gmatch("[^\n]+") do
    count = count + 1
    if count <= 4 then head[#head + 1] = line end
  end
  if count > 4 then head[#head + 1] = ("  (%d more lines)"):format(count - 4) end
  print("failed: " .. table.concat(head, "\n  "))
end
local errors_logged = 0
for line in (server and server:log() or ""):gmatch("[^\n]+") do
  if line:match("%[error%]") or line:match("%[alert%]") or line:match("%[crit%]") or line:match("%[emerg%]") then
    errors_logged = errors_logged + 1
  end
end
if errors_logged > 0 then
  print(("the fast server logged %d errors: %s"):format(errors_logged, server.prefix .. "/error.log"))
end
print(("total time %.0f s (%.1f min)"):format(clock.now() - T0, (clock.now() - T0) / 60))
os.exit(#failures == 0 and 0 or 1)
