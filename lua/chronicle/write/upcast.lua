--- Upcasting: old event shapes become the current one on read, v1 -> v2 -> ...,
-- without rewriting the log. An event records the schema version it was
-- written with (`ev.schema`); an upcaster registered for (type, v) turns the
-- data of version v into version v + 1.
-- @module chronicle.write.upcast
local M = {}

local Registry = {}
Registry.__index = Registry

--- A new, empty set of upcasters.
function M.registry()
  return setmetatable({ by_type = {}, generation = 0 }, Registry)
end

local function check_registration(type_name, version, fn, level)
  if type(type_name) ~= "string" or type_name == "" then
    error("upcast: event type must be a non-empty string", level)
  end
  if math.type(version) ~= "integer" or version < 1 then
    error("upcast: version must be an integer >= 1 (the schema version the upcaster reads)", level)
  end
  if type(fn) ~= "function" then
    error("upcast: upcaster for " .. type_name .. " v" .. version .. " must be a function", level)
  end
end

--- Registers `fn(data, event) -> new data` turning `type_name` v`version` into v`version + 1`.
function Registry:add(type_name, version, fn)
  check_registration(type_name, version, fn, 3)
  local chain = self.by_type[type_name]
  if not chain then
    chain = { current = 1, steps = {} }
    self.by_type[type_name] = chain
  end
  if chain.steps[version] then
    error("upcast: " .. type_name .. " v" .. version .. " already has an upcaster", 2)
  end
  chain.steps[version] = fn
  if version + 1 > chain.current then chain.current = version + 1 end
  self.generation = self.generation + 1
  return self
end

--- The schema version new events of `type_name` are written with.
function Registry:current(type_name)
  local chain = self.by_type[type_name]
  return chain and chain.current or 1
end

--- A registry holding `self`'s upcasters with `other`'s on top (aggregate-level over global).
function Registry:overlay(other)
  local merged = M.registry()
  for _, source in ipairs({ self, other }) do
    for type_name, chain in pairs(source.by_type) do
      local target = merged.by_type[type_name] or { current = 1, steps = {} }
      merged.by_type[type_name] = target
      for version, fn in pairs(chain.steps) do
        target.steps[version] = fn
        if version + 1 > target.current then target.current = version + 1 end
      end
    end
  end
  return merged
end

--- Brings `ev` (a read event table) to the current shape of its type, in place.
function Registry:apply(ev)
  local chain = self.by_type[ev.type]
  if not chain then return ev end
  local version = ev.schema or 1
  while version < chain.current do
    local step = chain.steps[version]
    if not step then
      error(string.format("no upcaster for %s v%d (event %s@%d, position %d)",
        ev.type, version, ev.stream, ev.version, ev.position), 0)
    end
    local new_data = step(ev.data, ev)
    if new_data ~= nil then ev.data = new_data end
    version = version + 1
  end
  ev.schema = version
  return ev
end

--- True when no upcaster is registered (so readers can skip the work).
function Registry:is_empty()
  return next(self.by_type) == nil
end

M.Registry = Registry

--- The process-wide registry used by `chronicle.upcast`.
M.global = M.registry()

--- Brings `ev` to the current shape with the process-wide upcasters, in place:
-- what projections, handlers and reactors see (repositories add an
-- aggregate's own upcasters on top). The raw reads (`store:read`, `read_all`,
-- `fold`) return the stored data unchanged.
function M.current(ev)
  local global = M.global
  if next(global.by_type) == nil then return ev end
  return global:apply(ev)
end

return M
