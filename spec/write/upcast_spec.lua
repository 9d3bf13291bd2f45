-- Upcasting: an event carries the schema version it was written with;
-- upcasters registered per (type, version) turn old shapes into the current
-- one on read, v1 -> v2 -> v3, without rewriting the log.
local helpers = require "helpers"
local chronicle = require "chronicle"

local collect = helpers.collect

-- chronicle.upcast registers for the whole process and cannot be undone, so
-- every test that uses it invents event type names of its own.
local unique = 0
local function fresh_type(base)
  unique = unique + 1
  return ("%s%d_%d"):format(base, unique, os.time())
end

-- Deposited went through three shapes:
--   v1 { amt = "12" }                    (a string)
--   v2 { amount = 12 }                   (an integer)
--   v3 { amount = 12, currency = "EUR" } (the current shape)
local function v1_to_v2(data) return { amount = math.tointeger(tonumber(data.amt)) } end
local function v2_to_v3(data) data.currency = data.currency or "EUR"; return data end

-- An account whose apply refuses anything but the current shape of `deposited`.
local function account(deposited, extra)
  local def = {
    name = "account",
    initial = function() return { balance = 0, currencies = {} } end,
    apply = {
      [deposited] = function(state, ev)
        assert(math.type(ev.data.amount) == "integer", "apply saw an old shape: no integer amount")
        assert(type(ev.data.currency) == "string", "apply saw an old shape: no currency")
        assert(ev.data.amt == nil, "apply saw an old shape: amt")
        state.balance = state.balance + ev.data.amount
        state.currencies[ev.data.currency] = true
      end,
    },
    commands = {
      deposit = function(_, args)
        return { type = deposited, data = { amount = args.amount, currency = args.currency } }
      end,
    },
  }
  for k, v in pairs(extra or {}) do def[k] = v end
  return chronicle.aggregate(def)
end

-- Writes the old history of account-1 straight to the log, as older code did.
local function write_old_history(store, deposited)
  assert(store:append("account-1", {
    { type = deposited, schema = 1, data = { amt = "100" } },
    { type = deposited, schema = 2, data = { amount = 20 } },
    { type = deposited, schema = 1, data = { amt = "3" } },
    { type = deposited, schema = 3, data = { amount = 4, currency = "USD" } },
  }))
end

