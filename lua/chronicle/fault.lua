--- What projections and reactors share about their faults: the text of an
-- error as it is stored, which failures belong to the store rather than to
-- the subscriber's output, and which output of a refused write was refused.
-- @module chronicle.fault
local M = {}

--- The most bytes of an error message kept in a fault or dead-letter row.
M.MAX_MESSAGE = 2000

-- The folder of chronicle's own modules, as Lua names it in error positions.
local own_dir = (debug.getinfo(1, "S").source or ""):match("^@(.*/)fault%.lua$")

--- `text` without a leading position in one of chronicle's own modules
-- (`.../chronicle/store.lua:54: `, `.../chronicle/read/view.lua:9: `): it says nothing about the user's code.
function M.strip_location(text)
  if own_dir and text:sub(1, #own_dir) == own_dir then
    local rest = text:sub(#own_dir + 1):match("^[%w_/]+%.lua:%d+: (.*)$")
    if rest then return rest end
  end
  return text
end

--- An error value as the text stored in a fault: chronicle's own file and
-- line are dropped, and the text is cut at MAX_MESSAGE bytes.
function M.message(err)
  local text
  if type(err) == "table" then
    local ok, s = pcall(tostring, err)
    text = (ok and type(s) == "string") and s or tostring(err.message)
  else
    text = tostring(err)
  end
  text = M.strip_location(text)
  if #text > M.MAX_MESSAGE then text = text:sub(1, M.MAX_MESSAGE) .. "..." end
  return text
end

-- Codes of failures of the store itself (its disk, its map, its files):
-- the same write may succeed later, so they fault nobody.
local environmental = {
  map_full = true, disk_full = true, readonly = true, io = true, out_of_memory = true, storage = true,
  readers_full = true, corrupt = true, not_a_store = true, locked = true,
}

--- True when `err` (returned by `store:write`) is a failure of the store, not a refusal of what was written.
function M.environmental(err)
  return type(err) == "table" and environmental[err.code] == true
end

--- Calls `store:write(ops)` without raising: returns the result, or nil, the
-- error and whether it was raised (a refusal of the ops, such as an empty
-- stream name) rather than returned.
function M.write(store, ops)
  local ok, result, err = pcall(store.write, store, ops)
  if not ok then return nil, result, true end
  return result, err, false
end

--- The index of the first entry of `ops[field]` ("appends" or "puts") that
-- the store refuses, found by dry runs of ever shorter prefixes; nil when
-- every prefix is accepted (the refusal lies elsewhere).
function M.locate(store, ops, field)
  local list = ops[field]
  if type(list) ~= "table" or #list == 0 then return nil end
  local function fails(n)
    local prefix = {}
    for i = 1, n do prefix[i] = list[i] end
    local res = M.write(store, { [field] = prefix, dry_run = true })
    return res == nil
  end
  if not fails(#list) then return nil end
  local lo, hi = 1, #list          -- the first failing prefix length lies in [lo, hi]
  while lo < hi do
    local mid = (lo + hi) // 2
    if fails(mid) then hi = mid else lo = mid + 1 end
  end
  return lo
end

return M
