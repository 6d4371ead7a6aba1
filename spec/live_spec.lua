-- The real Fish Audio API. Runs only when FISH_API_KEY is set and the
-- service answers; otherwise it says so with a visible pending line.
-- It uses the free engine (s2.1-pro-free) and one short sentence.
local fish = require("fish")

local key = os.getenv("FISH_API_KEY")
local base_url = os.getenv("FISH_LIVE_BASE_URL") or "https://api.fish.audio"

local function reachable()
  if not key or key == "" then return false, "FISH_API_KEY is not set" end
  local client = fish.new({ api_key = key, base_url = base_url, retries = 0, connect_timeout = 5, first_byte_timeout = 15 })
  local credit, _, err = client.account.credits()
  client.close()
  if not credit and (err.kind == "network" or err.kind == "timeout") then
    return false, base_url .. " did not answer (" .. tostring(err) .. ")"
  end
  return true
end

local ok, why = reachable()
if not ok then
  pending("live API test skipped: " .. why)
  return
end

describe("the live Fish Audio API", function()
  local client = fish.new({ api_key = key, base_url = base_url, model = "s2.1-pro-free" })

  it("speaks a short sentence as MP3", function()
    local audio, _, err = client.convert({ text = "Hello from the fish Lua SDK.", format = "mp3" })
    assert.is_nil(err)
    assert.is_true(#audio > 1000)
  end)

  it("speaks through a live session (/v1/tts/live), PCM in whole samples", function()
    local bytes, odd = 0, false
    local s = client.live({ format = "pcm", sample_rate = 24000, auto_flush = true,
      on_audio = function(audio) bytes = bytes + #audio; odd = odd or #audio % 2 == 1 end })
    s.send("Hello from the fish Lua SDK, ")
    s.send("spoken live.")
    local finished, message = s.finish()
    assert.is_true(finished, message)
    assert.is_false(odd)
    assert.is_true(bytes > 1000)
  end)

  it("lists the account's own voices", function()
    local page = assert(client.voices.list({ self = true, page_size = 5 }))
    assert.is_number(page.total)
  end)
end)
