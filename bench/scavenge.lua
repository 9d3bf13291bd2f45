--- bench/scavenge.lua: store:scavenge removing half of a store, against appending as many events.
--
-- Each round loads BENCH_SCAVENGE_EVENTS events (default 100,000; the issue's size is
-- 1,000,000) over BENCH_STREAMS streams (default 1,000) into a fresh store (append_many,
-- nosync: not measured), reopens it with durability "full", and hides the older half of every
-- stream (max_count = half its events). Then, alternating:
--
--   subject   store:scavenge({batch = BENCH_SCAVENGE_BATCH (1,000)}): removes the hidden half,
--             one write transaction (and one fsync) per batch; events removed per second
--   baseline  appending the same number of events to the same kind of store, in append_many
--             transactions of the same size (1,000 events, one fsync each); events per second
--
-- ratio = removed/s over appended/s. Also printed: the longest time one scavenge
-- transaction held the write lock (the longest gap between two progress calls, which
-- come after each batch's commit), against the longest append_many transaction.
local B = require "benchlib"
local chronicle = B.chronicle()

local N = B.env("BENCH_SCAVENGE_EVENTS", 100000)
local NSTREAMS = B.env("BENCH_STREAMS", 1000)
local ROUNDS = B.env("BENCH_ROUNDS", 3)
local BATCH = B.env("BENCH_SCAVENGE_BATCH", 1000)
local TXN = 1000

-- A fresh store holding N events, open with durability "full".
local function loaded_store()
  local dir = B.scratch("scavenge")
  local s = assert(chronicle.open(dir, { durability = "nosync", map_size = 4 << 30 }))
  B.load(s, N, NSTREAMS, TXN)
  s:close()
  return assert(chronicle.open(dir, { durability = "full", map_size = 4 << 30 })), dir
end

local removed_rates, append_rates, lock_max, append_max = {}, {}, {}, {}

local cases = {
  scavenge = function()
    local s = loaded_store()
    for n = 0, NSTREAMS - 1 do
      assert(s:set_stream_metadata(B.stream_name(n), { max_count = N // NSTREAMS // 2 }))
    end
    local last, longest = B.now(), 0
    local t0 = B.now()
    local res = assert(s:scavenge({ batch = BATCH, progress = function()
      local t = B.now()
      if t - last > longest then longest = t - last end
      last = t
    end }))
    local secs = B.now() - t0
    assert(res.removed == N // 2, "removed " .. res.removed)
    assert(s:verify().ok)
    removed_rates[#removed_rates + 1] = res.removed / secs
    lock_max[#lock_max + 1] = longest
    s:close()
  end,
  append = function()
    local s = loaded_store()
    local names = {}
    for n = 0, NSTREAMS - 1 do names[n] = B.stream_name(n) end
    local k = math.min(100, NSTREAMS)
    local per, i, next_stream, longest = TXN // k, 0, 0, 0
    local t0 = B.now()
    while i < N // 2 do
      local entries = {}
      for e = 1, k do
        local events = {}
        for j = 1, per do
          i = i + 1
          events[j] = { type = B.TYPES[i % #B.TYPES + 1], data = B.event_data(i, i % 100) }
        end
        entries[e] = { stream = names[next_stream], events = events }
        next_stream = (next_stream + 1) % NSTREAMS
      end
      local t = B.now()
      assert(s:append_many(entries))
      if B.now() - t > longest then longest = B.now() - t end
    end
    append_rates[#append_rates + 1] = (N // 2) / (B.now() - t0)
    append_max[#append_max + 1] = longest
    s:close()
  end,
}

B.note("scavenge: %d events over %d streams, half hidden by max_count; batches of %d; %d rounds", N, NSTREAMS,
       BATCH, ROUNDS)
for _ = 1, ROUNDS do
  cases.append()
  cases.scavenge()
  B.remove_scratch()
end
local per_round = {}
for r = 1, ROUNDS do per_round[r] = removed_rates[r] / append_rates[r] end
B.result("scavenge_half", B.max(removed_rates), B.max(append_rates), "events/s", nil, per_round)
B.note("scavenge: longest write transaction %.1f ms (append_many of %d events: %.1f ms)",
       B.max(lock_max) * 1000, TXN, B.max(append_max) * 1000)
B.cleanup()
