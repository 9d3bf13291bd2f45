-- Where a member's time goes (bench/support_group.lua with BENCH_GROUP_TRACE set).
-- Wraps, in the member process only, the handler, the store's write and fold
-- and the group's beat and changed; appends one `member key=value ...` line
-- (times in seconds of CLOCK_MONOTONIC, as benchclock.now gives them, so the
-- bench can put them against its own clock) to the trace file at exit.
-- BENCH_GROUP_TRACE_DEALS=1 also writes a line to stderr per beat: the member, when, how
-- long the beat took, the live members it saw, the partitions it holds, settled, the deal row.
local clock = require "benchclock"
local group = require "chronicle.read.group"

local M = {}

function M.start(store)
  local now = clock.now
  local t = { start = now(), handled = 0, busy = 0, beats = 0, beat_s = 0, writes = 0, write_s = 0,
              fold_s = 0, changed = 0, changed_s = 0, idle_passes = 0, idle_s = 0, owned_max = 0,
              deals = 0, partitions_handled = {}, streams = {} }
  local out = {}
  local write, fold = store.write, store.fold
  store.write = function(self, ops)
    local t0 = now()
    local a, b = write(self, ops)
    t.writes, t.write_s = t.writes + 1, t.write_s + (now() - t0)
    return a, b
  end
  store.fold = function(self, ...)
    local t0 = now()
    local r = table.pack(pcall(fold, self, ...))   -- a batch stopped early ends its fold with an error
    t.fold_s = t.fold_s + (now() - t0)
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end
  local beat, changed = group.Group.beat, group.Group.changed
  group.Group.beat = function(g)
    local t0 = now()
    local before = g.owned_count
    local a, b = beat(g)
    t.beats, t.beat_s = t.beats + 1, t.beat_s + (now() - t0)
    if g.owned_count > 0 and not t.first_owned then t.first_owned = now() end
    if g.owned_count ~= before then t.deals = t.deals + 1 end
    if os.getenv("BENCH_GROUP_TRACE_DEALS") then
      local l = {}
      for p in pairs(g.owned) do l[#l + 1] = p end
      table.sort(l)
      io.stderr:write(("%s %.3f took=%.1fms alive=%d owned=%s settled=%s d=%s\n"):format(g.me.id:sub(-4), now() - t.start, (now() - t0) * 1000, #(g.alive or {}),
        table.concat(l, ","), tostring(g.settled), tostring(g.store:kv_get(group.SPACE, g.pfx .. "d"))))
    end
    if g.owned_count > t.owned_max then t.owned_max = g.owned_count end
    t.owned_last = g.owned_count
    return a, b
  end
  group.Group.changed = function(g, n)
    local t0 = now()
    local r = changed(g, n)
    t.changed, t.changed_s = t.changed + 1, t.changed_s + (now() - t0)
    return r
  end
  function out.wrap_handler(fn)
    return function(ev)
      local t0 = now()
      if not t.first then t.first = t0 end
      fn(ev)
      local t1 = now()
      t.last, t.handled, t.busy = t1, t.handled + 1, t.busy + (t1 - t0)
      t.streams[ev.stream] = true
    end
  end
  -- A pass that found nothing to do, and the wait after it, is idle time.
  function out.pass(runner)
    local t0 = now()
    local n = runner:run_once()
    if n == 0 then t.idle_passes, t.idle_s = t.idle_passes + 1, t.idle_s + (now() - t0) end
  end
  function out.finish(path)
    t.exit = now()
    local streams = 0
    for _ in pairs(t.streams) do streams = streams + 1 end
    local f = assert(io.open(path, "a"))
    f:write(("member start=%.6f first_owned=%.6f first=%.6f last=%.6f exit=%.6f handled=%d streams=%d busy=%.6f "
      .. "beats=%d beat_s=%.6f writes=%d write_s=%.6f fold_s=%.6f changed=%d changed_s=%.6f idle_passes=%d "
      .. "idle_s=%.6f owned_max=%d owned_last=%d deals=%d\n"):format(
      t.start, t.first_owned or -1, t.first or -1, t.last or -1, t.exit, t.handled, streams, t.busy, t.beats,
      t.beat_s, t.writes, t.write_s, t.fold_s, t.changed, t.changed_s, t.idle_passes, t.idle_s, t.owned_max,
      t.owned_last or 0, t.deals))
    f:close()
  end
  return out
end

return M
