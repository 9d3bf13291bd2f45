-- Subprocess for bench/groups.lua.
--   handler TARGET NAME DELAY_MS LEASE: a runner serving handler NAME (each event waits
--     DELAY_MS, an I/O-bound side effect); exits when the group's low-water mark is the head.
--   consumer TARGET NAME [many]: takes 50 at a time from subscription NAME and acks each
--     (with "many": acks the 50 with one ack_many); exits when the subscription is drained.
local chronicle = require "chronicle"
local mode, target, name = arg[1], arg[2], arg[3]
local store = assert(chronicle.open(target, { durability = "nosync" }))
if mode == "handler" then
  local delay = tonumber(arg[4]) / 1000
  store:on("Placed", function() store:wait(math.maxinteger - 1, delay) end, { name = name })
  local runner = chronicle.runner(store, { lease = tonumber(arg[5]), wait = 0.02 })
  local head = store:head()
  while (store:kv_get("checkpoints", "h:" .. name) or 0) < head do
    runner:run_once()
    store:wait(store:head(), 0.02)
  end
  runner:leave()
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
