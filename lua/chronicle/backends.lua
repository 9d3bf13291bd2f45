--- The backend registry: which storage engine opens a target.
-- `chronicle.open(target, opts)` asks each registered backend in turn whether
-- it takes the target; the first that does opens it. A directory goes to the
-- LMDB core (`chronicle.core`); a `postgresql://` or `postgres://` URL to the
-- PostgreSQL module (`chronicle.postgres`). Every backend returns a handle with
-- the methods of docs/BACKEND.md, which `Store` wraps; nothing above `Store`
-- knows which backend it has.
-- @module chronicle.backends
local options = require "chronicle.options"

local M = {}

local list = {}

--- Registers a backend.
-- @tparam table backend `{name=, matches=fn(target) -> bool, module=, options={name=type}}`:
--   `module` is the C module whose `open(target, opts)` returns a handle or `nil, err`.
function M.register(backend)
  if type(backend) ~= "table" or type(backend.name) ~= "string" or type(backend.matches) ~= "function"
     or type(backend.module) ~= "string" then
    error("backends.register: {name=, matches=, module=} expected", 2)
  end
  for i, b in ipairs(list) do
    if b.name == backend.name then list[i] = backend; return backend end
  end
  table.insert(list, 1, backend)          -- newer registrations are asked first
  return backend
end

--- The backend that takes `target`, or nil.
function M.for_target(target)
  for _, b in ipairs(list) do
    if b.matches(target) then return b end
  end
  return nil
end

--- The registered backends' names, in the order they are asked.
function M.names()
  local out = {}
  for i, b in ipairs(list) do out[i] = b.name end
  return out
end

--- Loads the backend's C module (raising a clear error when it is not built).
function M.module(backend)
  local ok, mod = pcall(require, backend.module)
  if not ok then
    error("the " .. backend.name .. " backend needs the module " .. backend.module ..
          " which did not load: " .. tostring(mod), 3)
  end
  return mod
end

-- The LMDB core: any target that is not a URL of another backend (a directory).
M.register {
  name = "lmdb",
  module = "chronicle.core",
  matches = function(target) return not target:find("^%a[%w+.-]*://") end,
  options = {
    durability = options.one_of("full", "nometasync", "nosync"), readonly = "boolean",
    map_size = "integer", max_event_size = "integer", key_file = "string",
  },
}

-- PostgreSQL: a libpq URL; `?schema=NAME` picks the store inside the database.
M.register {
  name = "postgres",
  module = "chronicle.postgres",
  matches = function(target) return target:find("^postgres://") or target:find("^postgresql://") end,
  -- durability maps to synchronous_commit; map_size is LMDB's and ignored here.
  options = {
    durability = options.one_of("full", "nometasync", "nosync"), readonly = "boolean",
    map_size = "integer", max_event_size = "integer", key_file = "string",
  },
}

return M
