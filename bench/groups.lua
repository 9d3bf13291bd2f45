--- bench/groups.lua: consumer groups and persistent subscriptions (issue 15).
--
-- The store: BENCH_GROUP_EVENTS events (default 2,000) of type "Placed" over
-- BENCH_GROUP_STREAMS streams (default 400), durability "nosync". Members and
-- consumers are lua5.4 processes (bench/support_group.lua); a measurement
-- starts them together and ends when the last has exited.
--
--   group_handler_2ms_x2, _x4  a handler whose every event waits 2 ms (an
--                        I/O-bound side effect) served by 2 and 4 member
--                        processes, against the same with 1 member (each
--                        round a new handler name: a new group from position
--                        0). events/s, timed from a go signal once every
--                        member is up (store open, handler registered) until
--                        the last member saw the group's low-water mark at
--                        the head: joining, dealing and rebalancing are in
--                        it, process start and exit are not (a note gives
--                        the 4-member ratio timed from the spawn to the last
--                        exit, as this benchmark measured before 2026-12-03).
--                        Target for 4 members >= 3.5. A note gives what the
--                        hash split dealt round robin would allow (the
--                        busiest member's share of the events).
--                        BENCH_GROUP_TRACE=1: each member also says where its
--                        time went (bench/support_group_trace.lua), summed up
--                        in notes per run; BENCH_GROUP_CASES="m1 m4" runs only
--                        those cases.
--   group_overhead_noop  one runner, in this process, catching a no-op handler
--                        up over BENCH_GROUP_NOOP events (default 50,000),
--                        as a group of one (leases, partition checkpoints)
--                        against { groups = false }. Target >= 0.8.
--   subscription_x4      take(50)/ack of every event of a new subscription by
--                        4 consumer processes, against 1 consumer, over a store
--                        of BENCH_GROUP_SUB_EVENTS events (default 10,000).
--   subscription_many_x4 the same with take(50)/ack_many (one write per 50
--                        acks): 4 consumers against 1.
--   subscription_ack_many  1 consumer: take(50)/ack_many against take(50)/ack.
--
-- Rounds alternate the order of the measurements.
local B = require "benchlib"
local chronicle = B.chronicle()

local N = B.env("BENCH_GROUP_EVENTS", 2000)
local NSTREAMS = B.env("BENCH_GROUP_STREAMS", 400)
local NOOP = B.env("BENCH_GROUP_NOOP", 50000)
local SUB_N = B.env("BENCH_GROUP_SUB_EVENTS", 10000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local DELAY = B.env("BENCH_GROUP_DELAY_MS", 2)

-- BENCH_GROUP_CASES="m1 m4": only these cases (the results whose two sides ran are printed).
local order = { "m1", "m2", "m4", "grouped", "plain", "c1", "c4", "cm1", "cm4" }
if os.getenv("BENCH_GROUP_CASES") then
  order = {}
  for c in os.getenv("BENCH_GROUP_CASES"):gmatch("%S+") do order[#order + 1] = c end
end
local wanted = {}
for _, c in ipairs(order) do wanted[c] = true end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local SUPPORT = here .. "support_group.lua"

local dir = B.fresh_dir("groups")
local s = assert(chronicle.open(dir, { durability = "nosync" }))
for i = 0, N - 1, 100 do
  local batch = {}
  for j = i, math.min(i + 99, N - 1) do
    batch[#batch + 1] = { stream = "order-" .. (j % NSTREAMS), events = { { type = "Placed", data = { n = j } } } }
  end
  assert(s:append_many(batch))
end
B.note("groups: %d events over %d streams; handler delay %d ms; %d rounds", N, NSTREAMS, DELAY, ROUNDS)
-- What the hash split dealt round robin would allow: the busiest of k members handles the
-- most events of one residue class, so k members are at most N / busiest times one. (The
-- deal weighs the backlog and evens it out, so the members can beat this.)
do
  local group = require "chronicle.read.group"
  for _, k in ipairs({ 2, 4 }) do
    local load = {}
    for j = 0, N - 1 do
      local m = group.partition("order-" .. (j % NSTREAMS), group.PARTITIONS) % k
      load[m] = (load[m] or 0) + 1
    end
    local busiest = 0
    for _, n in pairs(load) do busiest = math.max(busiest, n) end
    B.note("groups: with %d members the busiest has %d of the %d events: at most %.2fx one member", k, busiest, N, N / busiest)
  end
end

local serial = 0
local function processes(k, args)
  local cmds = {}
  for i = 1, k do
    local parts = { "timeout -s KILL 60", "lua5.4", B.shell_quote(SUPPORT) }
    for _, a in ipairs(args) do parts[#parts + 1] = B.shell_quote(a) end
    cmds[i] = table.concat(parts, " ") .. " &"
  end
  return B.time(function()
    local ok = os.execute("{ " .. table.concat(cmds, " ") .. " wait; }")
    assert(ok, "a member failed")
  end)
end

-- BENCH_GROUP_TRACE=1: each member says where its time went (bench/support_group_trace.lua),
-- and a note per run sums it up against the run's wall time.
local TRACE = os.getenv("BENCH_GROUP_TRACE") == "1"
local function parse_trace(path)
  local list = {}
  for line in io.lines(path) do list[#list + 1] = B.parse_kv(line) end
  os.remove(path)
  return list
end
local function median_of(list, f)
  local v = {}
  for i, m in ipairs(list) do v[i] = f(m) end
  return B.median(v)
end
-- One note per run: per member, events, streams, and (seconds after the spawn) when it
-- first held partitions, handled its first and last event and exited; then the sums:
-- handler time, beats, batch writes, fold time outside the handler, idle passes.
-- effs[k][round]: the members' handler time over k times the run's time (1: no member ever
-- waited, for a share, a beat, a write or the others). 4 * effs[4] / effs[1] is what 4
-- members would make of one if a 2 ms wait took as long with 4 processes as with 1 (on a
-- loaded machine a sleeping handler wakes late, more so with more processes): the
-- group's own losses (imbalance, dealing, coordination) without that noise.
local effs = { [1] = {}, [2] = {}, [4] = {} }
local function summarize(k, t0, wall, list)
  local parts = {}
  table.sort(list, function(a, b) return a.handled > b.handled end)
  local beat_s, write_s, fold_x, idle_s, busy, changed_s = 0, 0, 0, 0, 0, 0
  for _, m in ipairs(list) do
    parts[#parts + 1] = ("%d ev/%d st up@%.3f own@%.3f first@%.3f last@%.3f exit@%.3f"):format(m.handled, m.streams,
      m.start - t0, m.first_owned - t0, m.first - t0, m.last - t0, m.exit - t0)
    beat_s, write_s, idle_s, busy = beat_s + m.beat_s, write_s + m.write_s, idle_s + m.idle_s, busy + m.busy
    fold_x, changed_s = fold_x + (m.fold_s - m.busy), changed_s + m.changed_s
  end
  -- the member that handled the last event: the run's wall time is its start, its
  -- handler time, its other time between its first and last event, and the tail
  local last = list[1]
  for _, m in ipairs(list) do if m.last > last.last then last = m end end
  B.note("trace x%d breakdown (the last to finish): start %.3f s, handler %.3f s (%d events, %.3f ms each), "
    .. "other time in the run %.3f s, tail %.3f s", k, last.first - t0, last.busy, last.handled,
    last.busy / last.handled * 1000, (last.last - last.first) - last.busy, wall - (last.last - t0))
  effs[k][#effs[k] + 1] = busy / (k * wall)
  local per_event = median_of(list, function(m) return m.busy / math.max(1, m.handled) end)
  B.note("trace x%d wall %.3f s, %.3f ms per handled event; %s", k, wall, per_event * 1000, table.concat(parts, "; "))
  B.note("trace x%d sums: handler %.3f s, beats %d %.3f s, writes %d %.3f s (beats' included), fold outside the "
    .. "handler %.3f s, changed %.3f s, idle passes %.3f s; busiest %d events = %.3f s of handler",
    k, busy, (function() local n = 0 for _, m in ipairs(list) do n = n + m.beats end return n end)(), beat_s,
    (function() local n = 0 for _, m in ipairs(list) do n = n + m.writes end return n end)(), write_s,
    fold_x, changed_s, idle_s, list[1].handled, list[1].busy)
end

local function lines(path)
  local n, list = 0, {}
  local f = io.open(path, "r")
  if not f then return 0, list end
  for line in f:lines() do n, list[#list + 1] = n + 1, line end
  f:close()
  return n, list
end
local function sleep(secs) s:wait(math.maxinteger - 1, secs) end

-- k members, started in the background; the clock starts when all of them are up (their
-- store open, their handler registered: the files of support_group's SYNC) and stops when
-- the last of them saw the work done. Also returns the wall time from the spawn to the
-- last exit (process start and exit included, as this benchmark measured before 2026-12-03).
local function members_run(k, args, sync)
  local cmds = {}
  for i = 1, k do
    local parts = { "timeout -s KILL 60", "lua5.4", B.shell_quote(SUPPORT) }
    for _, a in ipairs(args) do parts[#parts + 1] = B.shell_quote(a) end
    cmds[i] = table.concat(parts, " ") .. " &"
  end
  local spawn = B.now()
  assert(os.execute("{ " .. table.concat(cmds, " ") .. " wait; touch " .. B.shell_quote(sync .. ".exited")
    .. "; } </dev/null &"))
  local limit = spawn + 60
  while lines(sync .. ".ready") < k do
    assert(B.now() < limit and not io.open(sync .. ".exited"), "a member did not start")
    sleep(0.0005)
  end
  local t0 = B.now()
  assert(io.open(sync .. ".go", "w")):close()
  while not io.open(sync .. ".exited", "r") do
    assert(B.now() < limit, "the members did not finish")
    sleep(0.002)
  end
  local wall = B.now() - spawn
  local n, done = lines(sync .. ".done")
  assert(n == k, "a member failed")
  local last = 0
  for _, d in ipairs(done) do last = math.max(last, tonumber(d)) end
  for _, ext in ipairs({ ".ready", ".go", ".done", ".exited" }) do os.remove(sync .. ext) end
  return last - t0, wall, t0
end

local walls = { [1] = {}, [2] = {}, [4] = {} }
local function members(k)
  return function()
    serial = serial + 1
    local sync = B.tmp .. "/sync" .. serial
    local args = { "handler", dir, "mail" .. serial, tostring(DELAY), "2", sync }
    local trace = TRACE and (B.tmp .. "/trace" .. serial) or nil
    if trace then args[#args + 1] = trace end
    local secs, wall, t0 = members_run(k, args, sync)
    assert(s:kv_get("checkpoints", "h:mail" .. serial) == s:head())
    walls[k][#walls[k] + 1] = N / wall
    if trace then summarize(k, t0, secs, parse_trace(trace)) end
    return N / secs
  end
end

local sdir = B.fresh_dir("groups_sub")
local ss = assert(chronicle.open(sdir, { durability = "nosync" }))
for i = 0, (wanted.c1 or wanted.c4 or wanted.cm1 or wanted.cm4) and SUB_N - 1 or -1, 1000 do
  local batch = {}
  for j = i, math.min(i + 999, SUB_N - 1) do
    batch[#batch + 1] = { stream = "order-" .. (j % NSTREAMS), events = { { type = "Placed", data = { n = j } } } }
  end
  assert(ss:append_many(batch))
end
local function consumers(k, many)
  return function()
    serial = serial + 1
    local name = "sub" .. serial
    assert(ss:subscription(name, { max_in_flight = 1000 }))
    local secs = processes(k, { "consumer", sdir, name, many and "many" or "one" })
    local st = ss:subscription_status(name)
    assert(st.lag == 0 and st.in_flight == 0)
    return SUB_N / secs
  end
end

local ndir = B.fresh_dir("groups_noop")
local ns = assert(chronicle.open(ndir, { durability = "nosync" }))
for i = 0, (wanted.grouped or wanted.plain) and NOOP - 1 or -1, 1000 do
  local batch = {}
  for j = i, math.min(i + 999, NOOP - 1) do
    batch[#batch + 1] = { stream = "order-" .. (j % NSTREAMS), events = { { type = "Placed" } } }
  end
  assert(ns:append_many(batch))
end
local function noop(groups)
  return function()
    serial = serial + 1
    local name = "noop" .. serial
    ns:on("Placed", function() end, { name = name })
    local runner = chronicle.runner(ns, { groups = groups })
    local secs = B.time(function()
      repeat until runner:run_once() == 0
    end)
    runner:leave()
    ns:unregister(name)
    return NOOP / secs
  end
end

local got = B.rotate(order, {
  m1 = members(1), m2 = members(2), m4 = members(4),
  grouped = noop(true), plain = noop(false),
  c1 = consumers(1), c4 = consumers(4), cm1 = consumers(1, true), cm4 = consumers(4, true),
}, ROUNDS)

local function result(name, a, b, target)
  if got[a] and got[b] then
    local r, o = B.ratios(got, a, b), {}
    for i, v in ipairs(r) do o[i] = ("%.2f"):format(v) end
    B.note("%s per round: %s", name, table.concat(o, " "))
    B.result(name, B.max(got[a]), B.max(got[b]), "events/s", target, r)
  end
end
if TRACE and got.m1 and got.m4 then
  local r = {}
  for i = 1, #effs[4] do r[i] = 4 * effs[4][i] / effs[1][i] end
  B.note("groups: 4 members' efficiency (handler time / 4 x run time) against one's, x4: median %.2f, rounds %s",
    B.median(r), table.concat((function() local o = {} for i, v in ipairs(r) do o[i] = ("%.2f"):format(v) end return o end)(), " "))
end
if got.m1 and got.m4 then
  -- the same runs timed from the spawn to the last exit (process start and exit included)
  local r = {}
  for i = 1, #walls[4] do r[i] = walls[4][i] / walls[1][i] end
  B.note("groups: 4 members vs 1 timed from the spawn to the last exit: median %.2f, rounds %s", B.median(r),
    table.concat((function() local o = {} for i, v in ipairs(r) do o[i] = ("%.2f"):format(v) end return o end)(), " "))
end
result("group_handler_2ms_x2", "m2", "m1")
result("group_handler_2ms_x4", "m4", "m1", 3.5)
result("group_overhead_noop", "grouped", "plain", 0.8)
result("subscription_x4", "c4", "c1")
result("subscription_many_x4", "cm4", "cm1")
result("subscription_ack_many", "cm1", "c1")
s:close()
ns:close()
ss:close()
B.rm(dir)
B.rm(ndir)
B.rm(sdir)
B.cleanup()
