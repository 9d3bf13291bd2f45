--- bench/read.lua: loading one 100-event stream, loads per second.
--
-- A store of BENCH_READ_STREAMS streams (default 1,000) of 100 events each,
-- appended interleaved (append_many, 10 events to each of 100 streams per
-- transaction), so one stream's events are spread along the log as an
-- aggregate's are. Then, in rounds alternating subject and baseline,
-- BENCH_READ_LOADS loads (default 20,000), each of a different stream:
--
--   read_stream100   for ev in store:read(stream) do fn(state, ev) end
--   fold_stream100   store:fold(stream, state, fn)    (how aggregates load)
--
-- against a plain Lua loop over 100 prebuilt event tables (one stream's,
-- read beforehand) that builds, per event, a table of the same shape with
-- its data copied field by field and calls the same fn. Figures are loads
-- (of 100 events) per second; ratio = baseline_time / read_time. No target.
local B = require "benchlib"
local chronicle = B.chronicle()

local NSTREAMS = B.env("BENCH_READ_STREAMS", 1000)
local LOADS = B.env("BENCH_READ_LOADS", 20000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local PER_STREAM = 100

local dir = B.fresh_dir("read")
local s = assert(chronicle.open(dir, { durability = "nosync", map_size = 4 << 30 }))
local load_secs = B.load(s, NSTREAMS * PER_STREAM, NSTREAMS, 1000)
B.note("read: %d streams x %d events loaded in %.2f s; %d loads per measurement, %d rounds",
       NSTREAMS, PER_STREAM, load_secs, LOADS, ROUNDS)

local names = {}
for n = 0, NSTREAMS - 1 do names[n] = B.stream_name(n) end

local function fn(st, ev)
  st.n = st.n + 1
  st.sum = st.sum + ev.data.amount
  st.version = ev.version
end

local rows = {}
for ev in s:read(names[0]) do rows[#rows + 1] = ev end
assert(#rows == PER_STREAM)

local function base_load(state)
  for i = 1, #rows do
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
    local new = fn(state, ev)
    if new ~= nil then state = new end
  end
  return state
end

local function read_load(stream, state)
  for ev in s:read(stream) do
    local new = fn(state, ev)
    if new ~= nil then state = new end
  end
  return state
end

local function fold_load(stream, state)
  local st, n = s:fold(stream, state, fn)
  if not st then error(tostring(n)) end
  return st
end

-- Each load starts from a fresh state; the streams are visited in a scattered order.
local function run(load)
  local total = 0
  local secs = B.time(function()
    for l = 1, LOADS do
      local st = load(names[(l * 7919) % NSTREAMS], { n = 0, sum = 0 })
      total = total + st.n
    end
  end)
  assert(total == LOADS * PER_STREAM, "every load must see 100 events")
  return LOADS / secs
end

run(read_load)  -- untimed warm-up: maps the store's pages into this process
local function compare(label, load)
  local sub, base, ratios = {}, {}, {}
  for r = 1, ROUNDS do
    sub[r] = run(load)
    base[r] = run(function(_, st) return base_load(st) end)
    ratios[r] = sub[r] / base[r]
    B.note("%s round %d: chronicle %.0f loads/s (%.0f events/s), baseline %.0f loads/s", label, r, sub[r],
           sub[r] * PER_STREAM, base[r])
  end
  B.result(label, B.max(sub), B.max(base), "loads/s", nil, ratios)
end

compare("read_stream100", read_load)
compare("fold_stream100", fold_load)

s:close()
B.rm(dir)
B.cleanup()
