-- Subprocess: a hostile reactor (case arg[2]) next to a healthy one, in the
-- store in arg[1]; runs the runner until idle and prints what happened:
--   status <idle|...> head <n> healthy <n> events <n>
--   fault <reactor> <error>            (one line per faulted reactor)
-- The spec runs it under `timeout` and a file-size limit, so a reactor the
-- runner cannot stop fails the spec instead of hanging it or filling the disk.
local chronicle = require "chronicle"
local dir, case = arg[1], arg[2]
local store = assert(chronicle.open(dir, { durability = "nosync" }))

local cases = {}

-- An output whose expected version never holds.
cases.conflict = {
  name = "stale",
  handlers = { Ping = function() return { { stream = "target-1", type = "Pong", expected = 41 } } end },
}

-- Answers its own output type with 50 events.
cases.fanout = {
  name = "echo",
  handlers = { Ping = function(ev)
    local out = {}
    for i = 1, 50 do out[i] = { stream = "ping-" .. i, type = "Ping", data = { from = ev.id } } end
    return out
  end },
}

-- Answers its own output type with one event: a loop.
cases.loop = {
  name = "looper",
  handlers = { Ping = function() return { { stream = "ping-loop", type = "Ping" } } end },
}

-- Reuses one event id for every output.
local fixed_id = "01900000-0000-7000-8000-000000000001"
cases.duplicate = {
  name = "reuser",
  handlers = { Ping = function(ev) return { { stream = "dup-" .. ev.position, type = "Dup", id = fixed_id } } end },
}

-- Emits more than max_outputs events for one event.
cases.flood = {
  name = "flood", max_outputs = 20,
  handlers = { Ping = function()
    local out = {}
    for i = 1, 21 do out[i] = { stream = "flood-1", type = "Flooded", data = { i = i } } end
    return out
  end },
}

-- The same, one ctx:append at a time.
cases.flood_append = {
  name = "flood_append", max_outputs = 20,
  handlers = { Ping = function(_, ctx)
    for i = 1, 1000000 do ctx:append("flood-1", { { type = "Flooded", data = { i = i } } }) end
  end },
}

-- Runs a command whose event is the one it answers: a loop through an aggregate.
local Counter = chronicle.aggregate {
  name = "counter", initial = { n = 0 },
  apply = { Ping = function(state) state.n = state.n + 1 end },
  commands = { bump = function() return { type = "Ping" } end },
}
local counters = store:repository(Counter)
cases.loop_execute = {
  name = "bumper",
  handlers = { Ping = function(_, ctx) assert(ctx:execute(counters, "1", "bump")) end },
}

local def = assert(cases[case], "unknown case " .. tostring(case))
store:reactor(def)
store:reactor {
  name = "healthy",
  handlers = { Ping = function(ev)
    if ev.meta and ev.meta.reaction_depth then return nil end   -- only answers outside events
    return { { stream = "healthy-1", type = "Healthy" } }
  end },
}
if case == "duplicate" then
  assert(store:append("seed-1", { { type = "Seed", id = fixed_id } }))
end
assert(store:append("start-1", { { type = "Ping" } }))
assert(store:append("start-2", { { type = "Ping" } }))

local status, report = chronicle.runner(store, { wait = 0.01 }):run({ until_idle = true })
local healthy = 0
for _ in store:read("healthy-1") do healthy = healthy + 1 end
io.write(("status %s head %d healthy %d\n"):format(tostring(status), store:head(), healthy))
for _, f in ipairs(report and report.faulted or {}) do
  io.write(("fault %s %s at %s\n"):format(f.name, tostring(f.error):gsub("\n", " "), tostring(f.position)))
end
store:close()
