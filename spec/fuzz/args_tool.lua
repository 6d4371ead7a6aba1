-- Helpers for the args fuzz target (spec/fuzz/args_fuzz.c), run with the
-- plain module (`make` first):
--   lua5.4 spec/fuzz/args_tool.lua show FILE...  each input as Lua, and what fish did with it
--   lua5.4 spec/fuzz/args_tool.lua seeds DIR     write the seed corpus (spec/fuzz/corpus/args)
local root = arg[0]:match("^(.-)/?spec/fuzz/args_tool%.lua$")
root = (root == nil or root == "") and "." or root
package.cpath = root .. "/build/5.4/?.so;" .. package.cpath

-- The fuzz binary sets these with setenv; here the default client reads
-- them through os.getenv.
local ENV = { FISH_API_KEY = "fuzz-key", FISH_BASE_URL = "https://fuzz.invalid" }
local getenv = os.getenv
os.getenv = function(name) return ENV[name] or getenv(name) end -- luacheck: ignore 122

local scratch = io.popen("mktemp -d /tmp/fish-args-tool-XXXXXX"):read("l")
local real = require("fish.core")
local _, tools = assert(loadfile(root .. "/spec/fuzz/args_fuzz.lua"))(
  root, real, scratch, io.stdout, nil, io.stderr)

local function read(path)
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("a")
  f:close()
  return bytes
end

local SEEDS = {
  text = { 1, { "table", { "str", "hello" }, { "set", "text" } } },
  full = { 2, {
    "table", { "str", "hello" }, { "set", "text" }, { "str", "mp3" }, { "set", "format" },
    { "int", 44100 }, { "set", "sample_rate" }, { "int", 128 }, { "set", "mp3_bitrate" },
    { "int", 300 }, { "set", "chunk_length" }, { "str", "balanced" }, { "set", "latency" },
    "true", { "set", "normalize" },
    "table", { "float", 1.5 }, { "set", "speed" }, { "float", 0.5 }, { "set", "volume" }, { "set", "prosody" },
    { "float", 0.7 }, { "set", "top_p" }, { "float", 0.7 }, { "set", "temperature" },
    { "str", "voice-id" }, { "set", "reference_id" }, { "str", "s2-pro" }, { "set", "model" },
  } },
  references = { 1, {
    "table", { "str", "hello" }, { "set", "text" },
    "table", "table", { "file", 1 }, { "set", "audio" }, { "str", "hello" }, { "set", "text" }, { "seti", 1 },
    "table", { "raw", "RIFF" }, { "set", "audio" }, { "str", "hello" }, { "set", "text" }, { "seti", 2 },
    { "set", "references" },
  } },
  speakers = { 2, {
    "table", { "str", "hello" }, { "set", "text" },
    "table", "table", "table", { "raw", "RIFF" }, { "set", "audio" }, { "str", "hello" }, { "set", "text" },
    { "seti", 1 }, { "seti", 1 }, { "set", "references" },
    "table", { "str", "voice-id" }, { "seti", 1 }, { "str", "voice-id" }, { "seti", 2 }, { "set", "reference_id" },
  } },
  extra = { 1, {
    "table", { "str", "hello" }, { "set", "text" },
    "table", { "small", 1 }, { "set", "foo" }, "table", { "str", "hello" }, { "seti", 1 }, { "set", "tags" },
    { "float", 0.5 }, { "set", "id" }, { "set", "extra" },
  } },
  stream = { 2, {
    "table", { "str", "hello" }, { "set", "text" }, { "fn", 1 }, { "set", "on_chunk" },
    { "small", 2 }, { "set", "retries" }, { "float", 1.5 }, { "set", "timeout" },
    "table", { "str", "00-abc-def-01" }, { "set", "traceparent" }, { "set", "headers" },
    "table", { "str", "hello" }, { "set", "foo" }, "table", { "str", "hello" }, { "seti", 1 },
    { "str", "wav" }, { "seti", 2 }, { "set", "tags" }, { "set", "query" },
  } },
  out = { 1, {
    "table", { "str", "hello" }, { "set", "text" }, { "str", scratch .. "/out.wav" }, { "set", "out" },
    { "token", false }, { "set", "cancel" }, { "str", "hello" }, { "set", "api_key" },
    "table", { "str", "hello" }, { "seti", 1 }, { "set", "features" }, { "small", 100 }, { "set", "max_bytes" },
  } },
  out_elsewhere = { 2, {
    "table", { "str", "hello" }, { "set", "text" }, { "str", "/dev/null" }, { "set", "out" },
  } },
  canceled = { 1, {
    "table", { "str", "hello" }, { "set", "text" }, { "token", true }, { "set", "cancel" },
  } },
  deadline = { 2, {
    "table", { "str", "hello" }, { "set", "text" }, { "float", 1e-300 }, { "set", "first_byte_timeout" },
    { "small", 0 }, { "set", "retries" },
  } },
  voice = { 3, {
    "table", { "str", "hello" }, { "set", "title" }, { "file", 1 }, { "set", "voices" },
  } },
  voice_full = { 4, {
    "table", { "str", "hello" }, { "set", "title" },
    "table", { "file", 1 }, { "seti", 1 }, { "raw", "RIFF" }, { "seti", 2 }, { "set", "voices" },
    "table", { "str", "hello" }, { "seti", 1 }, { "set", "texts" }, { "str", "hello" }, { "set", "tags" },
    { "str", "hello" }, { "set", "description" }, { "str", "public" }, { "set", "visibility" },
    { "file", 3 }, { "set", "cover_image" }, "true", { "set", "enhance_audio_quality" },
    { "str", "fast" }, { "set", "train_mode" }, { "str", "tts" }, { "set", "type" },
    "false", { "set", "generate_sample" },
  } },
  voice_options = { 3, {
    "table", { "str", "hello" }, { "set", "title" }, { "raw", "RIFF" }, { "set", "voices" },
    "table", { "str", "00-abc-def-01" }, { "set", "X-Trace" }, { "set", "headers" },
    "table", "true", { "set", "foo" }, { "set", "query" }, { "small", 1 }, { "set", "retries" },
  } },
}

local command = arg[1]
if command == "show" then
  for i = 2, #arg do
    local bytes = read(arg[i])
    local text = tools.show(bytes)
    local verdict, outcome = tools.check(bytes)
    print(("%s\n  %s\n  %s\n  -> %s"):format(arg[i], text, outcome, verdict or "allowed"))
  end
elseif command == "seeds" and arg[2] then
  local names = {}
  for name in pairs(SEEDS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local bytes = tools.assemble(SEEDS[name][1], SEEDS[name][2])
    -- The scratch path differs per run: the seed keeps the fuzz binary's
    -- own by picking the same dictionary entry, so only the bytes matter.
    local f = assert(io.open(arg[2] .. "/" .. name, "wb"))
    f:write(bytes)
    f:close()
    local verdict, outcome = tools.check(bytes)
    print(name, tools.show(bytes), outcome, verdict or "allowed")
  end
else
  io.stderr:write("usage: lua5.4 spec/fuzz/args_tool.lua show FILE... | seeds DIR\n")
  os.exit(2)
end
os.execute("rm -rf '" .. scratch .. "'")
