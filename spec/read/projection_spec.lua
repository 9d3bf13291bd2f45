-- Projections: read models kept in the store, caught up batch by batch, each
-- batch's rows committed with its checkpoint, rebuilt in a shadow generation
-- when their definition changes, and readable from any process.
local helpers = require "helpers"
local chronicle = require "chronicle"
local common = require "support.projections.common"
local projection = require "chronicle.read.projection"

-- These specs are about the read side, not durability: stores skip fsync to stay fast.
local FAST = { durability = "nosync" }

-- Asserts that a reader view holds exactly `expected` (key -> row).
local function assert_rows(expected, view, what)
  local actual = common.rows(view)
  local ok, where = helpers.identical(expected, actual)
  assert.is_true(ok, (what or "rows") .. " differ at " .. tostring(where)
    .. "\nexpected: " .. common.serialize(expected) .. "\nactual:   " .. common.serialize(actual))
  local n = 0
  for _ in pairs(expected) do n = n + 1 end
  assert.equals(n, view:count(), (what or "rows") .. ": view:count()")
end

-- Runs one batch of a registered projection, as a runner would.
local function run_one_batch(store, name)
  local entry = assert(store:registrations().projections[name], "projection " .. name .. " is not registered")
  return projection.run_batch(store, entry.def, entry.state)
end

-- Runs the read_view.lua subprocess on `dir`; returns its stdout.
local function read_in_another_process(dir, name)
  local work = helpers.tmpdir()
  local out = helpers.capture(helpers.lua_command(helpers.root .. "/spec/support/projections/read_view.lua", dir, name)
    .. " 2> " .. helpers.quote(work .. "/stderr"))
  local f = assert(io.open(work .. "/stderr"))
  local err = f:read("a")
  f:close()
  assert.equals("", err, "the reader process wrote to stderr")
  return out
end

