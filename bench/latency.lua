--- bench/latency.lua: how soon another process sees an append.
--
-- One process (this one) appends `Ping` events one at a time, each carrying
-- its send time, `data.sent = chronicle.now()` (CLOCK_REALTIME in ns, the
-- same clock in every process), taken just before `store:append`. Another
-- process (this script started again as a child) computes `now() - sent` when
-- it sees the event:
--
--   wait    the child loops on `store:wait(head, 10)` and reads the new
--           events with `read_all{from = head + 1}`;
--   runner  the child runs `chronicle.runner(store):run()` with an event
--           handler on Ping (`store:on`), which takes the time.
--
-- BENCH_LATENCY_SAMPLES pings (default 200) per case, with a pause of 5 to
-- 25 ms (uniformly random) before each, so the receiver is asleep in
-- store:wait when the ping comes. Each case uses a new store, once per
-- durability of the appender in BENCH_LATENCY_SYNCS ("nosync full"; the
-- runner child's checkpoints use the same durability).
--
-- Baseline, measured in the same run just before each cross-process case,
-- with the same pauses: the in-process round trip of the same work:
--   wait    stamp, append, store:wait(head) (returns at once), read the event, now() - sent;
--   runner  stamp, append, store:wait(head), runner:run_once() whose handler takes the time.
-- Rows latency_<mode>_<durability>_p50 / _p99 use that round trip as the
-- baseline. Rows _p50_vs_work use the same round trip minus the time spent
-- inside store:wait (which, returning at once, should cost nothing), i.e.
-- the append, the read and the handler: the ratio is then the share of the
-- cross-process latency that the work itself explains, the rest being the
-- wake-up of the other process. For this benchmark the figures are latencies
-- in microseconds (lower is better), p50 and p99 (the 198th of 200 samples;
-- with 50 it is the largest), and the ratio is baseline_us / subject_us, so
-- 1.0 means "as fast as in-process". No target: the aim is to measure it
-- ("within milliseconds").
local chronicle = require "chronicle"

---------------------------------------------------------------------------
-- The receiving side (this script run as a child: latency.lua child MODE DIR SYNC)

if arg[1] == "child" then
  local mode, dir, sync = arg[2], arg[3], arg[4]
  local s = assert(chronicle.open(dir, { durability = sync }))
  local lats = {}
  if mode == "wait" then
    local head = s:head()
    print("ready " .. head)
    io.stdout:flush()
    local done = false
    while not done do
      local got = s:wait(head, 10)
      if not got then error("latency child: no event for 10 s") end
      for ev in s:read_all({ from = head + 1, to = got }) do
        if ev.type == "Ping" then lats[#lats + 1] = chronicle.now() - ev.data.sent
        elseif ev.type == "Stop" then done = true end
      end
      head = got
    end
  else
    local runner = chronicle.runner(s)
    local start = s:head()   -- the pings before it are the in-process baseline's
    s:on({ "Ping", "Stop" }, function(ev)
      if ev.position <= start then return end
      if ev.type == "Ping" then lats[#lats + 1] = chronicle.now() - ev.data.sent
      else runner:stop() end
    end, { name = "latency" })
    runner:run_once()
    print("ready " .. s:head())
    io.stdout:flush()
    assert(runner:run({ max_seconds = 600 }) == "stopped")
  end
  for _, l in ipairs(lats) do print("lat " .. l) end
  s:close()
  os.exit(0)
end

---------------------------------------------------------------------------
-- The appending side

local B = require "benchlib"

local SAMPLES = B.env("BENCH_LATENCY_SAMPLES", 200)
local SYNCS = os.getenv("BENCH_LATENCY_SYNCS") or "nosync full"
local LUA = arg[-1] or "lua5.4"

-- socket.sleep when LuaSocket is installed; otherwise waiting on a store
-- nobody writes to (which oversleeps: see the README on store:wait).
local sleep, sleeper, sleeper_dir
do
  local ok, socket = pcall(require, "socket")
  if ok and socket.sleep then
    sleep = socket.sleep
  else
    sleeper_dir = B.fresh_dir("sleeper")
    sleeper = assert(chronicle.open(sleeper_dir, { durability = "nosync" }))
    sleep = function(secs) sleeper:wait(0, secs) end
  end
end
math.randomseed(42)
local function pause() sleep(0.005 + math.random() * 0.020) end

local function percentile(t, p)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c[math.max(1, math.ceil(#c * p))]
end

local function ping(s, i)
  local r, err = s:append("ping-1", { { type = "Ping", data = { sent = chronicle.now(), seq = i } } })
  if not r then error(tostring(err and err.message or err)) end
  return r.position
end

-- In-process round trips (ns): the full ones, and the same minus the time
-- spent inside store:wait (what the work costs without the wake-up mechanism).
local function inprocess(mode, s)
  local lats, work = {}, {}
  local runner, waited
  if mode == "runner" then
    runner = chronicle.runner(s)
    local start = s:head()
    s:on("Ping", function(ev)
      if ev.position > start then
        local l = chronicle.now() - ev.data.sent
        lats[#lats + 1], work[#work + 1] = l, l - waited
      end
    end, { name = "inprocess" })
    runner:run_once()
  end
  for i = 1, SAMPLES do
    pause()
    local head = s:head()
    ping(s, i)
    local w0 = chronicle.now()
    local got = assert(s:wait(head, 1))
    waited = chronicle.now() - w0
    if mode == "wait" then
      for ev in s:read_all({ from = head + 1, to = got }) do
        local l = chronicle.now() - ev.data.sent
        lats[#lats + 1], work[#work + 1] = l, l - waited
      end
    else
      runner:run_once()
    end
  end
  if runner then s:unregister("inprocess") end
  assert(#lats == SAMPLES)
  return lats, work
end

-- Pings seen by a child process (ns).
local function crossprocess(mode, dir, s, sync)
  local env = string.format("env LUA_PATH=%s LUA_PATH_5_4=%s LUA_CPATH=%s LUA_CPATH_5_4=%s",
    B.shell_quote(package.path), B.shell_quote(package.path), B.shell_quote(package.cpath),
    B.shell_quote(package.cpath))
  local cmd = string.format("%s %s %s child %s %s %s", env, B.shell_quote(LUA), B.shell_quote(arg[0]), mode,
    B.shell_quote(dir), sync)
  local p = assert(io.popen(cmd, "r"))
  local ready = p:read("l")
  if not ready or not ready:match("^ready") then error("latency child did not start: " .. tostring(ready)) end
  for i = 1, SAMPLES do
    pause()
    ping(s, i)
  end
  sleep(0.05)
  assert(s:append("ping-1", { { type = "Stop" } }))
  local lats = {}
  for line in p:lines() do
    local v = line:match("^lat (%d+)")
    if v then lats[#lats + 1] = tonumber(v) end
  end
  local ok = p:close()
  if not ok or #lats ~= SAMPLES then error(("latency child (%s) failed: %d of %d samples"):format(mode, #lats, SAMPLES)) end
  return lats
end

local function result(name, subject_us, baseline_us)
  print(string.format("result name=%s subject=%.1f baseline=%.1f unit=us ratio=%.3f target=- status=-",
    name, subject_us, baseline_us, baseline_us / subject_us))
  io.stdout:flush()
end

B.note("latency: %d samples per case, pauses of 5-25 ms, durabilities: %s", SAMPLES, SYNCS)
local dirs = {}
for sync in SYNCS:gmatch("%S+") do
  for _, mode in ipairs({ "wait", "runner" }) do
    local dir = B.fresh_dir("latency-" .. mode)
    dirs[#dirs + 1] = dir
    local s = assert(chronicle.open(dir, { durability = sync }))
    ping(s, 0)
    local base, work = inprocess(mode, s)
    local cross = crossprocess(mode, dir, s, sync)
    s:close()
    local bp50, bp99 = percentile(base, 0.5) / 1e3, percentile(base, 0.99) / 1e3
    local cp50, cp99 = percentile(cross, 0.5) / 1e3, percentile(cross, 0.99) / 1e3
    local wp50, wp99 = percentile(work, 0.5) / 1e3, percentile(work, 0.99) / 1e3
    B.note("latency %s %s: cross-process p50 %.3f ms, p99 %.3f ms, max %.3f ms; in-process p50 %.3f ms, " ..
           "p99 %.3f ms; in-process minus the time inside store:wait p50 %.3f ms, p99 %.3f ms",
           mode, sync, cp50 / 1e3, cp99 / 1e3, percentile(cross, 1) / 1e6, bp50 / 1e3, bp99 / 1e3,
           wp50 / 1e3, wp99 / 1e3)
    result(("latency_%s_%s_p50"):format(mode, sync), cp50, bp50)
    result(("latency_%s_%s_p99"):format(mode, sync), cp99, bp99)
    result(("latency_%s_%s_p50_vs_work"):format(mode, sync), cp50, wp50)
  end
end

if sleeper then sleeper:close(); dirs[#dirs + 1] = sleeper_dir end
for _, d in ipairs(dirs) do B.rm(d) end
B.cleanup()
