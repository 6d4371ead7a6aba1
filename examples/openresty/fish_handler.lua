-- GET /say?text=...[&format=mp3|wav|opus][&voice=<reference id>] answers with
-- the speech. Used from nginx.conf as
--
--   location = /say { content_by_lua_block { require("fish_handler").say() } }
--
-- fish.openresty drives fish in this worker: one light thread moves every
-- transfer, and a request waiting for its conversion sleeps on a semaphore
-- that the driver posts when the answer is in. The worker goes on serving
-- every other request meanwhile (many conversions overlap in one worker),
-- and nothing polls per waiting request.
--
-- When the client goes away (ngx.on_abort; nginx.conf turns on
-- lua_check_client_abort), the conversion is canceled at once, so an
-- abandoned request is not billed to the end.
local fish = require("fish")

-- Once per worker, when the first request loads this module. At most 1024
-- connections from this worker to the API: past that, conversions wait in
-- line for a free connection instead of opening more.
require("fish.openresty").start({ max_connections = 1024 })

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

-- The client and a cancel token for this request, or nil after answering
-- 500. If the client goes away, the token cancels the Fish call, which
-- ends the transfer and wakes this handler with a "canceled" error.
local function client_for_request()
  local made, c = pcall(get_client)
  if not made then
    ngx.log(ngx.ERR, tostring(c))
    fail(ngx.HTTP_INTERNAL_SERVER_ERROR, "fish is not configured (see the error log)")
    return nil
  end
  local token = fish.cancel_token()
  local watching, why = ngx.on_abort(function() token:cancel() end)
  if not watching then ngx.log(ngx.WARN, "fish: cannot watch for the client going away: ", why) end
  return c, token
end

local function send_audio(audio, content_type)
  ngx.header.content_type = content_type
  ngx.header.content_length = #audio
  ngx.print(audio)
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

  local c, token = client_for_request()
  if not c then return end
  local audio, message, err = c.convert({ text = text, format = format, reference_id = voice, cancel = token })
  if token.canceled then
    ngx.log(ngx.INFO, "fish: the client went away, conversion canceled")
    return ngx.exit(499) -- nginx's "client closed request"
  end
  if not audio then
    -- message is a one-line string that never contains the API key; err
    -- holds the details (err.kind, err.status) for code that branches.
    ngx.log(ngx.ERR, message, " (", err.kind, ")")
    return fail(ngx.HTTP_BAD_GATEWAY, message)
  end
  send_audio(audio, CONTENT_TYPES[format])
end

-- GET /live?text=...[&pause=s]: the same speech through a live session
-- (fish.live), the text sent word by word as a handler that produces it bit
-- by bit would (here with an ngx.sleep between words), the audio collected
-- by on_audio and sent back as MP3 once the session is done. finish()
-- sleeps on the driver's semaphore like convert() does.
function M.live()
  local args = ngx.req.get_uri_args(10)
  local text = args.text
  if type(text) ~= "string" or text:match("^%s*$") then
    return fail(ngx.HTTP_BAD_REQUEST, "usage: /live?text=...[&pause=seconds between words, up to 1]")
  end
  local pause = tonumber(args.pause) or 0.02
  if pause ~= pause or pause < 0 or pause > 1 then return fail(ngx.HTTP_BAD_REQUEST, "pause: 0 to 1 s") end
  local c, token = client_for_request()
  if not c then return end
  local blocks = {}
  local session = c.live({
    format = "mp3", cancel = token,
    on_audio = function(bytes) blocks[#blocks + 1] = bytes end,
  })
  for word in text:gmatch("%S+%s*") do
    if not session.send(word) then break end -- ended early: finish() says why
    ngx.sleep(pause)
  end
  local ok, message, err = session.finish()
  if token.canceled then return ngx.exit(499) end
  if not ok then
    ngx.log(ngx.ERR, message, " (", err.kind, ")")
    return fail(ngx.HTTP_BAD_GATEWAY, message)
  end
  send_audio(table.concat(blocks), CONTENT_TYPES.mp3)
end

return M
