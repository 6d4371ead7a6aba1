-- fish-audio's entry point: pick the command, run it, and turn whatever
-- ends it into one line on stderr and an exit code (fish.cli.failure).
--
--   local code = require("fish.cli.main").run(arg)
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")

local main = {}

-- In the order --help lists them.
main.COMMANDS = { "say", "live", "voices", "batch", "transcribe", "credits" }

local function command(name)
  for _, known in ipairs(main.COMMANDS) do
    if known == name then return require("fish.cli." .. name) end
  end
end

function main.help()
  local rows = {}
  for _, name in ipairs(main.COMMANDS) do rows[#rows + 1] = { name, command(name).spec.summary } end
  return table.concat({
    "usage: fish-audio <command> [options]",
    "",
    "Fish Audio text to speech and voice cloning from the command line.",
    "",
    "commands:",
    args.rows(rows),
    "",
    "options:",
    args.rows({ { "-h, --help", "show this help; fish-audio <command> --help shows a command's options" },
                { "--version", "show the versions of fish-audio, fish and libcurl" } }),
    "",
    "environment:",
    args.rows({
      { "FISH_API_KEY", "the API key (or pass --api-key-file FILE to a command; there is no --api-key)" },
      { "FISH_BASE_URL", "the API server [default: https://api.fish.audio]" },
      { "FISH_AUDIO_PROGRESS", "progress display of batch and of long uploads (say --ref, transcribe, "
        .. "voices create): bar, plain or none" },
    }),
    "",
    "exit status: 0 done, 1 API or network error, 2 usage error, 3 some batch rows failed, 130 interrupted.",
    "",
  }, "\n")
end

local function version()
  local fish = require("fish")
  return ("fish-audio %s (%s, libcurl %s, %s)\n"):format(fish.VERSION, fish._VERSION,
    require("fish.core").curl_version(), type(jit) == "table" and jit.version or _VERSION)
end

local function dispatch(argv, out)
  local name = argv[1]
  if name == "-h" or name == "--help" or name == "help" then
    local about = argv[2] and command(argv[2])
    if about and about.help then
      out:write(about.help())
    elseif about then
      out:write(args.help(about.spec))
    else
      out:write(main.help())
    end
    return 0
  end
  if name == "--version" or name == "version" then
    out:write(version())
    return 0
  end
  if name == nil then
    io.stderr:write(main.help())
    return failure.USAGE
  end
  local cmd = command(name)
  if not cmd then
    failure.usage(("unknown command '%s' (one of %s; see fish-audio --help)")
      :format(name, table.concat(main.COMMANDS, ", ")))
  end
  if cmd.spec.name == "voices" then return cmd.run(argv, 2, out) end
  local parsed = args.parse(cmd.spec, argv, 2)
  if parsed.options.help then
    out:write(args.help(cmd.spec))
    return 0
  end
  return cmd.run(parsed)
end

local function report(message)
  for line in (tostring(message) .. "\n"):gmatch("([^\n]*)\n") do
    if line ~= "" then io.stderr:write("fish-audio: ", line, "\n") end
  end
end

-- Runs the command line `argv` (arg[1] ... arg[n]); returns the exit code.
function main.run(argv)
  local debug_traceback = os.getenv("FISH_AUDIO_DEBUG") and debug.traceback
  local ok, result = xpcall(function() return dispatch(argv, io.stdout) end, function(err)
    if debug_traceback and not failure.is(err) then return debug_traceback(tostring(err), 2) end
    return err
  end)
  io.stdout:flush()
  if ok then return result or 0 end
  if failure.is(result) then
    report(result.message)
    return result.code
  end
  if failure.is_interrupt(result) then
    report("interrupted")
    return failure.INTERRUPTED
  end
  -- Not a failure a command foresaw: still one line (FISH_AUDIO_DEBUG=1
  -- shows where it came from).
  local message = tostring(result)
  if not debug_traceback then message = failure.strip_position(message:match("^[^\n]*")) end
  report(message)
  return failure.API
end

return main
