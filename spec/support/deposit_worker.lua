-- A worker for spec/write/aggregate_multiprocess_spec.lua: executes `n` "deposit"
-- commands on one account of the store in `dir`, through a repository with
-- many conflict retries, while other workers do the same.
--   lua5.4 spec/support/deposit_worker.lua DIR WORKER N GO_FILE READY_FILE
-- It creates READY_FILE, waits for GO_FILE (so that all workers start
-- together), then prints one line per deposit: "ok AMOUNT VERSION POSITION",
-- and finally "done WORKER ATTEMPTS" (how many times the command ran in all:
-- more than N means some executes were retried after a conflict).
local chronicle = require "chronicle"

local dir, worker, n, go_file, ready_file = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4], arg[5]
assert(dir and worker and n and go_file and ready_file, "usage: deposit_worker.lua DIR WORKER N GO_FILE READY_FILE")

local attempts = 0
local Account = chronicle.aggregate {
  name = "account",
  initial = function() return { balance = 0, deposits = 0 } end,
  apply = {
    Opened = function() end,
    Deposited = function(s, ev)
      s.balance = s.balance + ev.data.amount
      s.deposits = s.deposits + 1
    end,
  },
  commands = {
    deposit = function(_, args)
      attempts = attempts + 1
      return { type = "Deposited", data = { amount = args.amount, worker = args.worker } }
    end,
  },
}

local store = assert(chronicle.open(dir, { durability = "nosync" }))
local accounts = store:repository(Account, { retries = 10000 })

assert(io.open(ready_file, "w")):close()
local waited = 0
while true do
  local f = io.open(go_file, "r")
  if f then f:close() break end
  waited = waited + 1
  if waited > 2e7 then io.stderr:write("worker ", worker, ": no go signal\n") os.exit(4) end
end

for i = 1, n do
  local amount = worker * 100000 + i          -- every deposit of every worker has its own amount
  local res, err = accounts:execute("shared", "deposit", { amount = amount, worker = worker })
  if not res then
    io.stderr:write("worker ", worker, ": deposit ", i, " failed: ", tostring(err), "\n")
    os.exit(3)
  end
  io.write(("ok %d %d %d\n"):format(amount, res.version, res.position))
end
store:close()
io.write(("done %d %d\n"):format(worker, attempts))
