-- Account: API credit and the platform package (/wallet/self/...).
local util = require("fish.util")

local account = {}

local CREDIT_FIELDS = { "check_free_credit" }
local PACKAGE_FIELDS = {}

local function credits(state, opts)
  local fn = "fish.account.credits"
  state:check_open(fn)
  opts = opts or {}
  util.check_fields(fn, opts, CREDIT_FIELDS)
  if opts.check_free_credit ~= nil and type(opts.check_free_credit) ~= "boolean" then
    util.raise(fn .. ": field 'check_free_credit' must be a boolean")
  end
  local query = opts.check_free_credit ~= nil and ("check_free_credit=" .. tostring(opts.check_free_credit)) or nil
  return state:send_json({ method = "GET", path = "/wallet/self/api-credit", query = query }, opts, fn)
end

local function package(state, opts)
  local fn = "fish.account.package"
  state:check_open(fn)
  opts = opts or {}
  util.check_fields(fn, opts, PACKAGE_FIELDS)
  return state:send_json({ method = "GET", path = "/wallet/self/package" }, opts, fn)
end

-- The calls a client offers under client.account (client.lua, EXTENSIONS).
account.calls = { credits = credits, package = package }

return account
