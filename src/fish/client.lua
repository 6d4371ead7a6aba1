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

-- Time limits, in seconds, by option name and by the name of the limit in
-- error objects (err.timeout). One list drives the checks of fish.new and of
-- every call, so both say the same. 0 means "no limit" for each of them,
-- libcurl's own convention.
local LIMITS = {
  { "connect_timeout", "connect", 10 },
  { "first_byte_timeout", "first_byte", 120 }, -- generating a long text takes a while
  { "idle_timeout", "idle", 60 }, -- a steady stream is never cut: this only catches stalls
  { "timeout", "total", 0 }, -- no limit on the whole call unless asked
}
local DEFAULT_RETRIES = 2

local OPTIONS = {
  "api_key", "base_url", "model", "timeout", "connect_timeout", "first_byte_timeout",
  "idle_timeout", "user_agent", "retries", "pause", "ca_file", "insecure", "headers", "proxy",
  "max_json_bytes",
}
-- JSON answers (voices, ASR, account) are small; a body past this is not
-- one the API sends, and reading on would only fill memory.
local DEFAULT_MAX_JSON_BYTES = 16 * 1024 * 1024
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

-- The base URL, normalised (scheme and host in lower case, no trailing
-- slash), with its scheme and host. API paths are appended to it, so a
-- query or fragment would end up in the wrong place, and a space or a
-- control character would make a URL libcurl reads differently.
local function parse_base_url(url)
  local function refuse(why) util.raise("fish.new: option 'base_url' " .. why .. ", got " .. ("%q"):format(url)) end
  if url:find("[%s%c]") then refuse("must not contain spaces or control characters") end
  local scheme, authority, path = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  scheme = scheme and scheme:lower()
  if (scheme ~= "http" and scheme ~= "https") or authority == "" then
    refuse("must start with http:// or https:// and a host")
  end
  if path:find("[?#]") then refuse("must not contain a query ('?') or a fragment ('#')") end
  -- Credentials in the URL would travel with every request, and
  -- "http://127.0.0.1:1@example.com" would pass for loopback while going
  -- to example.com: refuse userinfo outright.
  if authority:find("@", 1, true) then refuse("must not contain user information ('@')") end
  authority = authority:lower()
  local host = authority:match("^%[(.-)%]") or authority:match("^[^:]*")
  return scheme .. "://" .. authority .. path:gsub("/+$", ""), scheme, host
end

