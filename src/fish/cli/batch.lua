-- fish-audio batch MANIFEST --out DIR [--jobs N] ...: voice every row of a
-- manifest into DIR/<id>.<format>.
--
-- The order of things, and why:
--   1. the manifest is read and checked whole: a bad one is refused before
--      any request (and any bill);
--   2. each row's request is hashed (fish.cli.hash); a row whose file exists
--      and whose hash matches the state file is skipped, a changed one is
--      voiced again;
--   3. DIR is locked, and temp files of a killed run are removed: fish writes
--      each file beside its target and renames it into place when complete,
--      so what a kill leaves is only ever *.part, never a short <id>.<format>;
--   4. the rows run through fish.cli.runner; each result goes to the report,
--      the state file and the progress display as it comes.
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")
local hash = require("fish.cli.hash")
local manifest = require("fish.cli.manifest")
local outdir = require("fish.cli.outdir")
local progress = require("fish.cli.progress")
local report = require("fish.cli.report")
local runner = require("fish.cli.runner")
local session = require("fish.cli.session")
local speech = require("fish.cli.speech")

local batch = {}

local options = {
  { "out", value = "DIR", help = "write each row to DIR/<id>.<format> (required; created when missing)" },
  { "jobs", value = "N", type = "integer", min = 1, max = 256, default = 4,
    help = "requests at once; lowered when the server answers 429, raised again as requests succeed" },
}
for _, option in ipairs(speech.OPTIONS) do options[#options + 1] = option end
for _, option in ipairs({
  { "report", value = "FILE", help = "where to write the report (JSON Lines) [default: DIR/report.jsonl]" },
  { "retries", value = "N", type = "integer", min = 0, max = 20, default = 2,
    help = "tries again after a 5xx, 408 or network failure (a 429 is always tried again)" },
  { "dry-run", help = "count the rows and characters to voice and show the account's credit; send nothing "
    .. "that is billed" },
  progress.OPTION,
  args.API_KEY_FILE,
  args.HELP,
}) do options[#options + 1] = option end

batch.spec = {
  name = "batch",
  usage = "MANIFEST --out DIR [--jobs N] [--voice ID | --ref AUDIO --ref-text TEXT] [options]",
  summary = "Voice every row of a manifest (CSV or JSON Lines) into DIR/<id>.<format>. Resumable: a rerun "
    .. "skips rows already done and voices changed rows again.",
  positionals = { { "MANIFEST", "a .csv (with a header row) or .jsonl file, one row per line to voice" } },
  min = 1, max = 1,
  options = options,
  notes = {
    "manifest columns (CSV header, or JSON Lines keys):",
    "  id        the output file's name, DIR/<id>.<format>: letters, digits, '.', '_', '-'; unique",
    "  text      what to say; not empty",
    "  voice     a voice id, or",
    "  ref       a reference audio file (relative to the manifest's directory)",
    "  ref_text  and its transcript",
    "voice / ref may be left out of a row when --voice or --ref gives the default.",
    "",
    "DIR also holds report.jsonl (one line per row: ok, skipped or failed with the error) and",
    ".fish-audio-state.jsonl (a hash of each row's request). Exit status: 0 all rows done, 3 some rows",
    "failed (a network failure fails the rows it hits), 1 the batch stopped because the API refused the key",
    "or the account (401, 403, 402), 2 usage (e.g. a bad manifest), 130 interrupted.",
    "",
    "example:",
    "  fish-audio batch lines.csv --out audio/ --voice 8f3c0d... --jobs 8",
  },
}

local function characters(text)
  return #(text:gsub("[\128-\191]", ""))
end

-- The row's request, in the canonical form its hash is taken of: the text,
-- the voice (an id, or each reference's bytes and transcript) and the
-- settings that change the audio. The format is in the file name as well.
local function request_entry(row, o, content_hash)
  -- %.17g: the same digits for a speed on every Lua (5.3 would print 1.0).
  local speed = o.speed and ("%.17g"):format(o.speed) or ""
  local fields = { "fish-audio batch 1", row.text, o.format, o.model or "", speed }
  if row.source.voice then
    fields[#fields + 1] = "voice"
    fields[#fields + 1] = row.source.voice
  end
  for _, ref in ipairs(row.source.refs or {}) do
    fields[#fields + 1] = "ref"
    fields[#fields + 1] = content_hash(ref.path)
    fields[#fields + 1] = ref.text
  end
  local canonical = hash.canonical(fields)
  return { hash = hash.hex(hash.fnv1a(canonical)), length = #canonical }
end

local function content_hasher()
  local cache = {}
  return function(path)
    if not cache[path] then
      local bytes = fs.read(path)
      if not bytes then failure.usage(("cannot read %s"):format(path)) end
      cache[path] = hash.hex(hash.fnv1a(bytes)) .. "/" .. #bytes
    end
    return cache[path]
  end
end

-- Which rows are done already: the file exists, and the state says this
-- very request made it (or says nothing about it: a file from before the
-- state was kept, or one renamed into place just before a kill).
local function plan(rows, state, dir, o)
  local content_hash = content_hasher()
  local skip, todo = {}, {}
  for _, row in ipairs(rows) do
    row.file = fs.join(dir, row.id .. "." .. o.format)
    row.entry = request_entry(row, o, content_hash)
    local known = state[row.id]
    if fs.exists(row.file) and (known == nil or (known.hash == row.entry.hash
        and (known.length == nil or known.length == row.entry.length))) then
      skip[#skip + 1] = row
      state[row.id] = row.entry
    else
      todo[#todo + 1] = row
    end
  end
  return skip, todo
end

local function dry_run(rows, skip, todo, client)
  local chars, all_chars = 0, 0
  for _, row in ipairs(rows) do all_chars = all_chars + characters(row.text) end
  for _, row in ipairs(todo) do chars = chars + characters(row.text) end
  local out = io.stdout
  out:write(("rows: %d (%d to voice, %d already done)\n"):format(#rows, #todo, #skip))
  out:write(("characters: %d to voice (%d in the manifest)\n"):format(chars, all_chars))
  local answer, message = client.account.credits()
  if not answer then failure.api(message) end
  out:write(("credit: %s\n"):format(tostring(answer.credit)))
  out:write("dry run: nothing was voiced\n")
  return 0
end

function batch.run(parsed)
  local o = parsed.options
  if not o.out or o.out == "" then failure.usage("batch: --out DIR is required (see fish-audio batch --help)") end
  o.format = o.format or "mp3"
  local default = speech.default_voice(o)
  local rows = manifest.load(parsed.positionals[1], default)
  for _, row in ipairs(rows) do
    if row.voice then
      row.source = { voice = row.voice }
    elseif row.ref then
      row.source = { refs = { { path = row.ref, text = row.ref_text } } }
    else
      row.source = default
    end
  end
  local client = session.client(o)
  local dir = o.out

  if o.dry_run then
    local state = fs.is_dir(dir) and outdir.load_state_of(dir) or {}
    local skip, todo = plan(rows, state, dir, o)
    return dry_run(rows, skip, todo, client)
  end

  local od = outdir.open(dir)
  local removed = od:remove_stale()
  local state = od:load_state()
  local skip, todo = plan(rows, state, dir, o)
  od:start_state(state)
  local report_path = o.report or od:path("report.jsonl")
  local rep, why = report.open(report_path)
  if not rep then
    od:close()
    failure.usage(("cannot write the report %s: %s"):format(report_path, tostring(why)))
  end
  for _, row in ipairs(skip) do rep:write(row, { status = "skipped", file = row.file }) end

  local core = require("fish.core")
  local fish = require("fish")
  local show = progress.new(progress.mode(o.progress, os.getenv("FISH_AUDIO_PROGRESS")), { clock = core.now })
  if removed > 0 then show:say(("removed %d partial file(s) left by an interrupted run"):format(removed)) end
  show:start(#rows, #skip, o.jobs)

  local file_of = speech.file_cache()
  local failed = 0
  local run = runner.new({
    fish = fish, rows = todo, jobs = o.jobs, retries = o.retries, clock = core.now, events = show,
    convert = function(row)
      local request = speech.request(row.text, row.source, o, file_of)
      request.out, request.retries = row.file, 0
      -- The bar's bytes grow while the row is under way.
      request.on_progress = function(sent, _, received) show:transfer(row.id, received, sent) end
      return client.convert(request)
    end,
    on_result = function(row, result)
      if result.status == "ok" then od:record(row.id, row.entry) else failed = failed + 1 end
      rep:write(row, result)
      show:row(row, result)
    end,
  })

  local ok, err = pcall(run.run, run)
  local interrupted = not ok and failure.is_interrupt(err)
  if interrupted then
    -- Ctrl-C: cancel what is in flight (fish removes those temp files),
    -- and leave the rest for the next run.
    run:stop("interrupted")
    client.close()
    pcall(run.drain, run, 2)
  elseif not ok then
    od:close()
    rep:close()
    error(err, 0)
  end

  local left = run:unsettled()
  local why_left = interrupted and "interrupted before this row finished" or ("not started: " .. tostring(run.stopped))
  for _, row in ipairs(left) do
    rep:write(row, { status = "failed", error = { kind = "canceled", status = 0, message = why_left } })
  end
  show:finish("; report: " .. report_path)
  rep:close()
  od:close()

  if interrupted then
    error(failure.new(failure.INTERRUPTED,
      ("interrupted: %d rows left; run the same command again to continue"):format(#left)), 0)
  end
  if run.stopped then failure.api("batch stopped: " .. run.stopped) end
  if failed > 0 then
    error(failure.new(failure.PARTIAL, ("%d of %d rows failed; see %s"):format(failed, #rows, report_path)), 0)
  end
  return 0
end

return batch
