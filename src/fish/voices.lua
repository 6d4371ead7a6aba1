-- Persistent voices: /model create, get, list, each, update, delete, and
-- wait_trained. Wire details follow protocol-decisions.md, "Voices".
local core = require("fish.core")
local errors = require("fish.errors")
local file = require("fish.file")
local loop = require("fish.loop")
local util = require("fish.util")

local voices = {}

local check_fields = util.check_fields
local NO_FIELDS = {}

local function fail(fn, field, message)
  util.raise(("%s: field '%s' %s"):format(fn, field, message))
end

local CONTENT_TYPES = {
  wav = "audio/wav", mp3 = "audio/mpeg", m4a = "audio/mp4", mp4 = "audio/mp4",
  ogg = "audio/ogg", opus = "audio/ogg", png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg",
}

local function content_type_for(name)
  local ext = name:match("%.([%w]+)$")
  return ext and CONTENT_TYPES[ext:lower()] or "application/octet-stream"
end

-- A multipart file part from bytes or fish.file(path). Paths are streamed
-- from disk by libcurl; bytes travel as they are, named "upload".
local function file_part(fn, name, value, field)
  if file.is(value) then
    file.check(value, fn, field)
    local filename = file.basename(value)
    return { name = name, file = value.path, size = value.size, filename = filename, type = content_type_for(filename) }
  end
  if type(value) ~= "string" or value == "" then
    fail(fn, field, "must be bytes (a non-empty string) or fish.file(path)")
  end
  return { name = name, data = value, filename = "upload", type = "application/octet-stream" }
end

local function text_part(name, value)
  if type(value) == "boolean" then value = value and "true" or "false" end
  return { name = name, data = tostring(value) }
end

-- A string, or a proper list of strings (no holes: see util.sequence_length).
local function string_list(fn, field, value)
  if type(value) == "string" then return { value } end
  if type(value) ~= "table" then fail(fn, field, "must be a string or a list of strings") end
  for i = 1, util.sequence_length(fn, field, value) do
    if type(value[i]) ~= "string" then fail(fn, ("%s[%d]"):format(field, i), "must be a string") end
    util.check_text(fn, ("%s[%d]"):format(field, i), value[i])
  end
  return value
end

local function check_string(fn, args, field, required)
  local v = args[field]
  if v == nil then
    if required then fail(fn, field, "is required") end
    return
  end
  if type(v) ~= "string" or (required and v == "") then fail(fn, field, "must be a non-empty string") end
  util.check_text(fn, field, v)
end

local function check_boolean(fn, args, field)
  if args[field] ~= nil and type(args[field]) ~= "boolean" then fail(fn, field, "must be a boolean") end
end

local VISIBILITIES = { public = true, unlist = true, private = true }

local function check_visibility(fn, v)
  if v ~= nil and not VISIBILITIES[v] then fail(fn, "visibility", "must be public, unlist or private") end
end

-- The voice record: the server's fields, plus `id` as a copy of `_id`.
local function as_voice(entity)
  if type(entity) == "table" and entity._id ~= nil and entity.id == nil then entity.id = entity._id end
  return entity
end

local function voice_id(fn, voice)
  if type(voice) == "table" then voice = voice.id or voice._id end
  if type(voice) ~= "string" or voice == "" then
    util.raise(fn .. ": argument 1 must be a voice id or a voice table with an id")
  end
  return voice
end

-- "." and ".." are unreserved, but as a path segment they are dot segments
-- that libcurl removes ("/model/.." would become "/"), so encode their dots.
local function voice_path(id)
  local segment = util.percent_encode(id)
  if segment == "." or segment == ".." then segment = segment:gsub("%.", "%%2E") end
  return "/model/" .. segment
end

-- ---- create --------------------------------------------------------------------

local CREATE_FIELDS = {
  "title", "voices", "texts", "tags", "description", "visibility", "cover_image",
  "enhance_audio_quality", "train_mode", "type", "generate_sample", "on_progress",
}

