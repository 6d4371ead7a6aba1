-- fish_say: speak text with Fish Audio from Neovim without ever blocking it.
--
--   :FishSay Hello there        speak the words
--   :'<,'>FishSay               speak the selected lines
--   :FishSayStop                cancel every conversion still running
--
--   require("fish_say").say("Hello", { on_done = function(result) ... end })
--
-- How it waits: each conversion is a fish task (fish.spawn) that writes the
-- audio to a file. require("fish.nvim") drives fish from the editor's own
-- event loop: it watches the transfer's socket with a vim.uv poll handle
-- and sets one vim.uv timer only for what is due (a retry, a time limit).
-- Nothing ticks while the API works on the answer; the socket's answer
-- wakes the task at once, and the task resumes in vim.schedule, so it can
-- report with any editor API when it ends.
--
-- Settings come from require("fish_say").setup{...}, then vim.g.fish_say,
-- then the environment (FISH_API_KEY, FISH_BASE_URL); see README.md.
local M = {}

local uv = vim.uv or vim.loop -- vim.uv is Neovim 0.10+, vim.loop before

local DEFAULTS = {
  api_key = nil,      -- default: $FISH_API_KEY
  base_url = nil,     -- default: $FISH_BASE_URL, then https://api.fish.audio
  model = nil,        -- default: fish's default model
  reference_id = nil, -- a voice model id; default: the API's default voice
  format = "mp3",     -- mp3, wav, opus or pcm
  out = nil,          -- where the audio goes; default: a new temporary file
  out_dir = nil,      -- or: a directory for fish-say-<n>.<format> files
  play = true,        -- play the file when done (if a player is installed)
  player = nil,       -- a command list such as { "mpv", "--no-video" }; default: detect
  convert = nil,      -- extra fish.convert fields, e.g. { latency = "balanced" }
}

M.options = {}

function M.setup(opts)
  M.options = vim.tbl_extend("force", M.options, opts or {})
end

local function settings(overrides)
  local g = vim.g.fish_say
  if type(g) ~= "table" then g = {} end
  return vim.tbl_extend("force", DEFAULTS, g, M.options, overrides or {})
end

local function notify(message, level)
  message = tostring(message)
  if message:sub(1, 5) ~= "fish:" then message = "fish: " .. message end
  vim.notify(message, level or vim.log.levels.INFO)
end

-- ---- playing ------------------------------------------------------------------

local PLAYERS = {
  { "mpv", "--no-video", "--really-quiet" },
  { "ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet" },
  { "aplay", "-q", formats = { wav = true } },
}

local function find_player(s)
  if type(s.player) == "table" then return s.player end
  for _, candidate in ipairs(PLAYERS) do
    if vim.fn.executable(candidate[1]) == 1 and (not candidate.formats or candidate.formats[s.format]) then
      return candidate
    end
  end
end

local function play(path, s)
  local player = find_player(s)
  if not player then return false end
  local cmd = {}
  for i = 1, #player do cmd[i] = player[i] end
  cmd[#cmd + 1] = path
  return vim.fn.jobstart(cmd) > 0, player[1]
end

-- ---- driving fish from the editor's loop ---------------------------------------

local fish      -- the fish module, loaded on first use
local jobs = {} -- conversions still running, oldest first
local counter = 0

local function finish(job, ok, path, bytes)
  local result = {
    ok = ok == true,
    path = ok and path or job.out,
    bytes = ok and bytes or nil,
    error = not ok and tostring(path) or nil,
    elapsed = (uv.hrtime() - job.started) / 1e9,
    text = job.text,
  }
  vim.g.fish_say_last = result
  if job.on_done then
    local called, err = pcall(job.on_done, result)
    if not called then notify("on_done failed: " .. tostring(err), vim.log.levels.ERROR) end
  end
  vim.api.nvim_exec_autocmds("User", { pattern = "FishSayDone", modeline = false })
  if not result.ok then
    if not job.canceled then notify(result.error, vim.log.levels.ERROR) end
  elseif job.settings.play then
    local playing, player = play(result.path, job.settings)
    notify(("%s (%d bytes)%s"):format(result.path, result.bytes,
      playing and (", playing with " .. player) or ""))
  else
    notify(("%s (%d bytes)"):format(result.path, result.bytes))
  end
end

local function job_ended(job, ok, path, bytes)
  for i, j in ipairs(jobs) do
    if j == job then
      table.remove(jobs, i)
      break
    end
  end
  finish(job, ok, path, bytes)
end

local function load_fish()
  if fish then return fish end
  local loaded, mod = pcall(require, "fish")
  if not loaded then
    error("cannot load the fish module (is it on package.path and package.cpath, " ..
      "built for LuaJIT?): " .. tostring(mod), 0)
  end
  -- Drive fish from the editor's loop (once per Lua state: other plugins
  -- that use fish share it). Its task errors go to vim.notify.
  require("fish.nvim")
  fish = mod
  return fish
end

-- Start converting `text`; returns a job with :cancel(), or nil, message.
-- opts: any setting above, plus on_done = function(result) where result is
-- { ok, path, bytes, error, elapsed, text }.
function M.say(text, opts)
  opts = opts or {}
  if type(text) ~= "string" or text:match("^%s*$") then return nil, "nothing to say" end
  local s = settings(opts)
  local loaded, err = pcall(load_fish)
  if not loaded then return nil, err end

  local made, client = pcall(fish.new, { api_key = s.api_key, base_url = s.base_url, model = s.model })
  if not made then return nil, (tostring(client):gsub("^[^\n]-%.lua:%d+: ", "")) end

  counter = counter + 1
  local out = s.out
  if not out and s.out_dir then
    out = ("%s/fish-say-%d-%d.%s"):format(s.out_dir, uv.os_getpid(), counter, s.format)
  end
  out = out or (vim.fn.tempname() .. "." .. s.format)

  local args = {}
  for k, v in pairs(s.convert or {}) do args[k] = v end
  args.text, args.format, args.out = text, s.format, out
  if s.reference_id then args.reference_id = s.reference_id end

  local job = {
    text = text,
    out = out,
    settings = s,
    on_done = opts.on_done,
    started = uv.hrtime(),
  }
  -- Inside a fish task, convert suspends only this task; the task resumes
  -- in vim.schedule, so job_ended may use any editor API. fish.pcall turns
  -- a bad argument into a reported failure (unlike pcall, it lets the task
  -- yield on every Lua ABI). A failure returns nil, message, err.
  job.task = fish.spawn(function()
    local called, path, bytes_or_message = fish.pcall(client.convert, args)
    client.close()
    if not called then
      job_ended(job, false, path)
    elseif not path then
      job_ended(job, false, bytes_or_message)
    else
      job_ended(job, true, path, bytes_or_message)
    end
  end)
  function job.cancel()
    job.canceled = true
    return job.task:cancel()
  end
  jobs[#jobs + 1] = job
  return job
end

-- Cancel every running conversion; their files are not written.
function M.cancel_all()
  -- Canceled tasks end in the next pass; their files are never written.
  for _, job in ipairs(jobs) do job.cancel() end
end

-- Conversions still running.
function M.running()
  return #jobs
end

-- The :FishSay command: its arguments, else the lines of its range.
function M.command(cmd)
  local text = cmd.args
  if (text == nil or text == "") and cmd.range > 0 then
    text = table.concat(vim.api.nvim_buf_get_lines(0, cmd.line1 - 1, cmd.line2, false), "\n")
  end
  local job, err = M.say(text)
  if not job then notify(err, vim.log.levels.ERROR) end
end

return M
