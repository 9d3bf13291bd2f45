-- Event handlers (store:on): side effects run after events are committed, at
-- least once, with a durable checkpoint, retries, dead letters that can be
-- inspected and retried, and no handler ever blocking another.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- These specs are about the read side, not durability: stores skip fsync to stay fast.
local FAST = { durability = "nosync" }

local function run(store) return chronicle.runner(store):run_once() end

-- The positions of the events of `types` in the log, in order.
local function positions_of(store, types)
  local set, out = {}, {}
  for _, t in ipairs(types) do set[t] = true end
  for ev in store:read_all() do if set[ev.type] then out[#out + 1] = ev.position end end
  return out
end

describe("an event handler", function()
  after_each(helpers.cleanup)

  it("gets each committed event of its types once, in log order", function()
    local store = helpers.open(FAST)
    local got = {}
    store:on({ "Deposited", "Withdrawn" }, function(ev) got[#got + 1] = ev.position end, { name = "audit", batch_size = 4 })
    for i = 1, 5 do
      assert(store:append("account-" .. i, { { type = "Deposited", data = { amount = i } },
                                             { type = "Viewed" },
                                             { type = "Withdrawn", data = { amount = 1 } } }))
    end
    assert.is_true(run(store) > 0)
    assert.same(positions_of(store, { "Deposited", "Withdrawn" }), got)
    assert.equals(10, #got)
    run(store)
    assert.equals(10, #got, "nothing is delivered twice in one process")
  end)

  it("only gets events of its category when it names one", function()
    local store = helpers.open(FAST)
    local got = {}
    store:on("Deposited", function(ev) got[#got + 1] = ev.stream end, { name = "savings_only", category = "savings" })
    assert(store:append("account-1", { { type = "Deposited" } }))
    assert(store:append("savings-1", { { type = "Deposited" } }))
    assert(store:append("savings-2", { { type = "Deposited" } }))
    run(store)
    assert.same({ "savings-1", "savings-2" }, got)
  end)

  it("resumes from its durable checkpoint after the store is closed and opened again", function()
    local store, dir = helpers.open(FAST)
    local first = {}
    store:on("Ping", function(ev) first[#first + 1] = ev.data.i end, { name = "pinger" })
    helpers.fill(store, "p-1", 6, "Ping")
    run(store)
    assert.same({ 1, 2, 3, 4, 5, 6 }, first)
    store:close()

    local again = helpers.open(FAST, dir)
    local second = {}
    again:on("Ping", function(ev) second[#second + 1] = ev.data.i end, { name = "pinger" })
    helpers.fill(again, "p-2", 2, "Ping")
    run(again)
    assert.same({ 1, 2 }, second, "only the events appended since were delivered")
  end)

  it("gets an event again when its process died before the checkpoint was written (at least once)", function()
    local work = helpers.tmpdir()
    local dir, log = work .. "/store", work .. "/deliveries"
    local store = helpers.open(FAST, dir)
    helpers.fill(store, "p-1", 10, "Ping")
    local script = helpers.root .. "/spec/support/projections/handler_crash.lua"

    local first = helpers.capture(helpers.lua_command(script, dir, log, "5") .. " 2>/dev/null")
    assert.equals("", first, "the first run was killed before it finished")
    local second = helpers.capture(helpers.lua_command(script, dir, log, "0") .. " 2>&1")
    assert.equals("done", second)

    local f = assert(io.open(log))
    local deliveries = {}
    for _, i in f:read("a"):gmatch("(%d+) (%d+)\n") do
      i = tonumber(i)
      deliveries[i] = (deliveries[i] or 0) + 1
    end
    f:close()
    for i = 1, 10 do
      assert.is_true((deliveries[i] or 0) >= 1, "event " .. i .. " was never delivered")
    end
    assert.equals(2, deliveries[5], "the event being handled when the process died is delivered again")
    for i = 1, 10 do
      if i ~= 5 then assert.equals(1, deliveries[i], "event " .. i .. " was checkpointed, so delivered once") end
    end
  end)

  describe("that fails", function()
    it("retries the event, then records it as a dead letter with its error and moves on", function()
      local store = helpers.open(FAST)
      local calls, delivered = {}, {}
      store:on("Ping", function(ev)
        calls[ev.data.i] = (calls[ev.data.i] or 0) + 1
        if ev.data.i == 3 then error("the mail server refused event 3") end
        delivered[#delivered + 1] = ev.data.i
      end, { name = "mailer", retries = 2 })
      helpers.fill(store, "p-1", 5, "Ping")
      local third
      for ev in store:read("p-1") do if ev.data.i == 3 then third = ev end end

      run(store)
      assert.equals(3, calls[3], "one call and two retries")
      assert.same({ 1, 2, 4, 5 }, delivered)
      local letters = store:dead_letters("mailer")
      assert.equals(1, #letters)
      local letter = letters[1]
      assert.equals("mailer", letter.handler)
      assert.equals(third.position, letter.position)
      assert.equals("p-1", letter.stream)
      assert.equals(third.version, letter.version)
      assert.equals("Ping", letter.type)
      assert.equals(third.id, letter.id)
      assert.equals(3, letter.attempts)
      assert.matches("the mail server refused event 3", letter.error, nil, true)

      run(store)
      assert.equals(3, calls[3], "a dead letter is not retried by the runner")
      assert.same({ 1, 2, 4, 5 }, delivered)
    end)

    it("leaves no dead letter when the event succeeds within its retries", function()
      local store = helpers.open(FAST)
      local attempts = 0
      store:on("Ping", function()
        attempts = attempts + 1
        if attempts < 3 then error("flaky") end
      end, { name = "flaky", retries = 3 })
      helpers.fill(store, "p-1", 1, "Ping")
      run(store)
      assert.equals(3, attempts)
      assert.same({}, store:dead_letters("flaky"))
    end)

    it("with no retries dead-letters an event after one attempt", function()
      local store = helpers.open(FAST)
      local attempts = 0
      store:on("Ping", function() attempts = attempts + 1; error("no") end, { name = "once", retries = 0 })
      helpers.fill(store, "p-1", 1, "Ping")
      run(store)
      assert.equals(1, attempts)
      assert.equals(1, #store:dead_letters("once"))
      assert.equals(1, store:dead_letters("once")[1].attempts)
    end)

    it("can retry its dead letters once the cause is fixed, which removes those that now succeed", function()
      local store = helpers.open(FAST)
      local down = { [2] = true, [4] = true }
      local delivered = {}
      store:on("Ping", function(ev)
        if down[ev.data.i] then error("service down for " .. ev.data.i) end
        delivered[#delivered + 1] = ev.data.i
      end, { name = "caller", retries = 1 })
      helpers.fill(store, "p-1", 5, "Ping")
      run(store)
      assert.same({ 1, 3, 5 }, delivered)
      assert.equals(2, #store:dead_letters("caller"))

      down[2] = nil
      local fixed, failing = store:retry_dead_letters("caller")
      assert.equals(1, fixed)
      assert.equals(1, failing)
      assert.same({ 1, 3, 5, 2 }, delivered)
      local left = store:dead_letters("caller")
      assert.equals(1, #left)
      assert.matches("service down for 4", left[1].error, nil, true)
      assert.equals(4, left[1].attempts, "two attempts at first, two more on retry")

      down[4] = nil
      fixed, failing = store:retry_dead_letters("caller")
      assert.equals(1, fixed)
      assert.equals(0, failing)
      assert.same({}, store:dead_letters("caller"))
      assert.same({ 1, 3, 5, 2, 4 }, delivered)
    end)

    it("never blocks another handler", function()
      local store = helpers.open(FAST)
      local good = {}
      store:on("Ping", function() error("always broken") end, { name = "broken", retries = 1 })
      store:on("Ping", function(ev) good[#good + 1] = ev.data.i end, { name = "good" })
      helpers.fill(store, "p-1", 4, "Ping")
      run(store)
      assert.same({ 1, 2, 3, 4 }, good)
      assert.equals(4, #store:dead_letters("broken"))
      assert.same({}, store:dead_letters("good"))

      helpers.fill(store, "p-2", 2, "Ping")
      run(store)
      assert.same({ 1, 2, 3, 4, 1, 2 }, good)
      assert.equals(6, #store:dead_letters("broken"))
      assert.equals(6, #store:dead_letters(), "dead_letters() lists every handler's letters")
    end)
  end)

  describe("registration", function()
    it("names a handler after its types unless given a name", function()
      local store = helpers.open(FAST)
      local h = store:on({ "B", "A" }, function() end)
      assert.equals("on:A,B", h.name)
      assert.equals(h, store:registrations().handlers["on:A,B"])
    end)

    it("refuses bad arguments, naming them", function()
      local store = helpers.open(FAST)
      assert.matches("unknown option 'retry'", helpers.raises(store.on, store, "A", function() end, { retry = 1 }), nil, true)
      assert.matches("handler must be a function", helpers.raises(store.on, store, "A", "nope"), nil, true)
      assert.matches("event types", helpers.raises(store.on, store, {}, function() end), nil, true)
      assert.matches("'retries'", helpers.raises(store.on, store, "A", function() end, { retries = -1 }), nil, true)
    end)

    it("stops delivering once unregistered", function()
      local store = helpers.open(FAST)
      local got = 0
      store:on("Ping", function() got = got + 1 end, { name = "temp" })
      helpers.fill(store, "p-1", 1, "Ping")
      run(store)
      store:unregister("temp")
      helpers.fill(store, "p-1", 1, "Ping")
      run(store)
      assert.equals(1, got)
      assert.matches("no handler 'temp'", helpers.raises(store.retry_dead_letters, store, "temp"), nil, true)
    end)
  end)
end)
