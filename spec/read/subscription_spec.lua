-- Persistent subscriptions in one process (several consumers as several
-- subscription objects, and several store handles): leases, acks, nacks,
-- parking, timeouts, ordering, durability, bad input.
local helpers = require "helpers"
local chronicle = require "chronicle"

local function fill(store, list)
  for _, e in ipairs(list) do assert(store:append(e[1], { { type = e[2] or "Placed", data = { n = e[3] } } })) end
end

local function positions(it)
  local out = {}
  for ev in it do out[#out + 1] = ev.position end
  return out
end

local function take(sub, n, opts)
  local _, list = sub:take(n, opts)
  return list
end

describe("a persistent subscription", function()
  after_each(helpers.cleanup)

  it("hands out events in log order, each to one consumer, until acked", function()
    local store = helpers.open()
    for i = 1, 10 do fill(store, { { "order-" .. i } }) end
    local a = assert(store:subscription("billing"))
    local b = assert(store:subscription("billing"))
    local got_a = take(a, 4)
    assert.same({ 1, 2, 3, 4 }, helpers.pluck(got_a, "position"))
    assert.equals(1, got_a[1].attempt)
    assert.same({ 5, 6, 7 }, positions(b:take(3)))
    for _, ev in ipairs(got_a) do assert.is_true(a:ack(ev)) end
    assert.same({ 8, 9, 10 }, positions(a:take(10)))
    assert.same({}, positions(b:take(10)), "what is leased is not given to another consumer")
    local st = store:subscription_status("billing")
    assert.equals(10, st.position)
    assert.equals(6, st.leased)
    assert.equals(0, st.lag)
    assert.equals(0, st.parked)
  end)

  it("reads only its category and types, from the position it was created with", function()
    local store = helpers.open()
    fill(store, { { "order-1" }, { "user-1" }, { "order-2", "Cancelled" }, { "order-3" }, { "order-4" } })
    local sub = assert(store:subscription("orders", { category = "order", types = "Placed", from = 2 }))
    assert.same({ 4, 5 }, positions(sub:take(10)))
  end)

  it("redelivers an event not acked within ack_timeout to another consumer; the late ack of the first is refused", function()
    local store = helpers.open()
    fill(store, { { "order-1" } })
    local a = assert(store:subscription("slow", { ack_timeout = 0.2 }))
    local b = assert(store:subscription("slow"))
    local ev = take(a, 1)[1]
    local again = take(b, 1, { wait = 10 })[1]
    assert.equals(ev.position, again.position)
    assert.equals(2, again.attempt)
    local ok, err = a:ack(ev)
    assert.is_nil(ok)
    assert.equals("not_leased", err.code)
    assert.equals(1, store:subscription_status("slow").leased, "the refused ack changed nothing")
    assert.is_true(b:ack(again))
    assert.equals(0, store:subscription_status("slow").in_flight)
  end)

  it("acks many events in one write; the ones not leased to this consumer are refused and left as they are", function()
    local store = helpers.open()
    for i = 1, 5 do fill(store, { { "order-" .. i } }) end
    local a = assert(store:subscription("many", { ack_timeout = 0.2 }))
    local b = assert(store:subscription("many"))
    local mine = take(a, 4)                               -- 1..4
    local theirs = take(b, 1)                             -- 5
    local writes, write = 0, store.write
    rawset(store, "write", function(...) writes = writes + 1; return write(...) end)
    local n, refused = a:ack_many({ mine[1], mine[2], mine[2], theirs[1] })
    assert.equals(2, n)
    assert.equals(1, writes, "one write for the acks")
    assert.equals(1, #refused)
    assert.equals("not_leased", refused[1].code)
    assert.equals(5, refused[1].position)
    -- 3's lease runs out and b takes it: a's ack of 3 is refused, 4 is acked, in one call
    local again = take(b, 2, { wait = 10 })
    while #again < 2 do again[#again + 1] = take(b, 1, { wait = 10 })[1] end
    assert.same({ 3, 4 }, helpers.pluck(again, "position"))
    assert.is_true(b:ack(again[2]))                      -- b is done with 4: a's ack of it is refused too
    n, refused = a:ack_many({ mine[3], mine[4] })
    assert.equals(0, n)
    assert.same({ 3, 4 }, helpers.pluck(refused, "position"))
    -- the refusals changed nothing: b's leases are as b's takes wrote them (5's ran out, but
    -- no one took it), so b acks both
    n, refused = b:ack_many({ again[1], theirs[1] })
    assert.equals(2, n)
    assert.same({}, refused)
    assert.equals(0, store:subscription_status("many").in_flight)
    for i = 6, 8 do fill(store, { { "order-" .. i } }) end
    assert.same({ 6, 7, 8 }, positions(a:take(10)))
    n, refused = a:ack_many({})
    assert.equals(0, n)
    assert.same({}, refused)
  end)

  it("acks a lease that ran out but was not given away, in a batch with others", function()
    local store = helpers.open()
    for i = 1, 3 do fill(store, { { "order-" .. i } }) end
    local sub = assert(store:subscription("late", { ack_timeout = 0.1 }))
    local list = take(sub, 3)
    os.execute("sleep 0.2")
    local n, refused = sub:ack_many(list)
    assert.equals(3, n)
    assert.same({}, refused)
    assert.equals(0, store:subscription_status("late").in_flight)
  end)

  it("parks an event after max_retries retries, lists it with its error, and replays it", function()
    local store = helpers.open()
    fill(store, { { "order-1" }, { "order-2" } })
    local sub = assert(store:subscription("retry", { max_retries = 1 }))
    local ev = take(sub, 1)[1]
    assert.is_true(sub:nack(ev, "retry", "card declined"))
    ev = take(sub, 1)[1]
    assert.equals(1, ev.position)
    assert.equals(2, ev.attempt)
    assert.is_true(sub:nack(ev, "retry", "card declined again"))
    -- delivered 1 + max_retries times: parked, so the next take moves on
    assert.same({ 2 }, positions(sub:take(5)))
    local parked = helpers.collect(sub:parked())
    assert.equals(1, #parked)
    assert.equals(1, parked[1].position)
    assert.equals("order-1", parked[1].stream)
    assert.equals("Placed", parked[1].type)
    assert.equals("card declined again", parked[1].error)
    assert.equals(2, parked[1].attempts)
    assert.equals(1, sub:replay_parked())
    assert.equals(0, store:subscription_status("retry").parked)
    ev = take(sub, 5)[1]
    assert.equals(1, ev.position)
    assert.equals(1, ev.attempt, "a replayed event starts a fresh count")
    assert.is_true(sub:ack(ev))
  end)

  it("parks an event whose lease ran out 1 + max_retries times", function()
    local store = helpers.open()
    fill(store, { { "order-1" } })
    local sub = assert(store:subscription("timeouts", { max_retries = 0, ack_timeout = 0.1 }))
    assert.equals(1, #take(sub, 1))
    assert.same({}, positions(sub:take(1, { wait = 0.5 })))
    local parked = helpers.collect(sub:parked())
    assert.equals(1, #parked)
    assert.matches("not acknowledged within ack_timeout", parked[1].error, nil, true)
  end)

  it("nack park sets an event aside at once, nack skip drops it", function()
    local store = helpers.open()
    fill(store, { { "order-1" }, { "order-2" } })
    local sub = assert(store:subscription("pk"))
    local list = take(sub, 2)
    assert.is_true(sub:nack(list[1], "park", "bad data"))
    assert.is_true(sub:nack(list[2], "skip"))
    local st = store:subscription_status("pk")
    assert.equals(1, st.parked)
    assert.equals(0, st.in_flight)
    assert.equals("bad data", helpers.collect(sub:parked())[1].error)
    local ok, err = sub:ack(list[2])
    assert.is_nil(ok)
    assert.equals("not_leased", err.code, "a skipped event is no longer leased")
  end)

  it("with strategy pinned, delivers each stream in order, one event at a time", function()
    local store = helpers.open()
    fill(store, { { "order-a" }, { "order-a" }, { "order-b" }, { "order-a" } })
    local a = assert(store:subscription("pin", { strategy = "pinned" }))
    local b = assert(store:subscription("pin"))
    assert.same({ 1, 3 }, helpers.pluck(take(a, 10), "position"))
    assert.same({}, positions(b:take(10)), "position 2 waits for 1, 4 for 2")
    local ev1
    for ev in store:read_all({ from = 1, count = 1 }) do ev1 = ev end
    assert.equals("not_leased", select(2, b:ack(ev1)).code)
    assert.is_true(a:ack(ev1))
    assert.same({ 2 }, positions(b:take(10)))
  end)

  it("leases at most max_in_flight events", function()
    local store = helpers.open()
    for i = 1, 6 do fill(store, { { "order-" .. i } }) end
    local sub = assert(store:subscription("few", { max_in_flight = 3 }))
    local list = take(sub, 10)
    assert.equals(3, #list)
    assert.same({}, positions(sub:take(10)))
    sub:ack(list[1])
    assert.same({ 4 }, positions(sub:take(10)))
  end)

  it("keeps its state across a restart: the position, the leases (redelivered after their timeout), parked events", function()
    local store, dir = helpers.open()
    for i = 1, 5 do fill(store, { { "order-" .. i } }) end
    local sub = assert(store:subscription("durable", { ack_timeout = 0.2 }))
    local list = take(sub, 3)
    assert.is_true(sub:ack(list[1]))                -- (a lease that ran out but was not given away)
    assert.is_true(sub:nack(list[2], "park", "later"))
    store:close()
    local again = assert(chronicle.open(dir))
    helpers.track(again)
    local sub2 = assert(again:subscription("durable"))
    -- 4 and 5 are new; 3 comes back once its lease ran out, as its second delivery; 1 (acked)
    -- and 2 (parked) do not. Each is acked at once: on a loaded machine a lease may run out
    -- between two takes, and an event delivered again is no failure.
    local seen, attempt3 = {}, nil
    local deadline = chronicle.now() + 10 * 1000000000
    while not (seen[3] and seen[4] and seen[5]) do
      assert(chronicle.now() < deadline, "gave up waiting for positions 3, 4 and 5")
      for ev in sub2:take(10, { wait = 1 }) do
        assert.is_true(ev.position >= 3, ("position %d was acked or parked before the restart"):format(ev.position))
        seen[ev.position] = true
        if ev.position == 3 then attempt3 = attempt3 or ev.attempt end
        assert.is_true(sub2:ack(ev))
      end
    end
    assert.equals(2, attempt3, "the delivery count survived the restart")
    assert.equals(1, again:subscription_status("durable").parked)
  end)

  it("refuses bad input, saying what is wrong", function()
    local store = helpers.open()
    fill(store, { { "order-1" } })
    local function refuses(pattern, ...)
      assert.matches(pattern, helpers.raises(...), nil, true)
    end
    refuses("'name' must be", store.subscription, store, "bad name")
    refuses("ack_timeout' must be a number > 0", store.subscription, store, "s", { ack_timeout = 0 })
    refuses("ack_timeout' must be a number > 0", store.subscription, store, "s", { ack_timeout = -1 })
    refuses("max_in_flight' must be an integer from 1", store.subscription, store, "s", { max_in_flight = 0 })
    refuses("max_retries' must be an integer >= 0", store.subscription, store, "s", { max_retries = -1 })
    refuses("unknown option 'ack_timout'", store.subscription, store, "s", { ack_timout = 1 })
    refuses("strategy' must be one of", store.subscription, store, "s", { strategy = "random" })
    refuses("category", store.subscription, store, "s", { category = "order-1" })
    local sub = assert(store:subscription("s"))
    refuses("n must be an integer from 1", sub.take, sub, 0)
    refuses("n must be an integer from 1", sub.take, sub, "10")
    refuses("option 'wait' must be a number >= 0", sub.take, sub, 1, { wait = -1 })
    local ev = take(sub, 1)[1]
    refuses("action must be \"retry\", \"park\" or \"skip\", got \"drop\"", sub.nack, sub, ev, "drop")
    refuses("reason must be a string", sub.nack, sub, ev, "retry", 42)
    refuses("an event taken from this subscription expected", sub.ack, sub, "1")
    refuses("ack_many: a list of events taken from this subscription expected, got string", sub.ack_many, sub, "1")
    refuses("ack_many: [2] must be an event taken from this subscription, got number", sub.ack_many, sub, { ev, 2 })
    local long = {}
    for i = 1, 10001 do long[i] = ev end
    refuses("ack_many: at most 10000 events at a time, got 10001", sub.ack_many, sub, long)
    local other = assert(store:subscription("s"))
    local ok, err = other:ack(ev)
    assert.is_nil(ok)
    assert.equals("not_leased", err.code)
    assert.matches("not leased to this consumer", err.message, nil, true)
    assert.equals(1, store:subscription_status("s").leased, "nothing changed")
    assert.is_true(sub:ack(ev))
    -- settings are fixed when the subscription is made
    local none, merr = store:subscription("s", { max_retries = 2 })
    assert.is_nil(none)
    assert.equals("subscription_mismatch", merr.code)
    assert.equals("max_retries", merr.option)
    assert.is_true(store:delete_subscription("s"))
    assert.is_truthy(store:subscription("s", { max_retries = 2 }))
  end)
end)
