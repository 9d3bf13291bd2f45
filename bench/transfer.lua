--- bench/transfer.lua: `chronicle export` and `chronicle import`.
-- Exports BENCH_TRANSFER_EVENTS events (default 1,000,000) to JSON Lines and
-- imports them into an empty store, running the real command. Baselines,
-- measured in the same run: for export, a Lua loop over `read_all` writing
-- each event with plain `cjson.encode` (not lossless); for import, a Lua loop
-- appending the same events in 1,000-event `append_many` batches from tables
-- already in memory (no JSON to parse).
local B = require "benchlib"
local chronicle = B.chronicle()
local cjson = require "cjson"

local N = B.env("BENCH_TRANSFER_EVENTS", 1000000)
local root = os.getenv("PWD") or "."
local cli = "lua5.4 " .. B.shell_quote(root .. "/bin/chronicle")

local src = B.fresh_dir("transfer-src")
local s = assert(chronicle.open(src, { durability = "nosync", map_size = 4 << 30 }))
B.load(s, N, 1000, 1000)
s:close()
local file = B.tmp .. "/transfer.jsonl"

local export_secs = B.time(function()
  assert(os.execute(cli .. " export " .. B.shell_quote(src) .. " > " .. B.shell_quote(file)))
end)
local plain_secs = B.time(function()
  local store = assert(chronicle.open(src, { readonly = true }))
  local out = assert(io.open(B.tmp .. "/plain.jsonl", "w"))
  for ev in store:read_all() do out:write(cjson.encode(ev), "\n") end
  out:close()
  store:close()
end)
B.note("export: %d events in %.2f s (%.0f/s); plain cjson loop %.2f s", N, export_secs, N / export_secs, plain_secs)
B.result("export", N / export_secs, N / plain_secs, "events/s", nil)

local dst = B.fresh_dir("transfer-dst")
local import_secs = B.time(function()
  assert(os.execute(cli .. " import " .. B.shell_quote(dst) .. " " .. B.shell_quote(file) .. " > /dev/null"))
end)
local base = B.fresh_dir("transfer-base")
local base_secs = B.time(function()
  local store = assert(chronicle.open(base, { durability = "nosync", map_size = 4 << 30 }))
  B.load(store, N, 1000, 1000)
  store:close()
end)
B.note("import: %d events in %.2f s (%.0f/s); append_many loop %.2f s", N, import_secs, N / import_secs, base_secs)
B.result("import", N / import_secs, N / base_secs, "events/s", nil)
B.rm(src) B.rm(dst) B.rm(base) os.remove(file) os.remove(B.tmp .. "/plain.jsonl")
B.cleanup()
