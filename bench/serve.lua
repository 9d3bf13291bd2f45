--- bench/serve.lua: durable appends through `chronicle serve` (group commit)
-- against in-process `store:append` on the same disk, in the same run.
--
--   serve_append_c1/c8/c64   single-event appends over HTTP from 1, 8 and 64
--                            keep-alive clients (wrk), durability "full",
--                            against the in-process single-writer loop of
--                            durable single-event appends (target at 64
--                            clients: >= 5, thanks to group commit)
--   serve_batch100_c8        100 events per request from 8 clients, events/s,
--                            against in-process appends of 100-event batches
--   serve_commits_per_append the server's commits / appends at 64 clients
--                            (from /metrics; lower means more grouping)
--   serve_sse_p50/p99        delivery latency of an append to 100 SSE subscribers
--                            (µs), against one process reading with store:wait
--
-- BENCH_SERVE_SECONDS (default 5) is each wrk run's length; BENCH_DURABLE_COMMITS
-- the in-process baseline's appends. Needs wrk (Debian package wrk).
local B = require "benchlib"
local chronicle = B.chronicle()

local SECONDS = B.env("BENCH_SERVE_SECONDS", 5)
local COMMITS = B.env("BENCH_DURABLE_COMMITS", 2000)
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "bench"
local root = here:gsub("/?bench$", "")
if root == "" then root = "." end

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

if not sh("command -v wrk"):find("wrk") then
  B.note("serve: wrk is not installed (apt-get install wrk): skipped")
  print("result name=serve skipped=1")
  return
end

-- The in-process baselines, on a store of their own.
local function in_process(batch, count)
  local s = assert(chronicle.open(B.fresh_dir("serve-base-" .. batch), { durability = "full" }))
  local events = {}
  for i = 1, batch do events[i] = { type = "Tick", data = { n = i, note = "a small event over http" } } end
  local t = B.time(function()
    for i = 1, count do assert(s:append("tick-" .. (i % 1000), events)) end
  end)
  s:close()
  return count * batch / t
end

local token = "bench-token-" .. chronicle.uuid()
local token_file = B.tmp .. "/serve-token"
local f = assert(io.open(token_file, "w"))
f:write(token)
f:close()

-- Starts the server on a fresh store (its directory left in last_dir); returns its port and pid.
local last_dir
local function start_server(name)
  local dir, log = B.fresh_dir(name), B.tmp .. "/" .. name .. ".log"
  last_dir = dir
  local pid = sh(("timeout 600 lua5.4 %s/bin/chronicle serve %s --listen 127.0.0.1:0 --token-file %s > %s 2>&1 & echo $!")
    :format(root, dir, token_file, log)):match("%d+")
  for _ = 1, 200 do
    local lf = io.open(log)
    local text = lf and lf:read("a") or ""
    if lf then lf:close() end
    local port = text:match("listening on http://127%.0%.0%.1:(%d+)")
    if port then return port, pid end
    os.execute("sleep 0.05")
  end
  error("serve: the server did not start: see " .. log)
end

local function wrk(port, clients, events)
  local out = sh(("WRK_TOKEN=%s WRK_EVENTS=%d wrk -t %d -c %d -d %ds -s %s/bench/serve_post.lua http://127.0.0.1:%s/ 2>&1")
    :format(token, events, math.min(2, clients), clients, SECONDS, root, port))
  local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)") or "0")
  if not rps or non2xx > 0 then error("serve: wrk failed or got errors:\n" .. out) end
  return rps
end

local function metric(port, name)
  return tonumber(sh(("curl -s http://127.0.0.1:%s/metrics"):format(port)):match("\n" .. name .. " (%d+)"))
end

local base_single = in_process(1, COMMITS)
B.note("serve: in-process durable single-event appends %.0f/s", base_single)
for _, clients in ipairs({ 1, 8, 64 }) do
  local port, pid = start_server("serve-c" .. clients)
  local rps = wrk(port, clients, 1)
  if clients == 64 then
    local commits, appends = metric(port, "chronicle_commits_total"), metric(port, "chronicle_appends_total")
    B.note("serve: 64 clients: %d appends in %d commits (%.1f appends per commit)", appends, commits, appends / commits)
    print(string.format("result name=serve_commits_per_append subject=%.4f baseline=1 unit=ratio ratio=%.4f target=- status=-",
                        commits / appends, commits / appends))
  end
  os.execute("kill " .. pid)
  B.result("serve_append_c" .. clients, rps, base_single, "appends/s", clients == 64 and 5 or nil)
