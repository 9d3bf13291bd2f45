-- Shared by the workloads and checkers of the reliability specs (faults, damage, disk full).
local M = {}

--- The id of workload event i: a valid UUID that names i.
function M.event_id(i)
  return ("%08x-0000-7000-8000-%012x"):format(0x6f, i)
end

--- i back from an id made by event_id, or nil for any other id.
function M.event_index(id)
  local hex = id:match("^0000006f%-0000%-7000%-8000%-(%x+)$")
  return hex and tonumber(hex, 16)
end

--- The stream of workload event i.
function M.stream_of(i)
  return ("acct-%d"):format(i % 3)
end

--- Reads an acknowledgement file: { [i] = position }, count.
function M.read_acks(path)
  local acks, n = {}, 0
  local f = io.open(path, "r")
  if not f then return acks, 0 end
  for line in f:lines() do
    local i, pos = line:match("^(%d+) (%d+)$")
    if i then acks[tonumber(i)] = tonumber(pos); n = n + 1 end
  end
  f:close()
  return acks, n
end

return M
