-- fish.voices end to end against the bundled local server: the multipart of
-- create, ids in paths, update bodies, list queries, paging with each,
-- wait_trained's polling, and trained voices used by fish.convert.
local cjson = require("cjson")
local fish = require("fish")
local core = require("fish.core")
local server = require("support.server")
local files = require("support.files")
local read_file, write_file, tmpdir = files.read, files.write, files.tmpdir
local timing = require("support.timing")

-- Training takes SCALE times longer under valgrind and ASan, so that every
-- poll still sees every state; bounds on elapsed time are dropped there.
local SCALE = timing.slow and 5 or 1

local REFERENCE_WAV = server.ROOT .. "/examples/reference.wav"

-- JSON null from the control API counts as absent.
local function opt(v)
  if v == cjson.null then return nil end
  return v
end

-- The parts the server decoded, as { name, filename, content_type, data }.
local function parts_of(captured)
  assert.is_table(captured.parts, "the server could not decode a multipart body")
  local out = {}
  for i, p in ipairs(captured.parts) do
    out[i] = {
      name = opt(p.name),
      filename = opt(p.filename),
      content_type = opt(p.content_type),
      data = server.base64_decode(p.data_b64),
    }
  end
  return out
end

local function names_of(parts)
  local names = {}
  for i, p in ipairs(parts) do names[i] = p.name end
  return names
end

