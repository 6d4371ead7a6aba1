-- How `say` and `batch` describe a request on the command line: the voice
-- (--voice ID, or --ref AUDIO --ref-text TEXT pairs for one-shot cloning)
-- and the audio settings (--format, --model, --speed), turned into the
-- fields of fish.convert.
local failure = require("fish.cli.failure")
local fs = require("fish.cli.fs")

local speech = {}

speech.FORMATS = { "mp3", "wav", "pcm", "opus" }

speech.OPTIONS = {
  { "voice", value = "ID", help = "speak with this saved voice (its reference_id)" },
  { "ref", value = "AUDIO", many = true,
    help = "reference audio for one-shot cloning; pair each --ref with a --ref-text, in order" },
  { "ref-text", value = "TEXT", many = true, help = "the exact transcript of the --ref at the same position" },
  { "format", value = "F", choices = speech.FORMATS,
    help = "audio format; mp3 when not given (say: from the extension of -o FILE)" },
  { "model", value = "M", help = "TTS model (the API's `model` header), e.g. s2-pro [default: fish's]" },
  { "speed", value = "X", type = "number", min = 0.5, max = 2, help = "speaking speed, 0.5 to 2" },
}

-- Where a command's audio goes: -o FILE, or "-" (stdout), the default
-- unless stdout is a terminal. Without --format, FILE's extension sets it
-- when it names one of `formats`.
function speech.output(command, options, formats)
  local output = options.output
  if output == nil then
    if fs.isatty(1) then
      failure.usage(command .. ": stdout is a terminal: pass -o FILE, or pipe stdout into a player "
        .. "(-o - writes to the terminal anyway)")
    end
    output = "-"
  elseif output ~= "-" then
    local why = fs.unwritable(output)
    if why then failure.usage(("%s: -o %s: %s"):format(command, output, why)) end
  end
  if not options.format and output ~= "-" then
    local ext = output:lower():match("%.(%w+)$")
    for _, format in ipairs(formats) do
      if ext == format then options.format = format end
    end
  end
  return output
end

-- The voice every request uses unless a row says otherwise:
-- { voice = id } or { refs = { { path =, text = }, ... } } or {}.
function speech.default_voice(options)
  local refs, texts = options.ref or {}, options.ref_text or {}
  if options.voice and #refs > 0 then failure.usage("give --voice or --ref, not both") end
  if #refs ~= #texts then
    failure.usage(("each --ref needs its --ref-text: got %d --ref and %d --ref-text"):format(#refs, #texts))
  end
  if options.voice then return { voice = options.voice } end
  if #refs == 0 then return {} end
  local list = {}
  for i, path in ipairs(refs) do
    if not fs.is_file(path) then failure.usage(("--ref %s is not a readable file"):format(path)) end
    if not texts[i]:match("%S") then failure.usage(("--ref-text for %s is empty"):format(path)) end
    list[i] = { path = path, text = texts[i] }
  end
  return { refs = list }
end

-- fish.file(path), once per path. fish refuses an empty or vanished file
-- by raising; here that is the user's mistake, told in one line.
function speech.file_cache()
  local fish = require("fish")
  local cache = {}
  return function(path)
    if not cache[path] then
      local ok, file = pcall(fish.file, path)
      if not ok then failure.usage(failure.strip_position(file)) end
      cache[path] = file
    end
    return cache[path]
  end
end

-- How an upload display names references: the file, or how many.
function speech.describe_refs(refs)
  if #refs == 1 then return refs[1].path:match("[^/]*$") end
  return ("%d references"):format(#refs)
end

-- The fish.convert arguments for `text` spoken by `source` ({ voice = } or
-- { refs = }), with the audio settings of `options`.
function speech.request(text, source, options, file_of)
  local args = { text = text, format = options.format }
  if source.voice then
    args.reference_id = source.voice
  elseif source.refs then
    local references = {}
    for i, ref in ipairs(source.refs) do references[i] = { audio = file_of(ref.path), text = ref.text } end
    args.references = references
  end
  if options.model then args.model = options.model end
  if options.speed then args.prosody = { speed = options.speed } end
  return args
end

return speech
