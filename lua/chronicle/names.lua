--- The one rule for the names of projections, handlers, reactors and
-- aggregates: a letter, then letters, digits, `_`, `.` or `-`, 1 to 48 bytes.
-- No `:` or `#`, so a name can never reach the keys of another kind
-- (`reactor:<name>`, `p:<name>#<generation>`, `v:<name>#<generation>`), and
-- 48 bytes keep a projection's view space (`v:<name>#<generation>`) within
-- the store's 64-byte limit on space names. An aggregate's name is also the
-- category of its streams (the stream name up to the first `-`), so it
-- cannot contain `-` either.
-- @module chronicle.names
local M = {}

--- The longest name, in bytes.
M.MAX = 48

--- The rule, as text for error messages.
M.RULE = "a letter, then letters, digits, '_', '.' or '-', 1 to 48 bytes"

--- Why `name` is not a valid name of `kind`, or nil when it is.
function M.problem(kind, name)
  if type(name) ~= "string" then return "'name' must be a string (" .. M.RULE .. "), got " .. type(name) end
  if #name < 1 or #name > M.MAX or not name:match("^[%a][%w_.-]*$") then
    return ("'name' must be %s, got %q"):format(M.RULE, #name > 60 and name:sub(1, 60) .. "..." or name)
  end
  if kind == "aggregate" and name:find("-", 1, true) then
    return ("'name' must not contain '-' (an aggregate's name is the category of its streams), got %q"):format(name)
  end
  return nil
end

--- The kind already registered under `name` on `store` other than `kind`, or nil.
function M.taken_by(store, kind, name)
  local reg = store:registrations()
  local kinds = { projection = reg.projections, handler = reg.handlers, reactor = reg.reactors,
                  aggregate = reg.aggregates }
  for other, list in pairs(kinds) do
    if other ~= kind and list[name] ~= nil then return other end
  end
  return nil
end

--- Raises (at `level`) when `name` is already used on `store` by another kind.
function M.claim(store, kind, name, level)
  local other = M.taken_by(store, kind, name)
  if other then
    error(("%s: the name '%s' is already used by a %s (names are unique across projections, handlers, "
      .. "reactors and aggregates)"):format(kind, name, other), (level or 1) + 1)
  end
end

return M
