-- Snapshots: with snapshot_every = N the state is stored every N events, in
-- the same transaction as the events that cross the boundary; load starts from
-- the newest usable snapshot and replays the rest; a new schema_version makes
-- old snapshots unusable; rebuild_snapshots redoes them all.
local helpers = require "helpers"
local chronicle = require "chronicle"

local function same(expected, actual, what)
  local ok, where = helpers.identical(expected, actual)
  assert(ok, (what or "value") .. " differs: " .. tostring(where))
end

-- A shopping cart with enough shape to make snapshots interesting: a map of
-- items, a bounded list, counters, and a handler that returns a new state.
-- `counter.applied` counts apply calls (how many events a load replayed).
local function cart_def(counter, extra)
  counter = counter or {}
  counter.applied = 0
  local function counted(fn)
    return function(state, ev)
      counter.applied = counter.applied + 1
      return fn(state, ev)
    end
  end
  local def = {
    name = "cart",
    initial = function() return { open = false, items = {}, count = 0, recent = {}, renames = 0 } end,
    apply = {
      Created = counted(function(s, ev) s.open = true; s.owner = ev.data.owner end),
      Added = counted(function(s, ev)
        local sku = ev.data.sku
        s.items[sku] = (s.items[sku] or 0) + ev.data.qty
        s.count = s.count + ev.data.qty
        s.recent[#s.recent + 1] = sku
        if #s.recent > 4 then table.remove(s.recent, 1) end
      end),
      Removed = counted(function(s, ev)
        s.count = s.count - s.items[ev.data.sku]
        s.items[ev.data.sku] = nil
      end),
      Renamed = counted(function(s, ev)
        local copy = {}
        for k, v in pairs(s) do copy[k] = v end
        copy.owner = ev.data.owner
        copy.renames = s.renames + 1
        return copy
      end),
    },
    commands = {
      create = function(s, args)
        if s.open then return nil, "exists" end
        return { type = "Created", data = { owner = args.owner } }
      end,
      add = function(s, args)
        if not s.open then return nil, "no cart" end
        return { type = "Added", data = { sku = args.sku, qty = args.qty } }
      end,
      add_many = function(s, args)
        if not s.open then return nil, "no cart" end
        local out = {}
        for i = 1, args.n do out[i] = { type = "Added", data = { sku = args.sku .. i, qty = i } } end
        return out
      end,
      remove = function(s, args)
        if not s.items[args.sku] then return nil, "not in cart" end
        return { type = "Removed", data = { sku = args.sku } }
      end,
      rename = function(s, args)
        if not s.open then return nil, "no cart" end
        if s.owner == args.owner then return end
        return { type = "Renamed", data = { owner = args.owner } }
      end,
    },
  }
  for k, v in pairs(extra or {}) do def[k] = v end
  return def
end

local function snapshot_of(store, stream)
  return store:kv_get("snapshots", stream)
end

describe("snapshots", function()
  local store
  before_each(function() store = helpers.open({ durability = "nosync" }) end)
  after_each(helpers.cleanup)

  it("are written by the execute whose events cross each multiple of snapshot_every, and not before", function()
    local carts = store:repository(chronicle.aggregate(cart_def(nil, { snapshot_every = 5 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    for i = 1, 3 do
      assert(carts:execute("1", "add", { sku = "s" .. i, qty = 1 }))
      assert.is_nil(snapshot_of(store, "cart-1"), "a snapshot before 5 events (after " .. (i + 1) .. ")")
    end
    local res = assert(carts:execute("1", "add", { sku = "s4", qty = 2 }))
    assert.equals(4, res.version)
    local snap = snapshot_of(store, "cart-1")
    assert.is_table(snap, "no snapshot right after the fifth event")
    assert.equals(4, snap.version)
    assert.equals(1, snap.schema)
    same(res.state, snap.state, "the snapshot's state")
    assert.same(snap, carts:snapshot("1"))

    -- a command whose three events jump from version 7 over the boundary at 9 to 10
    for i = 5, 7 do assert(carts:execute("1", "add", { sku = "t" .. i, qty = 1 })) end
    assert.equals(4, snapshot_of(store, "cart-1").version)
    res = assert(carts:execute("1", "add_many", { sku = "m", n = 3 }))
    assert.equals(10, res.version)
    snap = snapshot_of(store, "cart-1")
    assert.equals(10, snap.version, "the snapshot holds the state after all the command's events")
    same(res.state, snap.state, "the snapshot's state")
  end)

  it("are not written by a dry run, a rejection or a conflict that crosses the boundary", function()
    local Cart = chronicle.aggregate(cart_def(nil, { snapshot_every = 3 }))
    local carts = store:repository(Cart)
    assert(carts:execute("1", "create", { owner = "ann" }))
    assert(carts:execute("1", "add", { sku = "a", qty = 1 }))
    assert(carts:execute("1", "add", { sku = "b", qty = 1 }, { dry_run = true }))
    assert.is_nil(snapshot_of(store, "cart-1"), "the dry run's snapshot was kept")
    assert.is_nil(carts:execute("1", "remove", { sku = "zzz" }))
    assert.is_nil(snapshot_of(store, "cart-1"))
    -- the conflicting writer's own event is the third: a snapshot after a failed
    -- write would be at version 2 with the command's state
    local Interfering = chronicle.aggregate(cart_def(nil, {
      snapshot_every = 3,
      commands = {
        add = function(_, args, ctx)
          assert(ctx.store:append(ctx.stream, { { type = "Added", data = { sku = "sneaky", qty = 9 } } }))
          return { type = "Added", data = { sku = args.sku, qty = args.qty } }
        end,
      },
    }))
    local _, err = store:repository(Interfering):execute("1", "add", { sku = "c", qty = 1 }, { retries = 0 })
    assert.equals("conflict", err.code)
    assert.is_nil(snapshot_of(store, "cart-1"), "a snapshot from a write that failed")
  end)

  it("are written by a unit of work whose events cross the boundary, in its transaction", function()
    local carts = store:repository(chronicle.aggregate(cart_def(nil, { snapshot_every = 3 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    assert(carts:execute("2", "create", { owner = "bo" }))
    assert(carts:execute("1", "add", { sku = "a", qty = 1 }))
    local res = assert(store:unit_of_work(function(uow)
      uow:execute(carts, "1", "add", { sku = "b", qty = 2 })   -- cart-1 reaches 3 events
      uow:execute(carts, "2", "add", { sku = "c", qty = 3 })   -- cart-2 reaches 2
    end))
    local snap = snapshot_of(store, "cart-1")
    assert.is_table(snap, "no snapshot after the unit of work")
    assert.equals(2, snap.version)
    same(res.streams["cart-1"].state, snap.state, "the snapshot's state")
    assert.is_nil(snapshot_of(store, "cart-2"))
    -- and a rejected unit writes no snapshot either
    assert.is_nil(store:unit_of_work(function(uow)
      uow:execute(carts, "2", "add", { sku = "d", qty = 1 })
      uow:execute(carts, "1", "remove", { sku = "nothing" })
    end))
    assert.is_nil(snapshot_of(store, "cart-2"))
  end)

  it("make load replay only the events after the newest snapshot", function()
    local counter = {}
    local carts = store:repository(chronicle.aggregate(cart_def(counter, { snapshot_every = 10 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    for i = 1, 24 do assert(carts:execute("1", "add", { sku = "s" .. (i % 4), qty = i })) end
    assert.equals(19, snapshot_of(store, "cart-1").version)
    counter.applied = 0
    local state, version = carts:load("1")
    assert.equals(24, version)
    assert.equals(5, counter.applied, "load replayed events that the snapshot covers")
    local full = store:repository(chronicle.aggregate(cart_def()))
    same((full:load("1")), state, "snapshot + tail")
  end)

  it("carry the position and time of their last event, so loads by position and time use them", function()
    local counter = {}
    local carts = store:repository(chronicle.aggregate(cart_def(counter, { snapshot_every = 10 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    local at = {}                                   -- version -> the event's position and time
    for i = 1, 44 do
      helpers.fill(store, "noise", 1)               -- positions and versions part ways
      local res = assert(carts:execute("1", "add", { sku = "s" .. (i % 4), qty = i }))
      at[res.version] = { position = res.position, time = res.events[1].time }
    end
    local snap = snapshot_of(store, "cart-1")
    assert.equals(39, snap.version)
    assert.equals(at[39].position, snap.position)
    assert.equals(at[39].time, snap.time)
    local full = store:repository(chronicle.aggregate(cart_def()))
    for _, query in ipairs({ { position = at[42].position }, { time = at[42].time } }) do
      counter.applied = 0
      local state, version = carts:load("1", query)
      assert.equals(42, version)
      assert.equals(3, counter.applied, "a load by " .. next(query) .. " replayed events the snapshot covers")
      same((full:load("1", { version = 42 })), state, "snapshot + tail")
    end
    -- a snapshot newer than the point asked for is not used
    counter.applied = 0
    local _, version = carts:load("1", { position = at[30].position })
    assert.equals(30, version)
    assert.equals(31, counter.applied)
  end)

  it("take the position from the store also when a unit of work crosses the boundary", function()
    local carts = store:repository(chronicle.aggregate(cart_def(nil, { snapshot_every = 3 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    helpers.fill(store, "noise", 2)
    local res = assert(store:unit_of_work(function(uow)
      uow:execute(carts, "1", "add_many", { sku = "k", n = 3 })
    end))
    local snap = snapshot_of(store, "cart-1")
    assert.equals(3, snap.version)
    assert.equals(res.position, snap.position)
  end)

  it("without a position (written by older versions) are still read, but not for position or time loads", function()
    local counter = {}
    local carts = store:repository(chronicle.aggregate(cart_def(counter, { snapshot_every = 10 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    for i = 1, 14 do assert(carts:execute("1", "add", { sku = "x", qty = i })) end
    local snap = snapshot_of(store, "cart-1")
    snap.position, snap.time = nil, nil
    assert(store:write { puts = { { "snapshots", "cart-1", snap } } })
    counter.applied = 0
    assert.equals(14, select(2, carts:load("1")))
    assert.equals(5, counter.applied, "the old snapshot is used for a plain load")
    counter.applied = 0
    assert.equals(14, select(2, carts:load("1", { position = store:head() })))
    assert.equals(15, counter.applied, "an old snapshot was trusted for a position load")
  end)

  it("are used as they are stored: load trusts a snapshot it finds (so the tests above see it in use)", function()
    local carts = store:repository(chronicle.aggregate(cart_def(nil, { snapshot_every = 4 })))
    assert(carts:execute("1", "create", { owner = "ann" }))
    for i = 1, 5 do assert(carts:execute("1", "add", { sku = "x", qty = i })) end
    local snap = snapshot_of(store, "cart-1")
    assert.equals(3, snap.version)
    snap.state.owner = "planted"
    assert(store:write { puts = { { "snapshots", "cart-1", snap } } })
    assert.equals("planted", (carts:load("1")).owner)
  end)

  it("give the same state as a full replay for random histories", function()
    local seed = tonumber(os.getenv("CHRONICLE_SEED")) or os.time()
    print("\nsnapshot_spec random seed: " .. seed .. " (set CHRONICLE_SEED to repeat)")
    math.randomseed(seed)
    local counter = {}
    local Snapped = chronicle.aggregate(cart_def(counter, { snapshot_every = 7 }))
    local Plain = chronicle.aggregate(cart_def())
    local carts, plain = store:repository(Snapped), store:repository(Plain)
    local ids = { "a", "b", "c" }
    for _, id in ipairs(ids) do assert(carts:execute(id, "create", { owner = id })) end
    local rejected, written = 0, 0
    for step = 1, 600 do
      local id = ids[math.random(#ids)]
      local r = math.random(100)
      local res, err
      if r <= 55 then
        res, err = carts:execute(id, "add", { sku = "sku" .. math.random(12), qty = math.random(5) })
      elseif r <= 75 then
        res, err = carts:execute(id, "remove", { sku = "sku" .. math.random(12) })
      elseif r <= 85 then
        res, err = carts:execute(id, "add_many", { sku = "b" .. math.random(3) .. "-", n = math.random(9) })
      elseif r <= 95 then
        res, err = carts:execute(id, "rename", { owner = "o" .. math.random(3) })
      else
        res, err = carts:execute("nobody" .. math.random(3), "add", { sku = "x", qty = 1 })
      end
      if res then
        written = written + #res.events
      else
        assert.equals("rejected", err.code, "step " .. step .. ": " .. tostring(err))
        rejected = rejected + 1
      end
      if step % 50 == 0 then
        for _, each in ipairs(ids) do
          local s1, v1 = carts:load(each)
          local s2, v2 = plain:load(each)
          assert.equals(v2, v1, "seed " .. seed .. ", step " .. step .. ": version of " .. each)
          same(s2, s1, "seed " .. seed .. ", step " .. step .. ": state of cart " .. each)
        end
      end
    end
    assert.is_true(rejected > 0 and written > 300, "the random history is too tame")
    for _, id in ipairs(ids) do
      local stream = "cart-" .. id
      local snap = snapshot_of(store, stream)
      local last = store:stream_info(stream).version
      assert.is_table(snap)
      assert.is_true(snap.version > last - 7 - 9 and snap.version <= last, "the snapshot is stale")
      counter.applied = 0
      local s1, v1 = carts:load(id)
      assert.equals(last - snap.version, counter.applied, "load did not start from the snapshot")
      local s2, v2 = plain:load(id)
      assert.equals(last, v1)
      assert.equals(v2, v1)
      same(s2, s1, "seed " .. seed .. ": final state of cart " .. id)
    end
  end)

  describe("after a schema_version change", function()
    local V1 = function(extra) return chronicle.aggregate(cart_def(nil, extra)) end
    -- version 2 keeps items as a list of "sku x qty" strings instead of a map
    local function v2_def(counter)
      counter.applied = 0
      return chronicle.aggregate {
        name = "cart", schema_version = 2, snapshot_every = 5,
        initial = function() return { lines = {}, total = 0 } end,
        apply = {
          Created = function(s) counter.applied = counter.applied + 1; return s end,
          Added = function(s, ev)
            counter.applied = counter.applied + 1
            s.lines[#s.lines + 1] = ev.data.sku .. " x" .. ev.data.qty
            s.total = s.total + ev.data.qty
          end,
        },
        commands = {
          add = function(_, args) return { type = "Added", data = { sku = args.sku, qty = args.qty } } end,
        },
      }
    end

    it("ignore the old snapshot, replay everything, and store a snapshot of the new schema", function()
      local old = store:repository(V1({ snapshot_every = 5 }))
      assert(old:execute("1", "create", { owner = "ann" }))
      for i = 1, 11 do assert(old:execute("1", "add", { sku = "s" .. i, qty = i })) end
      local snap = snapshot_of(store, "cart-1")
      assert.equals(1, snap.schema)
      assert.equals(9, snap.version)

      local counter = {}
      local new = store:repository(v2_def(counter))
      local state, version = new:load("1")
      assert.equals(11, version)
      assert.equals(12, counter.applied, "the old snapshot was used")
      assert.equals(66, state.total)
      assert.equals(11, #state.lines)
      assert.equals("s11 x11", state.lines[11])
      assert.is_nil(state.items, "the state carries the old shape")

      snap = snapshot_of(store, "cart-1")
      assert.equals(2, snap.schema, "the snapshot was not rebuilt for the new schema")
      assert.equals(11, snap.version)
      same(state, snap.state, "the rebuilt snapshot")
      counter.applied = 0
      same(state, (new:load("1")), "a load from the rebuilt snapshot")
      assert.equals(0, counter.applied)

      -- and the old definition, in turn, does not trust the new snapshot
      local s1, v1 = old:load("1")
      assert.equals(11, v1)
      assert.equals(66, s1.count)
    end)

    it("do not let the new schema read a planted old-schema state", function()
      local old = store:repository(V1({ snapshot_every = 3 }))
      assert(old:execute("1", "create", { owner = "ann" }))
      for i = 1, 3 do assert(old:execute("1", "add", { sku = "s", qty = i })) end
      local snap = snapshot_of(store, "cart-1")
      snap.state = { lines = { "forged" }, total = 1000 }
      snap.version = 3
      assert(store:write { puts = { { "snapshots", "cart-1", snap } } })
      local state = store:repository(v2_def({})):load("1")
      assert.equals(6, state.total)
      assert.same({ "s x1", "s x2", "s x3" }, state.lines)
    end)
  end)

  describe("rebuild_snapshots", function()
    it("replays every aggregate of the kind and stores a fresh snapshot of each", function()
      local Cart = chronicle.aggregate(cart_def(nil, { snapshot_every = 4 }))
      local carts = store:repository(Cart)
      local sizes = { a = 2, b = 9, c = 17 }
      for id, n in pairs(sizes) do
        assert(carts:execute(id, "create", { owner = id }))
        for i = 1, n do assert(carts:execute(id, "add", { sku = "k" .. (i % 3), qty = i })) end
      end
      assert(store:append("cartography-1", { { type = "Unrelated" } }))
      assert(store:append("other-1", { { type = "Unrelated" } }))
      -- spoil what is there: a wrong state, and a missing snapshot
      local spoiled = snapshot_of(store, "cart-c")
      spoiled.state.count = -1
      assert(store:write { puts = { { "snapshots", "cart-c", spoiled } }, deletes = { { "snapshots", "cart-b" } } })

      local written = assert(carts:rebuild_snapshots())
      assert.equals(3, written)
      local plain = store:repository(chronicle.aggregate(cart_def()))
      for id, n in pairs(sizes) do
        local snap = snapshot_of(store, "cart-" .. id)
        assert.is_table(snap, "no snapshot for cart-" .. id)
        assert.equals(n, snap.version)
        assert.equals(1, snap.schema)
        same((plain:load(id)), snap.state, "rebuilt snapshot of cart-" .. id)
        same((plain:load(id)), (carts:load(id)), "load of cart-" .. id)
      end
      assert.is_nil(snapshot_of(store, "cartography-1"))
      assert.is_nil(snapshot_of(store, "other-1"))
    end)

    it("redoes snapshots written under an older schema", function()
      local carts = store:repository(chronicle.aggregate(cart_def(nil, { snapshot_every = 2 })))
      assert(carts:execute("z", "create", { owner = "zoe" }))
      assert(carts:execute("z", "add", { sku = "q", qty = 1 }))
      assert.equals(1, snapshot_of(store, "cart-z").schema)
      local Cart3 = chronicle.aggregate(cart_def(nil, { snapshot_every = 2, schema_version = 3 }))
      assert.equals(1, store:repository(Cart3):rebuild_snapshots())
      local snap = snapshot_of(store, "cart-z")
      assert.equals(3, snap.schema)
      assert.equals(1, snap.version)
      same((carts:load("z")), snap.state)
    end)

    it("is refused for an aggregate without snapshot_every", function()
      local carts = store:repository(chronicle.aggregate(cart_def()))
      assert.matches("snapshot_every", helpers.raises(carts.rebuild_snapshots, carts), nil, true)
    end)
  end)
end)
