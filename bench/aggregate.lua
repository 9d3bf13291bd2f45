--- bench/aggregate.lua: repositories: load and execute.
--
-- The aggregate is bench/support_aggregate.lua's account: Opened, then
-- Deposited / Withdrawn / Renamed in turn, data the 8-field map of
-- bench/read.lua (101-201 bytes), apply functions that add to a balance and
-- copy a field or two.
--
-- Load store (durability "nosync", filled with append_many, 10 events to
-- each of up to 100 streams per transaction, so an aggregate's events are
-- spread along the log as they would be in use, the big ones' included):
--   * BENCH_AGG_STREAMS (default 1,000) aggregates `acct-<id>` of 100 events,
--     no snapshots;
--   * BENCH_AGG_BIG (default 10) aggregates `big-w<k>` of 9,999 events and as
--     many `big-e<k>` of 10,000 events, with snapshot_every = 100. Each was
--     loaded once after its first 9,900 (resp. 10,000) events, which stores
--     the snapshot execute would have stored at that boundary; so a `big-w`
--     load is snapshot + 99 events (the worst case snapshot_every = 100
--     allows) and a `big-e` load is snapshot + 0 events.
-- Then, in rounds (order rotating), each measurement BENCH_AGG_LOADS loads
-- (default 20,000) in a scattered order:
--
--   agg_load100          repo:load(id) of a 100-event aggregate, against a
--                        plain Lua loop applying 100 prebuilt event tables
--                        (one aggregate's, read beforehand) with the same
--                        apply functions, from a fresh initial() state.
--   agg_load100_vs_copy  the same, against a loop that also builds a new
--                        event table (data copied field by field) per event,
--                        as bench/read.lua's baseline does.
--   agg_load100_vs_fold  the same, against store:fold(stream, initial(),
--                        applier) called directly (the repository's overhead).
--   agg_load10k_snap99   repo:load of a `big-w` aggregate against repo:load of
--                        a 100-event one: ratio = t100 / t10k. Target >= 0.5
--                        (a 10,000-event load at most 2x a 100-event load).
--   agg_load10k_snap0    the same for `big-e` (snapshot at the last event).
--
-- Execute (a fresh store per measurement, durability "nosync"):
--   agg_execute   BENCH_EXEC_AGGS (default 500) aggregates x BENCH_EXEC_EVENTS
--                 (default 10) `deposit` commands, round robin over the
--                 aggregates (so each execute loads 0..9 earlier events),
--                 one event per call, against store:append of the same events
--                 (same streams, same order, one event per call, each with
--                 `expected` = the stream's version, the same data, meta
--                 {correlation_id, causation_id}, id and time, all prebuilt).
--                 Target >= 0.5.
--   agg_execute_cpu  the same, in events per second of this process's CPU time
--                 (steadier than wall time when other work shares the machine).
local B = require "benchlib"
local A = require "support_aggregate"
local chronicle = B.chronicle()

local NAGG = B.env("BENCH_AGG_STREAMS", 1000)
local LOADS = B.env("BENCH_AGG_LOADS", 20000)
local NBIG = B.env("BENCH_AGG_BIG", 10)
local EXEC_AGGS = B.env("BENCH_EXEC_AGGS", 500)
local EXEC_EVENTS = B.env("BENCH_EXEC_EVENTS", 10)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local MAP = 4 << 30

local scratch = B.scratch

---------------------------------------------------------------------------
-- Loads

local s = assert(chronicle.open(scratch("agg-load"), { durability = "nosync", map_size = MAP }))
local Acct = A.define(chronicle, "acct")
local Big = A.define(chronicle, "big", 100)
local acct, big = s:repository(Acct), s:repository(Big)

local small_ids, small_streams = {}, {}
for i = 0, NAGG - 1 do small_ids[i] = i; small_streams[i + 1] = Acct:stream(i) end
local w_ids, e_ids, w_streams, e_streams = {}, {}, {}, {}
for k = 1, NBIG do
  w_ids[k], e_ids[k] = "w" .. k, "e" .. k
  w_streams[k], e_streams[k] = Big:stream(w_ids[k]), Big:stream(e_ids[k])
end

local fill_secs = B.time(function()
  A.fill(s, small_streams, 100, 10)
  A.fill(s, w_streams, 9900, 10)
  A.fill(s, e_streams, 10000, 10)
  for k = 1, NBIG do
    -- a load that replays >= snapshot_every events stores its snapshot
    assert(big:load(w_ids[k])); assert(big:load(e_ids[k]))
    assert(big:snapshot(w_ids[k]).version == 9899 and big:snapshot(e_ids[k]).version == 9999)
  end
  A.fill(s, w_streams, 99, 10, 9900)
end)
B.note("aggregate: %d aggregates x 100 events, %d x 9,999 and %d x 10,000 events (snapshot_every = 100), " ..
       "%d events written in %.2f s; %d loads per measurement; %d rounds",
       NAGG, NBIG, NBIG, s:head(), fill_secs, LOADS, ROUNDS)

local apply, initial = A.apply, A.initial
local rows = {}
for ev in s:read(small_streams[1]) do rows[#rows + 1] = ev end
assert(#rows == 100)

local function base_plain()
  local st = initial()
  for i = 1, 100 do
    local ev = rows[i]
    local new = apply[ev.type](st, ev)
    if new ~= nil then st = new end
  end
  return st
end

local function base_copy()
  local st = initial()
  for i = 1, 100 do
    local r = rows[i]
    local d = r.data
    local ev = {
      position = r.position, stream = r.stream, version = r.version, type = r.type, time = r.time,
      id = r.id, schema = r.schema, meta = r.meta,
      data = {
        account = d.account, amount = d.amount, currency = d.currency, note = d.note,
        seq = d.seq, ok = d.ok, rate = d.rate, ref = d.ref,
      },
    }
    local new = apply[ev.type](st, ev)
    if new ~= nil then st = new end
  end
  return st
end

local applier = acct:applier()
local function direct_fold(i)
  local st, n = s:fold(small_streams[i + 1], initial(), applier)
  if not st then error(tostring(n)) end
  return st
end

-- One measurement: LOADS loads, the aggregates visited in a scattered order;
-- returns loads per second. `load(i)` returns the state of aggregate i.
local function run(load, nids, expect_n)
  local total = 0
  local secs = B.time(function()
    for l = 1, LOADS do
      local st = load((l * 7919) % nids)
      total = total + st.n
    end
  end)
  assert(total == LOADS * expect_n, "a load returned a wrong state")
  return LOADS / secs
end

-- Every account state counts its Deposited and Withdrawn events in n.
local N100, NW, NE = 0, 0, 0
for v = 0, 99 do if A.type_at(v) == "Deposited" or A.type_at(v) == "Withdrawn" then N100 = N100 + 1 end end
for v = 0, 9998 do if A.type_at(v) == "Deposited" or A.type_at(v) == "Withdrawn" then NW = NW + 1 end end
NE = NW + ((A.type_at(9999) == "Deposited" or A.type_at(9999) == "Withdrawn") and 1 or 0)

local cases = {
  load100 = function() return run(function(i) return (acct:load(small_ids[i])) end, NAGG, N100) end,
  plain = function() return run(function() return base_plain() end, 1, N100) end,
  copy = function() return run(function() return base_copy() end, 1, N100) end,
  fold = function() return run(direct_fold, NAGG, N100) end,
  big_w = function() return run(function(i) return (big:load(w_ids[i + 1])) end, NBIG, NW) end,
  big_e = function() return run(function(i) return (big:load(e_ids[i + 1])) end, NBIG, NE) end,
}
local order = { "load100", "plain", "big_w", "copy", "fold", "big_e" }

do -- correctness, and an untimed warm-up of every path (maps the store's pages)
  local a, b = acct:load(0), base_plain()
  assert(a.balance == b.balance and a.n == b.n and a.ref == b.ref and a.owner == b.owner)
  local st, version = big:load("w1")
  assert(version == 9998 and st.n == NW)
  st, version = big:load("e1")
  assert(version == 9999 and st.n == NE)
  for _, name in ipairs(order) do cases[name]() end
end

local got = B.rotate(order, cases, ROUNDS, function(r, got)
  B.note("aggregate loads round %d (loads/s): load100 %.0f, plain loop %.0f, copy loop %.0f, direct fold %.0f, " ..
         "load 9,999 (snapshot + 99) %.0f, load 10,000 (snapshot + 0) %.0f", r, got.load100[r], got.plain[r],
         got.copy[r], got.fold[r], got.big_w[r], got.big_e[r])
end)
local function ratios(a, b) return B.ratios(got, a, b) end
B.result("agg_load100", B.max(got.load100), B.max(got.plain), "loads/s", nil, ratios("load100", "plain"))
B.result("agg_load100_vs_copy", B.max(got.load100), B.max(got.copy), "loads/s", nil, ratios("load100", "copy"))
B.result("agg_load100_vs_fold", B.max(got.load100), B.max(got.fold), "loads/s", nil, ratios("load100", "fold"))
B.result("agg_load10k_snap99", B.max(got.big_w), B.max(got.load100), "loads/s", 0.5, ratios("big_w", "load100"))
B.result("agg_load10k_snap0", B.max(got.big_e), B.max(got.load100), "loads/s", nil, ratios("big_e", "load100"))
s:close()

---------------------------------------------------------------------------
-- Execute against append

local NEXEC = EXEC_AGGS * EXEC_EVENTS
local Exe = A.define(chronicle, "exe")
local exe_streams = {}
for a = 0, EXEC_AGGS - 1 do exe_streams[a] = Exe:stream(a) end

-- Command k (1-based) goes to aggregate (k - 1) % EXEC_AGGS; its args become the event's data.
local args, base_events = {}, {}
local now = chronicle.now()
for k = 1, NEXEC do
  args[k] = B.event_data(k, 20)
  local command_id = chronicle.uuid()
  base_events[k] = { {
    type = "Deposited", data = args[k], meta = { correlation_id = command_id, causation_id = command_id },
    id = chronicle.uuid(), time = now, schema = 1,
  } }
end

-- Both return events per second of wall time and events per second of this
-- process's CPU time (the second is steadier on a shared machine).
local function exec_run()
  local st = assert(chronicle.open(scratch("agg-exec"), { durability = "nosync", map_size = MAP }))
  local repo = st:repository(Exe)
  local cpu
  local secs = B.time(function()
    local c0 = B.cpu()
    for k = 1, NEXEC do
      local res, err = repo:execute((k - 1) % EXEC_AGGS, "deposit", args[k])
      if not res then error(tostring(err and err.message or err)) end
    end
    cpu = B.cpu() - c0
  end)
  assert(st:head() == NEXEC and repo:load(0).n == EXEC_EVENTS)
  st:close()
  return NEXEC / secs, NEXEC / cpu
end

local function append_run()
  local st = assert(chronicle.open(scratch("agg-append"), { durability = "nosync", map_size = MAP }))
  local cpu
  local secs = B.time(function()
    local c0 = B.cpu()
    for k = 1, NEXEC do
      local v = (k - 1) // EXEC_AGGS   -- events already in this stream
      local res, err = st:append(exe_streams[(k - 1) % EXEC_AGGS], base_events[k],
                                 v == 0 and chronicle.NO_STREAM or v - 1)
      if not res then error(tostring(err and err.message or err)) end
    end
    cpu = B.cpu() - c0
  end)
  assert(st:head() == NEXEC)
  st:close()
  return NEXEC / secs, NEXEC / cpu
end

B.note("aggregate execute: %d aggregates x %d commands, one event each, durability nosync", EXEC_AGGS, EXEC_EVENTS)
local ex, ap, rx, exc, apc, rxc = {}, {}, {}, {}, {}, {}
for r = 1, ROUNDS do
  if r % 2 == 1 then ex[r], exc[r] = exec_run(); ap[r], apc[r] = append_run()
  else ap[r], apc[r] = append_run(); ex[r], exc[r] = exec_run() end
  rx[r], rxc[r] = ex[r] / ap[r], exc[r] / apc[r]
  B.note("agg_execute round %d: execute %.0f/s (%.1f us CPU each), append %.0f/s (%.1f us CPU each)", r, ex[r],
         1e6 / exc[r], ap[r], 1e6 / apc[r])
end
B.result("agg_execute", B.max(ex), B.max(ap), "events/s", 0.5, rx)
B.result("agg_execute_cpu", B.max(exc), B.max(apc), "events/cpu_s", nil, rxc)

B.remove_scratch()
B.cleanup()