describe("upcasting", function()
  local store
  before_each(function() store = helpers.open({ durability = "nosync" }) end)
  after_each(helpers.cleanup)

  it("brings old events to the current shape on load, applying the chain in order v1 -> v2 -> v3", function()
    local T = fresh_type("Deposited")
    local trail = {}
    local Account = account(T, { upcasters = { [T] = {
      [1] = function(data, ev) trail[#trail + 1] = ev.version .. ":1"; return v1_to_v2(data) end,
      [2] = function(data, ev) trail[#trail + 1] = ev.version .. ":2"; return v2_to_v3(data) end,
    } } })
    write_old_history(store, T)
    local state, version = store:repository(Account):load("1")
    assert.equals(3, version)
    assert.equals(127, state.balance)
    assert.same({ EUR = true, USD = true }, state.currencies)
    -- a v1 event takes both steps in order, a v2 event only the second, a v3 event none
    assert.same({ "0:1", "0:2", "1:2", "2:1", "2:2" }, trail)
  end)

  it("passes each upcaster the event, with its stream, version and schema", function()
    local T = fresh_type("Deposited")
    local seen = {}
    local Account = account(T, { upcasters = { [T] = {
      [1] = function(data, ev)
        seen[#seen + 1] = { stream = ev.stream, version = ev.version, schema = ev.schema, type = ev.type }
        return v1_to_v2(data)
      end,
      [2] = v2_to_v3,
    } } })
    write_old_history(store, T)
    store:repository(Account):load("1")
    assert.same({ stream = "account-1", version = 0, schema = 1, type = T }, seen[1])
    assert.same({ stream = "account-1", version = 2, schema = 1, type = T }, seen[2])
  end)

  it("works the same with upcasters registered for the whole process with chronicle.upcast", function()
    local T = fresh_type("Deposited")
    chronicle.upcast(T, 2, v2_to_v3)
    chronicle.upcast(T, 1, v1_to_v2)
    write_old_history(store, T)
    local state = store:repository(account(T)):load("1")
    assert.equals(127, state.balance)
  end)

  it("picks up a process-wide upcaster registered after the repository was made", function()
    local T = fresh_type("Deposited")
    write_old_history(store, T)
    local accounts = store:repository(account(T))
    assert.is_false((pcall(accounts.load, accounts, "1")), "old shapes reached apply")
    chronicle.upcast(T, 1, v1_to_v2)
    chronicle.upcast(T, 2, v2_to_v3)
    assert.equals(127, (accounts:load("1")).balance)
  end)

  it("lets the definition's upcasters win over process-wide ones for the same step", function()
    local T = fresh_type("Deposited")
    chronicle.upcast(T, 1, function() return { amount = -1000 } end)
    chronicle.upcast(T, 2, v2_to_v3)
    local Account = account(T, { upcasters = { [T] = { [1] = v1_to_v2 } } })
    write_old_history(store, T)
    assert.equals(127, (store:repository(Account):load("1")).balance)
  end)

  it("writes new events with the current schema version and shape", function()
    local T = fresh_type("Deposited")
    local Account = account(T, { upcasters = { [T] = { [1] = v1_to_v2, [2] = v2_to_v3 } } })
    local accounts = store:repository(Account)
    write_old_history(store, T)
    local res = assert(accounts:execute("1", "deposit", { amount = 5, currency = "GBP" }))
    assert.equals(132, res.state.balance)
    local raw = collect(store:read("account-1", { from = 4 }))
    assert.equals(1, #raw)
    assert.equals(3, raw[1].schema)
    assert.same({ amount = 5, currency = "GBP" }, raw[1].data)
    assert.equals(3, res.events[1].schema)

    -- a type without upcasters is written as schema 1
    local Plain = account(fresh_type("Plain"))
    assert(store:repository(Plain):execute("2", "deposit", { amount = 1, currency = "EUR" }))
    assert.equals(1, collect(store:read("account-2"))[1].schema)
  end)

  it("does not rewrite the log: the stored events keep their old schema and data", function()
    local T = fresh_type("Deposited")
    local accounts = store:repository(account(T, { upcasters = { [T] = { [1] = v1_to_v2, [2] = v2_to_v3 } } }))
    write_old_history(store, T)
    local before = collect(store:read("account-1"))
    assert(accounts:load("1"))
    for _ in accounts:history("1") do end
    assert(accounts:execute("1", "deposit", { amount = 1, currency = "EUR" }))
    local after = collect(store:read("account-1", { to = 3 }))
    assert.same(before, after)
    assert.same({ 1, 2, 1, 3 }, helpers.pluck(after, "schema"))
    assert.same({ amt = "100" }, after[1].data)
    assert.same({ amount = 20 }, after[2].data)
    assert.same({ amt = "3" }, after[3].data)
    assert.is_true(store:verify().ok)
  end)

  it("shows history only current shapes", function()
    local T = fresh_type("Deposited")
    local accounts = store:repository(account(T, { upcasters = { [T] = { [1] = v1_to_v2, [2] = v2_to_v3 } } }))
    write_old_history(store, T)
    local amounts = {}
    for _, ev in accounts:history("1") do
      assert.equals(3, ev.schema)
      amounts[#amounts + 1] = ev.data.amount .. ev.data.currency
    end
    assert.same({ "100EUR", "20EUR", "3EUR", "4USD" }, amounts)
  end)

  it("raises a clear error naming the missing link when a step of the chain is missing", function()
    local T = fresh_type("Deposited")
    -- v1 -> v2 and v3 -> v4 exist, v2 -> v3 does not
    local Account = account(T, { upcasters = { [T] = { [1] = v1_to_v2, [3] = function(d) return d end } } })
    write_old_history(store, T)
    local accounts = store:repository(Account)
    local ok, err = pcall(accounts.load, accounts, "1")
    assert.is_false(ok, "a broken chain went unnoticed")
    err = tostring(err)
    assert.matches("no upcaster for " .. T .. " v2", err, nil, true)
    assert.matches("account-1", err, nil, true)
  end)

  it("refuses a second upcaster for the same type and version", function()
    local T = fresh_type("Deposited")
    chronicle.upcast(T, 1, v1_to_v2)
    local ok, err = pcall(chronicle.upcast, T, 1, v1_to_v2)
    assert.is_false(ok)
    assert.matches(T .. " v1", tostring(err), nil, true)
  end)

  it("refuses a bad registration", function()
    assert.is_false((pcall(chronicle.upcast, "", 1, v1_to_v2)))
    assert.is_false((pcall(chronicle.upcast, fresh_type("X"), 0, v1_to_v2)))
    assert.is_false((pcall(chronicle.upcast, fresh_type("X"), 1, "not a function")))
  end)
end)

describe("upcasting for every consumer chronicle drives", function()
  local store
  before_each(function() store = helpers.open({ durability = "nosync" }) end)
  after_each(helpers.cleanup)

  local function run() return chronicle.runner(store):run({ until_idle = true }) end

  -- Registers the process-wide chain v1 -> v2 -> v3 for a fresh type and writes the old history.
  local function old_history()
    local T = fresh_type("Deposited")
    chronicle.upcast(T, 1, v1_to_v2)
    chronicle.upcast(T, 2, v2_to_v3)
    write_old_history(store, T)
    return T
  end

  local function current_shape(ev)
    assert(math.type(ev.data.amount) == "integer" and type(ev.data.currency) == "string" and ev.data.amt == nil,
           "saw an old shape")
    assert(ev.schema == 3, "schema is not the current one")
    return ev.data.amount .. ev.data.currency
  end

  it("gives a projection the current shape", function()
    local T = old_history()
    store:projection { name = "totals", handlers = {
      [T] = function(v, ev) v:put("v" .. ev.version, current_shape(ev)) end,
    } }
    run()
    local rows = {}
    for k, val in store:view("totals"):pairs() do rows[k] = val end
    assert.same({ v0 = "100EUR", v1 = "20EUR", v2 = "3EUR", v3 = "4USD" }, rows)
    assert.is_nil(store:projection_status().totals.fault)
  end)

  it("gives a handler the current shape, on delivery and on a dead-letter retry", function()
    local T = old_history()
    local seen, failing = {}, true
    store:on(T, function(ev)
      if failing and ev.version == 2 then error("mail server down") end
      seen[#seen + 1] = current_shape(ev)
    end, { name = "mailer", retries = 0 })
    run()
    assert.same({ "100EUR", "20EUR", "4USD" }, seen)
    failing = false
    assert.equals(1, (store:retry_dead_letters("mailer")))
    assert.same({ "100EUR", "20EUR", "4USD", "3EUR" }, seen)
  end)

  it("gives a reactor the current shape", function()
    local T = old_history()
    store:reactor { name = "receipts", handlers = {
      [T] = function(ev) return { { stream = "receipt-" .. ev.version, type = "Receipt", data = current_shape(ev) } } end,
    } }
    run()
    local got = {}
    for ev in store:read_all({ types = { "Receipt" } }) do got[#got + 1] = ev.data end
    assert.same({ "100EUR", "20EUR", "3EUR", "4USD" }, got)
  end)

  it("leaves the raw reads (read, read_all, fold) with the stored data", function()
    local T = old_history()
    local raw = collect(store:read("account-1"))
    assert.same({ amt = "100" }, raw[1].data)
    assert.equals(1, raw[1].schema)
    assert.same({ amt = "100" }, collect(store:read_all())[1].data)
    local first = store:fold({}, nil, function(acc, ev) return acc or ev end)
    assert.same({ amt = "100" }, first.data)
    assert.equals(T, first.type)
  end)
end)
