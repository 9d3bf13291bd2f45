-- The events of the power-cut workload (spec/reliability/powercut_spec.lua), shared by the workload that
-- appends them and the checker that looks for them after a simulated power cut.
-- Append j (j = 1, 2, ...) goes to stream "acct-(j % 3)" and holds 1 + j % 3 events; every
-- seventh append carries a 3,000-byte event (on LMDB overflow pages), the others ~60 bytes.
local M = {}

--- The number of events in append j.
function M.size(j)
  return 1 + j % 3
end

--- The stream of append j.
function M.stream(j)
  return ("acct-%d"):format(j % 3)
end

--- The id of event k (1-based) of append j: a valid UUID that names j and k.
function M.id(j, k)
  return ("%08x-0000-7000-8000-%08x%04x"):format(0x70c7, j, k)
end

--- j and k back from an id made by M.id, or nil for any other id.
function M.parse_id(id)
  local j, k = id:match("^000070c7%-0000%-7000%-8000%-(%x%x%x%x%x%x%x%x)(%x%x%x%x)$")
  if not j then return nil end
  return tonumber(j, 16), tonumber(k, 16)
end

--- The payload of event k of append j.
function M.data(j, k)
  local pad = (j % 7 == 0 and k == 1) and 3000 or 40
  return { j = j, k = k, pad = ("%d.%d:"):format(j, k):rep(pad):sub(1, pad) }
end

--- The list of events of append j, ready for store:append.
function M.batch(j)
  local events = {}
  for k = 1, M.size(j) do
    events[k] = { type = "Deposited", id = M.id(j, k), data = M.data(j, k) }
  end
  return events
end

return M
