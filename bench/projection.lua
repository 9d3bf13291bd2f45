--- bench/projection.lua: catching up a projection against store:fold.
--
-- The store is bench/fold.lua's: BENCH_EVENTS events (default 1,000,000)
-- over BENCH_STREAMS streams (default 1,000) in 4 categories, 5 event types,
-- data a flat 8-field map of 101-201 bytes, written with append_many
-- transactions of 1,000 events (durability "nosync").
--
-- The projection counts events per stream, a handler for each of the 5
-- types (so it reads every event; without `from.types` the handlers' types
-- are passed to the C scan as a filter):
--
--   handler = function(view, ev) view:update(ev.stream, function(n) return (n or 0) + 1 end) end
--
-- One measurement registers a projection under a new name (so it starts
-- from position 0 in a new view) and times `store:run_projections()` until
-- it is idle: batches of 1,000 events (the default batch_size), each
-- committing its rows and checkpoint in one transaction. The rows are
-- checked afterwards (one per stream, the counts summing to BENCH_EVENTS).
--
--   projection_catchup       the store opened with durability "nosync",
--                            against store:fold({}, {}, fn) over the same
--                            events, where fn does the same counting into a
--                            Lua table: t[ev.stream] = (t[ev.stream] or 0) + 1.
--                            ratio = fold time / catch-up time. Target >= 0.5.
--   projection_catchup_full  the same, the store opened with durability
--                            "full" (the default: every batch's commit is
--                            fsync'd), against the same fold.
--   projection_vs_fold_types the nosync catch-up against a fold with the
--                            projection's filter, {types = the 5 types}.
--
-- Rounds alternate the order of the measurements. Figures are events/s.
local B = require "benchlib"
local chronicle = B.chronicle()

local N = B.env("BENCH_EVENTS", 1000000)
local NSTREAMS = B.env("BENCH_STREAMS", 1000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local MAP = 4 << 30

local dir = B.fresh_dir("projection")
local s = assert(chronicle.open(dir, { durability = "nosync", map_size = MAP }))
local load_secs = B.load(s, N, NSTREAMS, 1000)
assert(s:head() == N)
B.note("projection: loaded %d events over %d streams in %.2f s; %d rounds", N, NSTREAMS, load_secs, ROUNDS)
-- `s` stays open to the end: it keeps the environment (and its memory map)
-- open, so the handles each measurement opens and closes do not unmap the
-- store and fault its pages in again.

local function count(view, ev)
  view:update(ev.stream, function(n) return (n or 0) + 1 end)
end
local handlers = {}
for _, t in ipairs(B.TYPES) do handlers[t] = count end

local function fold_fn(t, ev)
  local k = ev.stream
  t[k] = (t[k] or 0) + 1
end

local serial = 0
-- Each measurement opens the store with its durability (and closes it); the
-- environment is shared with `s`, and the durability applies per write.
local function open(sync)
  return assert(chronicle.open(dir, { durability = sync, map_size = MAP }))
end

-- One catch-up from position 0 under a new name; returns events/s.
local function catch_up(sync)
  serial = serial + 1
  local name = "count_" .. serial
  local st = open(sync)
  assert(st:projection { name = name, handlers = handlers })
  local status
  local secs = B.time(function()
    local err
    status, err = st:run_projections()
    if not status then error(tostring(err and err.message or err)) end
  end)
  assert(status[name] == "idle", "projection " .. name .. ": " .. tostring(status[name]))
  st:unregister(name)
  local view, rows, total = st:view(name), 0, 0
  for _, n in view:pairs() do rows = rows + 1; total = total + n end
  assert(rows == NSTREAMS and total == N, "the projection's rows do not add up")
  st:close()
  return N / secs
end

local function fold(query)
  local st = open("nosync")
  local state, n
  local secs = B.time(function()
    local err
    state, n, err = st:fold(query, {}, fold_fn)
    if not state then error(tostring(n or err)) end
  end)
  assert(n == N)
  st:close()
  return N / secs
end

do -- untimed warm-up: maps the pages into this process
  local st = open("nosync")
  st:fold({}, 0, function() end)
  st:close()
end

local all_types = {}
for i, t in ipairs(B.TYPES) do all_types[i] = t end
local cases = {
  proj = function() return catch_up("nosync") end,
  proj_full = function() return catch_up("full") end,
  fold = function() return fold({}) end,
  fold_types = function() return fold({ types = all_types }) end,
}
local order = { "proj", "fold", "proj_full", "fold_types" }
local got = B.rotate(order, cases, ROUNDS, function(r, got)
  B.note("projection round %d (events/s): catch-up nosync %.0f, catch-up full %.0f, fold %.0f, fold with types %.0f",
         r, got.proj[r], got.proj_full[r], got.fold[r], got.fold_types[r])
end)
local function ratios(a, b) return B.ratios(got, a, b) end
B.result("projection_catchup", B.max(got.proj), B.max(got.fold), "events/s", 0.5, ratios("proj", "fold"))
B.result("projection_catchup_full", B.max(got.proj_full), B.max(got.fold), "events/s", 0.5, ratios("proj_full", "fold"))
B.result("projection_vs_fold_types", B.max(got.proj), B.max(got.fold_types), "events/s", nil,
         ratios("proj", "fold_types"))

s:close()
B.rm(dir)
B.cleanup()
