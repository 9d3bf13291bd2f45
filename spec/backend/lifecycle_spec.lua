-- Stream lifecycle: metadata (max_count, max_age, truncate_before, custom keys), what it hides
-- from every read, soft and hard deletion, and what projections, handlers and aggregates see.
local helpers = require "helpers"
local chronicle = require "chronicle"

local collect, pluck = helpers.collect, helpers.pluck
local FAST = { durability = "nosync" }
local function fill(store, stream, n) return helpers.fill(store, stream, n, "Filled") end

local function versions(store, stream, opts) return pluck(collect(store:read(stream, opts)), "version") end
local function log(store, opts)
  local out = {}
  for ev in store:read_all(opts) do out[#out + 1] = ev.stream .. ":" .. ev.version end
  return out
end

local function range(a, b)
  local out = {}
  for i = a, b do out[#out + 1] = i end
  return out
end

describe("stream metadata", function()
  after_each(helpers.cleanup)

  it("is versioned, checked against expected, and shown by stream_info", function()
    local store = helpers.open(FAST)
    fill(store, "order-1", 3)
    local info = assert(store:stream_info("order-1"))
    assert.same({}, info.metadata)
    assert.equals(-1, info.metadata_version)
    assert.is_nil(info.deleted)

    assert.same({ version = 0 }, assert(store:set_stream_metadata("order-1", { max_count = 10, owner = "ops" },
      { expected = chronicle.NO_STREAM })))
    info = assert(store:stream_info("order-1"))
    assert.same({ max_count = 10, owner = "ops" }, info.metadata)
    assert.equals(0, info.metadata_version)
    assert.equals(2, info.version, "metadata does not change the stream's version")

    local res, err = store:set_stream_metadata("order-1", { max_count = 5 }, { expected = 3 })
    assert.is_nil(res)
    assert.equals("conflict", err.code)
    assert.equals(3, err.expected)
    assert.equals(0, err.actual)
    assert.same({ max_count = 10, owner = "ops" }, store:stream_info("order-1").metadata, "nothing changed")

    assert.same({ version = 1 }, assert(store:set_stream_metadata("order-1", { tier = { gold = true } }, { expected = 0 })))
    assert.same({ tier = { gold = true } }, store:stream_info("order-1").metadata, "metadata is replaced as a whole")
    res, err = store:set_stream_metadata("order-1", {}, { expected = chronicle.NO_STREAM })
    assert.equals("conflict", err.code)
  end)

  it("may be set before the stream has events, and keeps applying as it grows", function()
    local store = helpers.open(FAST)
    assert(store:set_stream_metadata("log-1", { max_count = 2 }))
    fill(store, "log-1", 5)
    assert.same({ 3, 4 }, versions(store, "log-1"))
  end)

  it("refuses misuse: negative or float retention, system keys, a bad expected", function()
    local store = helpers.open(FAST)
    fill(store, "a-1", 2)
    assert.has_error(function() store:set_stream_metadata("a-1", { max_count = -1 }) end,
      "set_stream_metadata: max_count must be an integer >= 0, got -1")
    assert.has_error(function() store:set_stream_metadata("a-1", { max_age = 1.5 }) end,
      "set_stream_metadata: max_age must be an integer >= 0 (seconds), got 1.5")
    assert.has_error(function() store:set_stream_metadata("a-1", { truncate_before = "3" }) end,
      "set_stream_metadata: truncate_before must be an integer >= 0, got string")
    assert.has_error(function() store:set_stream_metadata("a-1", { deleted = "hard" }) end,
      "set_stream_metadata: 'deleted' is kept by the store and cannot be set")
    assert.has_error(function() store:set_stream_metadata("a-1", { [1] = true }) end,
      "set_stream_metadata: metadata keys must be strings, got number")
    assert.has_error(function() store:set_stream_metadata("a-1", { max_count = 1 }, { expected = 1.5 }) end)
    assert.has_error(function() store:set_stream_metadata("a-1", { max_count = 1 }, { expect = 1 }) end)
    assert.has_error(function() store:set_stream_metadata("", {}) end)
    assert.has_error(function() store:set_stream_metadata("a-1", "max_count=1") end)
    assert.same({}, store:stream_info("a-1").metadata)
  end)

  it("refuses truncate_before beyond the stream's next version", function()
    local store = helpers.open(FAST)
    fill(store, "a-1", 3)
    local res, err = store:set_stream_metadata("a-1", { truncate_before = 4 })
    assert.is_nil(res)
    assert.equals("out_of_range", err.code)
    assert.equals(3, err.next_version)
    assert(store:set_stream_metadata("a-1", { truncate_before = 3 }), "up to the next version is fine")
    assert.same({}, versions(store, "a-1"))
  end)
end)

describe("lifecycle calls given bad input or a read-only store", function()
  after_each(helpers.cleanup)

  it("raise for misuse and return errors for outcomes", function()
    local store, dir = helpers.open(FAST)
    fill(store, "a-1", 3)
    assert.has_error(function() store:scavenge({ batch = 0 }) end)
    assert.has_error(function() store:scavenge({ bogus = true }) end)
    assert.has_error(function() store:scavenge({ progress = "no" }) end)
    assert.has_error(function() store:truncate_stream("a-1", -1) end)
    assert.has_error(function() store:truncate_stream("a-1", 1.5) end)
    assert.has_error(function() store:delete_stream(42) end)
    assert.has_error(function() store:delete_stream("a-1", { soft = true }) end)
    local res, err = store:truncate_stream("a-1", 4)
    assert.is_nil(res)
    assert.equals("out_of_range", err.code)
    store:close()
    local ro = helpers.track(assert(chronicle.open(dir, { readonly = true })))
    res, err = ro:set_stream_metadata("a-1", { max_count = 1 })
    assert.equals("readonly", err.code)
    res, err = ro:delete_stream("a-1")
    assert.equals("readonly", err.code)
    assert.same({ removed = 0, reclaimable = 0 }, (function(r) return { removed = r.removed, reclaimable = r.reclaimable } end)(
      assert(ro:scavenge({ dry_run = true }))))
    assert.equals(3, #collect(ro:read("a-1")))
  end)

  it("two handles changing the same metadata: the second expected version is a conflict", function()
    local store, dir = helpers.open(FAST)
    fill(store, "a-1", 3)
    local other = helpers.track(assert(chronicle.open(dir, FAST)))
    assert(store:set_stream_metadata("a-1", { max_count = 2 }, { expected = chronicle.NO_STREAM }))
    local res, err = other:set_stream_metadata("a-1", { max_count = 1 }, { expected = chronicle.NO_STREAM })
    assert.is_nil(res)
    assert.equals("conflict", err.code)
    assert(other:set_stream_metadata("a-1", { max_count = 1 }, { expected = 0 }))
    assert.same({ 2 }, versions(store, "a-1"), "the other handle's change is seen at once")
  end)
end)

describe("retention and truncation", function()
  after_each(helpers.cleanup)

  local store
  before_each(function()
    store = helpers.open(FAST)
    fill(store, "order-1", 10)      -- positions 1..10
    fill(store, "noise-1", 2)       -- 11, 12
    fill(store, "order-2", 3)       -- 13..15
  end)

  it("max_count hides all but the newest events from read, read_all, category and type reads, fold", function()
    assert(store:set_stream_metadata("order-1", { max_count = 3 }))
    assert.same({ 7, 8, 9 }, versions(store, "order-1"))
    assert.same({ 9, 8, 7 }, versions(store, "order-1", { backward = true }))
    assert.same({ 8, 9 }, versions(store, "order-1", { from = 8 }))
    assert.same({ "order-1:7", "order-1:8", "order-1:9", "noise-1:0", "noise-1:1", "order-2:0", "order-2:1",
                  "order-2:2" }, log(store))
    assert.same({ "order-1:7", "order-1:8", "order-1:9", "order-2:0", "order-2:1", "order-2:2" },
      log(store, { category = "order" }))
    assert.same({ "order-2:2", "order-2:1", "order-2:0", "order-1:9", "order-1:8", "order-1:7" },
      log(store, { category = "order", backward = true }))
    assert.same({ "order-1:7", "order-1:8", "order-1:9", "noise-1:0", "noise-1:1", "order-2:0", "order-2:1",
                  "order-2:2" }, log(store, { types = { "Filled" } }))
    local n, count, last_position, last_version = store:fold("order-1", 0, function(acc, ev) return acc + ev.data.i end)
    assert.equals(8 + 9 + 10, n)
    assert.equals(3, count)
    assert.equals(10, last_position)
    assert.equals(9, last_version)
    assert.equals(3, select(2, store:fold({ category = "order", count = 3 }, 0, function(a) return a + 1 end)))
    fill(store, "order-1", 1)
    assert.same({ 8, 9, 10 }, versions(store, "order-1"), "the window moves with new events")
    assert.equals(16, #collect(store:read_all({ hidden = true })), "hidden = true reads them all (chronicle copy)")
    assert.has_error(function() store:read_all({ hidden = 1 }) end)
  end)

  it("truncate_before hides the versions below it; positions stay, read_all skips the gap", function()
    assert(store:truncate_stream("order-1", 6))
    assert.same(range(6, 9), versions(store, "order-1"))
    assert.same({ 7, 8, 9, 10, 11, 12, 13, 14, 15 }, pluck(collect(store:read_all()), "position"))
    assert.same({ 7, 8 }, pluck(collect(store:read_all({ from = 1, count = 2 })), "position"))
    assert.equals(15, store:head(), "the head stays")
    assert.equals(9, store:stream_version("order-1"))
    fill(store, "order-1", 1)
    assert.same({ version = 10, position = 16 }, { version = store:stream_version("order-1"), position = store:head() },
      "a new event takes the next position: none is reused")
    assert.same(range(6, 10), versions(store, "order-1"))
    assert.same({ truncate_before = 6 }, store:stream_info("order-1").metadata)
  end)

  it("max_age hides events older than that many seconds", function()
    local now = chronicle.now and chronicle.now() or os.time() * 1000000000
    local old = now - 3600 * 1000000000
    assert(store:append("audit-1", { { type = "Seen", time = old }, { type = "Seen", time = old + 1 },
                                     { type = "Seen" } }))
    assert(store:set_stream_metadata("audit-1", { max_age = 60 }))
    assert.same({ 2 }, versions(store, "audit-1"))
    assert.same({ "audit-1:2" }, log(store, { category = "audit" }))
    assert(store:set_stream_metadata("audit-1", { max_age = 7200 }))
    assert.same({ 0, 1, 2 }, versions(store, "audit-1"), "a longer max_age shows them again (until scavenged)")
  end)

  it("the strictest of the rules wins", function()
    assert(store:set_stream_metadata("order-1", { max_count = 5, truncate_before = 7 }))
    assert.same({ 7, 8, 9 }, versions(store, "order-1"))
    assert(store:set_stream_metadata("order-1", { max_count = 2, truncate_before = 3 }))
    assert.same({ 8, 9 }, versions(store, "order-1"))
  end)

  it("aggregates load without the hidden events and keep appending at the right version", function()
    local Order = chronicle.aggregate {
      name = "order",
      initial = function() return { sum = 0, n = 0 } end,
      apply = { Filled = function(s, ev) s.sum = s.sum + ev.data.i; s.n = s.n + 1 end },
      commands = { fill = function(_, args) return { { type = "Filled", data = { i = args.i } } } end },
    }
    local orders = store:repository(Order)
    assert(store:truncate_stream("order-1", 8))
    local state, version = orders:load("1")
    assert.same({ sum = 9 + 10, n = 2 }, state)
    assert.equals(9, version)
    assert(orders:execute("1", "fill", { i = 100 }))
    assert.same({ sum = 9 + 10 + 100, n = 3 }, (orders:load("1")))
  end)

  it("projections and handlers never see hidden events; checkpoints keep working", function()
    assert(store:set_stream_metadata("order-1", { max_count = 2 }))
    local seen = {}
    assert(store:projection {
      name = "orders_seen",
      from = { category = "order" },
      handlers = { Filled = function(view, ev) view:put(ev.stream .. ":" .. ev.version, true) end },
    })
    store:on("Filled", function(ev) seen[#seen + 1] = ev.stream .. ":" .. ev.version end, { name = "watcher", batch_size = 2 })
    local runner = chronicle.runner(store)
    runner:pass()
    local rows = {}
    for k in store:view("orders_seen"):pairs() do rows[#rows + 1] = k end
    table.sort(rows)
    assert.same({ "order-1:8", "order-1:9", "order-2:0", "order-2:1", "order-2:2" }, rows)
    assert.same({ "order-1:8", "order-1:9", "noise-1:0", "noise-1:1", "order-2:0", "order-2:1", "order-2:2" }, seen)
    fill(store, "order-2", 1)
    runner:pass()
    assert.equals("order-2:3", seen[#seen])
    assert.equals(8, #seen, "nothing twice, nothing skipped")
  end)
end)

describe("store:delete_stream", function()
  after_each(helpers.cleanup)

  it("soft: hides the stream, appends $stream_deleted, and lets it be written again, versions going on", function()
    local store = helpers.open(FAST)
    fill(store, "cart-1", 4)
    fill(store, "cart-2", 1)
    local first_id = collect(store:read("cart-1"))[1].id
    local res = assert(store:delete_stream("cart-1", { expected = 3 }))
    assert.is_nil(store:event(first_id), "a hidden event is not found by its id either")
    assert.same({ version = 4, position = 6, hard = false }, res)
    assert.same({}, versions(store, "cart-1"))
    local info = assert(store:stream_info("cart-1"))
    assert.equals("soft", info.deleted)
    assert.equals(4, info.version)
    -- log-order reads deliver the deletion event (and nothing it hides)
    local evs = collect(store:read_all())
    assert.same({ "cart-2", "cart-1" }, pluck(evs, "stream"))
    assert.same({ "Filled", "$stream_deleted" }, pluck(evs, "type"))
    assert.same({ stream = "cart-1", hard = false, version = 3 }, evs[2].data)
    assert.same({ "$stream_deleted" }, pluck(collect(store:read_all({ types = { "$stream_deleted" } })), "type"))
    local state, n, _, last_version = store:fold("cart-1", 0, function(a) return a + 1 end)
    assert.same({ 0, 0, 4 }, { state, n, last_version })
    -- written again
    assert(store:append("cart-1", { { type = "Filled", data = { i = 99 } } }, 4))
    assert.same({ 5 }, versions(store, "cart-1"))
    assert.is_nil(store:stream_info("cart-1").deleted)
    assert.same({ "cart-2:0", "cart-1:4", "cart-1:5" }, log(store))
  end)

  it("hard: a tombstone; appends and reads get stream_deleted", function()
    local store = helpers.open(FAST)
    fill(store, "user-7", 3)
    assert(store:delete_stream("user-7", { hard = true }))
    local res, err = store:append("user-7", { { type = "Filled" } })
    assert.is_nil(res)
    assert.equals("stream_deleted", err.code)
    assert.equals("user-7", err.stream)
    res, err = store:append("user-7", { { type = "Filled" } }, 3)
    assert.equals("stream_deleted", err and err.code, "with the version expected as well")
    local ok, rerr = pcall(function() for _ in store:read("user-7") do end end)
    assert.is_false(ok)
    assert.equals("stream_deleted", rerr.code)
    local f, ferr = store:fold("user-7", 0, function(a) return a + 1 end)
    assert.is_nil(f)
    assert.equals("stream_deleted", ferr.code)
    assert.equals("hard", store:stream_info("user-7").deleted)
    local User = chronicle.aggregate {
      name = "user", initial = function() return {} end, apply = { Filled = function() end },
      commands = { fill = function() return { { type = "Filled" } } end },
    }
    local users = store:repository(User)
    local state, lerr = users:load("7")
    assert.is_nil(state)
    assert.equals("stream_deleted", lerr.code)
    local done, eerr = users:execute("7", "fill", {})
    assert.is_nil(done)
    assert.equals("stream_deleted", eerr.code)
    assert.same({ "user-7:3" }, log(store), "only the deletion event is left in the log")
    res, err = store:delete_stream("user-7")
    assert.equals("stream_deleted", err.code)
    res, err = store:append_many({ { stream = "user-8", events = { { type = "A" } } },
                                   { stream = "user-7", events = { { type = "A" } } } })
    assert.equals("stream_deleted", err.code)
    assert.equals(2, err.index)
    assert.is_nil(store:stream_info("user-8"), "all or nothing")
  end)

  it("reports a missing stream, an expected mismatch, and a second soft delete", function()
    local store = helpers.open(FAST)
    local res, err = store:delete_stream("nobody-1")
    assert.is_nil(res)
    assert.equals("not_found", err.code)
    fill(store, "cart-1", 2)
    res, err = store:delete_stream("cart-1", { expected = 5 })
    assert.equals("conflict", err.code)
    assert.same({ 5, 1 }, { err.expected, err.actual })
    assert.same({ 0, 1 }, versions(store, "cart-1"), "nothing deleted")
    assert(store:delete_stream("cart-1"))
    res, err = store:delete_stream("cart-1")
    assert.equals("not_found", err.code)
    assert(store:delete_stream("cart-1", { hard = true }), "a soft-deleted stream may be hard-deleted")
    assert.has_error(function() store:delete_stream("cart-1", { hard = "yes" }) end)
    assert.has_error(function() store:delete_stream("cart-1", { expected = -1 }) end)
  end)

  it("lets a projection drop the stream's rows, and a reloaded aggregate starts afresh", function()
    local store = helpers.open(FAST)
    local Cart = chronicle.aggregate {
      name = "cart",
      initial = function() return { items = 0 } end,
      snapshot_every = 2,
      apply = { Added = function(s) s.items = s.items + 1 end },
      commands = { add = function() return { { type = "Added" } } end },
    }
    local carts = store:repository(Cart)
    for _ = 1, 3 do assert(carts:execute("1", "add", {})) end
    assert(carts:execute("2", "add", {}))
    assert(store:projection {
      name = "cart_sizes",
      from = { category = "cart" },
      handlers = {
        Added = function(view, ev) view:put(ev.stream, { n = ((view:get(ev.stream) or {}).n or 0) + 1 }) end,
        ["$stream_deleted"] = function(view, ev) view:delete(ev.stream) end,
      },
    })
    assert(store:run_projections())
    assert.same({ n = 3 }, store:view("cart_sizes"):get("cart-1"))
    assert(store:delete_stream("cart-1"))
    assert(store:run_projections())
    assert.is_nil(store:view("cart_sizes"):get("cart-1"))
    assert.same({ n = 1 }, store:view("cart_sizes"):get("cart-2"))
    assert.is_nil(store:kv_get("snapshots", "cart-1"), "the deletion removed the snapshot")
    local told = {}
    store:on("$stream_deleted", function(ev) told[#told + 1] = ev.data.stream end, { name = "cleaner" })
    chronicle.runner(store):pass()
    assert.same({ "cart-1" }, told, "a handler of $stream_deleted hears of it")
    local state, version = carts:load("1")
    assert.same({ items = 0 }, state)
    assert.equals(3, version)
    assert(carts:execute("1", "add", {}))
    assert.same({ items = 1 }, (carts:load("1")))
    assert.equals(4, store:stream_version("cart-1"))
  end)
end)

describe("store:scavenge", function()
  after_each(helpers.cleanup)

  -- Everything a reader can see: the log as read_all gives it, and every stream's read.
  local function visible(store)
    local out = {}
    for ev in store:read_all() do out[#out + 1] = ev.position .. " " .. ev.stream .. ":" .. ev.version .. " " .. ev.id end
    for info in store:streams() do
      if info.deleted ~= "hard" then
        out[#out + 1] = info.stream .. " = " .. table.concat(versions(store, info.stream), ",")
      end
    end
    return out
  end

  it("removes what metadata and deletions hide, and nothing a reader sees changes", function()
    local store = helpers.open(FAST)
    fill(store, "order-1", 10)
    fill(store, "cart-1", 4)
    fill(store, "user-1", 3)
    fill(store, "keep-1", 2)
    local gone_id = collect(store:read("order-1"))[1].id
    assert(store:set_stream_metadata("order-1", { max_count = 3 }))
    assert(store:delete_stream("cart-1"))
    assert(store:delete_stream("user-1", { hard = true }))
    local before = visible(store)
    local st = assert(store:stats())
    assert.equals(7 + 4 + 3, st.reclaimable)
    assert.equals(0, st.scavenged)
    local progress = {}
    local res = assert(store:scavenge({ batch = 4, progress = function(removed) progress[#progress + 1] = removed end }))
    assert.equals(14, res.removed)
    assert.equals(3, res.streams)
    assert.is_true(res.batches >= 4, "bounded batches: " .. res.batches)
    assert.equals(14, progress[#progress])
    assert.same(before, visible(store))
    local report = assert(store:verify())
    assert.is_true(report.ok, table.concat(report.problems, "; "))
    st = assert(store:stats())
    assert.equals(0, st.reclaimable)
    assert.equals(14, st.scavenged)
    assert.equals(21 - 14, st.events, "the two deletion events stay")
    assert.equals(21, st.head)
    assert.is_nil(store:position_of(gone_id), "the id index entry went with the record")
    assert.same({ removed = 0, streams = 0 }, (function(r) return { removed = r.removed, streams = r.streams } end)(
      assert(store:scavenge())), "a second scavenge has nothing to do")
    -- versions and positions go on; the soft-deleted stream takes events again
    assert(store:append("cart-1", { { type = "Filled" } }, 4))
    assert.same({ 5 }, versions(store, "cart-1"))
    assert.equals(22, store:head())
    fill(store, "order-1", 1)
    assert.same({ 8, 9, 10 }, versions(store, "order-1"))
    assert.equals(1, assert(store:stats()).reclaimable)
    report = assert(store:verify())
    assert.is_true(report.ok, table.concat(report.problems, "; "))
  end)

  it("removes events past max_age, and keeps the log's newest event so no position is reused", function()
    local store = helpers.open(FAST)
    local old = chronicle.now() - 7200 * 1000000000
    assert(store:append("audit-1", { { type = "Seen", time = old }, { type = "Seen", time = old },
                                     { type = "Seen" }, { type = "Seen", time = old } }))
    assert(store:set_stream_metadata("audit-1", { max_age = 60 }))
    assert.same({ 2 }, versions(store, "audit-1"))
    local res = assert(store:scavenge({ batch = 1 }))
    -- LMDB's head is its newest record, which stays (hidden); PostgreSQL keeps the head apart.
    local lmdb = helpers.backend == "lmdb"
    assert.equals(lmdb and 2 or 3, res.removed)
    assert.same({ 2 }, versions(store, "audit-1"))
    assert.equals(4, store:head())
    fill(store, "audit-2", 1)
    assert.equals(5, store:head(), "no position is reused")
    assert.equals(lmdb and 1 or 0, assert(store:scavenge()).removed, "once it is not the head any more")
    local report = assert(store:verify())
    assert.is_true(report.ok, table.concat(report.problems, "; "))
    local state, n, _, last_version = store:fold("audit-1", 0, function(a) return a + 1 end)
    assert.same({ 1, 1, 3 }, { state, n, last_version })
  end)

  it("lets LMDB reuse the space it frees: a store written, expired and scavenged again stops growing", function()
    if helpers.backend ~= "lmdb" then return end       -- PostgreSQL reuses space after VACUUM
    local store = helpers.open(FAST)
    local sizes = {}
    for r = 1, 4 do
      for i = 1, 20 do
        local events = {}
        for j = 1, 100 do events[j] = { type = "Filled", data = { pad = string.rep("x", 200), j = j } } end
        assert(store:append("r" .. r .. "-" .. i, events))
        assert(store:set_stream_metadata("r" .. r .. "-" .. i, { max_count = 0 }))
      end
      local res = assert(store:scavenge())
      assert.is_true(res.removed >= 1999)
      sizes[r] = assert(store:stats()).file_size
    end
    assert.is_true(sizes[4] - sizes[1] < sizes[1] // 10,
      ("the file grew from %d to %d bytes over three more rounds"):format(sizes[1], sizes[4]))
  end)

  it("a scavenge killed with SIGKILL at random moments changes nothing visible; the next one finishes", function()
    local dir = helpers.tmpdir()
    local target = helpers.new_target(dir .. "/store")
    local store = assert(chronicle.open(target))
    for i = 1, 30 do
      local events = {}
      for j = 1, 100 do events[j] = { type = "Filled", data = { i = i, j = j } } end
      assert(store:append("bulk-" .. i, events))
      assert(store:set_stream_metadata("bulk-" .. i, { max_count = 40 }))
    end
    fill(store, "tail-1", 1)
    local before = visible(store)
    store:close()
    math.randomseed(os.time())
    -- The child is always killed below (and waited for, at most 5 s).
    local cmd = helpers.lua_command(helpers.root .. "/spec/support/scavenger.lua", target, "1")
    for _ = 1, 4 do
      local pid = helpers.capture("sh -c " .. helpers.quote(cmd .. " >/dev/null 2>&1 & echo $!"))
      os.execute(("sleep %.3f"):format(0.05 + math.random() * 0.15))
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      os.execute("i=0; while kill -0 " .. pid .. " 2>/dev/null && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done")
      store = assert(chronicle.open(target))
      local report = assert(store:verify())
      assert.is_true(report.ok, table.concat(report.problems, "; "))
      assert.same(before, visible(store))
      store:close()
    end
    store = helpers.track(assert(chronicle.open(target)))
    local partial = assert(store:stats()).scavenged
    assert(store:scavenge())
    print(("  4 kills: %d of %d removed by the killed scavenges, the rest by the last"):format(partial, 30 * 60))
    local st = assert(store:stats())
    assert.equals(30 * 60, st.scavenged, ("%d removed by the killed runs, the rest by the last"):format(partial))
    assert.equals(0, st.reclaimable)
    assert.same(before, visible(store))
    assert.is_true(assert(store:verify()).ok)
  end)
end)
