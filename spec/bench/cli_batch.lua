-- The fish-audio batch row of `make bench`: ROWS rows with --jobs JOBS
-- against the fast server's /delay/<seconds> answers, as a user runs it (the
-- command as its own process, the progress bar on). Prints the rows per
-- second it reached, the ideal (JOBS / delay) and the command's CPU time as
-- a share of one core over the run's wall time.
--
--   lua5.4 cli_batch.lua INTERPRETER FISH_ROOT SERVER_URL DELAY ROWS JOBS WORKDIR BENCHCLOCK_DIR
--
-- The server holds each answer DELAY seconds and is not the bottleneck
-- (nginx, one worker, sleeping in ngx.sleep), so the ideal throughput is
-- JOBS / DELAY rows per second; what the command adds shows as the gap.
local interpreter, root, server_url, delay, rows, jobs, work, clock_dir = table.unpack(arg, 1, 8)
delay, rows, jobs = tonumber(delay), tonumber(rows), tonumber(jobs)
assert(clock_dir and delay and rows and jobs, "usage: cli_batch.lua INTERPRETER FISH_ROOT SERVER_URL DELAY ROWS JOBS "
  .. "WORKDIR BENCHCLOCK_DIR")
package.cpath = clock_dir .. "/?.so;" .. package.cpath
local clock = require("benchclock")

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local pipe = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

local function seconds_of(text) -- "1m2.345s" (the shell's `times`)
  local m, s = text:match("(%d+)m([%d.]+)s")
  return tonumber(m) * 60 + tonumber(s)
end

assert(run("rm -rf " .. q(work) .. " && mkdir -p " .. q(work)))
local manifest = work .. "/lines.csv"
local f = assert(io.open(manifest, "wb"))
f:write("id,text,voice\n")
for i = 1, rows do f:write(("row%d,Line number %d of the bench.,bench-voice\n"):format(i, i)) end
f:close()

local out_dir = work .. "/audio"
local command = ("env -u LUA_PATH -u LUA_CPATH -u LUA_INIT FISH_API_KEY=k FISH_BASE_URL=%s FISH_AUDIO_PROGRESS=bar "
  .. "%s %s batch %s --out %s --jobs %d --retries 0 2>%s"):format(q(server_url .. "/delay/" .. delay), interpreter,
  q(root .. "/src/bin/fish-audio"), q(manifest), q(out_dir), jobs, q(work .. "/stderr.log"))
-- `times` prints the shell's own CPU times, then its children's: the command's.
local started = clock.now()
local ok, out = run("sh -c " .. q(command .. "; status=$?; times; exit $status"))
local wall = clock.now() - started
if not ok then
  local log = io.open(work .. "/stderr.log", "rb")
  error("fish-audio batch failed: " .. out .. (log and log:read("a"):sub(-2000) or ""), 0)
end
local user, sys = out:match("[^\n]*\n(%S+) (%S+)")
local cpu = seconds_of(user) + seconds_of(sys)

local _, listing = run("ls " .. q(out_dir) .. " | grep -c '^row.*\\.mp3$'")
local made = tonumber(listing:match("%d+"))
if made ~= rows then error(("fish-audio batch wrote %s of %d files"):format(tostring(made), rows), 0) end

local ideal = jobs / delay
print(("rows_per_s %.3f"):format(rows / wall))
print(("ideal_percent %.3f"):format(rows / wall / ideal * 100))
print(("cpu_percent %.3f"):format(cpu / wall * 100))
print(("seconds %.3f"):format(wall))