local function expected_dump(rows)
  local keys = {}
  for k in pairs(rows) do keys[#keys + 1] = k end
  table.sort(keys)
  local lines = {}
  for _, k in ipairs(keys) do lines[#lines + 1] = k .. "\t" .. common.serialize(rows[k]) end
  lines[#lines + 1] = "count " .. #keys
  return table.concat(lines, "\n")
end

-- The number of events the ledger handles (its types, in category "account").
local function handled_events(store)
  local n = 0
  local types = { Opened = true, Deposited = true, Withdrawn = true, Closed = true }
  for ev in store:read_all() do
    if ev.stream:match("^account%-") and types[ev.type] then n = n + 1 end
  end
  return n
end

describe("a projection", function()
  after_each(helpers.cleanup)

  describe("catching up", function()
    it("holds, after run_projections, the same rows as a plain computation over read_all", function()
      local store = helpers.open(FAST)
      common.history(store, 400, 12, 7)
      assert(store:projection(common.ledger({ batch_size = 17 })))
      local statuses = assert(store:run_projections())
      assert.same({ ledger = "idle" }, statuses)
      assert_rows(common.expected_ledger(store), store:view("ledger"))
      local status = store:projection_status().ledger
      assert.equals("live", status.status)
      assert.equals(store:head(), status.checkpoint)
      assert.is_nil(status.fault)
    end)

    it("applies only the new events on the next run, starting from its checkpoint", function()
      local store = helpers.open(FAST)
      local calls = 0
      assert(store:projection(common.ledger({ batch_size = 10, on_event = function() calls = calls + 1 end })))
      common.history(store, 150, 6, 1)
      assert(store:run_projections())
      local first = handled_events(store)
      assert.equals(first, calls, "every handled event ran once")
      local checkpoint = store:projection_status().ledger.checkpoint
      assert.equals(store:head(), checkpoint)

      assert(store:run_projections())
      assert.equals(first, calls, "a run with no new events handles nothing")

      assert(store:append("account-1", { { type = "Deposited", data = { amount = 5 } },
                                         { type = "Withdrawn", data = { amount = 2 } } }))
      assert(store:append("savings-1", { { type = "Deposited", data = { amount = 1 } } }))
      assert(store:run_projections())
      assert.equals(first + 2, calls, "only the two new ledger events were handled")
      assert.equals(store:head(), store:projection_status().ledger.checkpoint)
      assert_rows(common.expected_ledger(store), store:view("ledger"))
    end)

    it("reads only what its from clause selects: a category, a list of types, a list of streams", function()
      local store = helpers.open(FAST)
      local function counter(name, from)
        return {
          name = name, from = from,
          handlers = {
            Deposited = function(view, ev) view:update(ev.stream, function(n) return (n or 0) + 1 end) end,
            Withdrawn = function(view, ev) view:update(ev.stream, function(n) return (n or 0) + 1 end) end,
          },
        }
      end
      assert(store:projection(counter("by_category", { category = "account" })))
      assert(store:projection(counter("by_types", { types = { "Withdrawn" } })))
      assert(store:projection(counter("by_streams", { streams = { "account-2", "savings-1" } })))
      assert(store:projection(counter("everything")))
      for _, s in ipairs({ "account-1", "account-2", "savings-1" }) do
        assert(store:append(s, { { type = "Deposited", data = { amount = 1 } },
                                 { type = "Withdrawn", data = { amount = 1 } },
                                 { type = "Ignored" } }))
      end
      assert(store:run_projections())
      assert.same({ ["account-1"] = 2, ["account-2"] = 2 }, common.rows(store:view("by_category")))
      assert.same({ ["account-1"] = 1, ["account-2"] = 1, ["savings-1"] = 1 }, common.rows(store:view("by_types")))
      assert.same({ ["account-2"] = 2, ["savings-1"] = 2 }, common.rows(store:view("by_streams")))
      assert.same({ ["account-1"] = 2, ["account-2"] = 2, ["savings-1"] = 2 }, common.rows(store:view("everything")))
    end)

    it("runs init once, before its first event, in the same batch", function()
      local store = helpers.open(FAST)
      local inits = 0
      assert(store:projection {
        name = "with_init",
        init = function(view) inits = inits + 1; view:put("created", { by = "init" }) end,
        handlers = { Deposited = function(view, ev) view:update("created", function(r) r.n = (r.n or 0) + 1 end) end },
        batch_size = 2,
      })
      helpers.fill(store, "account-1", 5, "Deposited")
      assert(store:run_projections())
      assert.equals(1, inits)
      assert.same({ created = { by = "init", n = 5 } }, common.rows(store:view("with_init")))
    end)
  end)

  describe("batches", function()
    -- account-1 opened and projected, then 12 deposits of 1..12 at positions 2..13.
    local function twelve_deposits(store, def)
      assert(store:append("account-1", { { type = "Opened", data = { owner = "A" } } }))
      assert(store:projection(def))
      assert.same({ ledger = "idle" }, assert(store:run_projections()))
      local events = {}
      for i = 1, 12 do events[i] = { type = "Deposited", data = { amount = i } } end
      assert(store:append("account-1", events))
      local list = helpers.collect(store:read_all({ from = 2 }))
      assert.equals(12, #list)
      return list
    end

    it("commit each batch's rows together with its checkpoint", function()
      local store = helpers.open(FAST)
      local deposits = twelve_deposits(store, common.ledger({ batch_size = 5 }))
      local view = store:view("ledger")

      assert.equals("progress", run_one_batch(store, "ledger"))
      assert.equals(deposits[5].position, store:projection_status().ledger.checkpoint)
      assert.same({ owner = "A", balance = 15, deposits = 5 }, view:get("1"))
      assert.same({ sum = 15, events = 6 }, view:get("total"))

      assert.equals("progress", run_one_batch(store, "ledger"))
      assert.equals(deposits[10].position, store:projection_status().ledger.checkpoint)
      assert.same({ owner = "A", balance = 55, deposits = 10 }, view:get("1"))

      assert.equals("progress", run_one_batch(store, "ledger"))
      assert.equals(store:head(), store:projection_status().ledger.checkpoint)
      assert.same({ owner = "A", balance = 78, deposits = 12 }, view:get("1"))
      assert.equals("idle", run_one_batch(store, "ledger"))
    end)

    it("roll back entirely when a handler raises: the rows and the checkpoint stay where the last batch left them", function()
      local store = helpers.open(FAST)
      local def = common.ledger({ batch_size = 5 })
      local deposited = def.handlers.Deposited
      def.handlers.Deposited = function(view, ev)
        if ev.data.amount == 8 then error("amount 8 is cursed") end
        return deposited(view, ev)
      end
      local deposits = twelve_deposits(store, def)
      local view = store:view("ledger")

      assert.equals("progress", run_one_batch(store, "ledger"))
      assert.equals("faulted", run_one_batch(store, "ledger"))
      -- deposits 6 and 7 ran in the failed batch before 8 raised: none of it is visible
      assert.same({ owner = "A", balance = 15, deposits = 5 }, view:get("1"))
      assert.same({ sum = 15, events = 6 }, view:get("total"))
      local status = store:projection_status().ledger
      assert.equals(deposits[5].position, status.checkpoint)
      assert.equals("faulted", status.status)

      -- a faulted projection does not skip the event on the next run
      assert.same({ ledger = "faulted" }, assert(store:run_projections()))
      assert.same({ owner = "A", balance = 15, deposits = 5 }, view:get("1"))
      assert.equals(deposits[5].position, store:projection_status().ledger.checkpoint)
    end)
  end)

  describe("whose handler raises", function()
    it("is marked faulted with the position, the event and the error, while another projection goes on", function()
      local store = helpers.open(FAST)
      common.history(store, 120, 5, 3)
      local seen = 0
      assert(store:projection {
        name = "fragile",
        from = { category = "account" },
        handlers = {
          Deposited = function(view, ev)
            seen = seen + 1
            if seen == 3 then error("the third deposit breaks me") end
            view:put(tostring(ev.position), ev.data.amount)
          end,
        },
      })
      assert(store:projection(common.ledger({ batch_size = 7 })))
      assert.same({ fragile = "faulted", ledger = "idle" }, assert(store:run_projections()))

      local third
      local n = 0
      for ev in store:read_all() do
        if ev.stream:match("^account%-") and ev.type == "Deposited" then
          n = n + 1
          if n == 3 then third = ev; break end
        end
      end
      local fault = store:projection_status().fragile.fault
      assert.is_table(fault)
      assert.equals("faulted", store:projection_status().fragile.status)
      assert.equals(third.position, fault.position)
      assert.equals(third.stream, fault.stream)
      assert.equals("Deposited", fault.type)
      assert.equals(third.id, fault.id)
      assert.matches("the third deposit breaks me", fault.error, nil, true)

      assert_rows(common.expected_ledger(store), store:view("ledger"), "the healthy projection")
      assert.equals("live", store:projection_status().ledger.status)
    end)

    it("is rebuilt from scratch by reset_projection once the cause is fixed", function()
      local store = helpers.open(FAST)
      local broken = true
      local def = common.ledger({ batch_size = 9 })
      local withdrawn = def.handlers.Withdrawn
      def.handlers.Withdrawn = function(view, ev)
        if broken then error("withdrawals are not supported yet") end
        return withdrawn(view, ev)
      end
      assert(store:projection(def))
      assert(store:append("account-1", { { type = "Opened", data = { owner = "A" } },
                                         { type = "Deposited", data = { amount = 10 } } }))
      assert.same({ ledger = "idle" }, assert(store:run_projections()))
      common.history(store, 80, 4, 5)
      assert.same({ ledger = "faulted" }, assert(store:run_projections()))
      local before = store:projection_status().ledger
      assert.equals("faulted", before.status)

      broken = false
      assert(store:reset_projection("ledger"))
      assert.same({ ledger = "idle" }, assert(store:run_projections()))
      local after = store:projection_status().ledger
      assert.equals("live", after.status)
      assert.is_nil(after.fault)
      assert.is_true(after.generation > before.generation, "a reset builds a new generation")
      assert.equals(store:head(), after.checkpoint)
      assert_rows(common.expected_ledger(store), store:view("ledger"))
    end)
  end)

  describe("reset_projection", function()
    it("rebuilds a healthy projection from the first event into a new generation with the same rows", function()
      local store = helpers.open(FAST)
      local calls = 0
      assert(store:projection(common.ledger({ on_event = function() calls = calls + 1 end })))
      common.history(store, 60, 4, 11)
      assert(store:run_projections())
      local gen = store:projection_status().ledger.generation
      local handled = calls
      assert(store:reset_projection("ledger"))
      assert(store:run_projections())
      assert.equals(2 * handled, calls, "every event was handled again")
      assert.equals(gen + 1, store:projection_status().ledger.generation)
      assert_rows(common.expected_ledger(store), store:view("ledger"))
    end)

    it("refuses a name that is not registered", function()
      local store = helpers.open(FAST)
      assert.matches("no projection 'nope'", helpers.raises(store.reset_projection, store, "nope"), nil, true)
    end)
  end)

  describe("whose definition changed", function()
    -- Version 2 of the ledger keeps different rows: events counted per account.
    local function ledger_v2(batch_size)
      return {
        name = "ledger", version = 2, batch_size = batch_size, from = { category = "account" },
        handlers = {
          Opened = function(view, ev) view:put(ev.stream:match("%-(.+)$"), { events = 1, v = 2 }) end,
          Deposited = function(view, ev) view:update(ev.stream:match("%-(.+)$"), function(r) r.events = r.events + 1 end) end,
        },
      }
    end
    local function expected_v2(store)
      local rows = {}
      for ev in store:read_all() do
        local id = ev.stream:match("^account%-(.+)$")
        if id and ev.type == "Opened" then rows[id] = { events = 1, v = 2 }
        elseif id and ev.type == "Deposited" then rows[id].events = rows[id].events + 1 end
      end
      return rows
    end

    it("rebuilds by itself when its version changes, and readers keep seeing the old view until the new one is complete", function()
      local store, dir = helpers.open(FAST)
      for a = 1, 6 do
        assert(store:append("account-" .. a, { { type = "Opened", data = { owner = "o" .. a } },
                                               { type = "Deposited", data = { amount = a } },
                                               { type = "Deposited", data = { amount = 10 * a } } }))
      end
      assert(store:projection(common.ledger()))
      assert(store:run_projections())
      local v1 = common.expected_ledger(store)
      assert_rows(v1, store:view("ledger"))
      local gen1 = store:projection_status().ledger.generation

      assert(store:projection(ledger_v2(4)))
      local status = store:projection_status().ledger
      assert.equals(2, status.version)
      assert.equals(gen1, status.generation)
      assert.is_true(status.building > gen1, "a new generation is being built")

      assert.equals("progress", run_one_batch(store, "ledger"))
      assert.is_true(store:projection_status().ledger.checkpoint > 0, "the rebuild has started")
      assert.is_true(store:projection_status().ledger.checkpoint < store:head(), "the rebuild is not finished")
      assert_rows(v1, store:view("ledger"), "mid-rebuild, this process")
      assert.equals(expected_dump(v1), read_in_another_process(dir, "ledger"), "mid-rebuild, another process")

      assert.same({ ledger = "idle" }, assert(store:run_projections()))
      local done = store:projection_status().ledger
      assert.equals("live", done.status)
      assert.is_nil(done.building)
      assert.is_true(done.generation > gen1)
      assert_rows(expected_v2(store), store:view("ledger"), "after the rebuild")
      assert.equals(expected_dump(expected_v2(store)), read_in_another_process(dir, "ledger"))
    end)

    it("rebuilds by itself when its handler code changes under the same version", function()
      local store = helpers.open(FAST)
      common.history(store, 50, 3, 2)
      local function doubled()
        local def = common.ledger()
        def.handlers.Deposited = function(view, ev)
          view:update(ev.stream:match("%-(.+)$"), function(row)
            row.balance = row.balance + 2 * ev.data.amount
            row.deposits = row.deposits + 1
          end)
        end
        return def
      end
      assert(store:projection(common.ledger()))
      assert(store:run_projections())
      local gen = store:projection_status().ledger.generation
      local before = common.rows(store:view("ledger"))

      assert(store:projection(doubled()))
      assert.same({ ledger = "idle" }, assert(store:run_projections()))
      assert.is_true(store:projection_status().ledger.generation > gen, "a new generation was built")
      local after = common.rows(store:view("ledger"))
      local changed = false
      for k, row in pairs(after) do
        if k ~= "total" and row.balance ~= before[k].balance then changed = true end
      end
      assert.is_true(changed, "the rows come from the new code")
    end)

    it("keeps its view and checkpoint when the same definition is registered again after a restart", function()
      local store, dir = helpers.open(FAST)
      common.history(store, 50, 3, 4)
      assert(store:projection(common.ledger()))
      assert(store:run_projections())
      local before = store:projection_status().ledger
      store:close()

      local calls = 0
      local again = helpers.open(FAST, dir)
      assert(again:projection(common.ledger({ on_event = function() calls = calls + 1 end })))
      assert.same({ ledger = "idle" }, assert(again:run_projections()))
      assert.equals(0, calls, "no event was handled again")
      local after = again:projection_status().ledger
      assert.equals(before.generation, after.generation)
      assert.equals(before.checkpoint, after.checkpoint)
      assert_rows(common.expected_ledger(again), again:view("ledger"))
    end)
  end)

  describe("readers", function()
    it("in another process see the rows this process built", function()
      local store, dir = helpers.open(FAST)
      common.history(store, 200, 8, 9)
      assert(store:projection(common.ledger({ batch_size = 50 })))
      assert(store:run_projections())
      local expected = common.expected_ledger(store)
      assert.equals(expected_dump(expected), read_in_another_process(dir, "ledger"))
    end)

    it("never see an empty or partial view while another process keeps rebuilding and swapping it", function()
      local store, dir = helpers.open(FAST)
      local ROWS = 600   -- more rows than one scan batch holds
      assert(store:projection(require "support.projections.wide"))
      helpers.fill(store, "item-1", ROWS, "Item")
      assert(store:run_projections())
      local view = store:view("wide")
      assert.equals(ROWS, view:count())

      local rebuilder = assert(io.popen(helpers.lua_command(helpers.root .. "/spec/support/projections/rebuild_loop.lua", dir, "1.5")
        .. " 2>&1"))
      local deadline = chronicle.now() + 1.4e9
      local scans, bad = 0, {}
      while chronicle.now() < deadline do
        local n = 0
        for _ in view:pairs() do n = n + 1 end
        local counted = view:count()
        scans = scans + 1
        if n ~= ROWS or counted ~= ROWS then bad[#bad + 1] = ("pairs %d, count %d"):format(n, counted) end
      end
      local out = rebuilder:read("a")
      rebuilder:close()
      local rebuilds = tonumber(out:match("^rebuilds (%d+)"))
      assert(rebuilds, "the rebuilding process failed: " .. out)
      print(("\n  %d scans of the view during %d rebuilds in another process, %d saw a wrong number of rows")
        :format(scans, rebuilds, #bad))
      assert.is_true(rebuilds > 0)
      assert.same({}, { table.unpack(bad, 1, math.min(#bad, 5)) },
        ("%d of %d scans saw a wrong number of rows (first ones shown)"):format(#bad, scans))
    end)

    it("see nothing before the first build has completed: get gives nil, pairs nothing, count 0", function()
      local store = helpers.open(FAST)
      helpers.fill(store, "account-1", 10, "Deposited")
      assert(store:projection {
        name = "slow", batch_size = 3,
        handlers = { Deposited = function(view, ev) view:put(ev.position, ev.data.i) end },
      })
      local view = store:view("slow")
      assert.equals("progress", run_one_batch(store, "slow"))
      assert.is_nil(view:get(1))
      assert.same({}, common.rows(view))
      assert.equals(0, view:count())
      assert(store:run_projections())
      assert.equals(1, view:get(1))
      assert.equals(10, view:count())
    end)

    it("of a projection never registered in the store is not_found, not an empty view", function()
      local store = helpers.open(FAST)
      helpers.fill(store, "account-1", 3, "Deposited")
      local view, err = store:view("never_registered")
      assert.is_nil(view)
      assert.equals("not_found", err.code)
      assert.equals("never_registered", err.projection)
      assert.matches("no projection 'never_registered'", tostring(err), 1, true)
      -- a reactor's status row in the same space is not a projection
      assert(store:reactor { name = "r", handlers = { Deposited = function() error("boom") end } })
      chronicle.runner(store):run_once()
      assert.equals("faulted", store:reactor_status().r.status)
      assert.is_nil((store:view("reactor:r")))
      -- once registered (even before its first build) it is a view
      assert(store:projection { name = "late", handlers = { Deposited = function(v, ev) v:put(ev.position, 1) end } })
      assert.equals(0, assert(store:view("late")):count())
    end)

    it("list rows in key order with prefix, from, to, count and backward, and count them", function()
      local store = helpers.open(FAST)
      assert(store:projection {
        name = "directory",
        handlers = {
          UserJoined = function(view, ev) view:put("user:" .. ev.data.name, { name = ev.data.name }) end,
          OrderPlaced = function(view, ev) view:put(("order:%03d"):format(ev.data.no), { no = ev.data.no }) end,
        },
      })
      for _, name in ipairs({ "dave", "alice", "carol", "bob" }) do
        assert(store:append("user-" .. name, { { type = "UserJoined", data = { name = name } } }))
      end
      for no = 5, 1, -1 do
        assert(store:append("order-" .. no, { { type = "OrderPlaced", data = { no = no } } }))
      end
      assert(store:run_projections())
      local view = store:view("directory")
      local function keys(opts)
        local out = {}
        for k in view:pairs(opts) do out[#out + 1] = k end
        return out
      end
      assert.same({ "order:001", "order:002", "order:003", "order:004", "order:005",
                    "user:alice", "user:bob", "user:carol", "user:dave" }, keys())
      assert.same({ "user:alice", "user:bob", "user:carol", "user:dave" }, keys({ prefix = "user:" }))
      assert.same({ "user:bob", "user:carol" }, keys({ from = "user:b", to = "user:carol" }))
      assert.same({ "order:004", "order:005", "user:alice" }, keys({ from = "order:004", count = 3 }))
      assert.same({ "user:dave", "user:carol" }, keys({ prefix = "user:", backward = true, count = 2 }))
      assert.same({ "order:003", "order:002" }, keys({ prefix = "order:", to = "order:003", backward = true, count = 2 }))
      assert.same({ "order:002", "order:003" }, keys({ prefix = "order:", from = "order:002", to = "order:003" }))
      assert.equals(9, view:count())
      assert.equals(4, view:count("user:"))
      assert.equals(5, view:count("order:"))
      assert.equals(0, view:count("nobody:"))
      for k, row in view:pairs({ prefix = "user:c" }) do
        assert.equals("user:carol", k)
        assert.same({ name = "carol" }, row)
      end
      assert.same({ no = 3 }, view:get("order:003"))
    end)

    it("look rows up by integer keys as by their decimal strings", function()
      local store = helpers.open(FAST)
      assert(store:projection {
        name = "by_position",
        handlers = { Deposited = function(view, ev) view:put(ev.position, { i = ev.data.i }) end },
      })
      helpers.fill(store, "account-1", 3, "Deposited")
      assert(store:run_projections())
      local view = store:view("by_position")
      assert.same({ i = 2 }, view:get(2))
      assert.same({ i = 2 }, view:get("2"))
      assert.is_nil(view:get(4))
    end)
  end)

  describe("handlers", function()
    it("read their own batch's writes back through get, update and delete", function()
      local store = helpers.open(FAST)
      local reads = {}
      assert(store:projection {
        name = "rw", batch_size = 100,
        handlers = {
          Put = function(view, ev) view:put("k", { n = ev.data.i }) end,
          Bump = function(view) view:update("k", function(r) r.n = r.n + 100 end) end,
          Drop = function(view) view:delete("k") end,
          Look = function(view) reads[#reads + 1] = view:get("k") and view:get("k").n or "none" end,
        },
      })
      assert(store:append("s-1", { { type = "Put", data = { i = 1 } }, { type = "Look" }, { type = "Bump" },
                                   { type = "Look" }, { type = "Drop" }, { type = "Look" },
                                   { type = "Put", data = { i = 7 } }, { type = "Look" } }))
      assert(store:run_projections())
      assert.same({ 1, 101, "none", 7 }, reads)
      assert.same({ k = { n = 7 } }, common.rows(store:view("rw")))
    end)

    it("list rows with view:pairs({prefix=, from=, to=}), their batch's own writes included", function()
      local store = helpers.open(FAST)
      local listed = {}
      assert(store:projection {
        name = "lister", batch_size = 100,
        handlers = {
          Add = function(view, ev) view:put("item:" .. ev.data.name, { name = ev.data.name }) end,
          List = function(view)
            local names = {}
            for k in view:pairs({ prefix = "item:" }) do names[#names + 1] = k end
            listed[#listed + 1] = table.concat(names, ",")
          end,
        },
      })
      assert(store:append("s-1", { { type = "Add", data = { name = "a" } }, { type = "Add", data = { name = "b" } } }))
      assert(store:run_projections())
      assert(store:append("s-1", { { type = "Add", data = { name = "c" } }, { type = "List" } }))
      local statuses = assert(store:run_projections())
      local fault = store:projection_status().lister.fault
      assert.equals("idle", statuses.lister, "the projection faulted: " .. tostring(fault and fault.error))
      assert.same({ "item:a,item:b,item:c" }, listed)
    end)
  end)

  describe("run by two runners with their own row caches", function()
    it("still holds the right rows when their batches interleave", function()
      local store, dir = helpers.open(FAST)
      local other = helpers.open(FAST, dir)
      assert(store:projection(common.ledger({ batch_size = 3 })))
      assert(other:projection(common.ledger({ batch_size = 3 })))
      assert(store:append("account-1", { { type = "Opened", data = { owner = "A" } } }))
      assert(store:run_projections())
      for round = 1, 4 do
        local events = {}
        for i = 1, 3 do events[i] = { type = "Deposited", data = { amount = round * 10 + i } } end
        assert(store:append("account-1", events))
        local runner_store = round % 2 == 1 and store or other
        assert.equals("progress", run_one_batch(runner_store, "ledger"))
      end
      assert(store:run_projections())
      assert(other:run_projections())
      assert_rows(common.expected_ledger(store), store:view("ledger"))
    end)
  end)

  describe("definitions", function()
    it("are checked when registered, naming the problem", function()
      local store = helpers.open(FAST)
      local function refusal(def) return helpers.raises(store.projection, store, def) end
      assert.matches("'handlers' is missing", refusal({ name = "x" }), nil, true)
      assert.matches("'name'", refusal({ handlers = { A = function() end } }), nil, true)
      assert.matches("'version'", refusal({ name = "x", version = 0, handlers = { A = function() end } }), nil, true)
      assert.matches("unknown field 'hander'", refusal({ name = "x", hander = {}, handlers = { A = function() end } }), nil, true)
      assert.matches("unknown key 'kind'", refusal({ name = "x", from = { kind = "a" }, handlers = { A = function() end } }), nil, true)
    end)
  end)
end)
