-- store:append and store:append_many: expected versions, results, idempotency, atomicity, ids.
local helpers = require "helpers"
local chronicle = require "chronicle"

local UUID_V7 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function names(expected)
  for _, k in ipairs({ "ANY", "NO_STREAM", "EXISTS" }) do
    if chronicle[k] == expected then return "chronicle." .. k end
  end
  return tostring(expected)
end

describe("store:append", function()
  after_each(helpers.cleanup)

  it("writes events to a stream and returns the stream's new version and the global position", function()
    local store = helpers.open()
    helpers.result(store:append("account-1", { { type = "Opened" } }), 0, 1)
    helpers.result(store:append("account-2", { { type = "Opened" }, { type = "Deposited" } }), 1, 3)
    helpers.result(store:append("account-1", { { type = "Deposited" }, { type = "Deposited" } }), 2, 5)
    assert.equals(5, store:head())
    local info = assert(store:stream_info("account-1"))
    assert.equals(2, info.version)
    assert.equals(3, info.count)
  end)

  -- The expected-version matrix: every kind of `expected` against a stream that
  -- does not exist and against one holding three events (versions 0, 1, 2).
  -- (This API cannot make a stream that exists with no events, so there is no
  -- "empty stream" row.)
  local matrix = {
    { state = "missing", expected = chronicle.ANY, ok = true },
    { state = "missing", expected = chronicle.NO_STREAM, ok = true },
    { state = "missing", expected = chronicle.EXISTS, ok = false },
    { state = "missing", expected = 0, ok = false },
    { state = "missing", expected = 4, ok = false },
    { state = "non-empty", expected = chronicle.ANY, ok = true },
    { state = "non-empty", expected = chronicle.NO_STREAM, ok = false },
    { state = "non-empty", expected = chronicle.EXISTS, ok = true },
    { state = "non-empty", expected = 2, ok = true },
    { state = "non-empty", expected = 1, ok = false },
    { state = "non-empty", expected = 0, ok = false },
    { state = "non-empty", expected = 3, ok = false },
  }

  describe("with an expected version", function()
    for _, case in ipairs(matrix) do
      local title = string.format("on a %s stream, expected = %s %s", case.state, names(case.expected),
                                  case.ok and "appends" or "returns a conflict and writes nothing")
      it(title, function()
        local store = helpers.open()
        helpers.fill(store, "other-1", 2)                      -- positions 1, 2 belong to another stream
        if case.state == "non-empty" then helpers.fill(store, "order-1", 3) end
        local before = helpers.snapshot(store)
        local res, err = store:append("order-1", { { type = "Placed", data = { n = 1 } } },
                                      { expected = case.expected })
        if case.ok then
          assert.is_nil(err)
          local version = case.state == "missing" and 0 or 3
          helpers.result(res, version, before.head + 1)
          assert.equals(version, store:stream_info("order-1").version)
        else
          assert.is_nil(res)
          assert.is_true(chronicle.is_error(err))
          assert.equals("conflict", err.code)
          assert.equals(case.expected, err.expected)
          assert.equals("order-1", err.stream)
          if case.state == "missing" then
            assert.is_nil(err.actual)
          else
            assert.equals(2, err.actual)
          end
          assert.same(before, helpers.snapshot(store))
        end
      end)
    end

    it("uses chronicle.ANY when no expected version is given", function()
      local store = helpers.open()
      helpers.result(store:append("s", { { type = "T" } }), 0, 1)
      helpers.result(store:append("s", { { type = "T" } }, {}), 1, 2)
      helpers.result(store:append("s", { { type = "T" } }, { expected = chronicle.ANY }), 2, 3)
    end)

    it("also takes the expected version as a bare third argument", function()
      local store = helpers.open()
      helpers.result(store:append("s", { { type = "T" } }, chronicle.NO_STREAM), 0, 1)
      helpers.result(store:append("s", { { type = "T" } }, 0), 1, 2)
      local res, err = store:append("s", { { type = "T" } }, 0)
      assert.is_nil(res)
      assert.equals("conflict", err.code)
    end)

    it("lets exactly one of two writers that read the same version win", function()
      local store = helpers.open()
      helpers.fill(store, "cart-1", 1)
      local seen = store:stream_info("cart-1").version
      assert(store:append("cart-1", { { type = "ItemAdded" } }, { expected = seen }))
      local res, err = store:append("cart-1", { { type = "ItemAdded" } }, { expected = seen })
      assert.is_nil(res)
      assert.equals(seen, err.expected)
      assert.equals(seen + 1, err.actual)
    end)
  end)

  describe("a conflict error", function()
    it("is a value with a code, the details and a readable tostring", function()
      local store = helpers.open()
      helpers.fill(store, "account-7", 4)
      local _, err = store:append("account-7", { { type = "T" } }, { expected = 1 })
      assert.equals("conflict", err.code)
      assert.equals(1, err.expected)
      assert.equals(3, err.actual)
      assert.is_string(err.message)
      local text = tostring(err)
      assert.matches("^conflict", text)
      assert.matches("account-7", text, 1, true)
      assert.matches("3", text, 1, true)
      assert.matches("1", text, 1, true)
    end)

    it("says when the stream does not exist", function()
      local store = helpers.open()
      local _, err = store:append("ghost-1", { { type = "T" } }, { expected = chronicle.EXISTS })
      assert.equals("conflict", err.code)
      assert.equals(chronicle.EXISTS, err.expected)
      assert.is_nil(err.actual)
      assert.matches("ghost-1", tostring(err), 1, true)
    end)
  end)

  describe("stream names", function()
    it("may be any byte string from 1 to chronicle.MAX_STREAM_NAME (200) bytes", function()
      local store = helpers.open()
      assert.equals(200, chronicle.MAX_STREAM_NAME)
      local long = string.rep("x", chronicle.MAX_STREAM_NAME)
      local binary = "a\0b\255-\1"
      helpers.result(store:append("a", { { type = "T" } }), 0, 1)
      helpers.result(store:append(long, { { type = "T" } }), 0, 2)
      helpers.result(store:append(binary, { { type = "T" } }), 0, 3)
      assert.equals(long, helpers.collect(store:read(long))[1].stream)
      assert.equals(binary, helpers.collect(store:read(binary))[1].stream)
      assert.equals("a\0b\255", store:stream_info(binary).category)
    end)
  end)

  describe("an event", function()
    it("stores type, data and meta, and gets a time and a generated id", function()
      local store = helpers.open()
      local t0 = os.time()
      assert(store:append("order-1", { { type = "Placed", data = { total = 12 }, meta = { user = "ann" } } }))
      local ev = helpers.collect(store:read("order-1"))[1]
      assert.equals("Placed", ev.type)
      assert.same({ total = 12 }, ev.data)
      assert.same({ user = "ann" }, ev.meta)
      assert.equals("integer", math.type(ev.time))
      assert.is_true(math.abs(ev.time / 1e9 - t0) < 5)
      assert.matches(UUID_V7, ev.id)
    end)

    it("has schema 1 unless it says otherwise", function()
      local store = helpers.open()
      assert(store:append("s", { { type = "A" }, { type = "B", schema = 3 } }))
      local evs = helpers.collect(store:read("s"))
      assert.equals(1, evs[1].schema)
      assert.equals(3, evs[2].schema)
    end)

    it("keeps the id it was given", function()
      local store = helpers.open()
      local id = "0190b6c8-2f1e-7a3b-9c4d-5e6f708192a3"
      assert(store:append("s", { { type = "T", id = id } }))
      assert.equals(id, helpers.collect(store:read("s"))[1].id)
    end)
  end)

  describe("generated ids", function()
    it("are version 7 UUIDs, unique and increasing in log order", function()
      local store = helpers.open({ durability = "nosync" })
      for i = 1, 20 do helpers.fill(store, "s-" .. (i % 3), 50) end
      local seen, last, n = {}, nil, 0
      for ev in store:read_all() do
        n = n + 1
        assert.equals(36, #ev.id)
        assert.matches(UUID_V7, ev.id)
        assert.is_nil(seen[ev.id], "id used twice: " .. ev.id)
        seen[ev.id] = true
        if last then assert.is_true(ev.id > last, ev.id .. " is not after " .. last) end
        last = ev.id
      end
      assert.equals(1000, n)
    end)
  end)

  describe("with explicit ids", function()
    local events = {
      { type = "Placed", id = helpers.uuid(1), data = { total = 10 } },
      { type = "Paid", id = helpers.uuid(2), data = { amount = 10 } },
    }

    it("is idempotent: the same batch again returns the original result and writes nothing", function()
      local store = helpers.open()
      helpers.fill(store, "other", 1)
      local first = assert(store:append("order-1", events, { expected = chronicle.NO_STREAM }))
      helpers.result(first, 1, 3)
      helpers.fill(store, "other", 1)                 -- the log moves on
      local before = helpers.snapshot(store)
      local again, err = store:append("order-1", events, { expected = chronicle.NO_STREAM })
      assert.is_nil(err)
      helpers.result(again, first.version, first.position)
      assert.same(before, helpers.snapshot(store))
      assert.equals(2, #helpers.collect(store:read("order-1")))
    end)

    it("is idempotent when the retried data is the same table built in another key order", function()
      local store = helpers.open()
      -- Two equal tables whose pairs() orders differ: the second grew larger first.
      local a, b = {}, {}
      for i = 1, 20 do a["k" .. i] = i end
      for i = 1, 200 do b["k" .. i] = i end
      for i = 21, 200 do b["k" .. i] = nil end
      a.nested, b.nested = { x = { 1, 2, 3 }, y = "z" }, { y = "z", x = { 1, 2, 3 } }
      local order_a, order_b = {}, {}
      for k in pairs(a) do order_a[#order_a + 1] = k end
      for k in pairs(b) do order_b[#order_b + 1] = k end
      assert.are_not.same(order_a, order_b)      -- otherwise the test proves nothing
      local id = helpers.uuid(7)
      local first = assert(store:append("order-9", { { type = "Placed", id = id, data = a } }))
      local again, err = store:append("order-9", { { type = "Placed", id = id, data = b } })
      assert.is_nil(err)
      helpers.result(again, first.version, first.position)
      b.k3 = 3.0                                 -- a float is not the integer 3
      local _, err2 = store:append("order-9", { { type = "Placed", id = id, data = b } })
      assert.equals("duplicate_id", err2.code)
    end)

    it("gives duplicate_id when an id is reused for a different event", function()
      local store = helpers.open()
      assert(store:append("order-1", events))
      local before = helpers.snapshot(store)
      local res, err = store:append("order-1", { { type = "Placed", id = helpers.uuid(1), data = { total = 99 } } })
      assert.is_nil(res)
      assert.equals("duplicate_id", err.code)
      assert.equals(helpers.uuid(1), err.id)
      assert.same(before, helpers.snapshot(store))
    end)

    it("gives duplicate_id when an id is reused in another stream", function()
      local store = helpers.open()
      assert(store:append("order-1", events))
      local before = helpers.snapshot(store)
      local res, err = store:append("order-2", events)
      assert.is_nil(res)
      assert.equals("duplicate_id", err.code)
      assert.same(before, helpers.snapshot(store))
      assert.is_nil(store:stream_info("order-2"))
    end)

    it("gives duplicate_id when one batch uses an id twice, and writes nothing", function()
      local store = helpers.open()
      helpers.fill(store, "other", 1)
      local before = helpers.snapshot(store)
      local res, err = store:append("order-1", {
        { type = "Placed", id = helpers.uuid(5) },
        { type = "Paid", id = helpers.uuid(5) },
      })
      assert.is_nil(res)
      assert.equals("duplicate_id", err.code)
      assert.equals(helpers.uuid(5), err.id)
      assert.same(before, helpers.snapshot(store))
      assert.equals(0, #helpers.collect(store:read("order-1")))
      local _, nf = store:stream_info("order-1")
      assert.equals("not_found", nf.code)
    end)
  end)
end)

describe("a replay (every event of the append already stored under its ids)", function()
  after_each(helpers.cleanup)

  local function u(n) return helpers.uuid(n) end
  local function two(meta)
    return { { type = "Placed", id = u(1), data = { total = 10 }, meta = meta },
             { type = "Paid", id = u(2), data = { amount = 10 }, meta = meta } }
  end

  -- order-1 holds one event of its own at version 0, then the two events at versions 1 and 2.
  local function stored()
    local store = helpers.open()
    helpers.fill(store, "other", 2)
    assert(store:append("order-1", { { type = "Opened" } }))
    local first = assert(store:append("order-1", two({ correlation_id = "c-1" }), { expected = 0 }))
    helpers.fill(store, "other", 1)
    return store, first
  end

  for _, case in ipairs({
    { "chronicle.ANY", function() return chronicle.ANY end },
    { "the version the original append expected", function() return 0 end },
    { "chronicle.EXISTS (the first event is not at version 0)", function() return chronicle.EXISTS end },
  }) do
    it("succeeds with the original result, marked replayed, when expected is " .. case[1], function()
      local store, first = stored()
      local before = helpers.snapshot(store)
      local again, err = store:append("order-1", two({ correlation_id = "c-1" }), { expected = case[2]() })
      assert.is_nil(err)
      helpers.result(again, first.version, first.position)
      assert.equals(first.time, again.time)
      assert.is_true(again.replayed)
      assert.is_nil(first.replayed)
      assert.same(before, helpers.snapshot(store))
    end)
  end

  for _, case in ipairs({
    { "a stale version", 1 }, { "a version past the stream", 5 }, { "chronicle.NO_STREAM", chronicle.NO_STREAM },
  }) do
    it("is a conflict when expected is " .. case[1] .. " (not where the events are)", function()
      local store = stored()
      local before = helpers.snapshot(store)
      local res, err = store:append("order-1", two({ correlation_id = "c-1" }), { expected = case[2] })
      assert.is_nil(res)
      assert.equals("conflict", err.code)
      assert.equals(case[2], err.expected)
      assert.equals(2, err.actual)
      assert.equals(1, err.stored_version)
      assert.equals("order-1", err.stream)
      assert.same(before, helpers.snapshot(store))
    end)
  end

  it("with NO_STREAM succeeds when the first event is the stream's version 0", function()
    local store = helpers.open()
    local first = assert(store:append("order-2", two(), { expected = chronicle.NO_STREAM }))
    local again = assert(store:append("order-2", two(), { expected = chronicle.NO_STREAM }))
    helpers.result(again, first.version, first.position)
    local _, err = store:append("order-2", two(), { expected = chronicle.EXISTS })
    assert.equals("conflict", err.code)
    assert.equals(1, err.actual)
  end)

  it("is a conflict when the stored events are not consecutive in the given order", function()
    local store = stored()
    local swapped = two({ correlation_id = "c-1" })
    swapped[1], swapped[2] = swapped[2], swapped[1]
    local res, err = store:append("order-1", swapped)
    assert.is_nil(res)
    assert.equals("conflict", err.code)
    assert.equals(2, err.actual)
    assert.matches("not one after the other", err.message, 1, true)
  end)

  for _, case in ipairs({
    { "meta", 1, function(evs) evs[1].meta = { correlation_id = "c-2" } end },
    { "meta", 2, function(evs) evs[2].meta = nil end },
    { "data", 2, function(evs) evs[2].data = { amount = 11 } end },
    { "type", 1, function(evs) evs[1].type = "Quoted" end },
  }) do
    it("is duplicate_id naming what differs when event " .. case[2] .. "'s " .. case[1] .. " differs", function()
      local store = stored()
      local evs = two({ correlation_id = "c-1" })
      case[3](evs)
      local changed = case[2]
      local res, err = store:append("order-1", evs)
      assert.is_nil(res)
      assert.equals("duplicate_id", err.code)
      assert.equals(case[1], err.differs)
      assert.equals(u(changed), err.id)
      assert.equals(3 + changed, err.position)
      assert.matches("its " .. case[1] .. " differs", err.message, 1, true)
      assert.matches("position " .. (3 + changed), err.message, 1, true)
    end)
  end

  it("is duplicate_id naming the stream when the id is stored in another stream", function()
    local store = stored()
    local _, err = store:append("order-9", two({ correlation_id = "c-1" }))
    assert.equals("duplicate_id", err.code)
    assert.equals("stream", err.differs)
    assert.equals(4, err.position)
  end)

  it("mixing stored and new events is duplicate_id naming the first stored id at its real position", function()
    local store = stored()
    local before = helpers.snapshot(store)
    local evs = two({ correlation_id = "c-1" })
    evs[3] = { type = "Shipped", id = u(3) }
    local res, err = store:append("order-1", evs)
    assert.is_nil(res)
    assert.equals("duplicate_id", err.code)
    assert.equals(u(1), err.id)
    assert.equals(4, err.position)
    assert.matches("already stored at position 4", err.message, 1, true)
    assert.same(before, helpers.snapshot(store))
    -- a new event first, without an id, then a stored one
    local _, err2 = store:append("order-1", { { type = "Shipped" }, two({ correlation_id = "c-1" })[2] })
    assert.equals(u(2), err2.id)
    assert.equals(5, err2.position)
  end)

  it("an id in two append_many entries is 'used twice in this append', not a position past the head", function()
    local store = helpers.open()
    helpers.fill(store, "other", 5)
    local res, err = store:append_many({
      { stream = "a", events = { { type = "T", id = u(9) } } },
      { stream = "b", events = { { type = "T", id = u(9) } } },
    })
    assert.is_nil(res)
    assert.equals("duplicate_id", err.code)
    assert.equals(u(9), err.id)
    assert.is_nil(err.position)
    assert.matches("used twice in this append", err.message, 1, true)
    assert.equals(2, err.index)
    assert.equals(5, store:head())
    -- the same entry twice, same stream: still no replay of itself
    local _, err2 = store:append_many({
      { stream = "a", events = { { type = "T", id = u(9) } } },
      { stream = "a", events = { { type = "T", id = u(9) } } },
    })
    assert.matches("used twice in this append", err2.message, 1, true)
    -- a stored id twice: in one entry, and in two entries that would each be a replay
    assert(store:append("c", { { type = "T", id = u(8) } }))
    local _, err3 = store:append("c", { { type = "T", id = u(8) }, { type = "T", id = u(8) } })
    assert.equals("duplicate_id", err3.code)
    assert.matches("used twice in this append", err3.message, 1, true)
    local _, err4 = store:append_many({
      { stream = "c", events = { { type = "T", id = u(8) } } },
      { stream = "c", events = { { type = "T", id = u(8) } } },
    })
    assert.equals("duplicate_id", err4.code, err4.message)
    assert.matches("used twice in this append", err4.message, 1, true)
    assert.equals(2, err4.index)
  end)

  it("marks only the replayed entries of an append_many", function()
    local store = stored()
    local res = assert(store:append_many({
      { stream = "order-1", events = two({ correlation_id = "c-1" }), expected = 0 },
      { stream = "order-3", events = { { type = "Placed" } } },
    }))
    assert.is_true(res[1].replayed)
    assert.is_nil(res[2].replayed)
    assert.equals(5, res[1].position)
    assert.equals(7, res[2].position)
  end)
end)

describe("expected given as a string", function()
  after_each(helpers.cleanup)

  it("is refused with the value shown as a string", function()
    local store = helpers.open()
    local text = helpers.raises(store.append, store, "s", { { type = "T" } }, { expected = "1" })
    assert.matches("got string '1'", text, 1, true)
  end)
end)

describe("store:append_many", function()
  after_each(helpers.cleanup)

  it("appends to several streams in one transaction and reports each", function()
    local store = helpers.open()
    helpers.fill(store, "account-2", 3)
    local res = assert(store:append_many({
      { stream = "account-1", expected = chronicle.NO_STREAM, events = { { type = "Opened" }, { type = "Deposited" } } },
      { stream = "account-2", expected = 2, events = { { type = "Withdrawn" } } },
    }))
    assert.equals(2, #res)
    assert.equals("account-1", res[1].stream)
    assert.equals(1, res[1].version)
    assert.equals(5, res[1].position)
    assert.equals("account-2", res[2].stream)
    assert.equals(3, res[2].version)
    assert.equals(6, res[2].position)
    assert.equals(6, res.position)
    assert.equals(6, store:head())
  end)

  for _, failing in ipairs({ 1, 2 }) do
    it("writes nothing when the expected check of entry " .. failing .. " fails, and names it in err.index", function()
      local store = helpers.open()
      helpers.fill(store, "account-2", 3)
      local before = helpers.snapshot(store)
      local batch = {
        { stream = "account-1", expected = chronicle.NO_STREAM, events = { { type = "Opened" } } },
        { stream = "account-2", expected = 2, events = { { type = "Withdrawn" } } },
      }
      batch[failing].expected = failing == 1 and chronicle.EXISTS or 0
      local res, err = store:append_many(batch)
      assert.is_nil(res)
      assert.equals("conflict", err.code)
      assert.equals(failing, err.index)
      assert.equals(batch[failing].stream, err.stream)
      assert.same(before, helpers.snapshot(store))
      assert.is_nil(store:stream_info("account-1"))
      assert.equals(2, store:stream_info("account-2").version)
    end)
  end

  it("writes nothing when a later entry reuses an id", function()
    local store = helpers.open()
    assert(store:append("x", { { type = "T", id = helpers.uuid(9) } }))
    local before = helpers.snapshot(store)
    local res, err = store:append_many({
      { stream = "a", events = { { type = "T" } } },
      { stream = "b", events = { { type = "T", id = helpers.uuid(9), data = 1 } } },
    })
    assert.is_nil(res)
    assert.equals("duplicate_id", err.code)
    assert.equals(2, err.index)
    assert.same(before, helpers.snapshot(store))
  end)
end)
