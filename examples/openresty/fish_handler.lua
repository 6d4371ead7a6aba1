-- GET /say?text=...[&format=mp3|wav|opus][&voice=<reference id>] answers with
-- the speech. Used from nginx.conf as
--
--   location = /say { content_by_lua_block { require("fish_handler").say() } }
--
-- The client is made with pause = ngx.sleep: while a conversion waits for the
-- API, fish moves its transfers on without waiting and then lets ngx.sleep
-- pause only this request, so the nginx worker goes on serving every other
-- request meanwhile (several conversions overlap in one worker).
local fish = require("fish")

local M = {}

local CONTENT_TYPES = { mp3 = "audio/mpeg", wav = "audio/wav", opus = "audio/ogg" }

local client -- one per worker, made on the first request

local function get_client()
  if not client or client.closed() then
    client = fish.new({
      -- nginx clears the environment: list `env FISH_API_KEY;` and
      -- `env FISH_BASE_URL;` in nginx.conf so that os.getenv sees them.
      api_key = os.getenv("FISH_API_KEY"),
      base_url = os.getenv("FISH_BASE_URL"),
      pause = ngx.sleep,
      timeout = 120, -- never hold a client connection forever
    })
  end
  return client
end

local function fail(status, message)
  ngx.status = status
  ngx.header.content_type = "text/plain"
  ngx.say(message)
  return ngx.exit(status)
end

function M.say()
  local args = ngx.req.get_uri_args(10)
  local text = args.text
  if type(text) ~= "string" or text:match("^%s*$") then
    return fail(ngx.HTTP_BAD_REQUEST, "usage: /say?text=...[&format=mp3|wav|opus][&voice=id]")
  end
  local format = args.format
  if format == nil then format = "mp3" end
  if not CONTENT_TYPES[format] then
    return fail(ngx.HTTP_BAD_REQUEST, "format must be mp3, wav or opus")
  end
  local voice = type(args.voice) == "string" and args.voice ~= "" and args.voice or nil

  local made, c = pcall(get_client)
  if not made then
    ngx.log(ngx.ERR, tostring(c))
    return fail(ngx.HTTP_INTERNAL_SERVER_ERROR, "fish is not configured (see the error log)")
  end
  local audio, message, err = c.convert({ text = text, format = format, reference_id = voice })
  if not audio then
    -- message is a one-line string that never contains the API key; err
    -- holds the details (err.kind, err.status) for code that branches.
    ngx.log(ngx.ERR, message, " (", err.kind, ")")
    return fail(ngx.HTTP_BAD_GATEWAY, message)
  end
  ngx.header.content_type = CONTENT_TYPES[format]
  ngx.header.content_length = #audio
  ngx.print(audio)
end

return M
