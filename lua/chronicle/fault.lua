--- What projections and reactors share about their faults: the text of an
-- error as it is stored, which failures belong to the store rather than to
-- the subscriber's output, and which output of a refused write was refused.
-- @module chronicle.fault
local M = {}

--- The most bytes of an error message kept in a fault or dead-letter row.
M.MAX_MESSAGE = 2000

--- An error value as the text stored in a fault: chronicle's own file and
-- line are dropped (they say nothing about the user's code), and the text is
-- cut at MAX_MESSAGE bytes.
function M.message(err)
  local text
  if type(err) == "table" then
    local ok, s = pcall(tostring, err)
    text = (ok and type(s) == "string") and s or tostring(err.message)
  else
    text = tostring(err)
  end
  text = text:gsub("^[^\n]-chronicle/[%w_]+%.lua:%d+: ", "")
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
