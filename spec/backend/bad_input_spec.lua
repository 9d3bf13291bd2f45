-- Misuse raises a clear error that names what was wrong, and leaves the store unchanged.
local helpers = require "helpers"
local chronicle = require "chronicle"

describe("bad input", function()
  after_each(helpers.cleanup)

  local store, before
  before_each(function()
    store = helpers.open()
    helpers.fill(store, "order-1", 3)
    helpers.fill(store, "order-2", 1)
    before = helpers.snapshot(store)
  end)

  -- Calls store[method](store, ...) expecting an error whose message contains
  -- every string in `mentions`; then checks head() and stats() did not move.
  local function refused(mentions, method, ...)
    local msg = helpers.raises(store[method], store, ...)
    for _, word in ipairs(mentions) do
      assert.matches(word, msg, 1, true)
    end
    assert.same(before, helpers.snapshot(store))
    return msg
  end

  local T = { { type = "T" } }

  describe("to append", function()
    it("refuses an empty stream name", function()
      refused({ "stream" }, "append", "", T)
    end)

    it("refuses a stream name over 200 bytes", function()
      refused({ "stream", "200" }, "append", string.rep("s", chronicle.MAX_STREAM_NAME + 1), T)
    end)

    it("refuses a stream name that is not a string", function()
      refused({ "stream" }, "append", 42, T)
      refused({ "stream" }, "append", nil, T)
      refused({ "stream" }, "append", { "order-1" }, T)
    end)

    it("refuses an empty event list", function()
      refused({ "events" }, "append", "order-1", {})
    end)

    it("refuses a single event not wrapped in a list, saying how to fix it", function()
      local msg = refused({ "events" }, "append", "order-1", { type = "T", data = 1 })
      assert.matches("{ }", msg, 1, true)
    end)

    it("refuses events that are not a table, or list entries that are not tables", function()
      refused({ "events" }, "append", "order-1", "T")
      refused({ "events" }, "append", "order-1", nil)
      refused({ "events[2]" }, "append", "order-1", { { type = "T" }, "T" })
    end)

    it("refuses a missing, empty or non-string type", function()
      refused({ "events[1].type" }, "append", "order-1", { { data = 1 } })
      refused({ "events[1].type" }, "append", "order-1", { { type = "" } })
      refused({ "events[1].type" }, "append", "order-1", { { type = 7 } })
      refused({ "events[2].type" }, "append", "order-1", { { type = "T" }, { type = true } })
    end)

    it("refuses a type over 200 bytes", function()
      refused({ "events[1].type" }, "append", "order-1", { { type = string.rep("t", chronicle.MAX_TYPE_NAME + 1) } })
    end)

    it("refuses an unknown event field, naming it", function()
      refused({ "events[1]", "dat" }, "append", "order-1", { { type = "T", dat = { x = 1 } } })
      refused({ "events[1]", "stream" }, "append", "order-1", { { type = "T", stream = "order-1" } })
    end)

    it("refuses an id that is not a UUID string", function()
      refused({ "events[1].id" }, "append", "order-1", { { type = "T", id = "not-a-uuid" } })
      refused({ "events[1].id" }, "append", "order-1", { { type = "T", id = 12345 } })
      refused({ "events[1].id" }, "append", "order-1",
              { { type = "T", id = "0190b6c8-2f1e-7a3b-9c4d-5e6f708192az" } })
      refused({ "events[1].id" }, "append", "order-1",
              { { type = "T", id = "0190b6c82f1e7a3b9c4d5e6f708192a3" } })
    end)

    it("refuses a schema that is not a positive integer", function()
      refused({ "events[1].schema" }, "append", "order-1", { { type = "T", schema = 0 } })
      refused({ "events[1].schema" }, "append", "order-1", { { type = "T", schema = "2" } })
    end)

    it("refuses a negative expected version", function()
      refused({ "expected" }, "append", "order-1", T, { expected = -1 })
    end)

    it("refuses a non-integer expected version", function()
      refused({ "expected" }, "append", "order-1", T, { expected = 1.5 })
      refused({ "expected" }, "append", "order-1", T, { expected = math.huge })
    end)

    it("refuses an expected version of the wrong type", function()
      refused({ "expected" }, "append", "order-1", T, { expected = {} })
      refused({ "expected" }, "append", "order-1", T, { expected = true })
      refused({ "expected" }, "append", "order-1", T, { expected = "sometimes" })
    end)

    it("refuses an unknown append option", function()
      refused({ "expcted" }, "append", "order-1", T, { expcted = 2 })
    end)

    it("refuses being called without the store (store.append instead of store:append)", function()
      local msg = helpers.raises(store.append, "order-1", T)
      assert.matches("store", msg, 1, true)
      assert.same(before, helpers.snapshot(store))
    end)
  end)

  describe("to append_many", function()
    it("refuses a batch that is not a non-empty list of entries", function()
      refused({ "append_many" }, "append_many", nil)
      refused({ "append_many" }, "append_many", {})
      refused({ "append_many[1]" }, "append_many", { "order-1" })
    end)

    it("refuses an entry with a bad field, naming the entry", function()
      refused({ "append_many[2]", "stream" }, "append_many",
              { { stream = "order-1", events = T }, { events = T } })
      refused({ "append_many[1]", "evnts" }, "append_many", { { stream = "order-1", evnts = T } })
      refused({ "append_many[2]", "expected" }, "append_many",
              { { stream = "order-3", events = T }, { stream = "order-4", events = T, expected = -3 } })
    end)

    it("writes nothing when a later entry holds a value that cannot be stored", function()
      refused({ "events[1].data.f" }, "append_many", {
        { stream = "order-3", events = T },
        { stream = "order-4", events = { { type = "T", data = { f = print } } } },
      })
    end)
  end)

  describe("to a store opened with a small max_event_size", function()
    it("refuses an event over the limit, and accepts one under it", function()
      local small = helpers.open({ max_event_size = 1024 })
      helpers.fill(small, "s", 1)
      local snap = helpers.snapshot(small)
      local ok, msg = pcall(small.append, small, "s", { { type = "T", data = string.rep("x", 2000) } })
      assert.is_false(ok)
      assert.matches("max_event_size", tostring(msg), 1, true)
      assert.matches("events[1]", tostring(msg), 1, true)
      assert.same(snap, helpers.snapshot(small))
      -- one oversized event refuses the whole batch
      local ok2 = pcall(small.append, small, "s", { { type = "T" }, { type = "T", meta = string.rep("m", 1500) } })
      assert.is_false(ok2)
      assert.same(snap, helpers.snapshot(small))
      helpers.result(small:append("s", { { type = "T", data = string.rep("x", 500) } }), 1, 2)
    end)
  end)

  describe("to read", function()
    it("refuses a stream name that is not a string of 1 to 200 bytes", function()
      refused({ "stream" }, "read", 42)
      refused({ "stream" }, "read", "")
      refused({ "stream" }, "read", string.rep("s", 201))
    end)

    it("refuses options that are not a table", function()
      refused({ "read" }, "read", "order-1", "backward")
    end)

    it("refuses an unknown option, naming it", function()
      refused({ "form" }, "read", "order-1", { form = 1 })
      refused({ "category" }, "read", "order-1", { category = "order" })
    end)

    it("refuses a bad from or count", function()
      refused({ "from" }, "read", "order-1", { from = -1 })
      refused({ "from" }, "read", "order-1", { from = 0.5 })
      refused({ "count" }, "read", "order-1", { count = "ten" })
      refused({ "count" }, "read", "order-1", { count = -2 })
    end)
  end)

  describe("to read_all", function()
    it("refuses options that are not a table", function()
      refused({ "read_all" }, "read_all", 5)
    end)

    it("refuses an unknown option, naming it", function()
      refused({ "categroy" }, "read_all", { categroy = "order" })
    end)

    it("refuses bad values of from, to, count, category and types", function()
      refused({ "from" }, "read_all", { from = "1" })
      refused({ "to" }, "read_all", { to = -1 })
      refused({ "count" }, "read_all", { count = 2.5 })
      refused({ "category" }, "read_all", { category = 3 })
      refused({ "category" }, "read_all", { category = "order-1" })
      refused({ "types" }, "read_all", { types = 5 })
      refused({ "types" }, "read_all", { types = {} })
      refused({ "types" }, "read_all", { types = { "Placed", 3 } })
    end)
  end)

  describe("to fold", function()
    it("refuses a query that is neither a stream name nor a table", function()
      refused({ "fold" }, "fold", 5, 0, function() end)
      refused({ "fold" }, "fold", nil, 0, function() end)
    end)

    it("refuses a missing or non-function fn", function()
      refused({ "fold", "function" }, "fold", "order-1", 0)
      refused({ "fold", "function" }, "fold", "order-1", 0, "sum")
    end)

    it("refuses an unknown query option, naming it", function()
      refused({ "strem" }, "fold", { strem = "order-1" }, 0, function() end)
    end)

    it("refuses a bad stream name in a query", function()
      refused({ "stream" }, "fold", "", 0, function() end)
      refused({ "stream" }, "fold", { stream = 42 }, 0, function() end)
    end)
  end)

  describe("to streams and stream_info", function()
    it("refuses options that are not a table, and unknown options", function()
      refused({ "streams" }, "streams", "order")
      refused({ "prefx" }, "streams", { prefx = "order" })
    end)

    it("refuses bad prefix, after and count values", function()
      refused({ "prefix" }, "streams", { prefix = 1 })
      refused({ "after" }, "streams", { after = {} })
      refused({ "count" }, "streams", { count = -1 })
    end)

    it("refuses a stream_info name that is not a string, as append and read do", function()
      refused({ "stream" }, "stream_info", {})
      refused({ "stream" }, "stream_info", 42)
    end)

    it("refuses a stream_info name that is not 1 to 200 bytes", function()
      refused({ "stream" }, "stream_info", "")
      refused({ "stream" }, "stream_info", string.rep("s", 201))
    end)
  end)

  it("leaves the store fully usable after all of that", function()
    pcall(store.append, store, "", T)
    pcall(store.append, store, "order-1", { { type = "T", data = { f = print } } })
    pcall(store.read_all, store, { nope = 1 })
    helpers.result(store:append("order-1", T, { expected = 2 }), 3, before.head + 1)
    assert.equals(4, #helpers.collect(store:read("order-1")))
  end)
end)
