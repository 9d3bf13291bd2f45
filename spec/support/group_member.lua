-- Subprocess for spec/read/groups_spec.lua: one member of a handler's or a
-- reactor's group. Writes its pid to OUT.pid, then one line per event it
-- handled: "<pid> <stream> <version> <position> <start ns> <end ns>", and
-- runs until the file STOP exists.
-- Usage: lua5.4 group_member.lua TARGET handler|reactor OUT STOP LEASE DELAY_MS
local chronicle = require "chronicle"
local target, kind, out_path, stop_path = arg[1], arg[2], arg[3], arg[4]
local lease, delay = tonumber(arg[5]), tonumber(arg[6]) / 1000

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local pid = tonumber(io.open("/proc/self/stat"):read("l"):match("^(%d+)"))
local pf = assert(io.open(out_path .. ".pid", "w"))
pf:write(pid, "\n")
pf:close()
local out = assert(io.open(out_path, "a"))
local store = assert(chronicle.open(target))

-- an I/O-bound side effect: sleeps (in store:wait for a position that never comes)
local function work()
  if delay > 0 then store:wait(math.maxinteger - 1, delay) end
end

local function record(ev, t0)
  out:write(("%d %s %d %d %d %d\n"):format(pid, ev.stream, ev.version, ev.position, t0, chronicle.now()))
  out:flush()
end

if kind == "handler" then
  store:on("Ticked", function(ev)
    local t0 = chronicle.now()
    work()
    record(ev, t0)
  end, { name = "mailer", batch_size = 20 })
else
  store:reactor {
    name = "echo", batch_size = 20,
    handlers = {
      Ticked = function(ev)
        local t0 = chronicle.now()
        work()
        record(ev, t0)
        return { { stream = "out-" .. ev.stream, type = "Echoed", data = { source = ev.position } } }
      end,
    },
  }
end

local runner = chronicle.runner(store, { lease = lease, wait = 0.05 })
while not exists(stop_path) do
  local _, report = runner:run_once()
  for _, e in ipairs(report.errors) do io.stderr:write(e.kind, " ", e.name, ": ", e.message, "\n") end
  store:wait(store:head(), 0.05)
end
runner:leave()
store:close()
out:close()
