-- Subprocess for bench/groups.lua.
--   handler TARGET NAME DELAY_MS LEASE SYNC [TRACE]: a runner serving handler NAME (each event
--     waits DELAY_MS, an I/O-bound side effect); exits when the group's low-water mark is the
--     head. SYNC is a path: once its store is open and its handler registered the member
--     appends a line to SYNC.ready and waits for the file SYNC.go (so the measurement leaves
--     out process start); when it sees the work done it appends the time (benchclock) to SYNC.done.
--   consumer TARGET NAME [many]: takes 50 at a time from subscription NAME and acks each
--     (with "many": acks the 50 with one ack_many); exits when the subscription is drained.
local chronicle = require "chronicle"
local mode, target, name = arg[1], arg[2], arg[3]
local store = assert(chronicle.open(target, { durability = "nosync" }))
if mode == "handler" then
  local delay = tonumber(arg[4]) / 1000
  -- TRACE (6th argument, a file): where this member's time went, one line appended at
  -- exit (bench/support_group_trace.lua wraps calls here; the library measures nothing)
  local sync, trace = arg[6], arg[7]
  local clock = require "benchclock"
  local t = trace and require("support_group_trace").start(store)
  local fn = function() store:wait(math.maxinteger - 1, delay) end
  if t then fn = t.wrap_handler(fn) end
  store:on("Placed", fn, { name = name })
  local runner = chronicle.runner(store, { lease = tonumber(arg[5]), wait = 0.02 })
  local function append(path, line)
    local f = assert(io.open(path, "a"))
    f:write(line, "\n")
    f:close()
  end
  append(sync .. ".ready", "ready")
  local limit = clock.now() + 60
  while not io.open(sync .. ".go", "r") do
    assert(clock.now() < limit, "no go")
    store:wait(math.maxinteger - 1, 0.0005)
  end
  if t then t.go = clock.now() end
  local head = store:head()
  while (store:kv_get("checkpoints", "h:" .. name) or 0) < head do
    if t then t.pass(runner) else runner:run_once() end
    store:wait(store:head(), math.min(0.02, runner:until_beat()))   -- as Runner:run naps
  end
  append(sync .. ".done", ("%.6f"):format(clock.now()))
  runner:leave()
  if t then t.finish(trace) end
else
  local sub = assert(store:subscription(name))
  local many = arg[4] == "many"
  while true do
    local _, list = sub:take(50, { wait = 0.05 })
    if many then
      local n, refused = assert(sub:ack_many(list))
      assert(n == #list and #refused == 0)
    else
      for _, ev in ipairs(list) do assert(sub:ack(ev)) end
    end
    if #list == 0 then
      local st = sub:status()
      if st.lag == 0 and st.in_flight == 0 then break end
    end
  end
end
store:close()
