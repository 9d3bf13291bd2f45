--- Aggregate definitions: `chronicle.aggregate { name, initial, apply, commands, ... }`.
-- A definition is plain data checked once, when it is made; repositories
-- (chronicle.repository) do the loading and the writing.
-- @module chronicle.write.aggregate
local upcast = require "chronicle.write.upcast"

local M = {}

local Aggregate = {}
Aggregate.__index = Aggregate
M.Aggregate = Aggregate

local fields = {
  kind = true, name = true, initial = true, apply = true, commands = true,
  snapshot_every = true, schema_version = true, ignore_unknown_events = true,
  upcasters = true, retries = true, description = true, fields = true,
}

local function fail(msg, level) error("aggregate: " .. msg, level or 3) end

--- The event fields `apply` uses when a definition names none (`fields`).
M.DEFAULT_FIELDS = { "type", "data" }

local event_fields = {
  position = true, stream = true, version = true, type = true, time = true, id = true,
  schema = true, meta = true, data = true,
}

-- The `fields` of a definition: a non-empty list of event field names.
local function check_fields(list)
  if list == nil then return M.DEFAULT_FIELDS end
  local n = 0
  if type(list) == "table" then for _ in pairs(list) do n = n + 1 end end
  if n == 0 or n ~= #list then fail("'fields' must be a non-empty list of event field names", 4) end
  local out = {}
  for i, name in ipairs(list) do
    if not event_fields[name] then
      fail(("fields[%d] must be one of position, stream, version, type, time, id, schema, meta, data"):format(i), 4)
    end
    out[i] = name
  end
  return out
end

local function check_handlers(def, field, required)
  local handlers = def[field]
  if handlers == nil then
    if required then fail(("'%s' is missing (a table of functions)"):format(field), 4) end
    return {}
  end
  if type(handlers) ~= "table" then fail(("'%s' must be a table of functions, got %s"):format(field, type(handlers)), 4) end
  for key, fn in pairs(handlers) do
    if type(key) ~= "string" then fail(("'%s' keys must be strings, got %s"):format(field, type(key)), 4) end
    if type(fn) ~= "function" then
      fail(("%s.%s must be a function, got %s"):format(field, key, type(fn)), 4)
    end
  end
  return handlers
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deep_copy(x) end
  return out
end
M.deep_copy = deep_copy

--- Checks and returns an aggregate definition.
-- @tparam table def `name` (the category: streams are `name .. "-" .. id`),
--   `initial` (a function returning a fresh state, or a table copied for each
--   instance), `apply` (`apply[Type](state, event)` evolves the state: mutate
--   it or return a new one), `commands` (`commands[name](state, args, ctx)`
--   returns an event, a list of events, nothing, or `nil, reason` to reject),
--   optional `snapshot_every`, `schema_version`, `ignore_unknown_events`,
--   `upcasters` (`{ Type = { [v] = fn } }`), `retries`, `description`,
--   `fields` (the event fields `apply` uses, a list as `store:fold` takes; the
--   repository's loads read only those, plus `type`, plus `stream`, `version`,
--   `position` and `schema` when upcasters are in force; default `{ "type", "data" }`).
function M.define(def)
  if type(def) ~= "table" then fail("definition must be a table, got " .. type(def)) end
  for key in pairs(def) do
    if not fields[key] then fail(("unknown field '%s'"):format(tostring(key))) end
  end
  if def.kind ~= nil and def.kind ~= "aggregate" then fail("kind must be \"aggregate\"") end
  local bad_name = require("chronicle.names").problem("aggregate", def.name)
  if bad_name then fail(bad_name) end
  local initial = def.initial
  if type(initial) == "table" then
    local template = initial
    initial = function() return deep_copy(template) end
  elseif type(initial) ~= "function" then
    fail("'initial' is missing (a function returning a fresh state)")
  end
  local apply = check_handlers(def, "apply", true)
  local commands = check_handlers(def, "commands", false)
  local every = def.snapshot_every
  if every ~= nil and (math.type(every) ~= "integer" or every < 1) then
    fail("'snapshot_every' must be an integer >= 1")
  end
  local schema = def.schema_version or 1
  if math.type(schema) ~= "integer" or schema < 1 then fail("'schema_version' must be an integer >= 1") end
  local retries = def.retries or 3
  if math.type(retries) ~= "integer" or retries < 0 then fail("'retries' must be an integer >= 0") end
  local read_fields = check_fields(def.fields)
  local own = upcast.registry()
  if def.upcasters ~= nil then
    if type(def.upcasters) ~= "table" then fail("'upcasters' must be a table { Type = { [version] = fn } }") end
    for type_name, steps in pairs(def.upcasters) do
      if type(steps) ~= "table" then fail(("upcasters.%s must be a table of functions"):format(tostring(type_name))) end
      for version, fn in pairs(steps) do
        if type(fn) ~= "function" or math.type(version) ~= "integer" then
          fail(("upcasters.%s[%s] must be a function at an integer version"):format(tostring(type_name), tostring(version)))
        end
        own:add(type_name, version, fn)
      end
    end
  end
  return setmetatable({
    name = def.name, initial = initial, apply = apply, commands = commands,
    snapshot_every = every, schema_version = schema, ignore_unknown_events = def.ignore_unknown_events == true,
    upcasters = own, retries = retries, description = def.description, fields = read_fields,
  }, Aggregate)
end

--- The stream that holds aggregate `id`.
function Aggregate:stream(id)
  return self.name .. "-" .. tostring(id)
end

function Aggregate:__tostring()
  return "aggregate " .. self.name
end

function M.is_aggregate(v)
  return getmetatable(v) == Aggregate
end

return M