end

-- SSE delivery: 100 subscribers in another process; this process appends
-- pings stamped with their send time, 10 to 30 ms apart. Baseline: one
-- process reading through store:wait (the quickest a reader on this host can
-- learn of an append), the same pings, in the same run.
local SUBSCRIBERS, PINGS = B.env("BENCH_SSE_SUBSCRIBERS", 100), B.env("BENCH_SSE_PINGS", 100)
local function percentile(list, p)
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))]
end
local function ping_loop(s)
  for _ = 1, PINGS do
    os.execute(("sleep %.3f"):format(0.01 + math.random() * 0.02))
    assert(s:append("ping-1", { { type = "Ping", data = { sent = chronicle.now() } } }))
  end
end
do
  local port_sse, pid_sse = start_server("serve-sse")
  local dir = last_dir
  local out = B.tmp .. "/sse.out"
  sh(("timeout 300 lua5.4 %s/bench/sse_subscribers.lua %s 1 %d %d > %s 2>&1 &"):format(root, port_sse, SUBSCRIBERS, PINGS, out))
  for _ = 1, 600 do
    local f2 = io.open(out)
    local text = f2 and f2:read("a") or ""
    if f2 then f2:close() end
    if text:find("ready") then break end
    os.execute("sleep 0.05")
  end
  local s = assert(chronicle.open(dir))
  ping_loop(s)
  s:close()
  local lat = {}
  for _ = 1, 200 do
    lat = {}
    for line in io.lines(out) do if line:match("^%d+$") then lat[#lat + 1] = tonumber(line) end end
    if #lat >= SUBSCRIBERS * PINGS then break end
    os.execute("sleep 0.05")
  end
  os.execute("kill " .. pid_sse)
  -- baseline: a child process waiting with store:wait
  local bdir = B.fresh_dir("serve-sse-base")
  local bs = assert(chronicle.open(bdir))
  assert(bs:append("ping-0", { { type = "Start" } }))
  local bout = B.tmp .. "/sse-base.out"
  local child = ([[local c = require "chronicle"; local s = assert(c.open(%q)); local head, n = s:head(), 0
    io.stdout:write("ready\n"); io.stdout:flush()
    while n < %d do local h = s:wait(head, 10); if not h then break end
      for ev in s:read_all({ from = head + 1 }) do io.stdout:write((c.now() - ev.data.sent) // 1000, "\n"); n = n + 1 end
      io.stdout:flush(); head = h end]]):format(bdir, PINGS)
  local cf = assert(io.open(B.tmp .. "/sse-base.lua", "w"))
  cf:write(child)
  cf:close()
  sh(("timeout 120 lua5.4 %s/sse-base.lua > %s 2>&1 &"):format(B.tmp, bout))
  for _ = 1, 200 do
    local f3 = io.open(bout)
    local text = f3 and f3:read("a") or ""
    if f3 then f3:close() end
    if text:find("ready") then break end
    os.execute("sleep 0.05")
  end
  ping_loop(bs)
  bs:close()
  os.execute("sleep 0.5")
  local base, other = {}, {}
  for line in io.lines(bout) do
    if line:match("^%d+$") then base[#base + 1] = tonumber(line) elseif line ~= "ready" then other[#other + 1] = line end
  end
  if #other > 0 then B.note("serve: the store:wait reader said: %s", table.concat(other, " / ")) end
  B.note("serve: SSE: %d deliveries to %d subscribers (of %d), baseline %d", #lat, SUBSCRIBERS, SUBSCRIBERS * PINGS, #base)
  if #lat > 0 and #base > 0 then
    local p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    local b50, b99 = percentile(base, 0.5), percentile(base, 0.99)
    print(string.format("result name=serve_sse_p50 subject=%d baseline=%d unit=us ratio=%.3f target=- status=-", p50, b50, b50 / p50))
    print(string.format("result name=serve_sse_p99 subject=%d baseline=%d unit=us ratio=%.3f target=- status=-", p99, b99, b99 / p99))
  end
end

local base_batch = in_process(100, math.max(100, COMMITS // 4))
local port, pid = start_server("serve-batch")
local rps = wrk(port, 8, 100)
os.execute("kill " .. pid)
B.result("serve_batch100_c8", rps * 100, base_batch, "events/s", nil)
B.cleanup()
