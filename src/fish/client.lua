-- Clients: configuration (key, base URL, model, timeouts, retries, how to
-- wait) plus the public calls bound to it. The public client table holds
-- only functions; the key lives in a private state table that is never
-- printed, so it cannot leak through tostring or a table dump.
local core = require("fish.core")
local errors = require("fish.errors")
local http = require("fish.http")
local json = require("fish.json")
local loop = require("fish.loop")
local tts = require("fish.tts")
local util = require("fish.util")

local client = {}

client.VERSION = "0.1.0"
client.DEFAULT_BASE_URL = "https://api.fish.audio"
client.DEFAULT_MODEL = "s2-pro"

local DEFAULTS = {
  connect_timeout = 10,
  first_byte_timeout = 120, -- generation of a long text can take a while
  idle_timeout = 60, -- a steady stream is never cut: this only catches stalls
  timeout = nil, -- no total limit unless asked
  retries = 2,
}

local OPTIONS = {
  "api_key", "base_url", "model", "timeout", "connect_timeout", "first_byte_timeout",
  "idle_timeout", "user_agent", "retries", "pause", "ca_file", "insecure", "headers",
}
local KNOWN_OPTIONS = {}
for _, name in ipairs(OPTIONS) do KNOWN_OPTIONS[name] = true end

local function lua_description()
  if type(jit) == "table" and jit.version then return jit.version end
  return _VERSION
end

local function default_user_agent()
  return ("fish-lua/%s (%s; libcurl/%s)"):format(client.VERSION, lua_description(), core.curl_version())
end

local function is_loopback(host)
  return host == "localhost" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil or host == "::1"
end

local function check_base_url(url, has_key, insecure)
  local scheme, authority = url:match("^(https?)://([^/?#]*)")
  if not scheme or authority == "" then
    util.raise("fish.new: option 'base_url' must start with http:// or https:// and a host, got " .. url)
  end
  -- Credentials in the URL would travel with every request, and
  -- "http://127.0.0.1:1@example.com" would pass for loopback while going
  -- to example.com: refuse userinfo outright.
  if authority:find("@", 1, true) then
    util.raise("fish.new: option 'base_url' must not contain user information ('@')")
  end
  local host = authority:match("^%[(.-)%]") or authority:match("^[^:]*")
  if scheme == "http" and has_key and not is_loopback(host) and not insecure then
    util.raise("fish.new: refusing to send the API key over plain http to " .. host ..
      " (use https, or pass insecure = true)")
  end
  return (url:gsub("/+$", ""))
end

local function check_number(name, v)
  if v ~= nil and (type(v) ~= "number" or v < 0) then
    util.raise(("fish.new: option '%s' must be a non-negative number"):format(name))
  end
end

-- ---- the private state behind a client ----------------------------------------

local State = {}
State.__index = State

function State:_track(request)
  self.requests[request] = true
end

function State:check_open(fn)
  if self.closed then util.raise(fn .. ": this client is closed") end
end

-- Per-call overrides of retries and timeouts, over the client's settings.
function State:call_settings(args)
  local function pick(name)
    local v = args[name]
    if v == nil then return self[name] end
    if type(v) ~= "number" or v < 0 then
      util.raise(("fish: option '%s' must be a non-negative number"):format(name))
    end
    return v
  end
  local retries = pick("retries")
  if not util.is_integer(retries) then util.raise("fish: option 'retries' must be a whole number") end
  if args.cancel ~= nil and not loop.is_token(args.cancel) then
    util.raise("fish: option 'cancel' must be a fish.cancel_token()")
  end
  return retries, args.cancel, {
    connect = pick("connect_timeout"),
    first_byte = pick("first_byte_timeout"),
    idle = pick("idle_timeout"),
    total = pick("timeout"),
  }
end

