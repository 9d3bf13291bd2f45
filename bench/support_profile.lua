--- bench/support_profile.lua: workloads to run under perf for the aggregate
-- and projection benchmarks (bench/profile.sh covers append and fold).
--
-- bench/luahost passes no `arg`, so the workload is chosen by environment:
--   PROFILE_WHAT=execute     4 x PROFILE_AGGS (500) x PROFILE_EVENTS (10) repo:execute calls,
--                            one event each, durability nosync, a fresh store each time
--   PROFILE_WHAT=append      the same events with store:append (expected versions)
--   PROFILE_WHAT=load100     PROFILE_LOADS (50,000) repo:load of 100-event aggregates
--   PROFILE_WHAT=projection_load  writes PROFILE_EVENTS (300,000) events as fold.lua does,
--                            into $BENCH_TMP/prof-projection (run it first, without perf)
--   PROFILE_WHAT=projection  3 catch-ups of bench/projection.lua's per-stream counter over them
--
-- Run it the way bench/profile.sh runs its workloads (README, "Profiles"):
-- under bench/luahost, with BENCH_TMP, LUA_PATH and LUA_CPATH set, e.g.
--   PROFILE_WHAT=execute perf record -F 2000 --call-graph dwarf,16384 -o perf.data \
--     luahost bench/support_profile.lua
--   perf report -i perf.data --children --stdio -g none --percent-limit 1.5
local B = require "benchlib"
local A = require "support_aggregate"
local chronicle = B.chronicle()

local what = os.getenv("PROFILE_WHAT") or "execute"
local MAP = 4 << 30
local dirs = {}
local function fresh()
  local d = B.fresh_dir("prof")
  dirs[#dirs + 1] = d
  return d
end

if what == "execute" or what == "append" then
  local aggs, per = B.env("PROFILE_AGGS", 500), B.env("PROFILE_EVENTS", 10)
  local Exe = A.define(chronicle, "exe")
  local total = aggs * per
  local args, evs = {}, {}
  for k = 1, total do
    args[k] = B.event_data(k, 20)
    local cid = chronicle.uuid()
    evs[k] = { { type = "Deposited", data = args[k], meta = { correlation_id = cid, causation_id = cid },
                 id = chronicle.uuid(), time = chronicle.now(), schema = 1 } }
  end
  local secs = 0
  for rep = 1, 4 do
    local s = assert(chronicle.open(fresh(), { durability = "nosync", map_size = MAP }))
    local repo = s:repository(Exe)
    local t0 = B.now()
    for k = 1, total do
      if what == "execute" then
        assert(repo:execute((k - 1) % aggs, "deposit", args[k]))
      else
        local v = (k - 1) // aggs
        assert(s:append(Exe:stream((k - 1) % aggs), evs[k], v == 0 and "no_stream" or v - 1))
      end
    end
    secs = secs + B.now() - t0
    s:close()
  end
  print(string.format("%s: %.0f events/s (under perf)", what, 4 * total / secs))
elseif what == "load100" then
  local loads = B.env("PROFILE_LOADS", 50000)
  local s = assert(chronicle.open(fresh(), { durability = "nosync", map_size = MAP }))
  local Acct = A.define(chronicle, "acct")
  local streams = {}
  for i = 0, 999 do streams[i + 1] = Acct:stream(i) end
  A.fill(s, streams, 100, 10)
  local repo = s:repository(Acct)
  local t0 = B.now()
  for l = 1, loads do assert(repo:load((l * 7919) % 1000)) end
  print(string.format("load100: %.0f loads/s (under perf)", loads / (B.now() - t0)))
elseif what == "projection_load" or what == "projection" then
  -- The store stays in $BENCH_TMP/prof-projection between the two steps, so
  -- that the profile of `projection` holds the catch-ups only.
  local dir = B.tmp .. "/prof-projection"
  local n = B.env("PROFILE_EVENTS", 300000)
  local s = assert(chronicle.open(dir, { durability = "nosync", map_size = MAP }))
  if what == "projection_load" then
    assert(s:head() == 0, dir .. " already holds a store")
    B.load(s, n, 1000, 1000)
  else
    assert(s:head() == n, "run PROFILE_WHAT=projection_load first (same PROFILE_EVENTS)")
    s:fold({}, 0, function() end)   -- maps the pages in, as the benchmark's warm-up does
    local function count(view, ev) view:update(ev.stream, function(c) return (c or 0) + 1 end) end
    local handlers = {}
    for _, t in ipairs(B.TYPES) do handlers[t] = count end
    for rep = 1, 3 do
      local name = "count_" .. rep .. "_" .. math.random(1 << 30)
      assert(s:projection { name = name, handlers = handlers })
      local t0 = B.now()
      assert(s:run_projections())
      print(string.format("projection: %.0f events/s (under perf)", n / (B.now() - t0)))
      s:unregister(name)
    end
  end
  s:close()
else
  error("PROFILE_WHAT must be execute, append, load100, projection_load or projection")
end
for _, d in ipairs(dirs) do B.rm(d) end
B.cleanup()
