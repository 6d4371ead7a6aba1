-- fish.cancel_token(): pass it as `cancel = token` to any call; token:cancel()
-- (from a task, a frame loop, a timer) ends those calls with kind "canceled".
-- A token is a flag that ready() functions read (`token.canceled`), plus the
-- requests and sleeping tasks to end at once when it is set, so nothing has
-- to poll it.
local tokens = {}

-- Set by the scheduler: how to cancel a running request so its waiter is
-- woken, how to wake a task, how to interrupt a blocking poll.
tokens.hooks = {
  cancel_request = function(request) request:cancel() end,
  wake = function() end,
  wakeup = function() end,
}

local Token = {}
Token.__index = Token
tokens.Token = Token

function tokens.new()
  return setmetatable({
    canceled = false,
    requests = setmetatable({}, { __mode = "k" }),
    sleepers = setmetatable({}, { __mode = "k" }), -- task -> the wait it registered
  }, Token)
end

function tokens.is(value)
  return getmetatable(value) == Token
end

function Token:watch(request)
  self.requests[request] = true
end

-- Wake `task` when `token` is canceled, if it still waits with `wait` then.
-- (Not a method: a token's methods are its public API.)
function tokens.wake_on_cancel(token, task, wait)
  token.sleepers[task] = wait
end

function Token:cancel()
  if self.canceled then return false end
  self.canceled = true
  local hooks = tokens.hooks
  for request in pairs(self.requests) do
    if request:state() == "running" then hooks.cancel_request(request) end
  end
  for task, wait in pairs(self.sleepers) do hooks.wake(task, wait) end
  self.sleepers = setmetatable({}, { __mode = "k" })
  hooks.wakeup()
  return true
end

function Token:__tostring()
  return "fish.cancel_token (" .. (self.canceled and "canceled" or "active") .. ")"
end

return tokens
