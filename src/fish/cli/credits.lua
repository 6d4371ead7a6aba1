-- fish-audio credits [--json]: the account's API credit.
local args = require("fish.cli.args")
local failure = require("fish.cli.failure")
local json = require("fish.json")
local session = require("fish.cli.session")

local credits = {}

credits.spec = {
  name = "credits",
  usage = "[--json] [options]",
  summary = "Show the account's API credit.",
  options = {
    { "json", help = "print the whole answer as JSON" },
    args.API_KEY_FILE,
    args.HELP,
  },
  max = 0,
}

function credits.run(parsed)
  local client = session.client(parsed.options)
  local answer, message = client.account.credits()
  if not answer then failure.api(message) end
  if parsed.options.json then
    io.stdout:write(json.encode(answer), "\n")
  else
    io.stdout:write(("credit: %s\n"):format(tostring(answer.credit)))
  end
  return 0
end

return credits
