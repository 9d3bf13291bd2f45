-- Subprocess for spec/read/subscription_multiprocess_spec.lua: one consumer of the
-- "billing" subscription that acks, retries, parks or forgets (lets the lease
-- run out) at random. Writes its pid to OUT.pid, then lines
-- "take <pos> <attempt>", "acking <pos>", "acked <pos>", "retry <pos>",
-- "park <pos>", "forget <pos>"; runs until the file STOP exists.
-- Usage: lua5.4 sub_consumer.lua TARGET OUT STOP SEED
local chronicle = require "chronicle"
local target, out_path, stop_path, seed = arg[1], arg[2], arg[3], tonumber(arg[4])
math.randomseed(seed)

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
local function say(...)
  out:write(table.concat({ ... }, " "), "\n")
  out:flush()
end

local store = assert(chronicle.open(target))
local sub = assert(store:subscription("billing"))
while not exists(stop_path) do
  for ev in sub:take(5, { wait = 0.1 }) do
    say("take", ev.position, ev.attempt)
    store:wait(math.maxinteger - 1, 0.002)       -- the work
    local r = math.random()
    local ok, err
    if r < 0.75 then
      say("acking", ev.position)
      ok, err = sub:ack(ev)
      if ok then say("acked", ev.position) end
    elseif r < 0.88 then
      ok, err = sub:nack(ev, "retry", "try again")
      if ok then say("retry", ev.position) end
    elseif r < 0.93 then
      ok, err = sub:nack(ev, "park", "parked by consumer " .. seed)
      if ok then say("park", ev.position) end
    else
      ok = true
      say("forget", ev.position)
    end
    if not ok and err.code ~= "not_leased" then
      io.stderr:write(tostring(err), "\n")
      os.exit(3)
    end
  end
end
store:close()
out:close()