-- Does NO_PROXY name this host? Entries are host names (a leading dot, or
-- none, also covers subdomains), optionally with a port, or "*".
local function no_proxy_matches(list, host)
  for entry in (list or ""):gmatch("[^,%s]+") do
    entry = entry:lower():gsub(":%d+$", ""):gsub("^%.", "")
    if entry == "*" or host == entry or host:sub(-(#entry + 1)) == "." .. entry then return true end
  end
  return false
end

-- The proxy of a client's requests, decided here once and always handed to
-- libcurl explicitly ("" = none), so libcurl never picks one from the
-- environment by itself:
--   * loopback is never proxied;
--   * plain http is never proxied: the proxy would read the key in clear. An
--     explicit `proxy` for a plain-http base URL is refused;
--   * https uses `proxy`, else https_proxy / HTTPS_PROXY / all_proxy /
--     ALL_PROXY unless no_proxy / NO_PROXY names the host. libcurl reaches an
--     https server through a CONNECT tunnel, so the proxy sees only TLS.
-- proxy = false turns proxies off whatever the environment says.
local function choose_proxy(option, scheme, host)
  if option ~= nil and option ~= false then
    if type(option) ~= "string" or option == "" then
      util.raise("fish.new: option 'proxy' must be a proxy URL string, or false for none")
    end
    util.check_header_value("fish.new", "option 'proxy'", option)
  end
  if option == false or is_loopback(host) then return "" end
  if scheme == "http" then
    if option then
      util.raise("fish.new: option 'proxy' needs an https base_url: over plain http the proxy would read the API key")
    end
    return ""
  end
  if option then return option end
  if no_proxy_matches(os.getenv("no_proxy") or os.getenv("NO_PROXY"), host) then return "" end
  return os.getenv("https_proxy") or os.getenv("HTTPS_PROXY") or os.getenv("all_proxy") or os.getenv("ALL_PROXY") or ""
end

local function check_limit(fn, name, v)
  local seconds = util.check_seconds(fn, ("option '%s'"):format(name), v)
  if seconds == 0 then return false end
  return seconds
end

-- Far more than any caller needs (each retry waits up to 60 s), and small
-- enough that counting attempts can never overflow an integer.
local MAX_RETRIES = 100

local function check_retries(fn, v)
  if not util.is_integer(v) or v < 0 or v > MAX_RETRIES then
    util.raise(("%s: option 'retries' must be a whole number from 0 to %d, got %s")
      :format(fn, MAX_RETRIES, tostring(v)))
  end
  return v
end

-- ---- the private state behind a client ----------------------------------------

local State = {}
State.__index = State

-- Anything with request:state() and request:cancel() that close() must
-- end: requests, and fish.live sessions.
function State:_track(request)
  self.requests[request] = true
end

function State:check_open(fn)
  if self.closed then util.raise(fn .. ": this client is closed") end
end

-- This call's retries, cancel token and time limits ({ connect =,
-- first_byte =, idle =, total = }, nil where there is none): the client's,
-- overridden by the call's options.
function State:call_settings(args, fn)
  -- Most calls override none of these: the client's own settings, made
  -- once (nothing downstream writes to the limits table).
  if args.retries == nil and args.cancel == nil and args.timeout == nil and args.connect_timeout == nil
    and args.first_byte_timeout == nil and args.idle_timeout == nil then
    return self.retries, nil, self.call_limits
  end
  local retries = self.retries
  if args.retries ~= nil then retries = check_retries(fn, args.retries) end
  if args.cancel ~= nil and not loop.is_token(args.cancel) then
    util.raise(fn .. ": option 'cancel' must be a fish.cancel_token()")
  end
  local limits = {}
  for _, limit in ipairs(LIMITS) do
    local name, key = limit[1], limit[2]
    local v = self.limits[key]
    if args[name] ~= nil then v = check_limit(fn, name, args[name]) end
    limits[key] = v or nil
  end
  return retries, args.cancel, limits
end

-- The header lines of one call: fish's own, then the client's extra
-- headers, then the call's (a call's header replaces the client's of the
-- same name), then the endpoint's (Content-Type, model).
local function build_headers(self, api_key, call_headers, endpoint_lines)
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

-- `constant`: endpoint_lines is a list that never changes (convert's, made
-- once per client). A call with the client's own key and no headers of its
-- own then gets the same list as the last such call: built once, shared by
-- the requests, which only read it.
function State:headers(api_key, call_headers, endpoint_lines, constant)
  if call_headers == nil and api_key == self.api_key and (constant or endpoint_lines == nil) then
    local key = endpoint_lines or false
    local headers = self.header_cache[key]
    if not headers then
      headers = build_headers(self, api_key, nil, endpoint_lines)
      self.header_cache[key] = headers
    end
    return headers
  end
  return build_headers(self, api_key, call_headers, endpoint_lines)
end

