--- What every subcommand of the chronicle command shares: opening the store
-- for reading or writing, failing with a one-line error, and where output goes.
-- @module chronicle.cli.context
local chronicle = require "chronicle"
local terminal = require "chronicle.cli.terminal"

local M = {}

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.message end

--- Stops the subcommand: main prints "chronicle CMD: message" and exits with `status` (default 1).
function M.fail(message, status)
  error(setmetatable({ message = message, status = status or 1 }, Failure), 0)
end

--- True when `v` was raised by `fail`.
function M.is_failure(v)
  return getmetatable(v) == Failure
end

--- Text of a store error value (or anything else).
function M.describe(err)
  if type(err) == "table" and err.message then return err.message end
  return tostring(err)
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- Opens the store in `dir`.
-- @tparam string dir
-- @tparam string mode "read" (read-only; the store must exist), "write" (the store must
--   exist) or "create" (created when missing)
-- @tparam[opt] table opts more options of chronicle.open (`key_file`); without `key_file`,
--   the environment's CHRONICLE_KEY_FILE names the key file of personal data, when set
function M.open(dir, mode, opts)
  opts = opts or {}
  local key_file = opts.key_file or os.getenv("CHRONICLE_KEY_FILE")
  if key_file == "" then key_file = nil end
  if mode == "write" then
    if dir:find("^%a[%w+.-]*://") then          -- a URL (PostgreSQL): the store must exist too
      local probe, perr = chronicle.open(dir, { readonly = true })
      if not probe then M.fail(perr.code == "not_found" and "no store at " .. dir or M.describe(perr)) end
      probe:close()
    elseif not exists(dir .. "/data.mdb") then
      M.fail("no store at " .. dir)
    end
  end
  local store, err = chronicle.open(dir, { readonly = mode == "read" or nil, key_file = key_file })
  if not store then M.fail(M.describe(err)) end
  return store
end

--- Output settings for a subcommand: colour on a terminal, JSON when asked.
function M.output(args)
  return {
    json = args and args.json or false,
    colour = not (args and args.json) and terminal.colour(io.stdout),
    tty = terminal.isatty(io.stdout),
  }
end

--- Seconds now (wall clock, fractional).
function M.now()
  return chronicle.now() / 1e9
end

--- A `--follow` loop's waits: returns a function that waits on `store` for
-- the log to pass `position`, a second at a time, and returns what
-- store:wait does (the new head, or false when nothing came), or nil once
-- `timeout` seconds (nil: never) have gone by.
function M.follower(store, timeout)
  local deadline = timeout and M.now() + timeout or nil
  return function(position)
    local wait_for = 1.0
    if deadline then
      local left = deadline - M.now()
      if left <= 0 then return nil end
      wait_for = math.min(wait_for, left)
    end
    return store:wait(position, wait_for)
  end
end

return M
