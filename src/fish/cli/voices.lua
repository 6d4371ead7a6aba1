-- fish-audio voices list|get|create|update|delete|wait: persistent voices.
-- Data goes to stdout (a table, ids, or JSON with --json); training states
-- and confirmations go to stderr.
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local json = require("fish.json")
local progress = require("fish.cli.progress")
local session = require("fish.cli.session")

local voices = {}

local VISIBILITIES = { "private", "unlist", "public" }

local function with_common(options)
  options[#options + 1] = args.API_KEY_FILE
  options[#options + 1] = args.HELP
  return options
end

local JSON = { "json", help = "print JSON (one object per line) instead of text" }

-- Columns are measured in characters, not bytes: titles are often UTF-8.
local function width(s)
  return #(s:gsub("[\128-\191]", ""))
end

local function print_table(rows, header)
  local widths = {}
  local function measure(row)
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, width(cell)) end
  end
  measure(header)
  for _, row in ipairs(rows) do measure(row) end
  local function line(row)
    local cells = {}
    for i, cell in ipairs(row) do
      cells[i] = i < #row and (cell .. (" "):rep(widths[i] - width(cell))) or cell
    end
    io.stdout:write(table.concat(cells, "  "), "\n")
  end
  line(header)
  for _, row in ipairs(rows) do line(row) end
end

local function print_json(value)
  io.stdout:write(json.encode(value), "\n")
end

local function show_voice(voice, as_json)
  if as_json then return print_json(voice) end
  local tags = type(voice.tags) == "table" and table.concat(voice.tags, ", ") or ""
  local fields = {
    { "id", voice.id }, { "title", voice.title }, { "state", voice.state }, { "visibility", voice.visibility },
    { "description", voice.description }, { "tags", tags }, { "created", voice.created_at },
    { "updated", voice.updated_at },
  }
  for _, field in ipairs(fields) do
    if field[2] ~= nil and field[2] ~= "" then
      io.stdout:write(("%-12s %s\n"):format(field[1] .. ":", tostring(field[2])))
    end
  end
end

local function check_file(flag, path)
  if not fs.is_file(path) then failure.usage(("voices: %s %s is not a readable file"):format(flag, path)) end
end

-- Shows each state as training moves on ("created", "training", "trained").
local function wait(client, id, o)
  local voice, message = failure.protect(client.voices.wait_trained, id, {
    timeout = o.timeout, interval = o.interval,
    on_state = function(state) io.stderr:write(("fish-audio: voice %s: %s\n"):format(id, tostring(state))) end,
  })
  if not voice then failure.api(message) end
  return voice
end

local WAIT_OPTIONS = {
  { "timeout", value = "S", type = "number", min = 0, default = 600, help = "give up after S seconds" },
  { "interval", value = "S", type = "number", min = 0.05, default = 2, help = "seconds between state checks" },
}

-- ---- the subcommands --------------------------------------------------------

local commands = {}

commands.list = {
  summary = "List voices: yours by default, or the public library.",
  usage = "[--json] [--library] [--title T] [--tag TAG ...] [options]",
  options = with_common({
    JSON,
    { "library", help = "search the public library instead of your own voices" },
    { "title", value = "T", help = "only titles containing T" },
    { "tag", value = "TAG", many = true, help = "only voices with every given tag" },
    { "language", value = "L", many = true, help = "only voices in language L (e.g. en)" },
    { "sort", value = "BY", choices = { "score", "task_count", "created_at" }, help = "order" },
    { "limit", value = "N", type = "integer", min = 1, default = 100, help = "list at most N voices" },
  }),
  run = function(parsed, client)
    local o = parsed.options
    local filters = {
      self = not o.library or nil, title = o.title, tags = o.tag, language = o.language, sort_by = o.sort,
      page_size = math.min(o.limit, 100),
    }
    local list, n = {}, 0
    local ok, err = pcall(function()
      for voice in client.voices.each(filters) do
        n = n + 1
        list[n] = voice
        if n >= o.limit then break end
      end
    end)
    if not ok then
      if failure.is_interrupt(err) then error(err, 0) end
      failure.api(tostring(err))
    end
    if o.json then
      for _, voice in ipairs(list) do print_json(voice) end
      return 0
    end
    local rows = {}
    for i, voice in ipairs(list) do
      rows[i] = { voice.id, tostring(voice.state or ""), tostring(voice.visibility or ""), tostring(voice.title or "") }
    end
    print_table(rows, { "ID", "STATE", "VISIBILITY", "TITLE" })
    return 0
  end,
}

commands.get = {
  summary = "Show one voice.",
  usage = "ID [--json] [options]",
  positionals = { { "ID", "the voice's id" } }, min = 1, max = 1,
  options = with_common({ JSON }),
  run = function(parsed, client)
    local voice, message = client.voices.get(parsed.positionals[1])
    if not voice then failure.api(message) end
    show_voice(voice, parsed.options.json)
    return 0
  end,
}

local create_options = {
  { "title", value = "T", help = "the voice's title (required)" },
  { "text", value = "TRANSCRIPT", many = true,
    help = "the transcript of the SAMPLE at the same position (samples left without one are transcribed by "
      .. "the server)" },
  { "description", value = "D", help = "a description" },
  { "tag", value = "TAG", many = true, help = "a tag" },
  { "visibility", value = "V", choices = VISIBILITIES, default = "private", help = "who can use the voice" },
  { "cover", value = "IMAGE", help = "a cover image (public voices need one)" },
  { "wait", help = "wait until training ends, showing each state change on stderr" },
}
for _, option in ipairs(WAIT_OPTIONS) do create_options[#create_options + 1] = option end
create_options[#create_options + 1] = JSON
create_options[#create_options + 1] = progress.OPTION

commands.create = {
  summary = "Create a voice from sample recordings; prints its id.",
  usage = "--title T SAMPLE... [--text TRANSCRIPT ...] [--wait] [options]",
  positionals = { { "SAMPLE", "an audio file of the voice (one or more)" } }, min = 1,
  options = with_common(create_options),
  run = function(parsed, client)
    local o = parsed.options
    if not o.title or not o.title:match("%S") then failure.usage("voices create: --title is required") end
    local texts = o.text or {}
    if #texts > #parsed.positionals then
      failure.usage(("voices create: %d --text for %d samples"):format(#texts, #parsed.positionals))
    end
    local fish = require("fish")
    local samples = {}
    for i, path in ipairs(parsed.positionals) do
      check_file("SAMPLE", path)
      samples[i] = failure.protect(fish.file, path)
    end
    local cover
    if o.cover then
      check_file("--cover", o.cover)
      cover = failure.protect(fish.file, o.cover)
    end
    local positionals = parsed.positionals
    local shown = progress.command_upload(o, #positionals == 1 and positionals[1]:match("[^/]*$")
      or ("%d samples"):format(#positionals))
    local voice, message = failure.protect(client.voices.create, {
      title = o.title, voices = samples, texts = #texts > 0 and texts or nil, description = o.description,
      tags = o.tag, visibility = o.visibility, cover_image = cover, on_progress = shown:callback(),
    })
    shown:finish()
    if not voice then failure.api(message) end
    io.stderr:write(("fish-audio: created voice %s (%s)\n"):format(voice.id, tostring(voice.state)))
    if o.wait then voice = wait(client, voice.id, o) end
    if o.json then print_json(voice) else io.stdout:write(voice.id, "\n") end
    return 0
  end,
}

commands.update = {
  summary = "Change a voice's title, description, visibility, tags or cover.",
  usage = "ID [--title T] [--description D] [--visibility V] [--tag TAG ...] [--cover IMAGE] [options]",
  positionals = { { "ID", "the voice's id" } }, min = 1, max = 1,
  options = with_common({
    { "title", value = "T", help = "new title" },
    { "description", value = "D", help = "new description" },
    { "visibility", value = "V", choices = VISIBILITIES, help = "who can use the voice" },
    { "tag", value = "TAG", many = true, help = "the new tags (they replace the old ones)" },
    { "cover", value = "IMAGE", help = "a new cover image" },
  }),
  run = function(parsed, client)
    local o = parsed.options
    local changes = { title = o.title, description = o.description, visibility = o.visibility, tags = o.tag }
    if o.cover then
      check_file("--cover", o.cover)
      changes.cover_image = failure.protect(require("fish").file, o.cover)
    end
    if next(changes) == nil then failure.usage("voices update: nothing to change (see --help)") end
    local id = parsed.positionals[1]
    local ok, message = failure.protect(client.voices.update, id, changes)
    if not ok then failure.api(message) end
    io.stderr:write(("fish-audio: updated voice %s\n"):format(id))
    return 0
  end,
}

commands.delete = {
  summary = "Delete voices.",
  usage = "ID... [options]",
  positionals = { { "ID", "a voice's id (one or more)" } }, min = 1,
  options = with_common({}),
  run = function(parsed, client)
    for _, id in ipairs(parsed.positionals) do
      local ok, message = client.voices.delete(id)
      if not ok then failure.api(message) end
      io.stderr:write(("fish-audio: deleted voice %s\n"):format(id))
    end
    return 0
  end,
}

local wait_options = {}
for _, option in ipairs(WAIT_OPTIONS) do wait_options[#wait_options + 1] = option end
wait_options[#wait_options + 1] = JSON

commands.wait = {
  summary = "Wait until a voice is trained, showing each state change; fails if training fails.",
  usage = "ID [--timeout S] [--interval S] [options]",
  positionals = { { "ID", "the voice's id" } }, min = 1, max = 1,
  options = with_common(wait_options),
  run = function(parsed, client)
    local voice = wait(client, parsed.positionals[1], parsed.options)
    if parsed.options.json then print_json(voice) else io.stdout:write(voice.id, "\n") end
    return 0
  end,
}

voices.ORDER = { "list", "get", "create", "update", "delete", "wait" }
for _, name in ipairs(voices.ORDER) do
  local command = commands[name]
  command.name = "voices " .. name
end
voices.commands = commands

voices.spec = {
  name = "voices",
  usage = "list|get|create|update|delete|wait ...",
  summary = "Manage persistent voices: list, show, create (and train), update, delete, wait for training.",
  options = { args.HELP },
}

function voices.help()
  local rows = {}
  for _, name in ipairs(voices.ORDER) do rows[#rows + 1] = { name, commands[name].summary } end
  return ("usage: fish-audio voices <command> [options]\n\n%s\n\ncommands:\n%s\n\n"
    .. "Run fish-audio voices <command> --help for the options of each.\n")
    :format(voices.spec.summary, args.rows(rows))
end

-- argv[first] is the subcommand.
function voices.run(argv, first, out)
  local name = argv[first]
  if name == "--help" or name == "-h" or name == "help" then
    out:write(voices.help())
    return 0
  end
  if name == nil then
    failure.usage(("voices: which command? one of %s (see fish-audio voices --help)")
      :format(table.concat(voices.ORDER, ", ")))
  end
  local command = commands[name]
  if not command then
    failure.usage(("voices: unknown command '%s' (one of %s)"):format(name, table.concat(voices.ORDER, ", ")))
  end
  local parsed = args.parse(command, argv, first + 1)
  if parsed.options.help then
    out:write(args.help(command))
    return 0
  end
  return command.run(parsed, session.client(parsed.options))
end

return voices