-- The header lines of one call: fish's own, then the client's extra
-- headers, then the call's (a call's header replaces the client's of the
-- same name), then the endpoint's (Content-Type, model).
function State:headers(api_key, call_headers, endpoint_lines)
  local headers = {
    "Authorization: Bearer " .. api_key,
    "User-Agent: " .. self.user_agent,
    "Accept: */*",
    "Expect:", -- no 100-continue round trip before uploads
  }
  local extra = {}
  for name, line in pairs(self.extra_headers) do extra[name] = line end
  for name, line in pairs(call_headers or {}) do extra[name] = line end
  local names = {}
  for name in pairs(extra) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do headers[#headers + 1] = extra[name] end
  for _, line in ipairs(endpoint_lines or {}) do headers[#headers + 1] = line end
  return headers
end

-- Send one API call. spec: method, path, query, headers, body | mime, out,
-- on_chunk, expect_body, plus the per-call args: retries, time limits,
-- cancel, and the extra headers, query parameters and api_key of this call.
function State:send(spec, args, fn)
  args = args or {}
  local retries, token, limits = self:call_settings(args)
  local api_key = self.api_key
  if args.api_key ~= nil then
    api_key = util.check_header_value(fn, "option 'api_key'", args.api_key)
    if api_key == "" then util.raise(fn .. ": option 'api_key' must not be empty") end
  end
  local call_headers = args.headers ~= nil and util.header_lines(fn, args.headers) or nil
  local query = spec.query or ""
  if args.query ~= nil then
    local extra = util.form_encode(util.query_pairs(fn, args.query))
    if extra ~= "" then query = query ~= "" and (query .. "&" .. extra) or extra end
  end
  spec.url = self.base_url .. spec.path .. (query ~= "" and ("?" .. query) or "")
  spec.headers = self:headers(api_key, call_headers, spec.headers)
  -- Every key this call knows of is redacted from what it reports.
  spec.secrets = { api_key, self.api_key }
  spec.retries = retries
  spec.limits = limits
  spec.cancel = token
  return http.send(self, spec)
end

-- A call whose 2xx answer is JSON: returns the decoded value, or nil, err.
function State:send_json(spec, args, fn)
  local response, err = self:send(spec, args, fn)
  if not response then return nil, err end
  if response.body == "" and spec.allow_empty then return true end
  local decoded = json.decode(response.body)
  if decoded == nil then
    return nil, errors.new({
      kind = "invalid_response",
      status = response.status,
      message = "the server's answer is not valid JSON",
      body = response.body,
      attempts = response.attempts,
    })
  end
  return decoded
end

function State:close()
  if self.closed then return end
  self.closed = true
  for request in pairs(self.requests) do
    if request:state() == "running" then request:cancel() end
  end
end

-- ---- convert ------------------------------------------------------------------------

local function convert(state, args)
  state:check_open("fish.convert")
  tts.check(args)
  local headers = { "Content-Type: application/msgpack" }
  local model = args.model
  if model == nil then model = state.model end
  if model then
    headers[#headers + 1] = "model: " .. util.check_header_value("fish.convert", "field 'model'", model)
  end
  local response, err = state:send({
    method = "POST",
    path = "/v1/tts",
    headers = headers,
    body = tts.encode(args),
    out = args.out,
    on_chunk = args.on_chunk,
    expect_body = true,
  }, args, "fish.convert")
  if not response then return nil, err end
  if args.out then return args.out, response.bytes end
  if args.on_chunk then return response.bytes end
  return response.body
end

-- ---- construction -----------------------------------------------------------------

local Client = {}
Client.__index = Client
Client.__name = "fish.client"

function Client:__tostring()
  return "fish.client (" .. self.base_url .. ")"
end

-- Inside fish a failure travels as `nil, err`; at the public edge it
-- becomes `nil, message, err` (errors.fail), named after the public call.
local function public_result(name, first, ...)
  if first == nil and errors.is((...)) then return errors.fail((...), name) end
  return first, ...
end

-- Bind a function to the state so that both client.f(args) and
-- client:f(args) (owner = the table it hangs on) work; the dot form is the
-- documented one. `name` is the public name, for error messages.
local function bind(owner, state, fn, name)
  return function(first, ...)
    if first == owner then return public_result(name, fn(state, ...)) end
    return public_result(name, fn(state, first, ...))
  end
end

-- Modules that add calls to a client: each has install(public, state, bind).
local EXTENSIONS = { "fish.voices", "fish.asr", "fish.account" }

function client.new(opts)
  opts = opts or {}
  util.check_table("fish.new", opts)
  util.check_known("fish.new", opts, KNOWN_OPTIONS, OPTIONS)
  local api_key = opts.api_key
  if api_key == nil then api_key = os.getenv("FISH_API_KEY") end
  if type(api_key) ~= "string" or api_key == "" then
    util.raise("fish.new: no API key: pass api_key or set FISH_API_KEY")
  end
  local base_url = opts.base_url or os.getenv("FISH_BASE_URL") or client.DEFAULT_BASE_URL
  if type(base_url) ~= "string" then util.raise("fish.new: option 'base_url' must be a string") end
  base_url = check_base_url(base_url, true, opts.insecure)
  local model = opts.model
  if model == nil then model = client.DEFAULT_MODEL end
  if model ~= false and type(model) ~= "string" then
    util.raise("fish.new: option 'model' must be a string, or false to send no model header")
  end
  for _, name in ipairs({ "timeout", "connect_timeout", "first_byte_timeout", "idle_timeout", "retries" }) do
    check_number(name, opts[name])
  end
  if opts.retries ~= nil and not util.is_integer(opts.retries) then
    util.raise("fish.new: option 'retries' must be a whole number")
  end
  if opts.pause ~= nil and type(opts.pause) ~= "function" then
    util.raise("fish.new: option 'pause' must be a function(seconds)")
  end
  util.check_header_value("fish.new", "option 'api_key'", api_key)
  if model then util.check_header_value("fish.new", "option 'model'", model) end
  if opts.user_agent ~= nil then util.check_header_value("fish.new", "option 'user_agent'", opts.user_agent) end
  local extra_headers = opts.headers ~= nil and util.header_lines("fish.new", opts.headers) or {}

  local state = setmetatable({
    api_key = api_key,
    base_url = base_url,
    model = model,
    user_agent = opts.user_agent or default_user_agent(),
    pause = opts.pause,
    ca_file = opts.ca_file,
    extra_headers = extra_headers,
    requests = setmetatable({}, { __mode = "k" }),
    closed = false,
  }, State)
  for name, value in pairs(DEFAULTS) do
    if opts[name] ~= nil then state[name] = opts[name] else state[name] = value end
  end

  local public = setmetatable({ base_url = base_url }, Client)
  public.convert = bind(public, state, convert, "fish.convert")
  public.close = function() state:close() end
  public.closed = function() return state.closed end
  for _, name in ipairs(EXTENSIONS) do require(name).install(public, state, bind) end
  return public
end

Client.__close = function(self) self.close() end
Client.__gc = Client.__close

client.State = State
client.errors = errors
return client
