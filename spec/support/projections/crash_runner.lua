-- Subprocess for the crash spec: a runner with the ledger projection
-- (version arg[2], small batches) and a "receipts" reactor answering every
-- Deposited of category "account" with one Receipt event.
-- Usage: lua5.4 crash_runner.lua STORE_DIR VERSION forever|idle
--   forever: runs until killed; idle: catches up, prints "idle" and exits.
local chronicle = require "chronicle"
local common = require "support.projections.common"
local dir, version, mode = arg[1], tonumber(arg[2]), arg[3]

local store = assert(chronicle.open(dir))
assert(store:projection(common.ledger({ version = version, batch_size = 7 })))
store:reactor {
  name = "receipts",
  from = { category = "account" },
  batch_size = 5,
  handlers = {
    Deposited = function(ev)
      return { { stream = "receipt-" .. ev.stream:match("%-(.+)$"), type = "Receipt",
                 data = { of = ev.id, amount = ev.data.amount } } }
    end,
  },
}
local runner = chronicle.runner(store, { wait = 0.05 })
if mode == "idle" then
  runner:run({ until_idle = true })
  for _, e in ipairs(runner.errors) do io.stderr:write(e.kind, " ", e.name, ": ", tostring(e.error), "\n") end
  local status = store:projection_status().ledger
  io.write("idle ", status.status, "\n")
else
  io.write("running\n")
  io.flush()
  runner:run()
end
store:close()
