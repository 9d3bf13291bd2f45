--- bench/personal.lua: the cost of personal data (chronicle.personal), in one run.
--
-- Two stores get the same BENCH_PERSONAL_EVENTS events (default 200,000; durability "nosync",
-- append_many transactions of 1,000 events) over 1,000 streams: the payload of bench's other
-- benchmarks (an 8-field map, 101-201 bytes) plus a name and an e-mail address. In the plain
-- store the two are fields of `data`; in the personal store they are `personal`, sealed with
-- the key of one of BENCH_PERSONAL_SUBJECTS subjects (default 1,000: one per stream). Then, in
-- rounds alternating the sides:
--
--   append_personal   appending to the personal store against the plain one   target: at most 1.5x the time
--                     (a new store each round: its first write of each subject makes the
--                     subject's key, BENCH_PERSONAL_EVENTS / BENCH_PERSONAL_SUBJECTS events a key)
--   append_personal_warm  the same into stores that already hold one event of each subject
--                     (written before the clock starts, on both sides): the subjects' keys exist
--                     and the store object's keyring holds them, what every later write finds
--   fold_personal     store:fold({}, ...) over the whole log, reading ev.personal.name
--                     against reading ev.data.name                           target: at most 1.5x the time
--   fold_wrapper      the plain store's fold through Store (which looks for sealed personal data
--                     in every event's meta) against the backend handle's own fold: what every
--                     fold pays now, with no personal data anywhere          (no target)
--
-- ratio = subject throughput / baseline throughput, so the 1.5x cost target is ratio >= 0.667.
-- BENCH_ROUNDS rounds (default 3); the best time of each side counts. QUICK=1: 20,000 events.
-- The `_cpu` rows are the same rounds timed by this process's CPU time (benchclock.cpu, user
-- and system) instead of the wall clock: on a shared machine they move less with the load.
package.path = arg[0]:gsub("[^/]*$", "") .. "?.lua;" .. package.path
local bench = require "benchlib"
local chronicle = bench.chronicle()

local quick = os.getenv("QUICK") == "1"
local N = bench.env("BENCH_PERSONAL_EVENTS", quick and 20000 or 200000)
local SUBJECTS = bench.env("BENCH_PERSONAL_SUBJECTS", 1000)
local ROUNDS = bench.env("BENCH_ROUNDS", quick and 2 or 3)
local STREAMS, BATCH = 1000, 1000

local function events_of(i, personal)
  local data = bench.event_data(i, 40 + i % 60)
  local who = { name = string.format("Customer Number %07d", i % SUBJECTS),
                email = string.format("customer%07d@example.org", i % SUBJECTS) }
  if personal then
    return { type = "Registered", data = data, subject = string.format("c%07d", i % SUBJECTS), personal = who }
  end
  data.name, data.email = who.name, who.email
  return { type = "Registered", data = data }
end

-- Batches prepared before the clock starts, so both sides time only the appends.
local function batches(personal)
  local out, i = {}, 0
  while i < N do
    local by_stream, entries = {}, {}
    for _ = 1, math.min(BATCH, N - i) do
      i = i + 1
      local stream = string.format("customer-%07d", i % STREAMS)
      local e = by_stream[stream]
      if not e then e = { stream = stream, events = {} }; by_stream[stream] = e; entries[#entries + 1] = e end
      e.events[#e.events + 1] = events_of(i, personal)
    end
    out[#out + 1] = entries
  end
  return out
end

local prepared = { plain = batches(false), personal = batches(true) }
-- One event of each subject, for the warm stores (written untimed).
local function warmup(personal)
  local entries = {}
  for i = 1, SUBJECTS do
    entries[#entries + 1] = { stream = string.format("warm-%07d", i), events = { events_of(i, personal) } }
  end
  return entries
end
local warm = { plain = warmup(false), personal = warmup(true) }
local last = {}

-- CPU seconds of the last bench.time call, by case name, one per round.
local cpu = {}
local function time(name, fn)
  local c0
  local t = bench.time(function() c0 = bench.cpu(); fn() end)
  local list = cpu[name] or {}
  cpu[name] = list
  list[#list + 1] = bench.cpu() - c0
  return t
end

local function cpu_result(name, subject, baseline)
  bench.result(name .. "_cpu", N / bench.min(cpu[subject]), N / bench.min(cpu[baseline]), "events/s", 1 / 1.5,
               bench.ratios(cpu, baseline, subject))
end

local function append_case(kind, warmed)
  return function()
    local dir = bench.scratch(kind)
    local store = assert(chronicle.open(dir, { durability = "nosync" }))
    if warmed then assert(store:append_many(warm[kind])) end
    local t = time("append_" .. kind .. (warmed and "_warm" or ""), function()
      for _, b in ipairs(prepared[kind]) do assert(store:append_many(b)) end
    end)
    if warmed then store:close(); return t end
    if last[kind] then last[kind]:close() end
    last[kind] = store
    return t
  end
end

local function fold_case(kind, field)
  return function()
    local store = last[kind]
    local n = 0
    local t = time("fold_" .. kind, function()
      store:fold({}, 0, function(_, ev)
        local who = ev[field]
        if who and who.name then n = n + 1 end
      end)
    end)
    assert(n == N, "fold saw " .. n .. " names")
    return t
  end
end

local function raw_fold()
  local h = rawget(last.plain, "_h")
  local n = 0
  local t = bench.time(function()
    h:fold({}, 0, function(_, ev) if ev.data.name then n = n + 1 end end)
  end)
  assert(n == N)
  return t
end

bench.note("personal: %d events, %d subjects, %d rounds", N, SUBJECTS, ROUNDS)
local got = bench.rotate({ "plain", "personal" },
  { plain = append_case("plain"), personal = append_case("personal") }, ROUNDS)
bench.result("append_personal", N / bench.min(got.personal), N / bench.min(got.plain), "events/s", 1 / 1.5,
             bench.ratios(got, "plain", "personal"))
cpu_result("append_personal", "append_personal", "append_plain")
got = bench.rotate({ "plain", "personal" },
  { plain = append_case("plain", true), personal = append_case("personal", true) }, ROUNDS)
bench.result("append_personal_warm", N / bench.min(got.personal), N / bench.min(got.plain), "events/s", 1 / 1.5,
             bench.ratios(got, "plain", "personal"))
cpu_result("append_personal_warm", "append_personal_warm", "append_plain_warm")
got = bench.rotate({ "plain", "personal" },
  { plain = fold_case("plain", "data"), personal = fold_case("personal", "personal") }, ROUNDS)
bench.result("fold_personal", N / bench.min(got.personal), N / bench.min(got.plain), "events/s", 1 / 1.5,
             bench.ratios(got, "plain", "personal"))
cpu_result("fold_personal", "fold_personal", "fold_plain")
got = bench.rotate({ "store", "handle" }, { store = fold_case("plain", "data"), handle = raw_fold }, ROUNDS)
bench.result("fold_wrapper", N / bench.min(got.store), N / bench.min(got.handle), "events/s", nil,
             bench.ratios(got, "handle", "store"))
last.plain:close(); last.personal:close()
bench.remove_scratch()
bench.cleanup()
