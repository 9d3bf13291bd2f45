-- The bank demo: accounts that open, deposit, withdraw and transfer money
-- atomically, then their balance history and a look at the past.
-- Usage: lua5.4 examples/bank/main.lua [store-dir]   (default: data/bank)
-- `make demo` runs it; the README's CLI session then explores data/bank, with
-- the scripts in examples/bank/rules/ (the account aggregate and a projection).
local chronicle = require "chronicle"
local examples = (arg and arg[0] or ""):match("^(.-)/?bank/main%.lua$") or "examples"
package.path = (examples == "" and "." or examples) .. "/?.lua;" .. package.path
local Account = require "bank.rules.account"
local Transfer = require "bank.rules.transfer"
local saga = require "bank.saga"

local dir = arg[1] or "data/bank"
os.execute("rm -rf '" .. dir:gsub("'", "") .. "'")   -- the demo starts from an empty store
local store = assert(chronicle.open(dir))
local accounts = store:repository(Account)

local function say(fmt, ...) print(fmt:format(...)) end
local function balance(id) return (accounts:load(id)).balance end

say("chronicle bank demo, store in %s", dir)
say("")
assert(accounts:execute("alice", "open", { owner = "Alice" }))
assert(accounts:execute("bob", "open", { owner = "Bob" }))
say("1. Alice and Bob open accounts.")

assert(accounts:execute("alice", "deposit", { amount = 100 }))
assert(accounts:execute("bob", "deposit", { amount = 20 }))
assert(accounts:execute("alice", "deposit", { amount = 50 }))
say("2. Alice deposits 100 then 50; Bob deposits 20. Balances: Alice %d, Bob %d.", balance("alice"), balance("bob"))

local ok, err = accounts:execute("bob", "withdraw", { amount = 500 })
say("3. Bob tries to withdraw 500: %s (%s).", ok and "accepted" or "refused", err and err.reason or "")

-- A transfer touches two aggregates: both streams commit together, or neither.
local function transfer(from, to, amount)
  return store:unit_of_work(function(uow)
    uow:execute(accounts, from, "withdraw", { amount = amount })
    uow:execute(accounts, to, "deposit", { amount = amount })
  end)
end

assert(transfer("alice", "bob", 30))
say("4. Alice transfers 30 to Bob in one transaction. Balances: Alice %d, Bob %d.", balance("alice"), balance("bob"))

local _, terr = transfer("bob", "alice", 1000)
say("5. Bob tries to transfer 1000 to Alice: refused (%s); nothing was written, Alice still has %d.",
  terr.reason, balance("alice"))

local preview = assert(accounts:execute("alice", "withdraw", { amount = 10 }, { dry_run = true }))
say("6. A dry run of Alice withdrawing 10 would leave %d; it was rolled back, so she still has %d.",
  preview.state.balance, balance("alice"))

say("7. Alice's balance history:")
for version, ev, state in accounts:history("alice") do
  local amount = ev.data and ev.data.amount
  say("   v%d  %-9s %5s  -> balance %d", version, ev.type, amount and tostring(amount) or "", state.balance)
end

local past = accounts:load("alice", { version = 1 })
say("8. Time travel: at version 1 Alice had %d; now she has %d.", past.balance, balance("alice"))

-- The same move as a saga: a transfer of its own, driven step by step by a reactor.
local transfers = store:repository(Transfer)
store:reactor(saga(accounts, transfers))
local runner = chronicle.runner(store)
assert(accounts:execute("carol", "open", { owner = "Carol" }))
assert(accounts:execute("carol", "close"))
assert(transfers:execute("t1", "request", { from = "alice", to = "bob", amount = 20 }))
assert(transfers:execute("t2", "request", { from = "bob", to = "carol", amount = 5 }))
assert(transfers:execute("t3", "request", { from = "bob", to = "alice", amount = 999 }))
runner:run({ until_idle = true })
say("9. Three transfers run as a saga (a reactor answering each step):")
for _, id in ipairs({ "t1", "t2", "t3" }) do
  local t = transfers:load(id)
  local steps = {}
  for _, ev in transfers:history(id) do steps[#steps + 1] = ev.type:gsub("^Transfer", "") end
  say("   %s %s -> %s %3d: %-11s %s%s", id, t.from, t.to, t.amount, t.status, table.concat(steps, ", "),
    t.reason and (" (" .. t.reason .. ")") or "")
end
say("   Balances: Alice %d, Bob %d, Carol %d (closed, so t2's credit was refused and Bob refunded).",
  balance("alice"), balance("bob"), balance("carol"))

local stats = store:stats()
local check = store:verify()
say("10. The store holds %d events in %d streams; verify: %s.", stats.events, stats.streams,
  check.ok and "ok" or table.concat(check.problems, "; "))
store:close()
