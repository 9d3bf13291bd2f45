--- chronicle: an embedded event-sourcing engine for Lua 5.4.
-- The public module: opening stores, the expected-version constants and the
-- Store methods. The storage work happens in a backend (chronicle.backends).
-- @module chronicle
local common = require "chronicle.common"
local Store = require "chronicle.store"
local aggregate = require "chronicle.write.aggregate"
local options = require "chronicle.options"
local upcast = require "chronicle.write.upcast"

local M = {}

M._VERSION = "chronicle 0.1.0"

--- Expected-version constants for `append`.
M.ANY = "any"              -- no check
M.NO_STREAM = "no_stream"  -- the stream must not exist yet
M.EXISTS = "exists"        -- the stream must have at least one event

--- The on-disk format this build writes (of the LMDB backend, docs/FORMAT.md).
M.FORMAT = require("chronicle.core").FORMAT
M.MAX_STREAM_NAME = common.MAX_STREAM_NAME
M.MAX_TYPE_NAME = common.MAX_TYPE_NAME

--- Builds an error value like the ones the store returns: `{code=, message=, ...}`.
-- @tparam string code a stable code such as "conflict"
-- @tparam string message readable text
-- @tparam[opt] table fields more details copied into the error
M.error = common.error

--- True when `v` is an error value built by chronicle.
M.is_error = common.is_error

local backends = require "chronicle.backends"

--- Opens (creating when missing) the store at `target`: a directory (the LMDB
-- backend) or a `postgresql://user@host:port/db?schema=NAME` URL (the
-- PostgreSQL backend); chronicle.backends picks the backend.
-- @tparam string target the store's directory or URL
-- @tparam[opt] table opts `durability` ("full" | "nometasync" | "nosync"),
--   `readonly`, `map_size` (initial bytes, LMDB only), `max_event_size` (bytes),
--   `key_file` (the file of the key that wraps the subject keys of personal data; a missing,
--   malformed or other store's key file is `bad_key`)
-- @treturn[1] Store the store
-- @treturn[2] nil
-- @treturn[2] table error with `code` ("not_a_store", "unsupported_format", "locked", "unavailable", ...)
function M.open(target, opts)
  if type(target) ~= "string" or target == "" then
    error("bad argument #1 to 'open' (directory name or URL expected, got " .. type(target) .. ")", 2)
  end
  if target:find("\0", 1, true) then error("bad argument #1 to 'open' (path must not contain a NUL byte)", 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'open' (table of options expected, got " .. type(opts) .. ")", 2)
  end
  local backend = backends.for_target(target)
  if not backend then
    return nil, common.error("unsupported", "no storage backend opens '" .. target ..
                           "' (a directory, or a postgresql:// URL)", { target = target })
  end
  options.check("open", opts, backend.options, 2)
  local key_file = opts and opts.key_file
  local backend_opts = opts
  if key_file ~= nil then
    backend_opts = {}
    for k, v in pairs(opts) do if k ~= "key_file" then backend_opts[k] = v end end
  end
  local handle, err = backends.module(backend).open(target, backend_opts)
  if not handle then return nil, err end
  local store = Store.new(handle, target, opts or {})
  if key_file ~= nil then
    local ok, kerr = require("chronicle.personal").use_key_file(store, key_file)
    if not ok then store:close(); return nil, kerr end
  end
  return store
end

--- Defines an aggregate: `{ name, initial, apply, commands, snapshot_every,
-- schema_version, ignore_unknown_events, upcasters, retries, fields }`.
-- See chronicle.aggregate.
M.aggregate = aggregate.define

--- Registers an upcaster for every consumer in this process (repositories,
-- projections, handlers, reactors; the raw reads `read`, `read_all` and `fold`
-- return stored data unchanged): `fn(data, event)` turns `type_name` data of schema `version` into `version + 1`.
function M.upcast(type_name, version, fn)
  upcast.global:add(type_name, version, fn)
end

--- A new time-ordered UUID (version 7) string.
M.uuid = common.uuid

--- Nanoseconds since the Unix epoch: the clock of `event.time`.
M.now = common.now

--- A runner keeping `store`'s projections, handlers and reactors caught up:
-- `run_once()`, `run{until_idle=, max_seconds=}`, `report()`, `stop()`; `run_once` and
-- `run` return the report of what faulted as their second value (see chronicle.runner).
function M.runner(store, opts)
  return require("chronicle.read.runner").new(store, opts)
end

--- Loads every `*.lua` script in folder `dir`: aggregates, projections,
-- handlers and reactors (see chronicle.scripts). `opts.sandbox = true` runs
-- projections and reactors isolated.
function M.load_scripts(store, dir, opts)
  return require("chronicle.scripts").load(store, dir, opts)
end

M.Store = Store

return M
