-- The runner keeps projections, handlers and reactors caught up in a loop,
-- sleeping in store:wait, which wakes as soon as any process appends.
local helpers = require "helpers"
local chronicle = require "chronicle"

local APPEND_LATER = helpers.root .. "/spec/support/projections/append_later.lua"

-- Starts append_later.lua in the background; returns a function that waits
-- for it and returns t0 (ns, just before its append) and the position written.
local function append_from_another_process(dir, delay, stream)
  local p = assert(io.popen(helpers.lua_command(APPEND_LATER, dir, tostring(delay), stream or "ping-1") .. " 2>&1"))
  return function()
    local out = p:read("a")
    p:close()
    local t0, position = out:match("^t0 (%d+) position (%d+)")
    assert(t0, "the appending process failed: " .. out)
    return tonumber(t0), tonumber(position)
  end
end

local function median(list)
  local s = { table.unpack(list) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

describe("the runner", function()
  after_each(helpers.cleanup)

  it("run{until_idle=true} returns \"idle\" once projections, handlers and reactors have caught up, reactions included", function()
    local store = helpers.open()
    local mailed = {}
    store:reactor {
      name = "invoicer",
      handlers = { OrderPlaced = function(ev) return { { stream = "invoice-" .. ev.data.i, type = "Invoiced" } } end },
    }
    assert(store:projection {
      name = "invoices", batch_size = 2,
      handlers = { Invoiced = function(view, ev) view:put(ev.stream, ev.meta.causation_id) end },
    })
    store:on("Invoiced", function(ev) mailed[#mailed + 1] = ev.stream end, { name = "mailer" })
    for i = 1, 5 do assert(store:append("order-" .. i, { { type = "OrderPlaced", data = { i = i } } })) end

    assert.equals("idle", chronicle.runner(store, { wait = 0.05 }):run({ until_idle = true }))
    assert.equals(10, store:head())
    assert.equals(5, store:view("invoices"):count())
    assert.equals(5, #mailed)
    local status = store:projection_status().invoices
    assert.equals("live", status.status)
    assert.equals(store:head(), status.checkpoint)
  end)

  it("run_once returns the number of batches that made progress, and 0 when nothing is left", function()
    local store = helpers.open()
    assert(store:projection { name = "count", batch_size = 2, handlers = { Ping = function(view) view:update("n", function(n) return (n or 0) + 1 end) end } })
    helpers.fill(store, "p-1", 5, "Ping")
    local runner = chronicle.runner(store)
    assert.is_true(runner:run_once() >= 3, "5 events in batches of 2 take at least 3 batches")
    assert.equals(5, store:view("count"):get("n"))
    assert.equals(0, runner:run_once())
  end)

  it("serves a projection registered after the runner was made", function()
    local store = helpers.open()
    local runner = chronicle.runner(store)
    helpers.fill(store, "p-1", 3, "Ping")
    assert(store:projection { name = "late", handlers = { Ping = function(view, ev) view:put(ev.position, true) end } })
    runner:run_once()
    assert.equals(3, store:view("late"):count())
  end)

  it("run returns \"stopped\" right after the pass in which a handler called stop(), without sleeping first", function()
    local store = helpers.open()
    -- wait = 30: a run that slept in store:wait before returning would take 30 s
    local runner = chronicle.runner(store, { wait = 30 })
    local seen = 0
    store:on("Ping", function(ev)
      seen = seen + 1
      if ev.data.i == 2 then runner:stop() end
    end, { name = "stopper" })
    helpers.fill(store, "p-1", 3, "Ping")
    local started = chronicle.now()
    assert.equals("stopped", runner:run())
    local elapsed = (chronicle.now() - started) / 1e9
    assert.equals(3, seen, "the pass in progress finishes")
    assert.is_true(elapsed < 10, ("run returned %.2f s after stop(); it slept in store:wait first"):format(elapsed))
  end)

  it("run{max_seconds=} returns \"timeout\" when nothing stops it", function()
    local store = helpers.open()
    local started = chronicle.now()
    assert.equals("timeout", chronicle.runner(store, { wait = 0.05 }):run({ max_seconds = 1 }))
    local elapsed = (chronicle.now() - started) / 1e9
    assert.is_true(elapsed < 10, "took " .. elapsed .. " s")
  end)

  it("refuses unknown options", function()
    local store = helpers.open()
    assert.matches("unknown option 'sleep'", helpers.raises(chronicle.runner, store, { sleep = 1 }), nil, true)
  end)

  it("in one process sees events appended by another process within milliseconds", function()
    local store, dir = helpers.open()
    -- wait = 0.5: the runner's sleep is cut short by store:wait when the other process appends
    local runner = chronicle.runner(store, { wait = 0.5 })
    local latencies = {}
    store:on("Pinged", function(ev)
      latencies[#latencies + 1] = (chronicle.now() - ev.data.t0) / 1e6
      runner:stop()
    end, { name = "latency" })
    for round = 1, 3 do
      local finish = append_from_another_process(dir, 0.2, "ping-" .. round)
      local started = chronicle.now()
      assert.equals("stopped", runner:run({ max_seconds = 10 }))
      finish()
      assert.is_true((chronicle.now() - started) / 1e9 < 5, "the runner did not wake in time")
    end
    assert.equals(3, #latencies)
    print(("\n  runner, append in another process -> handler: %s ms (median %.2f ms)"):format(
      table.concat((function() local t = {} for i, l in ipairs(latencies) do t[i] = ("%.2f"):format(l) end return t end)(), ", "),
      median(latencies)))
    for _, l in ipairs(latencies) do assert.is_true(l < 3000, "latency " .. l .. " ms") end
  end)
end)

describe("the runner's report", function()
  after_each(helpers.cleanup)

  it("says which projection and reactor faulted, with the event, and which handler has dead letters", function()
    local store = helpers.open({ durability = "nosync" })
    assert(store:projection { name = "fragile", handlers = { Ping = function(_, ev)
      if ev.data.i == 2 then error("cannot count ping 2") end end } })
    assert(store:projection { name = "steady", handlers = { Ping = function(view, ev) view:put(ev.position, true) end } })
    store:reactor { name = "brittle", handlers = { Ping = function(ev)
      if ev.data.i == 3 then error("cannot answer ping 3") end end } }
    store:on("Ping", function(ev) if ev.data.i == 1 then error("mail server down") end end,
      { name = "mailer", retries = 0 })
    helpers.fill(store, "ping-1", 3, "Ping")

    local status, report = chronicle.runner(store, { wait = 0.05 }):run({ until_idle = true })
    assert.equals("idle", status)
    assert.is_false(report.ok)
    assert.equals(2, #report.faulted)
    local p, r = report.faulted[1], report.faulted[2]
    assert.equals("projection", p.kind)
    assert.equals("fragile", p.name)
    assert.equals(2, p.position)
    assert.equals("ping-1", p.stream)
    assert.equals("Ping", p.type)
    assert.matches("cannot count ping 2", p.error, nil, true)
    assert.equals("reactor", r.kind)
    assert.equals("brittle", r.name)
    assert.equals(3, r.position)
    assert.matches("cannot answer ping 3", r.error, nil, true)
    assert.same({ mailer = 1 }, report.dead_letters)
    assert.same({}, report.errors)
    assert.equals(3, store:view("steady"):count())

    local n, again = chronicle.runner(store):run_once()
    assert.equals(0, n)
    assert.same(report.faulted, again.faulted, "run_once reports the same faults: they stay until reset")
    assert.same({ mailer = 1 }, again.dead_letters)
    local hs = store:handler_status().mailer
    assert.equals("dead_letters", hs.status)
    assert.equals(1, hs.dead_letters)
    assert.equals(3, hs.checkpoint)
    assert.equals(0, hs.lag)
  end)

  it("is ok when nothing faulted", function()
    local store = helpers.open({ durability = "nosync" })
    assert(store:projection { name = "count", handlers = { Ping = function(view, ev) view:put(ev.position, 1) end } })
    helpers.fill(store, "ping-1", 2, "Ping")
    local n, report = chronicle.runner(store):run_once()
    assert.is_true(n >= 1)
    assert.is_true(report.ok)
    assert.same({}, report.faulted)
    assert.same({}, report.dead_letters)
  end)

  it("faults a projection whose row key the store refuses, with that event, and runs the others", function()
    local store, dir = helpers.open({ durability = "nosync" })
    local function register(s)
      assert(s:projection { name = "long_keys", handlers = { Ping = function(view, ev)
        view:put(ev.data.i == 2 and ("k"):rep(500) or tostring(ev.position), true) end } })
      assert(s:projection { name = "unstorable", handlers = { Ping = function(view, ev)
        view:put(tostring(ev.position), ev.data.i == 2 and { f = print } or true) end } })
      assert(s:projection { name = "fine", handlers = { Ping = function(view, ev) view:put(ev.position, true) end } })
    end
    register(store)
    helpers.fill(store, "ping-1", 3, "Ping")
    local _, report = chronicle.runner(store):run_once()
    assert.equals(2, #report.faulted)
    assert.equals("long_keys", report.faulted[1].name)
    assert.equals(2, report.faulted[1].position)
    assert.matches("over the limit of 400", report.faulted[1].error, nil, true)
    assert.equals("unstorable", report.faulted[2].name)
    assert.equals(2, report.faulted[2].position, "the event that wrote the refused row")
    assert.matches("cannot store a function", report.faulted[2].error, nil, true)
    assert.equals(3, store:view("fine"):count())
    store:close()
    local again = helpers.open({ durability = "nosync" }, dir)
    register(again)
    helpers.fill(again, "ping-1", 1, "Ping")
    local _, report2 = chronicle.runner(again):run_once()
    assert.equals(2, #report2.faulted)
    assert.equals(4, again:view("fine"):count())
  end)
end)

describe("store:wait", function()
  after_each(helpers.cleanup)

  it("returns the new head as soon as another process appends", function()
    local store, dir = helpers.open()
    local latencies = {}
    for round = 1, 5 do
      local head = store:head()
      local finish = append_from_another_process(dir, 0.1)
      local got = store:wait(head, 10)
      local woke = chronicle.now()
      local t0, position = finish()
      assert.equals(position, got, "round " .. round)
      assert.is_true(got > head)
      latencies[#latencies + 1] = (woke - t0) / 1e6
    end
    local parts = {}
    for i, l in ipairs(latencies) do parts[i] = ("%.2f"):format(l) end
    print(("\n  store:wait, append in another process -> wake: %s ms (median %.2f ms)"):format(
      table.concat(parts, ", "), median(latencies)))
    for _, l in ipairs(latencies) do assert.is_true(l < 3000, "latency " .. l .. " ms") end
  end)

  it("returns at once when the log already holds an event after the given position", function()
    local store = helpers.open()
    helpers.fill(store, "p-1", 3, "Ping")
    local started = chronicle.now()
    assert.equals(3, store:wait(1, 30))
    assert.is_true((chronicle.now() - started) / 1e9 < 10, "it waited instead of returning at once")
  end)

  it("returns false when its timeout passes with nothing new", function()
    local store = helpers.open()
    helpers.fill(store, "p-1", 1, "Ping")
    local started = chronicle.now()
    assert.is_false(store:wait(1, 0.2))
    local elapsed = (chronicle.now() - started) / 1e9
    assert.is_true(elapsed >= 0.15 and elapsed < 10, "waited " .. elapsed .. " s")
  end)
end)
