--- bench/append.lua: chronicle's appends against raw LMDB (bench/raw_lmdb.c),
-- measured in the same run, rounds alternating between the two.
--
--  * batched: BENCH_APPEND_TXNS appends of BENCH_BATCH (1,000) events of
--    ~200 bytes of data each (store:append(stream, events)), rotating over 10
--    streams, once per durability in BENCH_APPEND_SYNCS ("nosync full"),
--    against raw_lmdb batch with the same durability flags, the same number
--    of transactions and records, and records of exactly the size chronicle
--    stores. Target: >= 0.5 of raw (same bytes).
--  * durable: BENCH_DURABLE_COMMITS single-event appends with
--    durability = "full" against raw_lmdb durable (one record per fsync'd
--    transaction). Target: >= 0.8 of raw (same bytes).
--
-- The raw program is run twice per round: index=1 writes the same bytes as
-- chronicle (log record + stream_index + category_index + event_ids entries,
-- stream meta once per transaction): this is the baseline the targets use;
-- index=0 writes the log record alone (reported as *_vs_log, no target).
-- Both sides use the same 4 GiB map (no growth), MDB_NOTLS, and a fresh
-- store directory under the same scratch directory per measurement. Before
-- each measurement `sync` flushes what earlier ones left dirty, stores are
-- removed only at the end (on a filesystem mounted with `discard`, a large
-- rm slows the I/O that follows), and the order of the three measurements
-- rotates from round to round.
local B = require "benchlib"
local chronicle = B.chronicle()

local RAW = assert(os.getenv("BENCH_RAW"), "BENCH_RAW must name the raw_lmdb program (bench/run.sh sets it)")
local TXNS = B.env("BENCH_APPEND_TXNS", 200)
local BATCH = B.env("BENCH_BATCH", 1000)
local DURABLE = B.env("BENCH_DURABLE_COMMITS", 2000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local SYNCS = os.getenv("BENCH_APPEND_SYNCS") or "nosync full"
local STREAMS = 10
local MAP = 4 << 30
local NOTE_LEN = 97          -- data = 198 bytes of MessagePack

local names = {}
for i = 0, STREAMS - 1 do names[i] = "bench-" .. i end

-- Prebuilt event lists (built outside the timed loops), cycled.
local K = math.min(TXNS, 10)
local batches = {}
local seq = 0
for b = 1, K do
  local list = {}
  for j = 1, BATCH do
    seq = seq + 1
    list[j] = { type = "Deposited", data = B.event_data(seq, NOTE_LEN) }
  end
  batches[b] = list
end
local singles = {}
for j = 1, 100 do singles[j] = { { type = "Deposited", data = B.event_data(j, NOTE_LEN) } } end

local REC = B.record_size(names[0], batches[1][1])
for _, list in ipairs(batches) do
  for _, ev in ipairs(list) do assert(B.record_size(names[0], ev) == REC, "record sizes must be equal") end
end

local scratch = B.scratch

local function raw(mode, sync, index)
  local dir = scratch("raw")
  local cmd = string.format("%s %s %s txns=%d batch=%d commits=%d rec=%d sync=%s index=%d streams=%d map=%d",
                            B.shell_quote(RAW), B.shell_quote(dir), mode, TXNS, BATCH, DURABLE, REC, sync,
                            index, STREAMS, MAP)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local okc = p:close()
  local kv = B.parse_kv(out)
  if not okc or not kv.raw_eps then error("raw_lmdb failed: " .. cmd .. "\n" .. out) end
  return kv.raw_eps
end

local function open(sync)
  local dir = scratch("chronicle")
  local s = assert(chronicle.open(dir, { durability = sync, map_size = MAP }))
  return s
end

local function chron_batch(sync)
  local s = open(sync)
  local secs = B.time(function()
    for t = 0, TXNS - 1 do
      local r, err = s:append(names[t % STREAMS], batches[t % K + 1])
      if not r then error(tostring(err)) end
    end
  end)
  assert(s:head() == TXNS * BATCH)
  s:close()
  return TXNS * BATCH / secs
end

local function chron_durable()
  local s = open("full")
  local secs = B.time(function()
    for t = 0, DURABLE - 1 do
      local r, err = s:append(names[t % STREAMS], singles[t % 100 + 1])
      if not r then error(tostring(err)) end
    end
  end)
  assert(s:head() == DURABLE)
  s:close()
  return DURABLE / secs
end

B.note("append: %d rounds; batched %d txns x %d events; durable %d commits; record %d bytes (data %d)",
       ROUNDS, TXNS, BATCH, DURABLE, REC, B.mp_size(batches[1][1].data))

local function compare(label, run_chron, mode, sync, target)
  local same, logonly, chron, r_same, r_log = {}, {}, {}, {}, {}
  local runs = {
    function(r) same[r] = raw(mode, sync, 1) end,
    function(r) logonly[r] = raw(mode, sync, 0) end,
    function(r) chron[r] = run_chron() end,
  }
  for r = 1, ROUNDS do
    for k = 0, 2 do runs[(r - 1 + k) % 3 + 1](r) end
    r_same[r] = chron[r] / same[r]
    r_log[r] = chron[r] / logonly[r]
    B.note("%s round %d: chronicle %.0f/s, raw same-bytes %.0f/s, raw log-only %.0f/s", label, r, chron[r],
           same[r], logonly[r])
  end
  local unit = mode == "batch" and "events/s" or "commits/s"
  B.result(label, B.max(chron), B.max(same), unit, target, r_same)
  B.result(label .. "_vs_log", B.max(chron), B.max(logonly), unit, nil, r_log)
end

for sync in SYNCS:gmatch("%S+") do
  compare("append_batch_" .. sync, function() return chron_batch(sync) end, "batch", sync, 0.5)
end
if DURABLE > 0 then
  compare("append_durable_full", chron_durable, "durable", "full", 0.8)
end
B.remove_scratch()
B.cleanup()