function voices.create_parts(args)
  local fn = "fish.voices.create"
  check_fields(fn, args, CREATE_FIELDS)
  check_string(fn, args, "title", true)
  check_string(fn, args, "description")
  check_string(fn, args, "train_mode")
  check_string(fn, args, "type")
  check_boolean(fn, args, "enhance_audio_quality")
  check_boolean(fn, args, "generate_sample")
  if args.on_progress ~= nil and type(args.on_progress) ~= "function" then
    fail(fn, "on_progress", "must be a function")
  end
  local visibility = args.visibility or "private"
  check_visibility(fn, visibility)
  local samples = args.voices
  if file.is(samples) or type(samples) == "string" then samples = { samples } end
  if type(samples) ~= "table" or util.sequence_length(fn, "voices", samples) == 0 then
    fail(fn, "voices", "needs at least one sample (bytes or fish.file(path))")
  end
  local texts = args.texts and string_list(fn, "texts", args.texts) or {}
  if #texts > #samples then
    fail(fn, "texts", ("has %d transcripts for %d voices"):format(#texts, #samples))
  end
  local tags = args.tags and string_list(fn, "tags", args.tags) or {}
  if visibility == "public" and args.cover_image == nil then
    fail(fn, "cover_image", "is required for a public voice")
  end

  -- Text parts first, then files, in the Python SDK's order.
  local parts = { text_part("title", args.title) }
  if args.description then parts[#parts + 1] = text_part("description", args.description) end
  parts[#parts + 1] = text_part("visibility", visibility)
  parts[#parts + 1] = text_part("type", args.type or "tts")
  parts[#parts + 1] = text_part("train_mode", args.train_mode or "fast")
  for _, text in ipairs(texts) do parts[#parts + 1] = text_part("texts", text) end
  for _, tag in ipairs(tags) do parts[#parts + 1] = text_part("tags", tag) end
  if args.enhance_audio_quality ~= nil then
    parts[#parts + 1] = text_part("enhance_audio_quality", args.enhance_audio_quality)
  end
  if args.generate_sample ~= nil then parts[#parts + 1] = text_part("generate_sample", args.generate_sample) end
  for i, sample in ipairs(samples) do
    parts[#parts + 1] = file_part(fn, "voices", sample, ("voices[%d]"):format(i))
  end
  if args.cover_image ~= nil then parts[#parts + 1] = file_part(fn, "cover_image", args.cover_image, "cover_image") end
  return parts
end

local function create(state, args)
  state:check_open("fish.voices.create")
  local parts = voices.create_parts(args)
  local entity, err = state:send_json({ method = "POST", path = "/model", mime = parts }, args, "fish.voices.create")
  if not entity then return nil, err end
  return as_voice(entity)
end

-- ---- get, update, delete ------------------------------------------------------------

local function get(state, voice, opts)
  local fn = "fish.voices.get"
  state:check_open(fn)
  local id = voice_id(fn, voice)
  if opts ~= nil then check_fields(fn, opts, NO_FIELDS) end
  local entity, err = state:send_json({ method = "GET", path = voice_path(id) }, opts, fn)
  if not entity then return nil, err end
  return as_voice(entity)
end

local UPDATE_FIELDS = { "title", "description", "visibility", "tags", "cover_image" }

local form_encode = util.form_encode

local function update(state, voice, args)
  local fn = "fish.voices.update"
  state:check_open(fn)
  local id = voice_id(fn, voice)
  check_fields(fn, args, UPDATE_FIELDS)
  check_string(fn, args, "title")
  check_string(fn, args, "description")
  check_visibility(fn, args.visibility)
  local fields = {}
  for _, name in ipairs({ "title", "description", "visibility" }) do
    if args[name] ~= nil then fields[#fields + 1] = { name, args[name] } end
  end
  if args.tags ~= nil then
    for _, tag in ipairs(string_list(fn, "tags", args.tags)) do fields[#fields + 1] = { "tags", tag } end
  end
  local spec = { method = "PATCH", path = voice_path(id), unused_answer = true }
  if args.cover_image ~= nil then
    -- A cover image needs multipart; everything else fits in a form.
    local parts = {}
    for _, kv in ipairs(fields) do parts[#parts + 1] = text_part(kv[1], kv[2]) end
    parts[#parts + 1] = file_part(fn, "cover_image", args.cover_image, "cover_image")
    spec.mime = parts
  else
    spec.body = form_encode(fields)
    spec.headers = { "Content-Type: application/x-www-form-urlencoded" }
  end
  local answer, err = state:send_json(spec, args, fn)
  if not answer then return nil, err end
  return true
end

local function delete(state, voice, opts)
  local fn = "fish.voices.delete"
  state:check_open(fn)
  local id = voice_id(fn, voice)
  if opts ~= nil then check_fields(fn, opts, NO_FIELDS) end
  local answer, err = state:send_json({ method = "DELETE", path = voice_path(id), unused_answer = true }, opts, fn)
  if not answer then return nil, err end
  return true
end

-- ---- list and each --------------------------------------------------------------------

local LIST_FIELDS = {
  "page_size", "page_number", "title", "tag", "tags", "self", "author_id",
  "language", "title_language", "sort_by",
}
local SORTS = { score = true, task_count = true, created_at = true }

-- `fn`: the public call the errors name (list's, or each's).
function voices.list_query(args, fn)
  fn = fn or "fish.voices.list"
  args = args or {}
  check_fields(fn, args, LIST_FIELDS)
  local query = {}
  local function add(key, value) query[#query + 1] = { key, value } end
  for _, name in ipairs({ "page_size", "page_number" }) do
    local v = args[name]
    if v ~= nil then
      if not util.is_integer(v) or v < 1 then fail(fn, name, "must be a positive integer") end
      add(name, ("%d"):format(v))
    end
  end
  check_string(fn, args, "title")
  if args.title then add("title", args.title) end
  if args.tag ~= nil and args.tags ~= nil then fail(fn, "tags", "cannot be combined with 'tag'") end
  local tags = args.tags or args.tag
  if tags ~= nil then
    for _, tag in ipairs(string_list(fn, args.tags and "tags" or "tag", tags)) do add("tag", tag) end
  end
  check_boolean(fn, args, "self")
  if args.self ~= nil then add("self", args.self and "true" or "false") end
  check_string(fn, args, "author_id")
  if args.author_id then add("author_id", args.author_id) end
  for _, name in ipairs({ "language", "title_language" }) do
    if args[name] ~= nil then
      for _, value in ipairs(string_list(fn, name, args[name])) do add(name, value) end
    end
  end
  if args.sort_by ~= nil then
    if not SORTS[args.sort_by] then fail(fn, "sort_by", "must be score, task_count or created_at") end
    add("sort_by", args.sort_by)
  end
  return form_encode(query)
end

local function list(state, args)
  local fn = "fish.voices.list"
  state:check_open(fn)
  local query = voices.list_query(args)
  local page, err = state:send_json({ method = "GET", path = "/model", query = query }, args, fn)
  if not page then return nil, err end
  local function invalid(message)
    return nil, errors.new({ kind = "invalid_response", status = 200, message = message })
  end
  if type(page) ~= "table" or type(page.items) ~= "table" then return invalid("a voice list without items") end
  -- Every item must be a voice: a null or a bare value would reach the
  -- caller's loop as something it cannot index.
  local n = #page.items
  for k in pairs(page.items) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then
      return invalid("a voice list whose items are not a list")
    end
  end
  for i = 1, n do
    local item = page.items[i]
    if type(item) ~= "table" or type(item._id) ~= "string" then
      return invalid(("a voice list whose item %d is not a voice"):format(i))
    end
    as_voice(item)
  end
  return page
end

-- The most pages `each` fetches (a million voices at the default size).
voices.MAX_PAGES = 10000

-- for voice in fish.voices.each{...} do ... end: every matching voice, page
-- after page. A failed page fetch raises its error object (like io.lines).
local function each(state, args)
  local fn = "fish.voices.each"
  state:check_open(fn)
  args = args or {}
  util.check_table(fn, args)
  local filters = {}
  for k, v in pairs(args) do filters[k] = v end
  filters.page_size = filters.page_size or 100
  local page_number = filters.page_number or 1
  voices.list_query(filters, fn) -- check every field before the first request
  -- Voices on the pages before the first one fetched count towards `total`.
  local items, index, seen, done = {}, 0, (page_number - 1) * filters.page_size, false
  local fetched, previous_first = 0, nil
  local function raise(err)
    -- Raise the error object, as io.lines raises: a loop cannot return
    -- nil, message, err without ending as if the list were complete.
    err.call = err.call or fn
    error(err, 0)
  end
  return function()
    if index >= #items then
      if done then return nil end
      filters.page_number = page_number
      local page, err = list(state, filters)
      if not page then raise(err) end
      -- A server that ignores page_number, or never runs out of full pages,
      -- must not keep this loop going forever.
      fetched = fetched + 1
      local first = page.items[1] and page.items[1]._id
      if first ~= nil and first == previous_first then
        raise(errors.new({ kind = "invalid_response", status = 200,
          message = ("page %d repeats the voices of page %d"):format(page_number, page_number - 1) }))
      end
      if fetched > voices.MAX_PAGES then
        raise(errors.new({ kind = "invalid_response", status = 200,
          message = ("more than %d pages of voices: stopped"):format(voices.MAX_PAGES) }))
      end
      previous_first = first
      items, index = page.items, 0
      page_number = page_number + 1
      seen = seen + #items
      local total = tonumber(page.total)
      if #items < filters.page_size or (total and seen >= total) or page.has_more == false then done = true end
      if #items == 0 then return nil end
    end
    index = index + 1
    return items[index]
  end
end

-- ---- wait_trained --------------------------------------------------------------------------

-- Besides every call option: `timeout` here bounds the whole wait, not one
-- poll; the other call options apply to each poll.
local WAIT_FIELDS = { "interval", "on_state" }
local POLL_OPTIONS = {
  "retries", "connect_timeout", "first_byte_timeout", "idle_timeout", "cancel", "headers", "query", "api_key",
}

local function wait_trained(state, voice, opts)
  local fn = "fish.voices.wait_trained"
  state:check_open(fn)
  local id = voice_id(fn, voice)
  opts = opts or {}
  check_fields(fn, opts, WAIT_FIELDS)
  local timeout, interval, on_state = opts.timeout or 300, opts.interval or 5, opts.on_state
  local token = opts.cancel
  if token ~= nil and not loop.is_token(token) then fail(fn, "cancel", "must be a fish.cancel_token()") end
  -- v ~= v: NaN passes every comparison, and would make the wait endless.
  if type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout then
    fail(fn, "timeout", "must be a non-negative number")
  end
  if type(interval) ~= "number" or interval <= 0 or interval ~= interval then
    fail(fn, "interval", "must be a positive number")
  end
  if on_state ~= nil and type(on_state) ~= "function" then fail(fn, "on_state", "must be a function") end
  local poll = {}
  for _, name in ipairs(POLL_OPTIONS) do poll[name] = opts[name] end

  -- 0 means no limit, as for every time limit fish takes.
  local deadline = timeout > 0 and core.now() + timeout or math.huge
  local last_state
  local current = type(voice) == "table" and voice.state and as_voice(voice) or nil
  while true do
    if not current then
      local err
      current, err = get(state, id, poll)
      if not current then return nil, err end
    end
    if current.state ~= last_state then
      last_state = current.state
      if on_state then on_state(last_state, current) end
    end
    if last_state == "trained" then return current end
    if last_state == "failed" then
      return nil, errors.new({ kind = "failed", message = "voice " .. id .. " failed training", voice = current })
    end
    local left = deadline - core.now()
    if left <= 0 or loop.task_canceled() or (token and token.canceled) then
      local kind = left <= 0 and "timeout" or "canceled"
      return nil, errors.new({
        kind = kind,
        timeout = kind == "timeout" and "training" or nil,
        message = ("voice %s not trained after %gs (last state: %s)"):format(id, timeout, tostring(last_state)),
        state = last_state,
        voice = current,
      })
    end
    loop.sleep(math.min(interval, left), state.pause, token)
    current = nil
  end
end

-- The calls a client offers under client.voices, each f(state, args); the
-- client binds them (client.lua, EXTENSIONS).
voices.calls = {
  create = create,
  get = get,
  update = update,
  delete = delete,
  list = list,
  each = each,
  wait_trained = wait_trained,
}

return voices
