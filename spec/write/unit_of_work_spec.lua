-- Units of work: store:unit_of_work(fn) runs commands on several aggregates
-- and commits all their events in one transaction, each stream checked against
-- the version it was loaded at, or writes nothing.
local helpers = require "helpers"
local chronicle = require "chronicle"

local collect = helpers.collect

local Account = chronicle.aggregate {
  name = "account",
  initial = function() return { open = false, balance = 0 } end,
  apply = {
    Opened = function(s) s.open = true end,
    Deposited = function(s, ev) s.balance = s.balance + ev.data.amount end,
    Withdrawn = function(s, ev) s.balance = s.balance - ev.data.amount end,
  },
  commands = {
    open = function(s)
      if s.open then return nil, "already open" end
      return { type = "Opened" }
    end,
    deposit = function(s, a)
      if not s.open then return nil, "account is not open" end
      return { type = "Deposited", data = { amount = a.amount } }
    end,
    withdraw = function(s, a)
      if a.amount > s.balance then return nil, "insufficient funds" end
      return { type = "Withdrawn", data = { amount = a.amount } }
    end,
    fail = function() error("teller fainted") end,
  },
}

describe("a unit of work", function()
  local store, accounts

  before_each(function()
    store = helpers.open({ durability = "nosync" })
    accounts = store:repository(Account)
    assert(accounts:execute("alice", "open"))
    assert(accounts:execute("alice", "deposit", { amount = 100 }))
    assert(accounts:execute("bob", "open"))
  end)
  after_each(helpers.cleanup)

  local function transfer(from, to, amount)
    return function(uow)
      uow:execute(accounts, from, "withdraw", { amount = amount })
      uow:execute(accounts, to, "deposit", { amount = amount })
    end
  end

  local function balance(id) return (accounts:load(id)).balance end

  it("commits the events of two aggregates together, in one transaction", function()
    local head = store:head()
    local res = assert(store:unit_of_work(transfer("alice", "bob", 30)))
    assert.equals(70, balance("alice"))
    assert.equals(30, balance("bob"))
    assert.equals(head + 2, store:head())
    assert.equals(head + 2, res.position)
    local a = res.streams["account-alice"]
    local b = res.streams["account-bob"]
    assert.equals(2, a.version)
    assert.equals(70, a.state.balance)
    assert.equals(1, b.version)
    assert.equals(30, b.state.balance)
    -- the positions the unit reports are where the events are
    local wa = collect(store:read("account-alice", { from = 2 }))[1]
    local wb = collect(store:read("account-bob", { from = 1 }))[1]
    assert.equals(wa.position, a.events[1].position)
    assert.equals(wb.position, b.events[1].position)
    assert.same({ head + 1, head + 2 }, { wa.position, wb.position })
  end)

  it("sees its own pending events when one aggregate is used twice", function()
    local res, err = store:unit_of_work(function(uow)
      uow:execute(accounts, "alice", "withdraw", { amount = 60 })
      local state, version = uow:load(accounts, "alice")
      assert.equals(40, state.balance)
      assert.equals(2, version)
      -- a second withdrawal of 60 sees the 40 left, and is refused
      local ok, err = uow:execute(accounts, "alice", "withdraw", { amount = 60 })
      assert.is_nil(ok)
      assert.equals("insufficient funds", err.reason)
    end)
    assert.is_nil(res, "the unit committed despite a rejected command")
    assert.equals("rejected", err.code)
    assert.equals(100, balance("alice"))
  end)

  it("writes nothing when the first command is rejected", function()
    local before = helpers.snapshot(store)
    local res, err = store:unit_of_work(transfer("bob", "alice", 500))
    assert.is_nil(res)
    assert.equals("rejected", err.code)
    assert.equals("insufficient funds", err.reason)
    assert.same(before, helpers.snapshot(store))
  end)

  it("writes nothing when the second command is rejected, even though the first succeeded", function()
    local before = helpers.snapshot(store)
    local res, err = store:unit_of_work(transfer("alice", "carol", 10))   -- carol has no account
    assert.is_nil(res)
    assert.equals("rejected", err.code)
    assert.equals("account is not open", err.reason)
    assert.same(before, helpers.snapshot(store))
    assert.equals(100, balance("alice"))
  end)

  it("writes nothing when the function returns nil, err", function()
    local before = helpers.snapshot(store)
    local res, err = store:unit_of_work(function(uow)
      transfer("alice", "bob", 10)(uow)
      return nil, chronicle.error("changed_mind", "not today")
    end)
    assert.is_nil(res)
    assert.equals("changed_mind", err.code)
    assert.same(before, helpers.snapshot(store))
  end)

  it("writes nothing and lets the error through when a command raises", function()
    local before = helpers.snapshot(store)
    local ok, err = pcall(store.unit_of_work, store, function(uow)
      uow:execute(accounts, "alice", "withdraw", { amount = 10 })
      uow:execute(accounts, "bob", "fail", {})
    end)
    assert.is_false(ok)
    assert.matches("teller fainted", tostring(err), nil, true)
    assert.matches("bob", tostring(err), nil, true)
    assert.same(before, helpers.snapshot(store))
  end)

  it("reruns the whole function when a stream changed under it, and then commits", function()
    local runs = 0
    local res = assert(store:unit_of_work(function(uow)
      runs = runs + 1
      uow:execute(accounts, "alice", "withdraw", { amount = 100 })
      if runs == 1 then
        -- another writer deposits to bob after this unit loaded him
        uow:load(accounts, "bob")
        assert(store:append("account-bob", { { type = "Deposited", data = { amount = 7 } } }))
      end
      uow:execute(accounts, "bob", "deposit", { amount = 100 })
    end))
    assert.equals(2, runs)
    assert.equals(0, balance("alice"))
    assert.equals(107, balance("bob"))
    assert.equals(2, res.streams["account-bob"].version)
    assert.equals(2, res.streams["account-alice"].version)
    assert.equals(3, #collect(store:read("account-alice")), "alice's withdrawal was written twice")
  end)

  it("rechecks every stream on the rerun: a rejection after the conflict writes nothing", function()
    local runs = 0
    local before
    local res, err = store:unit_of_work(function(uow)
      runs = runs + 1
      uow:execute(accounts, "alice", "withdraw", { amount = 80 })
      if runs == 1 then
        -- alice spends money elsewhere meanwhile: the rerun must see it
        assert(store:append("account-alice", { { type = "Withdrawn", data = { amount = 50 } } }))
        before = helpers.snapshot(store)
      end
      uow:execute(accounts, "bob", "deposit", { amount = 80 })
    end)
    assert.equals(2, runs)
    assert.is_nil(res)
    assert.equals("rejected", err.code)
    assert.same(before, helpers.snapshot(store))
    assert.equals(50, balance("alice"))
    assert.equals(0, balance("bob"))
  end)

  it("returns the conflict without rerunning when retries = 0, writing none of its events", function()
    local runs = 0
    local res, err = store:unit_of_work(function(uow)
      runs = runs + 1
      transfer("alice", "bob", 10)(uow)
      assert(store:append("account-bob", { { type = "Deposited", data = { amount = 1 } } }))
    end, { retries = 0 })
    assert.equals(1, runs)
    assert.is_nil(res)
    assert.equals("conflict", err.code)
    -- the conflict was on bob, and alice's withdrawal was not written either
    assert.equals(100, balance("alice"))
    assert.equals(1, balance("bob"))
  end)

  it("gives up with 'conflict' after its retries", function()
    local runs = 0
    local _, err = store:unit_of_work(function(uow)
      runs = runs + 1
      transfer("alice", "bob", 10)(uow)
      assert(store:append("account-alice", { { type = "Deposited", data = { amount = 1 } } }))
    end, { retries = 2 })
    assert.equals(3, runs)
    assert.equals("conflict", err.code)
    assert.equals(103, balance("alice"))
    assert.equals(0, balance("bob"))
  end)

  it("with dry_run returns what it would commit and writes nothing", function()
    local before = helpers.snapshot(store)
    local res = assert(store:unit_of_work(transfer("alice", "bob", 25), { dry_run = true }))
    assert.is_true(res.dry_run)
    assert.equals(75, res.streams["account-alice"].state.balance)
    assert.equals(25, res.streams["account-bob"].state.balance)
    assert.equals("Withdrawn", res.streams["account-alice"].events[1].type)
    assert.same(before, helpers.snapshot(store))
    assert.equals(100, balance("alice"))
  end)

  it("writes nothing and succeeds when its commands decide nothing", function()
    local before = helpers.snapshot(store)
    local res = assert(store:unit_of_work(function(uow) uow:load(accounts, "alice") end))
    assert.equals(1, res.streams["account-alice"].version)
    assert.same(before, helpers.snapshot(store))
  end)

  it("carries meta and correlation to the events of each command", function()
    assert(store:unit_of_work(function(uow)
      uow:execute(accounts, "alice", "withdraw", { amount = 5 }, { meta = { correlation_id = "tx-9" } })
      uow:execute(accounts, "bob", "deposit", { amount = 5 }, { meta = { correlation_id = "tx-9" } })
    end))
    local a = collect(store:read("account-alice", { from = 2 }))[1]
    local b = collect(store:read("account-bob", { from = 1 }))[1]
    assert.equals("tx-9", a.meta.correlation_id)
    assert.equals("tx-9", b.meta.correlation_id)
  end)

  it("refuses something that is not a repository", function()
    local ok, err = pcall(store.unit_of_work, store, function(uow) uow:execute(Account, "alice", "open") end)
    assert.is_false(ok)
    assert.matches("repo", tostring(err), nil, true)
    assert.equals(3, store:head())
  end)
end)
