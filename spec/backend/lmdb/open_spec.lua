-- Opening, reopening, sharing and closing a store.
local helpers = require "helpers"
local chronicle = require "chronicle"

describe("chronicle.open", function()
  after_each(helpers.cleanup)

  it("creates the store directory, and its missing parents, when they do not exist", function()
    local dir = helpers.tmpdir() .. "/a/b/bank"
    assert.is_false(helpers.exists(dir))
    local store = helpers.track(assert(chronicle.open(dir)))
    assert.is_true(store:is_open())
    assert.is_true(helpers.exists(dir .. "/data.mdb"))
    assert.equals(0, store:head())
    assert.equals(0, store:stats().events)
  end)

  it("opens an existing empty directory as a new store", function()
    local dir = helpers.tmpdir()
    local store = helpers.track(assert(chronicle.open(dir)))
    assert.equals(0, store:head())
    assert.is_true(helpers.exists(dir .. "/data.mdb"))
  end)

  it("keeps every event, and the store id, across close and reopen", function()
    local store, dir = helpers.open()
    local res = assert(store:append("account-1", {
      { type = "Opened", data = { owner = "ann" } },
      { type = "Deposited", data = { amount = 100 }, meta = { user = "u1" } },
    }))
    local before = helpers.collect(store:read("account-1"))
    local id = store:stats().store_id
    store:close()
    assert.is_false(store:is_open())

    local again = helpers.track(assert(chronicle.open(dir)))
    assert.equals(res.position, again:head())
    assert.equals(id, again:stats().store_id)
    local after = helpers.collect(again:read("account-1"))
    assert.equals(2, #after)
    for i = 1, 2 do
      assert.equals(before[i].id, after[i].id)
      assert.equals(before[i].time, after[i].time)
      assert.same(before[i].data, after[i].data)
    end
    assert.same({ user = "u1" }, after[2].meta)
    -- and the reopened store goes on where the old one stopped
    local next_res = assert(again:append("account-1", { { type = "Withdrawn", data = { amount = 5 } } },
                                         { expected = 1 }))
    helpers.result(next_res, 2, 3)
  end)

  it("accepts each durability setting", function()
    for _, durability in ipairs({ "full", "nometasync", "nosync" }) do
      local store = helpers.open({ durability = durability })
      helpers.result(store:append("s", { { type = "T" } }), 0, 1)
    end
  end)

  describe("validates its arguments and options", function()
    it("raises on a directory name that is not a non-empty string", function()
      assert.matches("open", helpers.raises(chronicle.open, 42))
      assert.matches("open", helpers.raises(chronicle.open, ""))
    end)

    it("raises on options that are not a table", function()
      assert.matches("option", helpers.raises(chronicle.open, helpers.tmpdir(), "full"))
    end)

    it("raises on an unknown option, naming it", function()
      local msg = helpers.raises(chronicle.open, helpers.tmpdir(), { durabilty = "full" })
      assert.matches("durabilty", msg, 1, true)
    end)

    it("raises on an unknown durability, naming the option and the value", function()
      local msg = helpers.raises(chronicle.open, helpers.tmpdir(), { durability = "fast" })
      assert.matches("fast", msg, 1, true)
      assert.matches("durability", msg, 1, true)
    end)

    it("raises on an option of the wrong type", function()
      assert.matches("readonly", helpers.raises(chronicle.open, helpers.tmpdir(), { readonly = "yes" }), 1, true)
      assert.matches("map_size", helpers.raises(chronicle.open, helpers.tmpdir(), { map_size = "big" }), 1, true)
      assert.matches("max_event_size",
                     helpers.raises(chronicle.open, helpers.tmpdir(), { max_event_size = -1 }), 1, true)
    end)
  end)

  describe("read-only", function()
    it("returns nil and a not_found error for a store that does not exist, creating nothing", function()
      local dir = helpers.tmpdir() .. "/missing"
      local store, err = chronicle.open(dir, { readonly = true })
      assert.is_nil(store)
      assert.equals("not_found", err.code)
      assert.is_true(chronicle.is_error(err))
      assert.is_false(helpers.exists(dir))
    end)

    it("returns not_found for an empty directory", function()
      local dir = helpers.tmpdir()
      local store, err = chronicle.open(dir, { readonly = true })
      assert.is_nil(store)
      assert.equals("not_found", err.code)
    end)

    it("reads an existing store, and append returns nil and a readonly error", function()
      local writer, dir = helpers.open()
      helpers.fill(writer, "order-1", 3)
      writer:close()

      local store = helpers.track(assert(chronicle.open(dir, { readonly = true })))
      assert.equals(3, #helpers.collect(store:read("order-1")))
      local res, err = store:append("order-1", { { type = "Shipped" } })
      assert.is_nil(res)
      assert.equals("readonly", err.code)
      assert.is_string(err.message)
      local res2, err2 = store:append_many({ { stream = "order-2", events = { { type = "Placed" } } } })
      assert.is_nil(res2)
      assert.equals("readonly", err2.code)
      assert.equals(3, store:head())
      assert.equals(3, store:stats().events)
    end)

    it("shares the environment of a read-write handle but still refuses to append", function()
      local writer, dir = helpers.open()
      local reader = helpers.track(assert(chronicle.open(dir, { readonly = true })))
      local _, err = reader:append("s", { { type = "T" } })
      assert.equals("readonly", err.code)
      assert(writer:append("s", { { type = "T" } }))
      assert.equals(1, reader:head())
    end)
  end)

  describe("refuses what is not a chronicle store", function()
    it("returns not_a_store for a non-empty directory of other files, and leaves it alone", function()
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/notes.txt", "hello")
      local store, err = chronicle.open(dir)
      assert.is_nil(store)
      assert.equals("not_a_store", err.code)
      assert.matches(dir, tostring(err), 1, true)
      assert.same({ "notes.txt" }, helpers.ls(dir))
    end)

    it("returns not_a_store for a data.mdb full of garbage, without crashing", function()
      local dir = helpers.tmpdir()
      local junk = {}
      for i = 1, 20000 do junk[i] = string.char((i * 7919) % 251) end
      helpers.write_file(dir .. "/data.mdb", table.concat(junk))
      local store, err = chronicle.open(dir)
      assert.is_nil(store)
      assert.equals("not_a_store", err.code)
      -- a short text file is refused too
      local dir2 = helpers.tmpdir()
      helpers.write_file(dir2 .. "/data.mdb", "this is not LMDB\n")
      local store2, err2 = chronicle.open(dir2)
      assert.is_nil(store2)
      assert.equals("not_a_store", err2.code)
    end)

    it("returns not_a_store for a path that is a regular file", function()
      local file = helpers.tmpdir() .. "/plain"
      helpers.write_file(file, "x")
      local store, err = chronicle.open(file)
      assert.is_nil(store)
      assert.equals("not_a_store", err.code)
    end)
  end)

  describe("the same directory opened twice in one process", function()
    it("shares one environment: each handle sees the other's writes", function()
      local a, dir = helpers.open()
      local b = helpers.track(assert(chronicle.open(dir)))
      assert(a:append("x-1", { { type = "FromA" } }))
      assert.equals(1, b:head())
      assert.equals("FromA", helpers.collect(b:read("x-1"))[1].type)
      assert(b:append("x-1", { { type = "FromB" } }, { expected = 0 }))
      assert.same({ "FromA", "FromB" }, helpers.pluck(helpers.collect(a:read("x-1")), "type"))
      assert.equals(a:stats().store_id, b:stats().store_id)
    end)

    it("keeps the other handle usable when one is closed", function()
      local a, dir = helpers.open()
      local b = helpers.track(assert(chronicle.open(dir)))
      assert(a:append("x-1", { { type = "T" } }))
      a:close()
      assert.is_false(a:is_open())
      assert.is_true(b:is_open())
      helpers.result(b:append("x-1", { { type = "T" } }, { expected = 0 }), 1, 2)
      assert.equals(2, #helpers.collect(b:read("x-1")))
      -- and opening it again after one handle closed still shares with the survivor
      local c = helpers.track(assert(chronicle.open(dir)))
      assert.equals(2, c:head())
    end)

    it("shares even when the two paths are spelled differently", function()
      local a, dir = helpers.open()
      local b = helpers.track(assert(chronicle.open(dir .. "/./")))
      assert(a:append("s", { { type = "T" } }))
      assert.equals(1, b:head())
      assert(b:append("s", { { type = "T" } }, { expected = 0 }))
      assert.equals(2, a:head())
    end)
  end)

  describe("closing", function()
    it("can be done twice without harm", function()
      local store = helpers.open()
      store:close()
      assert.has_no.errors(function() store:close() end)
      assert.is_false(store:is_open())
    end)

    it("makes every later use raise an error that says the store is closed", function()
      local store = helpers.open()
      helpers.fill(store, "s", 2)
      store:close()
      local calls = {
        head = function() return store:head() end,
        stats = function() return store:stats() end,
        append = function() return store:append("s", { { type = "T" } }) end,
        append_many = function() return store:append_many({ { stream = "s", events = { { type = "T" } } } }) end,
        read = function() for _ in store:read("s") do end end,
        read_all = function() for _ in store:read_all() do end end,
        streams = function() for _ in store:streams() do end end,
        stream_info = function() return store:stream_info("s") end,
        fold = function() return store:fold("s", 0, function(n) return n + 1 end) end,
      }
      for name, call in pairs(calls) do
        local ok, err = pcall(call)
        assert.is_false(ok, name .. " did not raise on a closed store")
        assert.matches("closed", tostring(err), 1, true)
      end
    end)

    it("frees the one reader slot the store keeps for its reads", function()
      if not os.execute("command -v mdb_stat >/dev/null 2>&1") then
        pending("mdb_stat (lmdb-utils) is not installed")
        return
      end
      -- This process's slots in the reader table: how many, and how many inside a transaction.
      local f = assert(io.open("/proc/self/stat"))
      local pid = tonumber(f:read("l"):match("^(%d+)"))
      f:close()
      local function slots(dir)
        local n, busy = 0, 0
        for line in helpers.capture("mdb_stat -r " .. helpers.quote(dir) .. " 2>&1"):gmatch("[^\n]+") do
          local p, txn = line:match("^%s*(%d+)%s+%x+%s+(%S+)")
          if tonumber(p) == pid then
            n = n + 1
            if txn ~= "-" then busy = busy + 1 end
          end
        end
        return n, busy
      end
      local store, dir = helpers.open({ durability = "nosync" })
      helpers.fill(store, "s", 3)
      for _ = 1, 200 do
        store:head()
        store:stream_version("s")
        store:kv_get("space", "key")
        assert.equals(3, select(2, store:fold("s", 0, function(n) return n + 1 end)))
        for _ in store:read_all() do end
      end
      assert.same({ 1, 0 }, { slots(dir) })     -- one slot, reused, holding no snapshot
      store:close()
      assert.same({ 0, 0 }, { slots(dir) })
    end)

    it("happens at the end of a <close> block", function()
      local dir = helpers.tmpdir()
      local outside
      do
        local store <close> = assert(chronicle.open(dir))
        outside = store
        assert(store:append("s", { { type = "T" } }))
      end
      assert.is_false(outside:is_open())
      local again = helpers.track(assert(chronicle.open(dir)))
      assert.equals(1, again:head())
    end)
  end)

  -- A store carried into a child across fork() must refuse use; plain Lua 5.4
  -- cannot fork, so that case is left to a C-level test.

  describe("store:stats()", function()
    it("reports counts, sizes, the format and the store's identity", function()
      local store, dir = helpers.open()
      local empty = store:stats()
      assert.equals(0, empty.events)
      assert.equals(0, empty.streams)
      assert.equals(0, empty.head)

      helpers.fill(store, "order-1", 3)
      helpers.fill(store, "order-2", 2)
      local st = store:stats()
      assert.equals(5, st.events)
      assert.equals(2, st.streams)
      assert.equals(5, st.head)
      assert.equals(store:head(), st.head)
      assert.equals(chronicle.FORMAT, st.format)
      assert.equals("integer", math.type(st.format))
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", st.store_id)
      assert.equals(dir, st.path)
      assert.is_true(st.page_size > 0)
      assert.is_true(st.bytes > 0)
      assert.is_true(st.file_size > 0)
      assert.is_true(st.used_bytes > 0)
      assert.is_true(st.map_size >= st.used_bytes)
    end)

    it("gives each store its own id", function()
      local a = helpers.open()
      local b = helpers.open()
      assert.are_not.equal(a:stats().store_id, b:stats().store_id)
    end)
  end)

  it("grows the map by itself instead of failing when it is full", function()
    local store = helpers.open({ map_size = 1024 * 1024, durability = "nosync" })
    local initial = store:stats().map_size
    local blob = string.rep("0123456789abcdef", 200 * 1024 // 16)   -- 200 KiB
    for i = 1, 20 do
      local res, err = store:append("big", { { type = "Blob", data = blob } })
      assert.is_table(res, "append " .. i .. " failed: " .. tostring(err))
    end
    assert.is_true(store:stats().map_size > initial)
    local n = 0
    for ev in store:read("big") do
      n = n + 1
      assert.equals(blob, ev.data)
    end
    assert.equals(20, n)
  end)
end)