-- The raw values of `key` in a raw query string, in order, still encoded.
local function raw_values(query, key)
  local values = {}
  for pair in (query or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k == key then values[#values + 1] = v end
  end
  return values
end

local function raw_keys(query)
  local keys = {}
  for pair in (query or ""):gmatch("[^&]+") do
    local k = pair:match("^([^=]*)")
    keys[k] = true
  end
  return keys
end

-- Bytes with a NUL and high bytes, to show file parts travel byte-exact.
local SAMPLE = "RIFF\0\0\0\0WAVEfmt \1\2\255\254 sample bytes"

describe("fish.voices", function()
  local srv, client, dir, cover_png, cover_jpg

  local function make_voice(title, extra)
    local args = { title = title, voices = { SAMPLE } }
    for k, v in pairs(extra or {}) do args[k] = v end
    local voice, _, err = client.voices.create(args)
    assert(voice, tostring(err))
    return voice
  end

  setup(function()
    srv = server.start()
    client = fish.new({ api_key = srv.api_key, base_url = srv.url, retries = 0 })
    dir = tmpdir()
    cover_png = dir .. "/cover.png"
    write_file(cover_png, "\137PNG\r\n\26\n\0\0\0\rIHDR fake png body \0\255")
    cover_jpg = dir .. "/photo.JPG"
    write_file(cover_jpg, "\255\216\255\224 fake jpeg \0")
  end)

  teardown(function()
    client.close()
    srv:stop()
    require("support.files").remove_tree(dir)
  end)

  before_each(function() srv:reset() end)

  describe("create", function()
    it("sends every field as its own part, lists as repeated parts, in order", function()
      local wav = read_file(REFERENCE_WAV)
      local voice, _, err = client.voices.create({
        title = "Full voice, with a comma",
        description = "Two samples & a cover",
        visibility = "public",
        voices = { fish.file(REFERENCE_WAV), SAMPLE },
        texts = { "First transcript, with a comma", "Second transcript: ünïcode" },
        tags = { "tag one", "tag,two" },
        enhance_audio_quality = false,
        generate_sample = true,
        cover_image = fish.file(cover_png),
      })
      assert.is_nil(err)
      local sent = srv:last_request("/model")
      assert.equal("POST", sent.method)
      assert.matches("^multipart/form%-data; boundary=", sent.headers["content-type"])
      local function text(name, value) return { name = name, data = value } end
      assert.same({
        text("title", "Full voice, with a comma"),
        text("description", "Two samples & a cover"),
        text("visibility", "public"),
        text("type", "tts"),
        text("train_mode", "fast"),
        text("texts", "First transcript, with a comma"),
        text("texts", "Second transcript: ünïcode"),
        text("tags", "tag one"),
        text("tags", "tag,two"),
        text("enhance_audio_quality", "false"),
        text("generate_sample", "true"),
        { name = "voices", filename = "reference.wav", content_type = "audio/wav", data = wav },
        { name = "voices", filename = "upload", content_type = "application/octet-stream", data = SAMPLE },
        { name = "cover_image", filename = "cover.png", content_type = "image/png", data = read_file(cover_png) },
      }, parts_of(sent))
      -- The server took it as sent: the lists were not split or joined.
      assert.same({ "tag one", "tag,two" }, voice.tags)
      assert.equal("public", voice.visibility)
      assert.equal("Two samples & a cover", voice.description)
      assert.equal(1, #voice.samples) -- generate_sample = true reached the server as true
    end)

    it("sends the defaults visibility=private, type=tts, train_mode=fast, and nothing unset", function()
      assert(client.voices.create({ title = "Minimal", voices = { SAMPLE } }))
      assert.same({
        { name = "title", data = "Minimal" },
        { name = "visibility", data = "private" },
        { name = "type", data = "tts" },
        { name = "train_mode", data = "fast" },
        { name = "voices", filename = "upload", content_type = "application/octet-stream", data = SAMPLE },
      }, parts_of(srv:last_request("/model")))
    end)

    it("writes true and false for booleans", function()
      assert(client.voices.create({
        title = "Bools", voices = { SAMPLE }, enhance_audio_quality = true, generate_sample = false,
      }))
      local parts = parts_of(srv:last_request("/model"))
      local values = {}
      for _, p in ipairs(parts) do values[p.name] = p.data end
      assert.equal("true", values.enhance_audio_quality)
      assert.equal("false", values.generate_sample)
    end)

    it("names file parts by basename, or upload for bytes, typed by extension", function()
      local cases = {
        { "a.mp3", "audio/mpeg" }, { "b.M4A", "audio/mp4" }, { "c.mp4", "audio/mp4" },
        { "d.ogg", "audio/ogg" }, { "e.opus", "audio/ogg" }, { "f.flac", "application/octet-stream" },
        { "noext", "application/octet-stream" }, { "g.wav", "audio/wav" },
      }
      local sources = {}
      for i, f in ipairs(cases) do
        local path = dir .. "/" .. f[1]
        write_file(path, ("sample %d \0\255"):format(i))
        sources[i] = fish.file(path)
      end
      assert(client.voices.create({ title = "Types", voices = sources, cover_image = fish.file(cover_jpg) }))
      local parts = parts_of(srv:last_request("/model"))
      local file_parts = {}
      for _, p in ipairs(parts) do
        if p.filename then file_parts[#file_parts + 1] = p end
      end
      assert.equal(#cases + 1, #file_parts)
      for i, f in ipairs(cases) do
        assert.equal("voices", file_parts[i].name)
        assert.equal(f[1], file_parts[i].filename)
        assert.equal(f[2], file_parts[i].content_type)
        assert.equal(("sample %d \0\255"):format(i), file_parts[i].data)
      end
      local cover = file_parts[#file_parts]
      assert.same({ name = "cover_image", filename = "photo.JPG", content_type = "image/jpeg", data = read_file(cover_jpg) }, cover)

      -- A cover given as bytes is an "upload" like any other bytes.
      assert(client.voices.create({ title = "Byte cover", voices = { SAMPLE }, cover_image = "cover bytes" }))
      parts = parts_of(srv:last_request("/model"))
      assert.same({ name = "cover_image", filename = "upload", content_type = "application/octet-stream", data = "cover bytes" },
        parts[#parts])
    end)

    it("accepts one sample and a transcript and tag given as plain strings", function()
      assert(client.voices.create({ title = "Single", voices = fish.file(REFERENCE_WAV), texts = "only text", tags = "solo" }))
      local parts = parts_of(srv:last_request("/model"))
      assert.same({ "title", "visibility", "type", "train_mode", "texts", "tags", "voices" }, names_of(parts))
      assert.equal("only text", parts[5].data)
      assert.equal("solo", parts[6].data)
      assert.equal(read_file(REFERENCE_WAV), parts[7].data)
    end)

    it("returns the server's voice record with id copied from _id", function()
      local voice = assert(client.voices.create({ title = "Record", voices = { SAMPLE }, tags = { "x" } }))
      assert.is_string(voice._id)
      assert.equal(32, #voice._id)
      assert.equal(voice._id, voice.id)
      assert.equal("Record", voice.title)
      assert.equal("tts", voice.type)
      assert.equal("private", voice.visibility)
      assert.equal("trained", voice.state) -- the server trains at once by default
      assert.same({ "x" }, voice.tags)
      assert.is_string(voice.created_at)
      assert.equal("local-tester", voice.author.nickname)
      -- and the server really stored it under that id
      assert.equal("Record", assert(client.voices.get(voice.id)).title)
    end)

    it("raises a clear error naming the field before any request", function()
      local cases = {
        { {}, "field 'title' is required" },
        { { voices = { SAMPLE } }, "field 'title' is required" },
        { { title = "", voices = { SAMPLE } }, "field 'title' must be a non%-empty string" },
        { { title = 7, voices = { SAMPLE } }, "field 'title' must be a non%-empty string" },
        { { title = "t" }, "field 'voices' needs at least one sample" },
        { { title = "t", voices = {} }, "field 'voices' needs at least one sample" },
        { { title = "t", voices = 42 }, "field 'voices' needs at least one sample" },
        { { title = "t", voices = { 42 } }, "field 'voices%[1%]' must be bytes" },
        { { title = "t", voices = { SAMPLE, "" } }, "field 'voices%[2%]' must be bytes" },
        { { title = "t", voices = { SAMPLE }, texts = { "a", "b" } }, "field 'texts' has 2 transcripts for 1 voices" },
        { { title = "t", voices = { SAMPLE }, texts = { 1 } }, "field 'texts%[1%]' must be a string" },
        { { title = "t", voices = { SAMPLE }, texts = 5 }, "field 'texts' must be a string or a list of strings" },
        { { title = "t", voices = { SAMPLE }, tags = true }, "field 'tags' must be a string or a list of strings" },
        { { title = "t", voices = { SAMPLE }, tags = { "a", {} } }, "field 'tags%[2%]' must be a string" },
        { { title = "t", voices = { SAMPLE }, visibility = "public" }, "field 'cover_image' is required for a public voice" },
        { { title = "t", voices = { SAMPLE }, visibility = "secret" }, "field 'visibility' must be public, unlist or private" },
        { { title = "t", voices = { SAMPLE }, description = 5 }, "field 'description' must be" },
        { { title = "t", voices = { SAMPLE }, enhance_audio_quality = "yes" }, "field 'enhance_audio_quality' must be a boolean" },
        { { title = "t", voices = { SAMPLE }, generate_sample = 1 }, "field 'generate_sample' must be a boolean" },
        { { title = "t", voices = { SAMPLE }, cover_image = true }, "field 'cover_image' must be bytes" },
        { { title = "t", voices = { SAMPLE }, train_mode = 1 }, "field 'train_mode' must be" },
        { { title = "t", voices = { SAMPLE }, type = false }, "field 'type' must be" },
        { { title = "t", voices = { SAMPLE }, titel = "x" }, "unknown field 'titel' %(did you mean 'title'%?%)" },
        { { title = "t", voice = { SAMPLE } }, "unknown field 'voice' %(did you mean 'voices'%?%)" },
        { { title = "t", voices = { SAMPLE }, reference_id = "x" }, "unknown field 'reference_id'" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.voices.create, case[1])
        assert.is_false(ok)
        assert.matches("fish%.voices%.create: " .. case[2], err)
      end
      local ok, err = pcall(client.voices.create, "My Voice")
      assert.is_false(ok)
      assert.matches("fish%.voices%.create: expected a table of options, got string", err)
      -- The error points at the caller's line, not at fish's own files.
      ok, err = pcall(function() client.voices.create({ voices = { SAMPLE } }) end)
      assert.is_false(ok)
      assert.matches("voices_spec%.lua:%d+: fish%.voices%.create", err)
      assert.equal(0, #srv:requests())
    end)

    it("returns the server's 422 for what only the server refuses", function()
      local empty = dir .. "/empty.wav"
      write_file(empty, "")
      local too_many = {}
      for i = 1, 21 do too_many[i] = SAMPLE end
      local cases = {
        { { title = "t", voices = { SAMPLE }, train_mode = "full" }, "train_mode" },
        { { title = "t", voices = { SAMPLE }, type = "svc" }, "type" },
        { { title = "   ", voices = { SAMPLE } }, "title" },
        { { title = "t", voices = too_many }, "voices" },
      }
      -- An empty sample never reaches the server: fish.file refuses it.
      assert.matches("is empty", select(2, pcall(fish.file, empty)))
      for _, case in ipairs(cases) do
        local voice, _, err = client.voices.create(case[1])
        assert.is_nil(voice)
        assert.is_true(fish.is_error(err))
        assert.equal("http", err.kind)
        assert.equal(422, err.status)
        assert.matches(case[2], err.message)
        assert.is_table(err.json)
      end
      assert.equal(#cases, #srv:requests_for("POST", "/model"))
      -- train_mode is passed through as given, not replaced by the default.
      local first = parts_of(srv:requests_for("POST", "/model")[1])
      assert.same({ name = "train_mode", data = "full" }, first[4])
      -- Nothing was created.
      assert.equal(0, assert(client.voices.list({ self = true })).total)
    end)
  end)

  describe("get, update and delete", function()
    it("gets a voice by id or by voice table", function()
      local seed = assert(client.voices.get("seed-voice-1"))
      assert.equal("seed-voice-1", seed.id)
      assert.equal("seed-voice-1", seed._id)
      assert.equal("Seed Voice", seed.title)
      assert.equal("trained", seed.state)
      local again = assert(client.voices.get(seed))
      assert.equal("Seed Voice", again.title)
      local gets = srv:requests_for("GET", "/model/seed-voice-1")
      assert.equal(2, #gets)
      assert.equal("Bearer " .. srv.api_key, gets[1].headers["authorization"])
    end)

    it("percent-encodes ids in paths", function()
      local id = "a b/c?d#e%f+g&é"
      local encoded = "/model/a%20b%2Fc%3Fd%23e%25f%2Bg%26%C3%A9"
      local calls = {
        { "GET", function() return client.voices.get(id) end },
        { "PATCH", function() return client.voices.update(id, { title = "x" }) end },
        { "DELETE", function() return client.voices.delete({ id = id }) end },
      }
      for _, call in ipairs(calls) do
        local result, _, err = call[2]()
        assert.is_nil(result)
        -- "Model not found": the server saw one path segment and decoded it to the id.
        assert.equal("not_found", err.kind)
        assert.equal("Model not found", err.message)
        local sent = srv:requests()
        sent = sent[#sent]
        assert.equal(call[1], sent.method)
        assert.equal(encoded, sent.path)
        assert.equal("", sent.query)
      end
      -- Dot segments would be removed by URL normalisation; they stay in the path.
      assert.equal("not_found", select(3, client.voices.get("..")).kind)
      assert.equal("/model/%2E%2E", srv:last_request().path)
      assert.equal("not_found", select(3, client.voices.delete(".")).kind)
      assert.equal("/model/%2E", srv:last_request().path)
      assert.equal("DELETE", srv:last_request().method)
    end)

    it("returns not_found for an unknown id, and permission for someone else's voice", function()
      for _, call in ipairs({
        function() return client.voices.get("no-such-voice") end,
        function() return client.voices.update("no-such-voice", { title = "x" }) end,
        function() return client.voices.delete("no-such-voice") end,
      }) do
        local result, _, err = call()
        assert.is_nil(result)
        assert.is_true(fish.is_error(err))
        assert.equal("not_found", err.kind)
        assert.equal(404, err.status)
        assert.matches("HTTP 404", tostring(err))
      end
      local ok, _, err = client.voices.update("seed-voice-1", { title = "mine now" })
      assert.is_nil(ok)
      assert.equal("permission", err.kind)
      assert.equal(403, err.status)
      ok, _, err = client.voices.delete("seed-voice-1")
      assert.is_nil(ok)
      assert.equal("permission", err.kind)
    end)

    it("updates with a form-urlencoded body", function()
      local voice = make_voice("Old title", { tags = { "old" } })
      local ok = client.voices.update(voice.id, { title = "New title", tags = { "a", "b" } })
      assert.is_true(ok)
      local sent = srv:last_request("/model/" .. voice.id)
      assert.equal("PATCH", sent.method)
      assert.equal("application/x-www-form-urlencoded", sent.headers["content-type"])
      assert.equal("title=New%20title&tags=a&tags=b", server.body(sent))
      local got = assert(client.voices.get(voice.id))
      assert.equal("New title", got.title)
      assert.same({ "a", "b" }, got.tags)
    end)

    it("percent-encodes every form field, and takes a voice table", function()
      local voice = make_voice("Before")
      assert.is_true(client.voices.update(voice, {
        title = "Ünï & co=1+1", description = "line\nbreak", visibility = "unlist", tags = "only",
      }))
      local sent = srv:last_request("/model/" .. voice.id)
      local body = server.body(sent)
      assert.same({ "%C3%9Cn%C3%AF%20%26%20co%3D1%2B1" }, raw_values(body, "title"))
      assert.same({ "line%0Abreak" }, raw_values(body, "description"))
      assert.same({ "unlist" }, raw_values(body, "visibility"))
      assert.same({ "only" }, raw_values(body, "tags"))
      assert.same({ title = true, description = true, visibility = true, tags = true }, raw_keys(body))
      local got = assert(client.voices.get(voice.id))
      assert.equal("Ünï & co=1+1", got.title)
      assert.equal("line\nbreak", got.description)
      assert.equal("unlist", got.visibility)
      assert.same({ "only" }, got.tags)
    end)

    it("updates with multipart when a cover image is given", function()
      local voice = make_voice("Cover me")
      assert.equal("", voice.cover_image)
      assert.is_true(client.voices.update(voice.id, {
        title = "With cover", tags = { "a", "b" }, visibility = "public", cover_image = fish.file(cover_png),
      }))
      local sent = srv:last_request("/model/" .. voice.id)
      assert.equal("PATCH", sent.method)
      assert.matches("^multipart/form%-data; boundary=", sent.headers["content-type"])
      assert.same({
        { name = "title", data = "With cover" },
        { name = "visibility", data = "public" },
        { name = "tags", data = "a" },
        { name = "tags", data = "b" },
        { name = "cover_image", filename = "cover.png", content_type = "image/png", data = read_file(cover_png) },
      }, parts_of(sent))
      local got = assert(client.voices.get(voice.id))
      assert.equal("With cover", got.title)
      assert.equal("public", got.visibility)
      assert.matches("^https://local%.fish/covers/" .. voice.id, got.cover_image)

      assert.is_true(client.voices.update(voice.id, { cover_image = "\137PNG bytes" }))
      assert.same({
        { name = "cover_image", filename = "upload", content_type = "application/octet-stream", data = "\137PNG bytes" },
      }, parts_of(srv:last_request("/model/" .. voice.id)))
    end)

    it("returns the server's 422 for an update it refuses", function()
      local voice = make_voice("Keep")
      local ok, _, err = client.voices.update(voice.id, { title = "" })
      assert.is_nil(ok)
      assert.equal("http", err.kind)
      assert.equal(422, err.status)
      assert.matches("title", err.message)
      assert.equal("Keep", assert(client.voices.get(voice.id)).title)
    end)

    it("deletes, after which get and delete are not_found", function()
      local voice = make_voice("Doomed")
      assert.is_true(client.voices.delete(voice))
      local sent = srv:last_request("/model/" .. voice.id)
      assert.equal("DELETE", sent.method)
      local got, _, err = client.voices.get(voice.id)
      assert.is_nil(got)
      assert.equal("not_found", err.kind)
      local ok, _, err2 = client.voices.delete(voice.id)
      assert.is_nil(ok)
      assert.equal("not_found", err2.kind)
    end)

    it("raises for bad arguments before any request", function()
      local cases = {
        { function() client.voices.get(nil) end, "fish%.voices%.get: argument 1 must be a voice id" },
        { function() client.voices.get(42) end, "fish%.voices%.get: argument 1 must be a voice id" },
        { function() client.voices.get("") end, "fish%.voices%.get: argument 1 must be a voice id" },
        { function() client.voices.get({ title = "no id" }) end, "fish%.voices%.get: argument 1 must be a voice id" },
        { function() client.voices.get("v", { retires = 1 }) end, "fish%.voices%.get: unknown field 'retires'" },
        { function() client.voices.update(nil, { title = "x" }) end, "fish%.voices%.update: argument 1" },
        { function() client.voices.update("v") end, "fish%.voices%.update: expected a table of options" },
        { function() client.voices.update("v", { titel = "x" }) end, "unknown field 'titel' %(did you mean 'title'%?%)" },
        { function() client.voices.update("v", { title = 5 }) end, "field 'title' must be" },
        { function() client.voices.update("v", { description = false }) end, "field 'description' must be" },
        { function() client.voices.update("v", { visibility = "everyone" }) end, "field 'visibility' must be public, unlist or private" },
        { function() client.voices.update("v", { tags = { 1 } }) end, "field 'tags%[1%]' must be a string" },
        { function() client.voices.update("v", { cover_image = 5 }) end, "field 'cover_image' must be bytes" },
        { function() client.voices.update("v", { voices = { SAMPLE } }) end, "unknown field 'voices'" },
        { function() client.voices.delete(nil) end, "fish%.voices%.delete: argument 1" },
        { function() client.voices.delete("v", { force = true }) end, "fish%.voices%.delete: unknown field 'force'" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.matches(case[2], err)
      end
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("list", function()
    it("sends only the caller's parameters", function()
      local page = assert(client.voices.list())
      local sent = srv:last_request("/model")
      assert.equal("GET", sent.method)
      assert.equal("", sent.query)
      assert.equal(1, page.total)
      assert.equal("seed-voice-1", page.items[1].id)
      assert(client.voices.list({}))
      assert.equal("", srv:last_request("/model").query)
    end)

    it("puts every filter in the query: repeated keys, true/false, percent-encoded", function()
      assert(client.voices.list({
        page_size = 5,
        page_number = 2,
        title = "My voice & co/1+é",
        tags = { "zeta one", "alpha" },
        self = true,
        author_id = "a/b c",
        language = { "zh-CN", "en" },
        title_language = { "fr", "de" },
        sort_by = "created_at",
      }))
      local query = srv:last_request("/model").query
      assert.same({ "5" }, raw_values(query, "page_size"))
      assert.same({ "2" }, raw_values(query, "page_number"))
      assert.same({ "My%20voice%20%26%20co%2F1%2B%C3%A9" }, raw_values(query, "title"))
      assert.same({ "zeta%20one", "alpha" }, raw_values(query, "tag"))
      assert.same({ "true" }, raw_values(query, "self"))
      assert.same({ "a%2Fb%20c" }, raw_values(query, "author_id"))
      assert.same({ "zh-CN", "en" }, raw_values(query, "language"))
      assert.same({ "fr", "de" }, raw_values(query, "title_language"))
      assert.same({ "created_at" }, raw_values(query, "sort_by"))
      assert.same({
        page_size = true, page_number = true, title = true, tag = true, self = true,
        author_id = true, language = true, title_language = true, sort_by = true,
      }, raw_keys(query))
    end)

    it("writes false as false, and takes single strings for list filters", function()
      assert(client.voices.list({ self = false, tag = "solo", language = "en", title_language = "en" }))
      local query = srv:last_request("/model").query
      assert.same({ "false" }, raw_values(query, "self"))
      assert.same({ "solo" }, raw_values(query, "tag"))
      assert.same({ "en" }, raw_values(query, "language"))
      assert.same({ "en" }, raw_values(query, "title_language"))
      assert(client.voices.list({ tags = "solo" }))
      assert.equal("tag=solo", srv:last_request("/model").query)
      assert(client.voices.list({ tag = { "x", "y" } }))
      assert.equal("tag=x&tag=y", srv:last_request("/model").query)
    end)

    it("returns { total, items } with ids, page by page", function()
      local made = {}
      for i = 1, 5 do made[i] = make_voice(("Paged %d"):format(i), { tags = { "paged", i % 2 == 0 and "even" or "odd" } }) end
      make_voice("Unrelated")
      local page1 = assert(client.voices.list({ tag = "paged", page_size = 2, page_number = 1 }))
      local page3 = assert(client.voices.list({ tag = "paged", page_size = 2, page_number = 3 }))
      local page2 = assert(client.voices.list({ tag = "paged", page_size = 2, page_number = 2 }))
      assert.equal(5, page1.total)
      assert.equal(5, page2.total)
      assert.equal(2, #page1.items)
      assert.equal(2, #page2.items)
      assert.equal(1, #page3.items)
      local seen = {}
      for _, page in ipairs({ page1, page2, page3 }) do
        for _, item in ipairs(page.items) do
          assert.is_string(item.id)
          assert.equal(item._id, item.id)
          assert.is_nil(seen[item.id])
          seen[item.id] = true
        end
      end
      for _, voice in ipairs(made) do assert.is_true(seen[voice.id]) end
      -- Filters reach the server: two tags must both match.
      local even = assert(client.voices.list({ tags = { "paged", "even" } }))
      assert.equal(2, even.total)
      local mine = assert(client.voices.list({ self = true }))
      assert.equal(6, mine.total)
      local titled = assert(client.voices.list({ title = "paged 3" }))
      assert.equal(1, titled.total)
      assert.equal(made[3].id, titled.items[1].id)
    end)

    it("returns the server's 422 for a page size it refuses", function()
      local page, _, err = client.voices.list({ page_size = 101 })
      assert.is_nil(page)
      assert.equal("http", err.kind)
      assert.equal(422, err.status)
      assert.matches("page_size", err.message)
      assert.equal("page_size=101", srv:last_request("/model").query)
    end)

    it("raises for bad filters before any request", function()
      local cases = {
        { { page_size = 0 }, "field 'page_size' must be a positive integer" },
        { { page_size = 1.5 }, "field 'page_size' must be a positive integer" },
        { { page_number = "2" }, "field 'page_number' must be a positive integer" },
        { { title = 5 }, "field 'title' must be" },
        { { tag = "a", tags = "b" }, "field 'tags' cannot be combined with 'tag'" },
        { { tags = { 1 } }, "field 'tags%[1%]' must be a string" },
        { { tag = 7 }, "field 'tag' must be a string or a list of strings" },
        { { self = "yes" }, "field 'self' must be a boolean" },
        { { author_id = 5 }, "field 'author_id' must be" },
        { { language = 5 }, "field 'language' must be a string or a list" },
        { { title_language = { true } }, "field 'title_language%[1%]' must be a string" },
        { { sort_by = "newest" }, "field 'sort_by' must be score, task_count or created_at" },
        { { sortby = "score" }, "unknown field 'sortby' %(did you mean 'sort_by'%?%)" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.voices.list, case[1])
        assert.is_false(ok)
        assert.matches("fish%.voices%.list: " .. case[2], err)
      end
      assert.has_error(function() client.voices.list("all") end)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("each", function()
    local function make_many(n, tag)
      local ids = {}
      for i = 1, n do ids[i] = make_voice(("%s %d"):format(tag, i), { tags = { tag } }).id end
      return ids
    end

    it("visits every voice exactly once over several pages", function()
      local ids = make_many(25, "bulk")
      make_many(3, "other")
      local seen, count = {}, 0
      for voice in client.voices.each({ tag = "bulk", page_size = 10 }) do
        count = count + 1
        assert.equal(voice._id, voice.id)
        assert.same({ "bulk" }, voice.tags)
        seen[voice.id] = (seen[voice.id] or 0) + 1
      end
      assert.equal(25, count)
      for _, id in ipairs(ids) do assert.equal(1, seen[id]) end
      local pages = srv:requests_for("GET", "/model")
      assert.equal(3, #pages)
      for n, page in ipairs(pages) do
        assert.same({ tostring(n) }, raw_values(page.query, "page_number"))
        assert.same({ "10" }, raw_values(page.query, "page_size"))
        assert.same({ "bulk" }, raw_values(page.query, "tag"))
      end
    end)

    it("stops when the total is reached, without asking for an empty page", function()
      make_many(10, "even")
      local count = 0
      for _ in client.voices.each({ self = true, page_size = 5 }) do count = count + 1 end
      assert.equal(10, count)
      assert.equal(2, #srv:requests_for("GET", "/model"))
    end)

    it("starts at page_number when given", function()
      local ids = make_many(15, "later")
      local seen = {}
      for voice in client.voices.each({ self = true, page_size = 5, page_number = 2, sort_by = "created_at" }) do
        seen[#seen + 1] = voice.id
      end
      assert.equal(10, #seen)
      -- created_at sorts newest first: pages 2 and 3 hold the 10 oldest.
      for i = 1, 10 do assert.equal(ids[11 - i], seen[i]) end
      local pages = srv:requests_for("GET", "/model")
      assert.equal(2, #pages)
      assert.same({ "2" }, raw_values(pages[1].query, "page_number"))
      assert.same({ "3" }, raw_values(pages[2].query, "page_number"))
    end)

    it("pages by 100 by default and yields nothing when nothing matches", function()
      make_many(12, "default")
      local count = 0
      for _ in client.voices.each({ self = true }) do count = count + 1 end
      assert.equal(12, count)
      local pages = srv:requests_for("GET", "/model")
      assert.equal(1, #pages)
      assert.same({ "100" }, raw_values(pages[1].query, "page_size"))
      for _ in client.voices.each({ tag = "no-such-tag" }) do error("nothing should match") end
      count = 0
      for _ in client.voices.each() do count = count + 1 end
      assert.equal(13, count) -- plus the seed voice
    end)

    it("names itself in its argument errors, and refuses a closed client when called", function()
      local ok, err = pcall(client.voices.each, { page_size = "x" })
      assert.is_false(ok)
      assert.matches("fish%.voices%.each: field 'page_size' must be a positive integer", err)
      local closed = fish.new({ api_key = srv.api_key, base_url = srv.url })
      closed.close()
      ok, err = pcall(closed.voices.each)
      assert.is_false(ok)
      assert.matches("fish%.voices%.each: .*closed", err)
    end)

    it("raises the error object when a page fails", function()
      make_many(8, "fragile")
      local next_voice = client.voices.each({ tag = "fragile", page_size = 5 })
      for _ = 1, 5 do assert.is_table(next_voice()) end
      srv:fault("/model", { status = 500 }, { method = "GET" })
      local ok, err = pcall(next_voice)
      assert.is_false(ok)
      assert.is_true(fish.is_error(err))
      assert.equal("server", err.kind)
      assert.equal(500, err.status)
      assert.equal(2, #srv:requests_for("GET", "/model"))

      -- A first page that is not JSON raises too.
      srv:fault("/model", { bad_json = true }, { method = "GET" })
      ok, err = pcall(function()
        for _ in client.voices.each({ tag = "fragile" }) do end
      end)
      assert.is_false(ok)
      assert.equal("invalid_response", err.kind)
    end)

    it("checks its filters before any request", function()
      local ok, err = pcall(client.voices.each, { page_size = 0 })
      assert.is_false(ok)
      assert.matches("field 'page_size' must be a positive integer", err)
      ok, err = pcall(client.voices.each, { tga = "x" })
      assert.is_false(ok)
      assert.matches("unknown field 'tga'", err)
      ok, err = pcall(client.voices.each, "x")
      assert.is_false(ok)
      assert.matches("fish%.voices%.each: expected a table", err)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("wait_trained", function()
    it("polls until trained, reporting each state once, in order", function()
      srv:config({ train_delay = 0.6 * SCALE })
      local voice = make_voice("Training")
      assert.equal("created", voice.state)
      local states, voices_seen = {}, {}
      local started = core.now()
      local trained, _, err = client.voices.wait_trained(voice, {
        interval = 0.05,
        timeout = 10,
        on_state = function(state, v)
          states[#states + 1] = state
          voices_seen[#voices_seen + 1] = v
        end,
      })
      local elapsed = core.now() - started
      assert.is_nil(err)
      assert.equal("trained", trained.state)
      assert.equal(voice.id, trained.id)
      assert.equal(voice._id, trained._id)
      assert.same({ "created", "training", "trained" }, states)
      for i, v in ipairs(voices_seen) do assert.equal(states[i], v.state) end
      assert.is_true(elapsed >= 0.5 * SCALE, ("trained after %.3fs"):format(elapsed))
      timing.check(elapsed < 3, ("trained after %.3fs"):format(elapsed))
      -- It polled GET /model/{id} at about the interval, not once and not in a busy loop.
      local gets = #srv:requests_for("GET", "/model/" .. voice.id)
      timing.check(gets >= 5 and gets <= 30, gets .. " polls")
    end)

    it("polls by id as well", function()
      srv:config({ train_delay = 0.4 * SCALE })
      local voice = make_voice("By id")
      local states = {}
      local trained = assert(client.voices.wait_trained(voice.id, {
        interval = 0.05, on_state = function(state) states[#states + 1] = state end,
      }))
      assert.equal("trained", trained.state)
      assert.equal(voice.id, trained.id)
      assert.same({ "created", "training", "trained" }, states)
    end)

    it("waits without a limit for timeout = 0, as every time limit takes 0", function()
      srv:config({ train_delay = 0.3 * SCALE })
      local voice = make_voice("No limit")
      local trained = assert(client.voices.wait_trained(voice.id, { timeout = 0, interval = 0.05 }))
      assert.equal("trained", trained.state)
    end)

    it("returns an already trained voice table at once, without a request", function()
      local voice = make_voice("Ready") -- train_delay 0: trained on creation
      assert.equal("trained", voice.state)
      local before = #srv:requests()
      local states = {}
      local trained = assert(client.voices.wait_trained(voice, { on_state = function(s) states[#states + 1] = s end }))
      assert.equal(voice, trained)
      assert.same({ "trained" }, states)
      assert.equal(before, #srv:requests())
    end)

    it("makes exactly one GET for the id of a trained voice", function()
      local voice = make_voice("Ready by id")
      local before = #srv:requests()
      local trained = assert(client.voices.wait_trained(voice.id))
      assert.equal("trained", trained.state)
      assert.equal(voice.id, trained.id)
      local after = srv:requests()
      assert.equal(before + 1, #after)
      assert.equal("GET", after[#after].method)
      assert.equal("/model/" .. voice.id, after[#after].path)
    end)

    it("returns a failed error for a voice that fails training", function()
      srv:config({ train_delay = 0.4 * SCALE })
      local voice = make_voice("Doomed")
      srv:fail_voice(voice.id)
      local states = {}
      local trained, msg, err = client.voices.wait_trained(voice, {
        interval = 0.05, timeout = 10, on_state = function(s) states[#states + 1] = s end,
      })
      assert.is_nil(trained)
      assert.is_true(fish.is_error(err))
      assert.equal("failed", err.kind)
      assert.matches(voice.id, err.message, 1, true)
      assert.equal("failed", err.voice.state)
      assert.equal(tostring(err), msg)
      assert.matches("^fish%.voices%.wait_trained: failed: voice ", msg)
      assert.same({ "created", "training", "failed" }, states)
    end)

    it("times out naming the last state seen", function()
      srv:config({ train_delay = 60 })
      local voice = make_voice("Slow")
      local started = core.now()
      local trained, _, err = client.voices.wait_trained(voice.id, { timeout = 0.3, interval = 0.1 })
      local elapsed = core.now() - started
      assert.is_nil(trained)
      assert.equal("timeout", err.kind)
      assert.equal("created", err.state)
      assert.matches("last state: created", err.message)
      assert.matches("last state: created", tostring(err))
      assert.is_true(elapsed >= 0.25, ("gave up after %.3fs"):format(elapsed))
      timing.check(elapsed < 2, ("gave up after %.3fs"):format(elapsed))
      local gets = #srv:requests_for("GET", "/model/" .. voice.id)
      timing.check(gets >= 3 and gets <= 6, gets .. " polls")

      -- A voice stuck in training: the server answers "training" every time.
      local stuck = make_voice("Stuck")
      srv:fault("/model/" .. stuck.id, { status = 200, body = { _id = stuck.id, state = "training" } },
        { method = "GET", times = 100 })
      trained, _, err = client.voices.wait_trained(stuck, { timeout = 0.3, interval = 0.05 })
      assert.is_nil(trained)
      assert.equal("timeout", err.kind)
      assert.equal("training", err.state)
      assert.matches("last state: training", err.message)
    end)

    it("polls every 5 s by default", function()
      srv:config({ train_delay = 60 })
      local voice = make_voice("Default interval")
      local trained, _, err = client.voices.wait_trained(voice.id, { timeout = 0.4 * SCALE })
      assert.is_nil(trained)
      assert.equal("timeout", err.kind)
      -- One poll at the start, then one when the 0.4 s (less than 5 s) ran out.
      assert.equal(2, #srv:requests_for("GET", "/model/" .. voice.id))
    end)

    it("returns the error of a failing poll", function()
      local trained, _, err = client.voices.wait_trained("no-such-voice", { interval = 0.05, timeout = 1 })
      assert.is_nil(trained)
      assert.equal("not_found", err.kind)
      assert.equal(1, #srv:requests_for("GET", "/model/no-such-voice"))
    end)

    it("raises for bad arguments before any request", function()
      local cases = {
        { { "v", { interval = 0 } }, "field 'interval' must be a positive number" },
        { { "v", { interval = "1" } }, "field 'interval' must be a positive number" },
        { { "v", { timeout = -1 } }, "field 'timeout' must be a non%-negative number" },
        { { "v", { on_state = "print" } }, "field 'on_state' must be a function" },
        { { "v", { intervall = 1 } }, "unknown field 'intervall' %(did you mean 'interval'%?%)" },
        { { "v", "fast" }, "expected a table of options" },
        { { nil }, "argument 1 must be a voice id" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(client.voices.wait_trained, case[1][1], case[1][2])
        assert.is_false(ok)
        assert.matches("fish%.voices%.wait_trained: " .. case[2], err)
      end
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("with fish.convert", function()
    it("speaks in a voice the server trained, and not before", function()
      srv:config({ train_delay = 0.3 * SCALE })
      local voice = make_voice("Speaker")
      local audio, _, err = client.convert({ text = "Too early", reference_id = voice.id, format = "pcm" })
      assert.is_nil(audio)
      assert.equal(400, err.status)
      assert.matches("not ready", err.message)
      voice = assert(client.voices.wait_trained(voice, { interval = 0.05, timeout = 10 }))
      audio = assert(client.convert({ text = "My voice is ready to use.", reference_id = voice.id, format = "wav" }))
      assert.equal("RIFF", audio:sub(1, 4))
      assert.equal(voice.id, srv:last_request("/v1/tts").msgpack.reference_id)
    end)

    it("is refused for an unknown or deleted voice", function()
      local audio, _, err = client.convert({ text = "Hi", reference_id = "no-such-voice" })
      assert.is_nil(audio)
      assert.is_true(fish.is_error(err))
      assert.equal(400, err.status)
      assert.matches("Reference not found", err.message)
      local voice = make_voice("Gone")
      assert.is_true(client.voices.delete(voice.id))
      audio, _, err = client.convert({ text = "Hi", reference_id = voice.id })
      assert.is_nil(audio)
      assert.matches("Reference not found", err.message)
    end)
  end)

  describe("invalid answers", function()
    local BAD = '{"_id": "x", "state": '

    local function check(result, msg, err)
      assert.equal(tostring(err), msg)
      assert.is_nil(result)
      assert.is_true(fish.is_error(err))
      assert.equal("invalid_response", err.kind)
      assert.equal(200, err.status)
      assert.equal(BAD, err.body)
    end

    it("turns a 200 with invalid JSON into invalid_response for every /model call", function()
      local voice = make_voice("Target")
      local path = "/model/" .. voice.id
      srv:fault("/model", { bad_json = true }, { method = "POST" })
      check(client.voices.create({ title = "t", voices = { SAMPLE } }))
      srv:fault("/model", { bad_json = true }, { method = "GET" })
      check(client.voices.list())
      srv:fault(path, { bad_json = true }, { method = "GET" })
      check(client.voices.get(voice.id))
      srv:fault(path, { bad_json = true }, { method = "PATCH" })
      check(client.voices.update(voice.id, { title = "x" }))
      srv:fault(path, { bad_json = true }, { method = "DELETE" })
      check(client.voices.delete(voice.id))
      srv:fault(path, { bad_json = true }, { method = "GET" })
      check(client.voices.wait_trained(voice.id, { interval = 0.05 }))
      -- Each call reached the server once; none was retried or skipped.
      assert.equal(2, #srv:requests_for("POST", "/model"))
      assert.equal(1, #srv:requests_for("GET", "/model"))
      assert.equal(2, #srv:requests_for("GET", path))
    end)

    it("turns a 200 whose JSON is not an object into invalid_response, except where the answer is unused", function()
      local voice = make_voice("Target")
      local path = "/model/" .. voice.id
      for _, bare in ipairs({ "false", "3", '"ok"', "null" }) do
        local answer = { status = 200, body = bare, content_type = "application/json" }
        local function refused(result, message, err)
          assert.is_nil(result, bare)
          assert.is_string(message, bare)
          assert.equal("invalid_response", err.kind, bare)
          assert.equal(bare, err.body)
        end
        srv:fault("/model", answer, { method = "POST" })
        refused(client.voices.create({ title = "t", voices = { SAMPLE } }))
        srv:fault("/model", answer, { method = "GET" })
        refused(client.voices.list())
        srv:fault(path, answer, { method = "GET" })
        refused(client.voices.get(voice.id))
        -- update and delete read nothing of their answer: a 200 is done.
        srv:fault(path, answer, { method = "PATCH" })
        assert.is_true(client.voices.update(voice.id, { title = "x" }))
        srv:fault(path, answer, { method = "DELETE" })
        assert.is_true(client.voices.delete(voice.id))
      end
    end)

    it("refuses a list answer without items", function()
      srv:fault("/model", { status = 200, body = { total = 3 } }, { method = "GET" })
      local page, _, err = client.voices.list()
      assert.is_nil(page)
      assert.equal("invalid_response", err.kind)
    end)
  end)

  it("supports client.voices:call as well as client.voices.call", function()
    local voice = assert(client.voices:create({ title = "Colon", voices = { SAMPLE } }))
    assert.equal("Colon", assert(client.voices:get(voice.id)).title)
    assert.is_true(client.voices:delete(voice))
  end)

  it("refuses every call on a closed client", function()
    local c = fish.new({ api_key = srv.api_key, base_url = srv.url })
    c.close()
    for name, call in pairs({
      create = function() return c.voices.create({ title = "t", voices = { SAMPLE } }) end,
      get = function() return c.voices.get("seed-voice-1") end,
      update = function() return c.voices.update("seed-voice-1", { title = "t" }) end,
      delete = function() return c.voices.delete("seed-voice-1") end,
      list = function() return c.voices.list() end,
      wait_trained = function() return c.voices.wait_trained("seed-voice-1") end,
    }) do
      local ok, err = pcall(call)
      assert.is_false(ok, name)
      assert.matches("fish%.voices%." .. name .. ": this client is closed", err)
    end
    assert.equal(0, #srv:requests())
  end)

  it("works at module level with FISH_API_KEY and FISH_BASE_URL", function()
    srv:config({ train_delay = 0.6 * SCALE })
    local script = os.tmpname()
    write_file(script, [[
      local fish = require("fish")
      local voice = assert(fish.voices.create{ title = "From env", voices = { "sample" }, tags = { "env" } })
      local states = {}
      voice = assert(fish.voices.wait_trained(voice, {
        interval = 0.05, timeout = 10, on_state = function(s) states[#states + 1] = s end,
      }))
      assert(fish.voices.update(voice.id, { title = "Renamed" }))
      assert(fish.voices:get(voice).title == "Renamed")
      local page = assert(fish.voices.list{ tag = "env" })
      local n = 0
      for v in fish.voices.each{ tag = "env" } do n = n + 1 end
      assert(fish.voices.delete(voice))
      io.write(table.concat(states, ","), " ", page.total, " ", n, " ", page.items[1].id == voice.id and "same" or "other")
    ]])
    local lua = require("support.abi").interpreter
    local cmd = ("FISH_API_KEY=%s FISH_BASE_URL=%s %s %s 2>&1"):format(
      server.shell_quote(srv.api_key), server.shell_quote(srv.url), lua, script)
    local pipe = io.popen(cmd)
    local out = pipe:read("*a")
    pipe:close()
    os.remove(script)
    assert.equal("created,training,trained 1 1 same", out)
    local deletes = 0
    for _, r in ipairs(srv:requests()) do
      assert.equal("Bearer " .. srv.api_key, r.headers["authorization"])
      if r.method == "DELETE" then deletes = deletes + 1 end
    end
    assert.equal(1, deletes)
  end)
end)
