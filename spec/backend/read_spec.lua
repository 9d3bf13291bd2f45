-- Reading: store:read, store:read_all, store:streams, store:stream_info.
local helpers = require "helpers"
local chronicle = require "chronicle"

local collect, pluck = helpers.collect, helpers.pluck

local function range(a, b, step)
  local out = {}
  for i = a, b, step or 1 do out[#out + 1] = i end
  return out
end

describe("store:read", function()
  after_each(helpers.cleanup)

  local store
  before_each(function()
    store = helpers.open()
    helpers.fill(store, "noise-1", 2)                  -- positions 1, 2
    helpers.fill(store, "order-1", 10)                 -- positions 3..12, versions 0..9
    helpers.fill(store, "noise-1", 2)                  -- positions 13, 14
  end)

  it("yields a stream's events in version order", function()
    local evs = collect(store:read("order-1"))
    assert.same(range(0, 9), pluck(evs, "version"))
    assert.same(range(3, 12), pluck(evs, "position"))
    for i, ev in ipairs(evs) do
      assert.equals("order-1", ev.stream)
      assert.equals(i, ev.data.i)
    end
  end)

  it("yields them newest first with backward = true", function()
    assert.same(range(9, 0, -1), pluck(collect(store:read("order-1", { backward = true })), "version"))
  end)

  it("starts at version `from`", function()
    assert.same(range(4, 9), pluck(collect(store:read("order-1", { from = 4 })), "version"))
    assert.same(range(5, 0, -1), pluck(collect(store:read("order-1", { from = 5, backward = true })), "version"))
  end)

  it("stops after `count` events", function()
    assert.same(range(0, 3), pluck(collect(store:read("order-1", { count = 4 })), "version"))
    assert.same({ 6, 7 }, pluck(collect(store:read("order-1", { from = 6, count = 2 })), "version"))
    assert.same({ 9, 8, 7 }, pluck(collect(store:read("order-1", { backward = true, count = 3 })), "version"))
    assert.same({}, collect(store:read("order-1", { count = 0 })))
  end)

  it("yields nothing when `from` is past the end", function()
    assert.same({}, collect(store:read("order-1", { from = 10 })))
  end)

  it("reads in pages that, put together, are the whole stream", function()
    local full = pluck(collect(store:read("order-1")), "id")
    for _, size in ipairs({ 1, 3, 4, 10, 25 }) do
      local paged, from = {}, 0
      while true do
        local page = collect(store:read("order-1", { from = from, count = size }))
        for _, ev in ipairs(page) do paged[#paged + 1] = ev.id end
        if #page < size then break end
        from = page[#page].version + 1
      end
      assert.same(full, paged)
    end
    -- and backward, from the newest
    local back, from = {}, nil
    repeat
      local page = collect(store:read("order-1", { from = from, count = 3, backward = true }))
      for _, ev in ipairs(page) do back[#back + 1] = ev.id end
      from = page[#page] and page[#page].version - 1
    until #page < 3 or from < 0
    local reversed = {}
    for i = #full, 1, -1 do reversed[#reversed + 1] = full[i] end
    assert.same(reversed, back)
  end)

  it("yields nothing, without error, for a stream that does not exist", function()
    assert.same({}, collect(store:read("order-404")))
    assert.same({}, collect(store:read("order-404", { backward = true })))
  end)

  it("does not mistake a stream for another whose name starts the same", function()
    helpers.fill(store, "order-10", 1)
    helpers.fill(store, "order", 1)
    assert.equals(10, #collect(store:read("order-1")))
    assert.equals(1, #collect(store:read("order-10")))
    assert.equals(1, #collect(store:read("order")))
  end)
end)

describe("an event read back", function()
  after_each(helpers.cleanup)

  it("has position, stream, version, type, time, id, meta, data and schema", function()
    local store = helpers.open()
    helpers.fill(store, "other", 4)
    local before = os.time()
    assert(store:append("account-9", {
      { type = "Opened", data = { owner = "bo" }, meta = { correlation = "c-1" } },
      { type = "Deposited", data = { amount = 5 } },
    }))
    local evs = collect(store:read("account-9"))
    local ev = evs[1]
    assert.equals(5, ev.position)
    assert.equals("account-9", ev.stream)
    assert.equals(0, ev.version)
    assert.equals("Opened", ev.type)
    assert.equals("integer", math.type(ev.time))
    assert.is_true(math.abs(ev.time - before * 1e9) < 5e9, "time is in ns near os.time()")
    assert.equals(36, #ev.id)
    assert.same({ correlation = "c-1" }, ev.meta)
    assert.same({ owner = "bo" }, ev.data)
    assert.equals(1, ev.schema)
    assert.equals(6, evs[2].position)
    assert.equals(1, evs[2].version)
    assert.is_nil(evs[2].meta)
    assert.is_true(evs[2].time >= ev.time)
  end)

  it("is the same whether it comes from read or read_all", function()
    local store = helpers.open()
    helpers.fill(store, "a-1", 3)
    local by_stream = collect(store:read("a-1"))
    local by_log = collect(store:read_all())
    assert.same(by_stream, by_log)
  end)
end)

describe("store:read_all", function()
  after_each(helpers.cleanup)

  -- position: 1        2         3        4         5           6        7          8
  -- stream:   order-1  order-2   orders   order-1   customer-1  order    order-1-x  customer-1
  -- type:     Placed   Placed    Placed   Paid      Registered  Placed   Paid       Moved
  local layout = {
    { "order-1", "Placed" }, { "order-2", "Placed" }, { "orders", "Placed" }, { "order-1", "Paid" },
    { "customer-1", "Registered" }, { "order", "Placed" }, { "order-1-x", "Paid" }, { "customer-1", "Moved" },
  }
  local store
  before_each(function()
    store = helpers.open()
    for _, e in ipairs(layout) do assert(store:append(e[1], { { type = e[2] } })) end
  end)

  local function positions(opts) return pluck(collect(store:read_all(opts)), "position") end

  it("yields every event in position order", function()
    local evs = collect(store:read_all())
    assert.same(range(1, 8), pluck(evs, "position"))
    for i, ev in ipairs(evs) do
      assert.equals(layout[i][1], ev.stream)
      assert.equals(layout[i][2], ev.type)
    end
  end)

  it("takes from, to (inclusive) and count", function()
    assert.same(range(3, 8), positions({ from = 3 }))
    assert.same(range(1, 5), positions({ to = 5 }))
    assert.same(range(3, 5), positions({ from = 3, to = 5 }))
    assert.same({ 2, 3 }, positions({ from = 2, count = 2 }))
    assert.same({}, positions({ from = 9 }))
    assert.same({}, positions({ count = 0 }))
  end)

  it("reads backward from the head, or from `from`, down to `to`", function()
    assert.same(range(8, 1, -1), positions({ backward = true }))
    assert.same(range(5, 1, -1), positions({ backward = true, from = 5 }))
    assert.same({ 8, 7, 6 }, positions({ backward = true, count = 3 }))
    assert.same({ 6, 5, 4 }, positions({ backward = true, from = 6, to = 4 }))
  end)

  it("pages through the log with from and count", function()
    local paged, from = {}, 1
    repeat
      local page = positions({ from = from, count = 3 })
      for _, p in ipairs(page) do paged[#paged + 1] = p end
      from = (page[#page] or from) + 1
    until #page < 3
    assert.same(range(1, 8), paged)
  end)

  describe("with a category", function()
    it("yields the events of streams named category or category-...", function()
      -- "orders" has no dash: it is its own category, not part of "order"
      assert.same({ 1, 2, 4, 6, 7 }, positions({ category = "order" }))
      assert.same({ 3 }, positions({ category = "orders" }))
      assert.same({ 5, 8 }, positions({ category = "customer" }))
      assert.same({}, positions({ category = "nothing" }))
    end)

    it("combines with from, to, count and backward", function()
      assert.same({ 4, 6, 7 }, positions({ category = "order", from = 3 }))
      assert.same({ 2, 4 }, positions({ category = "order", from = 2, to = 5 }))
      assert.same({ 7, 6 }, positions({ category = "order", backward = true, count = 2 }))
      assert.same({ 4, 2, 1 }, positions({ category = "order", backward = true, from = 5 }))
    end)

    it("agrees with stream_info's category", function()
      assert.equals("order", store:stream_info("order-1-x").category)
      assert.equals("orders", store:stream_info("orders").category)
      assert.equals("order", store:stream_info("order").category)
    end)
  end)

  describe("with types", function()
    it("yields only events of the listed types", function()
      assert.same({ 4, 7 }, positions({ types = { "Paid" } }))
      assert.same({ 4, 5, 7 }, positions({ types = { "Paid", "Registered" } }))
      assert.same({}, positions({ types = { "Unknown" } }))
    end)

    it("takes a single type as a string", function()
      assert.same({ 4, 7 }, positions({ types = "Paid" }))
    end)

    it("combines with a category, count and backward", function()
      assert.same({ 1, 2, 6 }, positions({ category = "order", types = "Placed" }))
      assert.same({ 6, 2 }, positions({ category = "order", types = { "Placed" }, backward = true, count = 2 }))
      assert.same({ 2 }, positions({ category = "order", types = "Placed", from = 2, to = 5 }))
      -- count counts the events yielded, not the ones skipped
      assert.same({ 4, 7 }, positions({ types = "Paid", count = 2 }))
    end)
  end)
end)

describe("long reads", function()
  after_each(helpers.cleanup)

  local store
  local N = 700                  -- more than two batches of 256
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    for i = 1, N do
      assert(store:append(i % 2 == 0 and "even-1" or "big-1",
                          { { type = i % 3 == 0 and "Third" or "Other", data = { i = i } } }))
    end
  end)

  it("yield every event across batches, forward and backward", function()
    local n = 0
    for ev in store:read_all() do
      n = n + 1
      assert.equals(n, ev.position)
      assert.equals(n, ev.data.i)
    end
    assert.equals(N, n)
    local expect = N
    for ev in store:read_all({ backward = true }) do
      assert.equals(expect, ev.position)
      expect = expect - 1
    end
    assert.equals(0, expect)
    local versions = pluck(collect(store:read("big-1")), "version")
    assert.same(range(0, N // 2 - 1), versions)
    assert.equals(N // 3, #collect(store:read_all({ types = "Third" })))
    assert.equals(N // 2, #collect(store:read_all({ category = "even" })))
  end)

  it("close when a loop breaks part-way, leaving the store fully usable", function()
    local seen = 0
    for ev in store:read("big-1") do
      seen = seen + 1
      if ev.version == 300 then break end
    end
    assert.equals(301, seen)
    helpers.result(store:append("big-1", { { type = "After" } }, { expected = N // 2 - 1 }), N // 2, N + 1)
    assert.equals(N // 2 + 1, #collect(store:read("big-1")))
  end)

  it("do not leak reader slots when thousands of loops break", function()
    for i = 1, 2000 do
      if i % 2 == 0 then
        for _ in store:read_all({ from = 200 }) do break end
      else
        for ev in store:read("big-1") do
          if ev.version >= 1 then break end
        end
      end
    end
    -- each broken loop releases its read transaction: a leak would have run
    -- out of LMDB's reader slots (126 by default) long before now
    helpers.result(store:append("after-1", { { type = "T" } }), 0, N + 1)
    assert.equals(N + 1, #collect(store:read_all()))
    assert.equals(N + 1, store:stats().events)
  end)

  it("let the loop body append to the store it is reading", function()
    local n = 0
    for ev in store:read("big-1", { count = 300 }) do
      n = n + 1
      assert(store:append("copy-1", { { type = "Copied", data = { from = ev.position } } }))
    end
    assert.equals(300, n)
    assert.equals(300, store:stream_info("copy-1").count)
    assert.equals(N + 300, store:head())
  end)
end)

describe("store:streams", function()
  after_each(helpers.cleanup)

  local store
  before_each(function()
    store = helpers.open()
    for _, name in ipairs({ "order-2", "account-1", "order-10", "order-1", "orders", "zeta" }) do
      helpers.fill(store, name, 1)
    end
    helpers.fill(store, "order-1", 2)
  end)

  local function stream_names(opts) return pluck(collect(store:streams(opts)), "stream") end

  it("lists every stream in name (byte) order", function()
    assert.same({ "account-1", "order-1", "order-10", "order-2", "orders", "zeta" }, stream_names())
  end)

  it("filters by prefix", function()
    assert.same({ "order-1", "order-10", "order-2" }, stream_names({ prefix = "order-" }))
    assert.same({ "order-1", "order-10", "order-2", "orders" }, stream_names({ prefix = "order" }))
    assert.same({}, stream_names({ prefix = "nope" }))
  end)

  it("starts after a given name and stops after count", function()
    assert.same({ "order-10", "order-2", "orders", "zeta" }, stream_names({ after = "order-1" }))
    assert.same({ "order-10", "order-2" }, stream_names({ after = "order-1", count = 2 }))
    assert.same({ "account-1", "order-1" }, stream_names({ count = 2 }))
    assert.same({ "order-2" }, stream_names({ prefix = "order-", after = "order-10" }))
  end)

  it("pages through all streams with after and count", function()
    local all, after = {}, nil
    repeat
      local page = stream_names({ after = after, count = 4 })
      for _, n in ipairs(page) do all[#all + 1] = n end
      after = page[#page]
    until #page < 4
    assert.same(stream_names(), all)
  end)

  it("yields the same tables as stream_info", function()
    for info in store:streams() do
      assert.same(store:stream_info(info.stream), info)
    end
    local o1 = collect(store:streams({ prefix = "order-1", count = 1 }))[1]
    assert.equals(2, o1.version)
    assert.equals(3, o1.count)
  end)
end)

describe("store:stream_info", function()
  after_each(helpers.cleanup)

  it("describes a stream: name, category, version, count, positions and times", function()
    local store = helpers.open()
    local t0 = os.time()
    helpers.fill(store, "account-3", 2)              -- positions 1, 2
    helpers.fill(store, "other", 1)                  -- position 3
    helpers.fill(store, "account-3", 1)              -- position 4
    local info = assert(store:stream_info("account-3"))
    assert.equals("account-3", info.stream)
    assert.equals("account", info.category)
    assert.equals(2, info.version)
    assert.equals(3, info.count)
    assert.equals(1, info.first_position)
    assert.equals(4, info.last_position)
    assert.equals("integer", math.type(info.created))
    assert.is_true(math.abs(info.created / 1e9 - t0) < 5)
    assert.is_true(info.updated >= info.created)
    local evs = collect(store:read("account-3"))
    assert.equals(evs[1].time, info.created)
    assert.equals(evs[3].time, info.updated)
  end)

  it("returns nil and a not_found error for a stream that does not exist", function()
    local store = helpers.open()
    local info, err = store:stream_info("account-404")
    assert.is_nil(info)
    assert.is_true(chronicle.is_error(err))
    assert.equals("not_found", err.code)
    assert.equals("account-404", err.stream)
    assert.matches("account-404", tostring(err), 1, true)
  end)
end)

describe("store:kv_spaces", function()
  after_each(helpers.cleanup)

  it("names every space that holds a key, and no other", function()
    local store = helpers.open()
    assert.same({}, store:kv_spaces())
    local odd = string.rep("\255", 3)
    assert(store:write { puts = { { "b", "k", 1 }, { "a", "k", 1 }, { "a", "z", 2 }, { "aa", "x", 3 },
                                  { odd, "q", 4 }, { "gone", "k", 5 } } })
    assert(store:write { deletes = { { "gone", "k" } } })
    local spaces = store:kv_spaces()
    table.sort(spaces)
    assert.same({ "a", "aa", "b", odd }, spaces)
  end)
end)
