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

-- Starts the server on a fresh store; returns its port and pid.
local function start_server(name)
  local dir, log = B.fresh_dir(name), B.tmp .. "/" .. name .. ".log"
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

local base_batch = in_process(100, math.max(100, COMMITS // 4))
local port, pid = start_server("serve-batch")
local rps = wrk(port, 8, 100)
os.execute("kill " .. pid)
B.result("serve_batch100_c8", rps * 100, base_batch, "events/s", nil)
B.cleanup()
