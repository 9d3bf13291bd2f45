--- bench/fold.lua: store:fold over the whole log against a plain Lua loop.
--
-- Loads BENCH_EVENTS events (default 1,000,000; durability "nosync",
-- append_many transactions of 1,000 events) over BENCH_STREAMS streams
-- (default 1,000) in 4 categories, 5 event types, data a flat 8-field map of
-- 101-201 bytes. Then, in rounds alternating subject and baseline:
--
--   fold_all       store:fold({}, state, fn) over every event     target >= 0.6
--   fold_category  store:fold({category = "account"}, ...)         (1/4 of the events)
--   fold_types     store:fold({types = {"Deposited"}}, ...)        (1/5 of the events)
--   read_all_iter  for ev in store:read_all() do fn(state, ev) end
--   fold_all_fair  fold_all against the fair baseline: the same tables, but
--                  every string of an event (stream, type, id and the data's
--                  four strings) made anew from bytes, as any reader of
--                  stored data must; the plain baseline copies references
--                  to strings that already exist                 target >= 0.8
--   fold_fields    store:fold({fields = {"type", "data"}}, ...): a reader
--                  that names the fields it uses, against the fair baseline
--                  building {type=, data=} tables the same way
--   fold_all_numbers  fold_all again over a second store whose events carry
--                  the same 8 fields as numbers and booleans, so that the
--                  event id is the only string made per event (no target: it
--                  shows how much of fold_all's time goes to making the
--                  payload's strings, which the baseline reuses)
--
-- The baseline of each is a plain Lua loop over a prebuilt array of the
-- same event tables (read from the store beforehand, so the contents are
-- identical, and kept alive during both measurements): per event it builds a
-- new table of the same shape, {position=, stream=, version=, type=, time=,
-- id=, schema=, meta=, data={8 fields copied one by one}}, and calls the same
-- fn(state, event), keeping the state when fn returns nil, as fold does. The
-- category and types baselines loop over exactly the events the fold
-- yields. ratio = baseline_time / fold_time.
--
-- BENCH_FOLD_BASE_ROWS=n (default 10,000) is how many prebuilt events the
-- baseline holds; it cycles over them to build as many tables as the fold
-- yields. 0 holds all of them (1,000,000 tables, ~1.2 GB of Lua heap): then
-- whether a major GC cycle of that heap falls inside a measurement makes the
-- timings jump by 2x, so the default keeps the live heap small and the GC
-- work proportional to the allocation on both sides. A smaller source array
-- also stays warmer in the cache, which favours the baseline (a stricter test).
local B = require "benchlib"
local chronicle = B.chronicle()

local N = B.env("BENCH_EVENTS", 1000000)
local NSTREAMS = B.env("BENCH_STREAMS", 1000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local BASE_ROWS = B.env("BENCH_FOLD_BASE_ROWS", 10000)
local BATCH = 1000

local dir = B.fresh_dir("fold")
local s = assert(chronicle.open(dir, { durability = "nosync", map_size = 4 << 30 }))
local load_secs = B.load(s, N, NSTREAMS, BATCH)
assert(s:head() == N)
B.note("fold: loaded %d events over %d streams in %.2f s (%.0f events/s, append_many nosync); %d rounds",
       N, NSTREAMS, load_secs, N / load_secs, ROUNDS)

local function fn(st, ev)
  st.n = st.n + 1
  st.sum = st.sum + ev.data.amount
  local bt = st.by_type
  local t = ev.type
  bt[t] = (bt[t] or 0) + 1
end

local function new_state() return { n = 0, sum = 0, by_type = {} } end

-- The prebuilt rows: the store's own event tables.
local rows, cat_rows, type_rows = {}, {}, {}
do
  local limit = BASE_ROWS > 0 and BASE_ROWS or N
  for ev in s:read_all({ count = limit }) do
    rows[#rows + 1] = ev
  end
  -- the category and types baselines use events those folds yield
  local cat_limit = BASE_ROWS > 0 and BASE_ROWS or math.huge
  for ev in s:read_all({ category = "account" }) do
    if #cat_rows >= cat_limit then break end
    cat_rows[#cat_rows + 1] = ev
  end
  for ev in s:read_all({ types = { "Deposited" } }) do
    if #type_rows >= cat_limit then break end
    type_rows[#type_rows + 1] = ev
  end
end

-- Builds `total` event tables from rows (cycling) and folds them with fn.
local function baseline(src, total, state)
  local nrows, i = #src, 0
  for _ = 1, total do
    i = i + 1
    if i > nrows then i = 1 end
    local r = src[i]
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

-- The fair baseline's source: per event one blob holding its strings back to
-- back and the places to cut them, plus its numbers. Taken from events the
-- plain baseline does not hold, so no cut finds its string already made.
local STRINGS = { "stream", "type", "id", "account", "currency", "note", "ref" }
local function fair_source(from, limit)
  local out = {}
  for ev in s:read_all({ from = from, count = limit }) do
    local d, parts, cuts, at = ev.data, {}, {}, 1
    for i, f in ipairs(STRINGS) do
      local v = ev[f] or d[f]
      parts[i], cuts[2 * i - 1], cuts[2 * i] = v, at, at + #v - 1
      at = at + #v
    end
    out[#out + 1] = { blob = table.concat(parts), cuts = cuts, position = ev.position, version = ev.version,
                      time = ev.time, schema = ev.schema, amount = d.amount, seq = d.seq, ok = d.ok, rate = d.rate }
  end
  return out
end

local function fair_baseline(src, total, state)
  local nrows, i, sub = #src, 0, string.sub
  for _ = 1, total do
    i = i + 1
    if i > nrows then i = 1 end
    local r = src[i]
    local b, c = r.blob, r.cuts
    local ev = {
      position = r.position, stream = sub(b, c[1], c[2]), version = r.version, type = sub(b, c[3], c[4]),
      time = r.time, id = sub(b, c[5], c[6]), schema = r.schema,
      data = {
        account = sub(b, c[7], c[8]), amount = r.amount, currency = sub(b, c[9], c[10]), note = sub(b, c[11], c[12]),
        seq = r.seq, ok = r.ok, rate = r.rate, ref = sub(b, c[13], c[14]),
      },
    }
    local new = fn(state, ev)
    if new ~= nil then state = new end
  end
  return state
end

-- The same for a fold that asks for type and data only.
local function fair_fields_baseline(src, total, state)
  local nrows, i, sub = #src, 0, string.sub
  for _ = 1, total do
    i = i + 1
    if i > nrows then i = 1 end
    local r = src[i]
    local b, c = r.blob, r.cuts
    local ev = {
      type = sub(b, c[3], c[4]),
      data = {
        account = sub(b, c[7], c[8]), amount = r.amount, currency = sub(b, c[9], c[10]), note = sub(b, c[11], c[12]),
        seq = r.seq, ok = r.ok, rate = r.rate, ref = sub(b, c[13], c[14]),
      },
    }
    local new = fn(state, ev)
    if new ~= nil then state = new end
  end
  return state
end

local function check(a, b, what)
  if a.n ~= b.n or a.sum ~= b.sum then
    error(string.format("%s: baseline and fold disagree (n %d vs %d, sum %d vs %d)", what, a.n, b.n, a.sum, b.sum))
  end
end

local function compare(label, query, src, iterate, target, base)
  base = base or baseline
  local base_eps, sub_eps, ratios = {}, {}, {}
  local expected
  for r = 1, ROUNDS do
    local st_fold, count
    local t_fold = B.time(function()
      if iterate then
        st_fold, count = new_state(), 0
        for ev in s:read_all(query) do
          local new = fn(st_fold, ev)
          if new ~= nil then st_fold = new end
          count = count + 1
        end
      else
        local err
        st_fold, count, err = s:fold(query, new_state(), fn)
        if not st_fold then error(tostring(count or err)) end
      end
    end)
    expected = count
    local st_base
    local t_base = B.time(function() st_base = base(src, count, new_state()) end)
    if #src == count then check(st_base, st_fold, label) end
    sub_eps[r], base_eps[r] = count / t_fold, count / t_base
    ratios[r] = t_base / t_fold
    B.note("%s round %d: %d events, chronicle %.3f s (%.0f/s), baseline %.3f s (%.0f/s)", label, r, count,
           t_fold, sub_eps[r], t_base, base_eps[r])
  end
  B.result(label, B.max(sub_eps), B.max(base_eps), "events/s", target, ratios)
  return expected
end

-- One untimed pass maps the store's pages into this process (the first
-- touch of each page of the map is a page fault), and warms both code paths.
local warm = B.time(function() s:fold({}, 0, function() end) end)
baseline(rows, #rows, new_state())
collectgarbage("collect")
B.note("fold: warm-up fold (empty fn) %.3f s; baseline holds %d + %d + %d prebuilt event tables; Lua heap %.0f MB",
       warm, #rows, #cat_rows, #type_rows, collectgarbage("count") / 1024)

compare("fold_all", {}, rows, false, 0.6)
compare("fold_category", { category = "account" }, cat_rows, false, nil)
compare("fold_types", { types = { "Deposited" } }, type_rows, false, nil)
compare("read_all_iter", {}, rows, true, nil)
do
  local limit = BASE_ROWS > 0 and BASE_ROWS or N
  local fair = fair_source(limit + 1 <= N // 2 and limit + 1 or 1, limit)
  fair_baseline(fair, #fair, new_state())
  compare("fold_all_fair", {}, fair, false, 0.8, fair_baseline)
  compare("fold_fields", { fields = { "type", "data" } }, fair, false, nil, fair_fields_baseline)
end

rows, cat_rows, type_rows = nil, nil, nil
s:close()
B.rm(dir)

-- The same shape with no string in the data: account, currency, note and
-- ref become integers.
do
  local ndir = B.fresh_dir("fold-numbers")
  local ns = assert(chronicle.open(ndir, { durability = "nosync", map_size = 4 << 30 }))
  B.load(ns, N, NSTREAMS, BATCH, function(i)
    local d = B.event_data(i, 0)
    d.account, d.currency, d.note, d.ref = i % 1000000, 978, i % 100, (i * 2654435761) % 0x100000000
    return d
  end)
  s = ns
  local nrows = {}
  for ev in ns:read_all({ count = BASE_ROWS > 0 and BASE_ROWS or N }) do nrows[#nrows + 1] = ev end
  ns:fold({}, 0, function() end)
  compare("fold_all_numbers", {}, nrows, false, nil)
  nrows = nil
  ns:close()
  B.rm(ndir)
end
B.cleanup()
