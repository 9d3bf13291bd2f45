-- Reactors and process managers: handlers that answer events with events or
-- commands, appended in the same transaction as the reactor's checkpoint, so
-- that each reaction happens exactly once.
local helpers = require "helpers"
local chronicle = require "chronicle"
local reactor = require "chronicle.read.reactor"

-- These specs are about the read side, not durability: stores skip fsync to stay fast.
local FAST = { durability = "nosync" }

local function run(store) return chronicle.runner(store):run_once() end

-- Every event of `type` in the log.
local function events_of(store, type)
  local out = {}
  for ev in store:read_all() do if ev.type == type then out[#out + 1] = ev end end
  return out
end

-- An invoicing reactor: each OrderPlaced gets one InvoiceIssued in stream invoice-<order>.
local function invoicer(opts)
  opts = opts or {}
  return {
    name = opts.name or "invoicer",
    batch_size = opts.batch_size,
    handlers = {
      OrderPlaced = function(ev)
        if opts.fail and opts.fail(ev) then error("cannot invoice order " .. ev.data.i) end
        return { { stream = "invoice-" .. ev.stream:match("%-(.+)$"), type = "InvoiceIssued", data = { order = ev.id } } }
      end,
    },
  }
end

local function place_orders(store, from, to)
  for i = from, to do
    assert(store:append("order-" .. i, { { type = "OrderPlaced", data = { i = i } } }))
  end
end

-- Asserts every OrderPlaced has exactly one InvoiceIssued caused by it, and nothing else.
local function assert_one_invoice_per_order(store)
  local orders, by_cause = events_of(store, "OrderPlaced"), {}
  for _, inv in ipairs(events_of(store, "InvoiceIssued")) do
    local cause = inv.meta and inv.meta.causation_id
    assert.is_string(cause, "an invoice without causation id")
    assert.is_nil(by_cause[cause], "two invoices were appended for event " .. tostring(cause))
    by_cause[cause] = inv
  end
  for _, order in ipairs(orders) do
    assert.is_table(by_cause[order.id], "no invoice for " .. order.stream)
    assert.equals("invoice-" .. order.stream:match("%-(.+)$"), by_cause[order.id].stream)
    by_cause[order.id] = nil
  end
  assert.is_nil(next(by_cause), "an invoice answers no order")
  return #orders
end

describe("a reactor", function()
  after_each(helpers.cleanup)

  it("appends the events its handler returns, exactly once", function()
    local store, dir = helpers.open(FAST)
    store:reactor(invoicer({ batch_size = 2 }))
    place_orders(store, 1, 5)
    run(store)
    assert.equals(5, assert_one_invoice_per_order(store))
    run(store)
    chronicle.runner(store):run({ until_idle = true })
    assert.equals(5, #events_of(store, "InvoiceIssued"), "running again reacts to nothing twice")
    store:close()

    local again = helpers.open(FAST, dir)
    again:reactor(invoicer())
    run(again)
    assert.equals(5, #events_of(again, "InvoiceIssued"), "its checkpoint outlives the process")
    place_orders(again, 6, 7)
    run(again)
    assert.equals(7, assert_one_invoice_per_order(again))
  end)

  it("appends what it passes to ctx:append, with the expected version it gives", function()
    local store = helpers.open(FAST)
    local outcomes = {}
    store:reactor {
      name = "tally",
      handlers = {
        OrderPlaced = function(ev, ctx)
          ctx:append("tally-1", { { type = "Counted", data = { i = ev.data.i } } })
        end,
      },
    }
    place_orders(store, 1, 3)
    run(store)
    local counted = helpers.collect(store:read("tally-1"))
    assert.same({ 1, 2, 3 }, helpers.pluck(helpers.pluck(counted, "data"), "i"))
    for _, ev in ipairs(counted) do outcomes[#outcomes + 1] = ev.meta.causation_id end
    assert.same(helpers.pluck(events_of(store, "OrderPlaced"), "id"), outcomes)
  end)

  it("gives its outputs the correlation id of the event they answer, and that event's id as causation id", function()
    local store = helpers.open(FAST)
    store:reactor {
      name = "chain",
      handlers = {
        Started = function(ev) return { { stream = "chain-" .. ev.data.n, type = "Middle", data = ev.data } } end,
        Middle = function(ev) return { { stream = "chain-" .. ev.data.n, type = "Finished", data = ev.data } } end,
      },
    }
    assert(store:append("start-1", { { type = "Started", data = { n = 1 }, meta = { correlation_id = "request-42" } } }))
    assert(store:append("start-2", { { type = "Started", data = { n = 2 } } }))
    chronicle.runner(store):run({ until_idle = true })

    local started = events_of(store, "Started")
    for n, origin in ipairs(started) do
      local chain = helpers.collect(store:read("chain-" .. n))
      assert.same({ "Middle", "Finished" }, helpers.pluck(chain, "type"))
      local correlation = n == 1 and "request-42" or origin.id
      assert.equals(origin.id, chain[1].meta.causation_id)
      assert.equals(correlation, chain[1].meta.correlation_id)
      assert.equals(chain[1].id, chain[2].meta.causation_id)
      assert.equals(correlation, chain[2].meta.correlation_id)
    end
  end)

  describe("driving the bank transfer saga", function()
    local function bank(store)
      local Account = dofile(helpers.root .. "/examples/bank/rules/account.lua")
      local Transfer = dofile(helpers.root .. "/examples/bank/rules/transfer.lua")
      local saga = dofile(helpers.root .. "/examples/bank/saga.lua")
      local accounts, transfers = store:repository(Account), store:repository(Transfer)
      store:reactor(saga(accounts, transfers))
      assert(accounts:execute("alice", "open", { owner = "Alice" }))
      assert(accounts:execute("alice", "deposit", { amount = 100 }))
      assert(accounts:execute("bob", "open", { owner = "Bob" }))
      assert(accounts:execute("bob", "deposit", { amount = 20 }))
      assert(accounts:execute("carol", "open", { owner = "Carol" }))
      assert(accounts:execute("carol", "close"))
      return accounts, transfers
    end

    local function steps(transfers, id)
      local out = {}
      for _, ev in transfers:history(id) do out[#out + 1] = (ev.type:gsub("^Transfer", "")) end
      return out
    end

    it("completes a transfer, fails one whose debit is refused, and compensates one whose credit is refused", function()
      local store = helpers.open(FAST)
      local accounts, transfers = bank(store)
      assert(transfers:execute("t1", "request", { from = "alice", to = "bob", amount = 20 }))
      assert(transfers:execute("t2", "request", { from = "bob", to = "carol", amount = 5 }))
      assert(transfers:execute("t3", "request", { from = "bob", to = "alice", amount = 999 }))
      assert.equals("idle", chronicle.runner(store):run({ until_idle = true }))

      assert.same({ "Requested", "Debited", "Credited", "Completed" }, steps(transfers, "t1"))
      assert.same({ "Requested", "Debited", "Compensated" }, steps(transfers, "t2"))
      assert.same({ "Requested", "Failed" }, steps(transfers, "t3"))
      assert.equals("completed", transfers:load("t1").status)
      assert.equals("compensated", transfers:load("t2").status)
      assert.matches("closed", transfers:load("t2").reason, nil, true)
      assert.equals("failed", transfers:load("t3").status)
      assert.matches("insufficient funds", transfers:load("t3").reason, nil, true)
      assert.equals(80, accounts:load("alice").balance)
      assert.equals(40, accounts:load("bob").balance, "20 + 20 from t1, 5 debited then refunded by t2")
      assert.equals(0, accounts:load("carol").balance)
      -- bob: his own deposit, t1's credit, t2's debit and its refund (in whatever order the saga ran them)
      local bob = {}
      for ev in store:read("account-bob") do bob[#bob + 1] = ev.type .. " " .. tostring(ev.data and ev.data.amount) end
      table.sort(bob)
      assert.same({ "Deposited 20", "Deposited 20", "Deposited 5", "Opened nil", "Withdrawn 5" }, bob)
      assert.same({ "Opened", "Closed" }, helpers.pluck(helpers.collect(store:read("account-carol")), "type"))

      local head = store:head()
      chronicle.runner(store):run({ until_idle = true })
      assert.equals(head, store:head(), "the saga does not act twice")
    end)

    it("links every step to the event that caused it and to the request it belongs to", function()
      local store = helpers.open(FAST)
      local _, transfers = bank(store)
      assert(transfers:execute("t1", "request", { from = "alice", to = "bob", amount = 10 }))
      chronicle.runner(store):run({ until_idle = true })
      local chain = helpers.collect(store:read("transfer-t1"))
      assert.equals(4, #chain)
      local request = chain[1]
      local by_id = {}
      for ev in store:read_all() do by_id[ev.id] = ev end
      for ev in store:read_all({ from = request.position + 1 }) do
        assert.is_table(ev.meta, ev.type .. " has no meta")
        assert.equals(request.meta and request.meta.correlation_id or request.id, ev.meta.correlation_id, ev.type)
        local cause = by_id[ev.meta.causation_id]
        assert.is_table(cause, ev.type .. " names no cause")
        assert.is_true(cause.position < ev.position)
        assert.matches("^transfer%-", cause.stream, nil, false)
      end
    end)
  end)

  describe("whose handler raises", function()
    it("is faulted, appends nothing from the failed batch, and another reactor goes on", function()
      local store = helpers.open(FAST)
      local r = store:reactor(invoicer({ name = "fragile", batch_size = 2, fail = function(ev) return ev.data.i == 3 end }))
      store:reactor {
        name = "steady",
        handlers = { OrderPlaced = function(ev) return { { stream = "ship-" .. ev.data.i, type = "Shipped" } } end },
      }
      place_orders(store, 1, 5)
      chronicle.runner(store):run({ until_idle = true })

      assert.equals(5, #events_of(store, "Shipped"), "the other reactor handled every order")
      local invoices = events_of(store, "InvoiceIssued")
      assert.same({ "invoice-1", "invoice-2" }, helpers.pluck(invoices, "stream"),
        "only the batch before the failing one was appended; order 4, in the failed batch, got nothing")
      assert.equals("faulted", reactor.run_batch(store, r))
      chronicle.runner(store):run({ until_idle = true })
      assert.equals(2, #events_of(store, "InvoiceIssued"), "a faulted reactor stays stopped")
    end)

    it("resumes from its checkpoint once reset, reacting to each remaining event exactly once", function()
      local store = helpers.open(FAST)
      local broken = true
      local r = store:reactor(invoicer({ name = "fragile", batch_size = 2,
                                         fail = function(ev) return broken and ev.data.i == 3 end }))
      place_orders(store, 1, 5)
      run(store)
      assert.equals(2, #events_of(store, "InvoiceIssued"))
      broken = false
      assert(reactor.reset(store, r))
      run(store)
      assert.equals(5, assert_one_invoice_per_order(store))
    end)

    it("is faulted when it returns an event that names no stream", function()
      local store = helpers.open(FAST)
      local r = store:reactor { name = "sloppy", handlers = { OrderPlaced = function() return { { type = "Oops" } } end } }
      place_orders(store, 1, 1)
      assert.equals("faulted", reactor.run_batch(store, r))
      assert.same({}, events_of(store, "Oops"))
    end)
  end)

  it("refuses a bad definition, naming the problem", function()
    local store = helpers.open(FAST)
    assert.matches("'handlers' is missing", helpers.raises(store.reactor, store, { name = "r" }), nil, true)
    assert.matches("unknown field 'handler'",
      helpers.raises(store.reactor, store, { name = "r", handler = {}, handlers = { A = function() end } }), nil, true)
    assert.matches("'name'", helpers.raises(store.reactor, store, { handlers = { A = function() end } }), nil, true)
  end)
end)

-- Runs spec/support/projections/runaway_reactor.lua for `case` in a child process under
-- `timeout` and a 200 MiB file-size limit; returns its exit code and lines.
local function runaway(case)
  local dir = helpers.tmpdir() .. "/store"
  local cmd = ("ulimit -f 204800; exec timeout 60 %s 2>&1"):format(
    helpers.lua_command(helpers.root .. "/spec/support/projections/runaway_reactor.lua", dir, case))
  local p = assert(io.popen("sh -c " .. helpers.quote(cmd)))
  local out = p:read("a")
  local _, _, code = p:close()
  local result = { code = code, out = out, faults = {} }
  local status, head, healthy = out:match("status (%S+) head (%d+) healthy (%d+)")
  result.status, result.head, result.healthy = status, tonumber(head), tonumber(healthy)
  for name, err in out:gmatch("fault (%S+) ([^\n]*)") do result.faults[name] = err end
  return result
end

describe("a runaway reactor (in a child process under timeout)", function()
  after_each(helpers.cleanup)

  local function assert_stopped(r, name, message)
    assert.equals(0, r.code, "the runner did not come back (exit " .. tostring(r.code) .. "): " .. r.out)
    assert.equals("idle", r.status, r.out)
    assert.equals(2, r.healthy, "the healthy reactor answered both outside events: " .. r.out)
    assert.is_string(r.faults[name], name .. " is not reported as faulted: " .. r.out)
    assert.matches(message, r.faults[name], nil, true)
  end

  it("whose output's expected version never holds is faulted after a bounded number of retries", function()
    local r = runaway("conflict")
    assert_stopped(r, "stale", "conflict")
    assert.matches("after 11 attempts", r.faults.stale, nil, true)
    assert.matches(" at 1$", r.faults.stale)
  end)

  it("answering its own output type with 50 events is faulted at the chain's budget, not after millions", function()
    local r = runaway("fanout")
    assert_stopped(r, "echo", "max_chain_events (1000)")
    assert.is_true(r.head <= 2 + 2 * 50 + 2, "it wrote " .. tostring(r.head) .. " events")
  end)

  it("answering its own output type with one event is faulted at max_depth", function()
    local r = runaway("loop")
    assert_stopped(r, "looper", "max_depth 10")
    -- 2 outside events, each answered 10 deep, and the healthy reactor's 2
    assert.equals(2 + 2 * 10 + 2, r.head)
  end)

  it("running a command whose event it answers is faulted at max_depth", function()
    local r = runaway("loop_execute")
    assert_stopped(r, "bumper", "max_depth 10")
    assert.equals(2 + 2 * 10 + 2, r.head)
  end)

  it("reusing a stored event's id is faulted, not retried for ever", function()
    local r = runaway("duplicate")
    assert_stopped(r, "reuser", "duplicate_id")
  end)

  it("emitting more than max_outputs events for one event is faulted, returned or appended one by one", function()
    local r = runaway("flood")
    assert_stopped(r, "flood", "more than max_outputs (20)")
    assert.equals(2 + 2, r.head, "nothing of the faulted batch was written")
    r = runaway("flood_append")
    assert_stopped(r, "flood_append", "more than max_outputs (20)")
  end)
end)

describe("a reactor's chain meta", function()
  after_each(helpers.cleanup)

  it("counts the depth of each output and gives it a share of the chain's budget, which outputs cannot overwrite", function()
    local store = helpers.open(FAST)
    store:reactor {
      name = "chain", max_chain_events = 100,
      handlers = {
        Started = function() return {
          { stream = "next-1", type = "Next", meta = { reaction_depth = -5, reaction_budget = 10 ^ 9 } },
          { stream = "next-2", type = "Next" } } end,
        Next = function(ev) return { { stream = "last-" .. ev.stream, type = "Last" } } end,
      },
    }
    assert(store:append("start-1", { { type = "Started" } }))
    local status, report = chronicle.runner(store):run({ until_idle = true })
    assert.equals("idle", status)
    assert.is_true(report.ok)
    local next1 = helpers.collect(store:read("next-1"))[1]
    assert.equals(1, next1.meta.reaction_depth)
    assert.equals((100 - 2) // 2, next1.meta.reaction_budget)
    local last = helpers.collect(store:read("last-next-1"))[1]
    assert.equals(2, last.meta.reaction_depth)
    assert.equals(49 - 1, last.meta.reaction_budget)
  end)

  it("refuses bad bounds in a definition", function()
    local store = helpers.open(FAST)
    for _, key in ipairs({ "max_outputs", "max_depth", "max_chain_events" }) do
      assert.matches("'" .. key .. "' must be an integer >= 1",
        helpers.raises(store.reactor, store, { name = "r", [key] = 0, handlers = { A = function() end } }), nil, true)
    end
    assert.matches("'retries' must be an integer >= 0",
      helpers.raises(store.reactor, store, { name = "r", retries = -1, handlers = { A = function() end } }), nil, true)
  end)
end)

describe("a reactor whose output the store refuses", function()
  after_each(helpers.cleanup)

  local outputs = {
    empty_stream = function() return { { stream = "", type = "X" } } end,
    no_type = function() return { { stream = "out-1", data = { n = 1 } } } end,
    too_large = function() return { { stream = "out-1", type = "Big", data = ("x"):rep(5 * 1024 * 1024) } } end,
    bad_id = function() return { { stream = "out-1", type = "X", id = "not-a-uuid" } } end,
    unstorable = function() return { { stream = "out-1", type = "X", data = { f = print } } } end,
    execute_missing = function(_, ctx) ctx:execute("nope", "1", "open") end,
  }

  it("faults that reactor with the event and the error; run_once does not raise; the others go on, also after a restart", function()
    local store, dir = helpers.open(FAST)
    local function register(s)
      for name, fn in pairs(outputs) do s:reactor { name = name, handlers = { Ping = fn } } end
      s:reactor { name = "healthy", handlers = { Ping = function(ev)
        return { { stream = "healthy-" .. ev.position, type = "Healthy" } } end } }
    end
    register(store)
    helpers.fill(store, "ping-1", 2, "Ping")
    local n, report = chronicle.runner(store):run_once()
    assert.is_true(n >= 1)
    assert.is_false(report.ok)
    local faulted = {}
    for _, f in ipairs(report.faulted) do faulted[f.name] = f end
    for name in pairs(outputs) do
      local f = faulted[name]
      assert.is_table(f, name .. " is not faulted")
      assert.equals("reactor", f.kind)
      assert.equals(1, f.position, name)
      assert.equals("ping-1", f.stream, name)
      assert.equals("Ping", f.type, name)
      assert.is_string(f.error, name)
      assert.is_nil(f.error:find("chronicle/store.lua", 1, true), "the error names chronicle's own file: " .. f.error)
    end
    assert.matches("stream must be", faulted.empty_stream.error, nil, true)
    assert.matches("type must be", faulted.no_type.error, nil, true)
    assert.matches("max_event_size", faulted.too_large.error, nil, true)
    assert.matches("UUID", faulted.bad_id.error, nil, true)
    assert.matches("cannot store a function", faulted.unstorable.error, nil, true)
    assert.matches("no aggregate named 'nope'", faulted.execute_missing.error, nil, true)
    assert.is_nil(faulted.healthy)
    assert.equals(2, #helpers.collect(store:read_all({ category = "healthy" })))
    assert.equals("faulted", store:reactor_status().too_large.status)
    store:close()

    local again = helpers.open(FAST, dir)
    register(again)
    helpers.fill(again, "ping-2", 1, "Ping")
    local _, report2 = chronicle.runner(again):run_once()
    assert.equals(#report.faulted, #report2.faulted, "the faulted ones stay faulted")
    assert.equals(3, #helpers.collect(again:read_all({ category = "healthy" })))
  end)

  it("blames the event whose output was refused, not the first of its batch", function()
    local store = helpers.open(FAST)
    store:reactor { name = "late", handlers = { Ping = function(ev)
      return { { stream = ev.data.i == 3 and "" or "ok-" .. ev.data.i, type = "X" } } end } }
    helpers.fill(store, "ping-1", 4, "Ping")
    local _, report = chronicle.runner(store):run_once()
    assert.equals(1, #report.faulted)
    assert.equals(3, report.faulted[1].position)
  end)

  it("reaches an aggregate by its name when scripts loaded it", function()
    local store = helpers.open(FAST)
    local dir = helpers.tmpdir() .. "/rules"
    os.execute("mkdir " .. helpers.quote(dir))
    helpers.write_file(dir .. "/product.lua", [[
return {
  kind = "aggregate", name = "product",
  initial = { stock = 0 },
  apply = { Restocked = function(s, ev) s.stock = s.stock + ev.data.n end,
            Reserved = function(s, ev) s.stock = s.stock - ev.data.n end },
  commands = {
    restock = function(_, args) return { type = "Restocked", data = { n = args.n } } end,
    reserve = function(s, args)
      if s.stock < args.n then return nil, "out of stock" end
      return { type = "Reserved", data = { n = args.n } }
    end,
  },
}
]])
    helpers.write_file(dir .. "/reserve-stock.lua", [[
return {
  kind = "reactor", name = "reserve-stock",
  handlers = { OrderPlaced = function(ev, ctx)
    local ok, err = ctx:execute("product", ev.data.product, "reserve", { n = ev.data.n })
    if not ok then ctx:append("refusal-" .. ev.data.product, { { type = "Refused", data = { why = err.reason } } }) end
  end },
}
]])
    local scripts = chronicle.load_scripts(store, dir)
    assert.same({}, scripts.errors)
    assert(scripts:repository("product"):execute("p1", "restock", { n = 3 }))
    assert(store:append("order-1", { { type = "OrderPlaced", data = { product = "p1", n = 2 } } }))
    assert(store:append("order-2", { { type = "OrderPlaced", data = { product = "p1", n = 2 } } }))
    local status, report = chronicle.runner(store):run({ until_idle = true })
    assert.equals("idle", status)
    assert.same({}, report.faulted)
    assert.equals(1, scripts:repository("product"):load("p1").stock)
    assert.equals(1, #helpers.collect(store:read("refusal-p1")))
  end)
end)
