-- bench/postgres.lua: chronicle on PostgreSQL (fsync on) against raw libpq (bench/raw_pq.c) doing
-- the least SQL the same work needs, in the same run, on the same server:
--   W1 batched append (BENCH_PG_TXNS appends of BENCH_BATCH events), W2 single durable appends
--   with an expected version (BENCH_PG_COMMITS), W3 loads of 100-event streams (BENCH_PG_LOADS),
--   W4 replay of the whole log in position order.
-- Needs CHRONICLE_PG_URL (a server to use) or starts its own (scripts/pg_cluster.sh), and
-- BENCH_RAW_PQ (the built baseline) or builds it. Run: lua5.4 bench/postgres.lua (from the root,
-- with the tree on LUA_PATH/LUA_CPATH as bench/run.sh sets them).
local chronicle = require "chronicle"

local function env(name, default) return tonumber(os.getenv(name)) or default end
local TXNS, BATCH = env("BENCH_PG_TXNS", 20), env("BENCH_BATCH", 1000)
local COMMITS = env("BENCH_PG_COMMITS", 300)
local STREAMS, LOADS = env("BENCH_PG_STREAMS", 100), env("BENCH_PG_LOADS", 2000)

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local cluster
local url = os.getenv("CHRONICLE_PG_URL")
if not url then
  cluster = assert(sh("bash scripts/pg_cluster.sh start")):gsub("%s+$", "")
  url = assert(io.open(cluster .. "/url")):read("l")
end
local raw = os.getenv("BENCH_RAW_PQ")
if not raw then
  raw = os.tmpname()
  assert(os.execute("cc -O2 -Wall -Wextra -Werror -I/usr/include/postgresql -o " .. raw .. " bench/raw_pq.c -lpq"))
end

local tag = string.format("%d_%d", os.time() % 100000, math.random(0, 99999))
local cschema, rschema = "bench_c_" .. tag, "bench_r_" .. tag

local function now() return chronicle.now() / 1e9 end

local function run_raw(mode, n, m)
  local out, ok = sh(string.format("%s '%s' %s %s %s %s 2>&1", raw, url, rschema, mode, tostring(n or ""),
                                   tostring(m or "")))
  assert(ok, "raw_pq " .. mode .. " failed: " .. out)
  return tonumber(out:match("seconds=([%d.]+)"))
end

local function result(name, subject, baseline, unit, target)
  local ratio = subject / baseline
  print(string.format("result name=%s subject=%.1f baseline=%.1f unit=%s ratio=%.3f target=%s status=%s",
                      name, subject, baseline, unit, ratio, target and string.format("%.2f", target) or "-",
                      target and (ratio >= target and "ok" or "MISS") or "-"))
  io.stdout:flush()
end

local data = { account = "acct-0001", amount = 500, currency = "EUR", note = "a note of bytes", seq = 1, ok = true,
               rate = 1.0, ref = "ref-0001" }

local store = assert(chronicle.open(url .. "?schema=" .. cschema))
run_raw("setup")

-- W1: batched appends.
local events = {}
for i = 1, BATCH do events[i] = { type = "Deposited", data = data } end
local t = now()
for i = 1, TXNS do assert(store:append("batch-" .. i, events)) end
local c_w1 = TXNS * BATCH / (now() - t)
local r_w1 = TXNS * BATCH / run_raw("batch", TXNS, BATCH)
result("pg_w1_batch", c_w1, r_w1, "events/s")

-- W2: single durable appends with an expected version.
local version = {}
t = now()
for i = 1, COMMITS do
  local s = "acct-" .. i % 10
  local v = version[s]
  assert(store:append(s, { { type = "Deposited", data = data } }, v or chronicle.NO_STREAM))
  version[s] = (v or -1) + 1
end
local c_w2 = COMMITS / (now() - t)
local r_w2 = COMMITS / run_raw("durable", COMMITS)
result("pg_w2_durable", c_w2, r_w2, "commits/s", 0.8)

-- W3: 100-event stream loads (setup outside the timing, in both).
for i = 0, STREAMS - 1 do
  local evs = {}
  for j = 1, 100 do evs[j] = { type = "Deposited", data = data } end
  assert(store:append("load-" .. i, evs))
end
local rows = {}
for j = 1, 100 do rows[j] = "('load-%d', " .. (j - 1) .. ", '\\x01')" end
for i = 0, STREAMS - 1 do
  local vals = {}
  for j = 1, 100 do vals[j] = rows[j]:format(i) end
  sh(string.format("psql -qAtX '%s' -c \"SET search_path TO %s; INSERT INTO ev (stream, version, data) VALUES %s\"",
                   url, rschema, table.concat(vals, ",")))
end
t = now()
local n = 0
for i = 1, LOADS do
  for _ in store:read("load-" .. i % STREAMS) do n = n + 1 end
end
local c_w3 = LOADS / (now() - t)
local r_w3 = LOADS / run_raw("load", LOADS, STREAMS)
result("pg_w3_load100", c_w3, r_w3, "loads/s")

-- W4: replay of the whole log.
local head = store:head()
t = now()
n = 0
for _ in store:read_all() do n = n + 1 end
assert(n == head)
local c_w4 = n / (now() - t)
local r_w4 = n / run_raw("replay")
result("pg_w4_replay", c_w4, r_w4, "events/s")

store:close()
sh(string.format("psql -qAtX '%s' -c 'DROP SCHEMA %s CASCADE; DROP SCHEMA %s CASCADE' 2>&1", url, cschema, rschema))
if cluster then sh("bash scripts/pg_cluster.sh stop '" .. cluster .. "'") end
if not os.getenv("BENCH_RAW_PQ") then os.remove(raw) end
