--- bench/support_aggregate.lua: the account aggregate the aggregate benchmarks
-- use (bench/aggregate.lua), and the event histories they write.
--
-- Event i of a stream (version i - 1): version 0 is `Opened`, then
-- `Deposited`, `Withdrawn`, `Renamed` in turn. Data is benchlib's flat 8-field
-- map (event_data), with a note of 0-99 characters: 101-201 bytes, the same
-- payloads as bench/read.lua and bench/fold.lua.
local B = require "benchlib"

local M = {}

--- The apply functions (shared with the plain-Lua baselines).
M.apply = {
  Opened = function(s, ev) s.open = true; s.owner = ev.data.account end,
  Deposited = function(s, ev) s.balance = s.balance + ev.data.amount; s.n = s.n + 1 end,
  Withdrawn = function(s, ev) s.balance = s.balance - ev.data.amount; s.n = s.n + 1 end,
  Renamed = function(s, ev) s.ref = ev.data.ref end,
}

function M.initial() return { balance = 0, n = 0, open = false } end

M.commands = {
  -- always accepted, so every execute appends exactly one event
  deposit = function(_, args) return { type = "Deposited", data = args } end,
}

local TYPES = { "Deposited", "Withdrawn", "Renamed" }

--- The type of the event at stream version `v` (0-based).
function M.type_at(v)
  if v == 0 then return "Opened" end
  return TYPES[(v - 1) % 3 + 1]
end

--- An aggregate definition named `name` (snapshot_every optional).
function M.define(chronicle, name, snapshot_every)
  return chronicle.aggregate {
    name = name, snapshot_every = snapshot_every,
    initial = M.initial, apply = M.apply, commands = M.commands,
  }
end

local seq = 0
--- Appends `count` events to each stream of `streams` (names), `per` events
-- to each stream in turn per append_many transaction (at most 100 streams per
-- transaction), so each stream's events are spread along the log. `start` is
-- the stream version of the first event written (0 for new streams).
function M.fill(s, streams, count, per, start)
  start = start or 0
  per = math.min(per, count)
  local done = 0
  while done < count do
    local n = math.min(per, count - done)
    for first = 1, #streams, 100 do
      local entries = {}
      for k = first, math.min(first + 99, #streams) do
        local events = {}
        for j = 1, n do
          seq = seq + 1
          events[j] = { type = M.type_at(start + done + j - 1), data = B.event_data(seq, seq % 100) }
        end
        entries[#entries + 1] = { stream = streams[k], events = events }
      end
      local r, err = s:append_many(entries)
      if not r then error(tostring(err)) end
    end
    done = done + n
  end
end

return M