-- Send one API call. spec: method, path, query, headers, body | mime, out,
-- on_chunk, expect_body, plus the per-call args: retries, time limits,
-- cancel, on_progress, and the extra headers, query parameters and api_key
-- of this call.
function State:send(spec, args, fn)
  args = args or {}
  local retries, token, limits = self:call_settings(args, fn)
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
  if query == "" then
    spec.url = self.base_url .. spec.path
  else
    spec.url = self.base_url .. spec.path .. "?" .. query
  end
  -- libcurl refuses URLs over 8,000,000 bytes with a bare "malformed": say
  -- which call and how long, before anything is sent.
  if #spec.url > 8000000 then
    util.raise(("%s: the request URL would be %d bytes, over libcurl's limit of 8,000,000: shorten the "
      .. "parameters (a filter such as 'title', or 'query')"):format(fn, #spec.url))
  end
  spec.headers = self:headers(api_key, call_headers, spec.headers, spec.constant_headers)
  -- Every key this call knows of is redacted from what it reports.
  spec.secrets = api_key == self.api_key and self.secrets or { api_key, self.api_key }
  spec.retries = retries
  spec.limits = limits
  spec.cancel = token
  spec.proxy = self.proxy
  -- Only the calls that list it (convert, voices.create, asr.transcribe)
  -- let it through their field checks, and they check it is a function.
  spec.on_progress = args.on_progress
  return http.send(self, spec)
end

-- A call whose 2xx answer is JSON: returns the decoded object (a table),
-- or nil, err. With spec.unused_answer (update, delete, whose answers are
-- undocumented and unread) an empty body or any JSON value is true. The
-- answer is capped (max_json_bytes): an endless body must not grow without
-- bound.
function State:send_json(spec, args, fn)
  spec.max_bytes = self.max_json_bytes
  local response, err = self:send(spec, args, fn)
  if not response then return nil, err end
  if response.body == "" and spec.unused_answer then return true end
  local decoded = json.decode(response.body)
  -- (json.decode gives nil for a bare null as for text that is not JSON.)
  if spec.unused_answer and (decoded ~= nil or response.body:match("^%s*null%s*$")) then return true end
  -- A bare false, number or string is no answer to read fields from, and
  -- `false` would pass for a failure that has no error.
  if type(decoded) ~= "table" then
    return nil, errors.redact(errors.new({
      kind = "invalid_response",
      status = response.status,
      message = decoded == nil and "the server's answer is not valid JSON"
        or "the server's answer is JSON but not an object",
      body = response.body,
      attempts = response.attempts,
    }), spec.secrets)
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

local TTS_CONTENT_TYPE = "Content-Type: application/msgpack"

local function convert(state, args)
  state:check_open("fish.convert")
  local fields = tts.check(args)
  -- The client's model (checked by fish.new) has its lines made once.
  local headers, constant = state.tts_lines, true
  local model = args.model
  if model ~= nil then
    headers, constant = { TTS_CONTENT_TYPE }, false
    if model then
      headers[2] = "model: " .. util.check_header_value("fish.convert", "field 'model'", model)
    end
  end
  -- The body is a msgpack writer: reference files stream from disk, and
  -- every attempt sends its bytes. Close it as soon as the call is over, so
  -- a large inline reference is not held until the next collection.
  local body = tts.encode(args, nil, fields)
  local response, err = state:send({
    method = "POST",
    path = "/v1/tts",
    headers = headers,
    constant_headers = constant,
    body = body,
    out = args.out,
    on_chunk = args.on_chunk,
    max_bytes = args.max_bytes,
    expect_body = true,
  }, args, "fish.convert")
  body:close()
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
local function bind(public, owner, state, fn, name)
  -- Every bound function refers to `public`, so a namespace or a call in
  -- flight keeps its client alive: `local v = fish.new{...}.voices` must not
  -- let the collector close the client under v.
  return function(first, ...)
    if first == owner or first == public then return public_result(name, fn(state, ...)) end
    return public_result(name, fn(state, first, ...))
  end
end

-- The calls other modules add to a client: each module's `calls` table
-- holds f(state, ...) by name, hung on client[namespace] (or on the client
-- itself when there is no namespace). A module loads on the first call
-- into it, so a script that only converts never loads the voice, ASR,
-- account and live code: Lua's collector walks every loaded function each
-- cycle, and on 5.4 each 1 MB answer costs a whole cycle (make bench).
client.EXTENSIONS = {
  { module = "fish.voices", namespace = "voices",
    calls = { "create", "get", "update", "delete", "list", "each", "wait_trained" } },
  { module = "fish.asr", namespace = "asr", calls = { "transcribe" } },
  { module = "fish.account", namespace = "account", calls = { "credits", "package" } },
  { module = "fish.live", calls = { "live" } },
}

local function on_first_call(module, name)
  return function(...) return require(module).calls[name](...) end
end

local function install_extensions(public, state)
  for _, extension in ipairs(client.EXTENSIONS) do
    local owner, prefix = public, "fish."
    if extension.namespace then
      owner, prefix = {}, "fish." .. extension.namespace .. "."
      public[extension.namespace] = owner
    end
    for _, name in ipairs(extension.calls) do
      owner[name] = bind(public, owner, state, on_first_call(extension.module, name), prefix .. name)
    end
  end
end

function client.new(opts)
  local fn = "fish.new"
  opts = opts or {}
  util.check_table(fn, opts)
  util.check_known(fn, opts, KNOWN_OPTIONS, OPTIONS)
  local api_key = opts.api_key
  if api_key == nil then api_key = os.getenv("FISH_API_KEY") end
  if api_key ~= nil and type(api_key) ~= "string" then
    util.raise(fn .. ": option 'api_key' must be a string, got " .. type(api_key))
  end
  if api_key == nil or api_key == "" then util.raise(fn .. ": no API key: pass api_key or set FISH_API_KEY") end
  util.check_header_value(fn, "option 'api_key'", api_key)

  local base_url = opts.base_url or os.getenv("FISH_BASE_URL") or client.DEFAULT_BASE_URL
  if type(base_url) ~= "string" then util.raise(fn .. ": option 'base_url' must be a string") end
  local scheme, host
  base_url, scheme, host = parse_base_url(base_url)
  if opts.insecure ~= nil and type(opts.insecure) ~= "boolean" then
    util.raise(fn .. ": option 'insecure' must be true or false, got " .. tostring(opts.insecure))
  end
  if scheme == "http" and not is_loopback(host) and not opts.insecure then
    util.raise(fn .. ": refusing to send the API key over plain http to " .. host ..
      " (use https, or pass insecure = true)")
  end

  local model = opts.model
  if model == nil then model = client.DEFAULT_MODEL end
  if model ~= false then
    if type(model) ~= "string" then
      util.raise(fn .. ": option 'model' must be a string, or false to send no model header")
    end
    util.check_header_value(fn, "option 'model'", model)
  end
  local limits = {}
  for _, limit in ipairs(LIMITS) do
    local v = opts[limit[1]]
    if v == nil then v = limit[3] end
    limits[limit[2]] = check_limit(fn, limit[1], v)
  end
  local call_limits = {} -- as call_settings gives them: nil for none
  for key, v in pairs(limits) do call_limits[key] = v or nil end
  local retries = DEFAULT_RETRIES
  if opts.retries ~= nil then retries = check_retries(fn, opts.retries) end
  if opts.pause ~= nil and type(opts.pause) ~= "function" then
    util.raise(fn .. ": option 'pause' must be a function(seconds)")
  end
  if opts.user_agent ~= nil then util.check_header_value(fn, "option 'user_agent'", opts.user_agent) end
  if opts.ca_file ~= nil then
    if type(opts.ca_file) ~= "string" or opts.ca_file == "" then
      util.raise(fn .. ": option 'ca_file' must be the path of a CA bundle (a string)")
    end
    util.check_header_value(fn, "option 'ca_file'", opts.ca_file)
  end
  local extra_headers = opts.headers ~= nil and util.header_lines(fn, opts.headers) or {}
  local max_json_bytes = DEFAULT_MAX_JSON_BYTES
  if opts.max_json_bytes ~= nil then
    max_json_bytes = util.check_byte_count(fn, "max_json_bytes", opts.max_json_bytes)
  end

  local state = setmetatable({
    api_key = api_key,
    base_url = base_url,
    model = model,
    user_agent = opts.user_agent or default_user_agent(),
    pause = opts.pause,
    ca_file = opts.ca_file,
    proxy = choose_proxy(opts.proxy, scheme, host),
    extra_headers = extra_headers,
    limits = limits,
    retries = retries,
    max_json_bytes = max_json_bytes,
    requests = setmetatable({}, { __mode = "k" }),
    closed = false,
    -- Made once, the same for every call that does not override them.
    call_limits = call_limits,
    secrets = { api_key, api_key },
    tts_lines = { TTS_CONTENT_TYPE, model and ("model: " .. model) or nil },
    header_cache = setmetatable({}, { __mode = "k" }),
  }, State)

  local public = setmetatable({ base_url = base_url }, Client)
  public.convert = bind(public, public, state, convert, "fish.convert")
  public.close = function() state:close() end
  public.closed = function() return state.closed end
  install_extensions(public, state)
  return public
end

Client.__close = function(self) self.close() end
Client.__gc = Client.__close

client.State = State
client.errors = errors
return client
