-- The public API under hostile use: progress callbacks that close or write to
-- the store, failed map growth, huge maps re-appended in another key order,
-- waits that could never end, paths with NUL bytes. Every case that could
-- crash or hang runs in a child process under `timeout`.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- Runs `body` (Lua source; arg[1] is a fresh store directory, then `...`) in
-- a child lua5.4 under `timeout`, after the shell commands `prefix` (such as
-- a ulimit); returns its exit code and output (stdout and stderr).
local function child(body, seconds, prefix, ...)
  local dir = helpers.tmpdir()
  local script = dir .. "/child.lua"
  helpers.write_file(script, "local chronicle = require 'chronicle'\n" .. body)
  local cmd = (prefix or "") .. "timeout -s KILL " .. (seconds or 60) .. " " ..
              helpers.lua_command(script, dir .. "/store", ...) .. " 2>&1; echo \"rc=$?\""
  local out = helpers.capture(cmd)
  local rc = tonumber(out:match("rc=(%d+)$"))
  return rc, out
end

describe("the public API under hostile use", function()
  after_each(helpers.cleanup)

  describe("re-appending a huge map in another key order", function()
    it("compares in n log n, not n^2 (a 60,000-key map finishes well within the bound)", function()
      local rc, out = child([[
        local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
        local n = 60000
        local a, b = {}, {}
        for i = 1, n do a["key" .. i] = i end
        for i = n, 1, -1 do b["key" .. i] = i end
        b.nested, a.nested = { y = 1, x = 2.5 }, { x = 2.5, y = 1 }
        local id = "00000000-0000-7000-8000-000000000001"
        local first = assert(s:append("big-1", { { type = "T", id = id, data = a } }))
        local again, err = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(again, tostring(err))
        assert(again.position == first.position and s:head() == 1, "a replay writes nothing")
        b.key777 = 777.0                   -- a float is not the integer 777
        local _, err2 = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(err2 and err2.code == "duplicate_id", tostring(err2))
        b.key777, b.key778 = 777, nil       -- one key fewer
        local _, err3 = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(err3 and err3.code == "duplicate_id", tostring(err3))
        print("ok")
      ]], 20)
      assert.are.equal(0, rc, out)
      assert.matches("ok\nrc=0$", out)
    end)

    it("keeps the comparison's rules for large maps: keys of every kind, any order, integers are not floats", function()
      local store = helpers.open({ durability = "nosync" })
      local function build(reverse, patch)
        local keys = {}
        for i = -10, 10 do keys[#keys + 1] = i end
        for i = 1, 10 do keys[#keys + 1] = i + 0.5 end
        for i = 1, 10 do keys[#keys + 1] = "s" .. i end
        keys[#keys + 1] = true
        keys[#keys + 1] = false
        keys[#keys + 1] = math.maxinteger
        keys[#keys + 1] = math.mininteger
        local t = {}
        for j = reverse and #keys or 1, reverse and 1 or #keys, reverse and -1 or 1 do
          local k = keys[j]
          t[k] = type(k) == "number" and { n = k, deep = { x = k, y = { k } } } or tostring(k)
        end
        if patch then patch(t) end
        return t
      end
      local id = helpers.uuid(99)
      local first = assert(store:append("mixed-1", { { type = "T", id = id, data = build(false) } }))
      local again = assert(store:append("mixed-1", { { type = "T", id = id, data = build(true) } }))
      assert.are.equal(first.position, again.position)
      local changes = {
        function(t) t[3] = { n = 3.0, deep = { x = 3, y = { 3 } } } end,   -- a float value for an integer
        function(t) t[2.5], t[2.25] = nil, t[2.5] end,                     -- a key changed
        function(t) t[true] = nil end,                                     -- one key fewer
        function(t) t.s1, t.s11 = nil, "s1" end,
        function(t) t[-10].deep.y[1] = -11 end,                            -- deep inside
      }
      for i, change in ipairs(changes) do
        local _, err = store:append("mixed-1", { { type = "T", id = id, data = build(true, change) } })
        assert.are.equal("duplicate_id", err and err.code, "change " .. i .. " was taken for the same event")
      end
      assert.are.equal(1, store:head())
    end)
  end)

  describe("progress callbacks of verify and backup", function()
    local fill = [[
      local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
      for i = 1, 30 do
        local events = {}
        for j = 1, 1000 do events[j] = { type = "T", data = { i = i, j = j, pad = ("x"):rep(100) } } end
        assert(s:append("s-" .. i, events))
      end
    ]]
    for _, op in ipairs({ "verify", "backup" }) do
      local call = op == "verify" and "s:verify{ progress = cb }" or "s:backup(arg[1] .. '-copy', { progress = cb })"
      it(op .. ": closing the store from the callback raises a clear error, no crash", function()
        local rc, out = child(fill .. [[
          local cb = function() s:close() end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok, "closing from the callback must raise")
          print("ERR " .. tostring(err))
          assert(s:is_open() and s:head() == 30000 and s:verify().ok)
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ERR [^\n]*cannot close the store while its " .. op .. " runs", out)
        assert.matches("ok\nrc=0$", out)
      end)

      it(op .. ": writing from the callback raises; reading is allowed", function()
        local rc, out = child(fill .. [[
          local reads = 0
          local cb = function() reads = reads + 1; assert(s:head() == 30000); s:append("x-1", { { type = "X" } }) end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok, "writing from the callback must raise")
          print("ERR " .. tostring(err))
          assert(reads == 1 and s:head() == 30000, "nothing was written")
          assert(s:append("x-1", { { type = "X" } }), "the store takes writes again afterwards")
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ERR [^\n]*append: cannot write to the store while its " .. op .. " runs", out)
        assert.matches("ok\nrc=0$", out)
      end)

      it(op .. ": writing from the callback through another handle of the store raises too", function()
        local rc, out = child(fill .. [[
          local other = assert(chronicle.open(arg[1], { durability = "nosync" }))
          local cb = function() other:write { puts = { { "rows", "k", 1 } } } end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok, "writing from the callback must raise")
          print("ERR " .. tostring(err))
          assert(other:kv_get("rows", "k") == nil)
          assert(other:write { puts = { { "rows", "k", 1 } } }, "and works again afterwards")
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ERR [^\n]*write: cannot write to the store while its " .. op .. " runs", out)
        assert.matches("ok\nrc=0$", out)
      end)

      it(op .. ": the callback's own error reaches the caller", function()
        local rc, out = child(fill .. [[
          local cb = function() error({ mine = true }) end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok and type(err) == "table" and err.mine, "the callback's error value is raised as is")
          if arg[1] then
            local f = io.open(arg[1] .. "-copy/data.mdb")
            assert(f == nil, "a stopped backup leaves no copy")
          end
          assert(s:is_open() and s:verify().ok)
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ok\nrc=0$", out)
      end)
    end
  end)

  describe("waits that could never end", function()
    it("refuse a negative or NaN timeout instead of blocking for ever", function()
      local rc, out = child([[
        local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
        for _, t in ipairs({ -1, 0/0, -math.huge }) do
          local ok, err = pcall(s.wait, s, s:head(), t)
          assert(not ok, "wait(head, " .. tostring(t) .. ") returned")
          assert(tostring(err):find("timeout must be a number of seconds >= 0", 1, true), tostring(err))
        end
        assert(s:wait(s:head(), 0) == false, "a zero timeout still polls once")
        print("ok")
      ]], 10)
      assert.are.equal(0, rc, out)
      assert.matches("ok\nrc=0$", out)
    end)

    it("runner:run refuses a misspelt option instead of running for ever", function()
      local rc, out = child([[
        local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
        local ok, err = pcall(function() return chronicle.runner(s):run { until_idel = true } end)
        assert(not ok, "run{ until_idel = true } was accepted")
        print("ERR " .. tostring(err))
      ]], 10)
      assert.are.equal(0, rc, out)
      assert.matches("ERR [^\n]*runner:run: unknown option 'until_idel' %(allowed: max_seconds, until_idle%)", out)
    end)
  end)

  describe("paths containing NUL bytes", function()
    it("are refused by open, the core's open and backup, and nothing is created at the cut path", function()
      local dir = helpers.tmpdir()
      local bad = dir .. "/d\0/../x"
      assert.matches("NUL", helpers.raises(chronicle.open, bad), 1, true)
      if helpers.backend == "lmdb" then
        assert.matches("NUL", helpers.raises(require("chronicle.core").open, bad), 1, true)
      end
      assert.is_false(helpers.exists(dir .. "/d"), "open created the cut path")
      local store = helpers.open({ durability = "nosync" })
      helpers.fill(store, "a-1", 3)
      assert.matches("NUL", helpers.raises(store.backup, store, dir .. "/copy\0/../elsewhere"), 1, true)
      assert.is_false(helpers.exists(dir .. "/copy"), "backup wrote to the cut path")
      assert.matches("NUL", helpers.raises(chronicle.load_scripts, store, dir .. "/rules\0x"), 1, true)
      helpers.write_file(dir .. "/p.lua", "return { name = 'p', handlers = { T = function() end } }")
      assert.matches("NUL", helpers.raises(store.projection, store, dir .. "/p.lua\0.txt"), 1, true)
    end)
  end)

  describe("stream names starting with '-'", function()
    it("are refused at append, naming the rule; a name with a later '-' keeps its category", function()
      local store = helpers.open({ durability = "nosync" })
      for _, name in ipairs({ "-", "--", "-x", "-order-1" }) do
        local msg = helpers.raises(store.append, store, name, { { type = "T" } })
        assert.matches("starts with '-'", msg, 1, true)
        assert.matches("category", msg, 1, true)
        assert.matches("must not be empty", msg, 1, true)
        msg = helpers.raises(store.append_many, store, { { stream = name, events = { { type = "T" } } } })
        assert.matches("starts with '-'", msg, 1, true)
        msg = helpers.raises(store.write, store, { appends = { { stream = name, events = { { type = "T" } } } } })
        assert.matches("starts with '-'", msg, 1, true)
      end
      assert.are.equal(0, store:head())
      assert(store:append("a-", { { type = "T" } }))
      assert.are.equal("a", store:stream_info("a-").category)
      assert.are.equal(1, #helpers.collect(store:read_all({ category = "a" })))
    end)
  end)

  describe("option values have types", function()
    it("write{ dry_run = 'yes' } is refused, and nothing is written", function()
      local store = helpers.open({ durability = "nosync" })
      local msg = helpers.raises(store.write, store,
        { dry_run = "yes", appends = { { stream = "a-1", events = { { type = "T" } } } } })
      assert.matches("write: option 'dry_run' must be a boolean, got string", msg, 1, true)
      assert.are.equal(0, store:head())
    end)

    it("the core's options tables are checked by name and type", function()
      local store = helpers.open({ durability = "nosync" })
      helpers.fill(store, "a-1", 2)
      local cases = {
        { "read: option 'backward' must be a boolean, got string", store.read, store, "a-1", { backward = "yes" } },
        { "read_all: option 'count' must be an integer, got number 1.5", store.read_all, store, { count = 1.5 } },
        { "read_all: option 'types' must be a string or a table, got number", store.read_all, store, { types = 7 } },
        { "kv_scan: option 'backward' must be a boolean, got number", store.kv_scan, store, "rows", { backward = 1 } },
        { "verify: unknown option 'progres' (allowed: max_problems, progress)", store.verify, store, { progres = print } },
        { "verify: option 'progress' must be a function, got string", store.verify, store, { progress = "print" } },
        { "backup: unknown option 'progres' (allowed: progress)", store.backup, store, helpers.tmpdir() .. "/b", { progres = print } },
        { "open: option 'readonly' must be a boolean, got string", require("chronicle.core").open, helpers.tmpdir(), { readonly = "yes" } },
        { "fold: option 'stream' must be a string, got number", store.fold, store, { stream = 7 }, 0, print },
      }
      for _, case in ipairs(cases) do
        local msg = helpers.raises(table.unpack(case, 2))
        assert.matches(case[1], msg, 1, true)
      end
    end)

    it("the Lua layer's options tables are checked by name and type", function()
      local store = helpers.open({ durability = "nosync" })
      local Account = chronicle.aggregate { name = "account", initial = function() return {} end,
        apply = { Opened = function(s) return s end }, commands = { open = function() return { { type = "Opened" } } end } }
      local cases = {
        { "open: option 'readonly' must be a boolean, got string", chronicle.open, helpers.tmpdir(), { readonly = "yes" } },
        { "append: unknown option 'expect' (allowed: expected)", store.append, store, "a-1", { { type = "T" } }, { expect = 0 } },
        { "runner: option 'wait' must be a number >= 0, got string", chronicle.runner, store, { wait = "1" } },
        { "runner:run: option 'until_idle' must be a boolean, got string", function() chronicle.runner(store):run { until_idle = "yes" } end },
        { "execute: option 'dry_run' must be a boolean, got string", function() store:repository(Account):execute("1", "open", {}, { dry_run = "yes" }) end },
        { "repository: option 'cache' must be a boolean, got number", store.repository, store, Account, { cache = 0 } },
        { "unit_of_work: unknown option 'retry' (allowed: dry_run, retries)", store.unit_of_work, store, function() return true end, { retry = 1 } },
        { "on: option 'category' must be a string, got number", store.on, store, "T", function() end, { category = 1 } },
        { "load_scripts: option 'sandbox' must be a boolean, got string", chronicle.load_scripts, store, helpers.tmpdir(), { sandbox = "yes" } },
      }
      for _, case in ipairs(cases) do
        local msg = helpers.raises(table.unpack(case, 2))
        assert.matches(case[1], msg, 1, true)
      end
      assert.are.equal(0, store:head())
    end)

    it("chronicle.options.check: the one checker, its messages and its types", function()
      local options = require "chronicle.options"
      local schema = { b = "boolean", n = options.integer_at_least(1), s = "string|table", any = "any" }
      assert.are.same({}, options.check("f", nil, schema))
      local opts = { b = false, n = 2^3, s = {}, any = print }
      assert.are.equal(opts, options.check("f", opts, schema))
      assert.matches("^[^:]*:%d+: f: unknown option 'x' %(allowed: any, b, n, s%)$",
        helpers.raises(options.check, "f", { x = 1 }, schema))
      assert.matches("f: option 'b' must be a boolean, got string", helpers.raises(options.check, "f", { b = "yes" }, schema), 1, true)
      assert.matches("f: option 'n' must be an integer >= 1, got number 0", helpers.raises(options.check, "f", { n = 0 }, schema), 1, true)
      assert.matches("f: option 's' must be a string or a table, got number", helpers.raises(options.check, "f", { s = 1 }, schema), 1, true)
      assert.matches("f: options must be a table, got string", helpers.raises(options.check, "f", "x", schema), 1, true)
      assert.matches("unknown option '1'", helpers.raises(options.check, "f", { 5 }, schema), 1, true)
      -- The error names the caller of the function that checks (level 2).
      local function api(o) options.check("api", o, schema) end
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() api({ zz = 1 }) end)
      assert.is_false(ok)
      assert.matches(":" .. line .. ": api: unknown option 'zz'", err, 1, true)
    end)
  end)

  describe("a reactor's outputs", function()
    it("carry the reactor's correlation and causation ids: a handler setting them faults the reactor", function()
      local store = helpers.open({ durability = "nosync" })
      local reactor = require "chronicle.read.reactor"
      for _, key in ipairs({ "correlation_id", "causation_id" }) do
        local returned = store:reactor { name = "ret_" .. key, handlers = {
          Placed = function() return { { stream = "out-1", type = "Out", meta = { [key] = "forged" } } } end } }
        local appended = store:reactor { name = "app_" .. key, handlers = {
          Placed = function(_, ctx) ctx:append("out-2", { { type = "Out", meta = { [key] = "forged" } } }) end } }
        store:append("order-" .. key, { { type = "Placed" } })
        assert.are.equal("faulted", reactor.run_batch(store, returned))
        assert.are.equal("faulted", reactor.run_batch(store, appended))
        local status = store:reactor_status()
        assert.matches("meta." .. key .. " is set by the reactor", status["ret_" .. key].fault.error, 1, true)
        assert.matches("meta." .. key .. " is set by the reactor", status["app_" .. key].fault.error, 1, true)
        store:reset_reactor("ret_" .. key)
        store:reset_reactor("app_" .. key)
        store:registrations().reactors["ret_" .. key] = nil
        store:registrations().reactors["app_" .. key] = nil
      end
      for ev in store:read_all() do assert.are_not.equal("Out", ev.type) end
      -- Other meta keys pass, and the ids are the reactor's.
      local ok_r = store:reactor { name = "fine", handlers = {
        Placed = function() return { { stream = "out-3", type = "Out", meta = { note = "n" } } } end } }
      local placed = assert(store:append("order-9", { { type = "Placed", meta = { correlation_id = "req-1" } } }))
      assert.are.equal("progress", reactor.run_batch(store, ok_r))
      local out = helpers.collect(store:read("out-3"))
      assert.are.equal(3, #out)
      local last = out[#out]
      assert.are.equal("n", last.meta.note)
      assert.are.equal("req-1", last.meta.correlation_id)
      assert.are.equal(helpers.collect(store:read_all({ from = placed.position, count = 1 }))[1].id, last.meta.causation_id)
    end)
  end)

  describe("a map that cannot grow for lack of address space", function()
    -- ulimit -v limits address space: an ASan build reserves terabytes of it and cannot run so.
    local asan = os.getenv("ASAN_OPTIONS") ~= nil
    local function fill(dir, map_size, rows)
      local store = assert(chronicle.open(dir, { durability = "nosync", map_size = map_size }))
      local big = ("x"):rep(1 << 20)
      for j = 1, rows // 10 do
        local puts = {}
        for i = 1, 10 do puts[i] = { "rows", ("k%d-%d"):format(j, i), big } end
        assert(store:write { puts = puts })
      end
      store:close()
    end

    it("leaves the store usable when a write needed it: out_of_memory, and the map as it was", function()
      if asan then pending("ulimit -v cannot apply to an ASan build") return end
      local dir = helpers.tmpdir() .. "/store"
      fill(dir, 128 << 20, 110)                  -- a full map: the next write must grow it
      local rc, out = child([[
        local s = assert(chronicle.open(arg[2], { durability = "nosync" }))
        local big = ("y"):rep(1 << 20)
        local puts = {}
        for i = 1, 20 do puts[i] = { "rows", "b" .. i, big } end
        local res, err = s:write { puts = puts }
        assert(not res and err.code == "out_of_memory", "the write needed more address space: " .. tostring(err))
        assert(s:head() == 0 and s:head() == 0, "the store still answers")
        assert(s:kv_count("rows") == 110, "nothing of the failed write was kept")
        assert(s:verify().ok)
        local ok, msg = pcall(s.append, s, "a-1", { { type = "T" } })
        assert(ok, "the store is not closed: a write returns its error: " .. tostring(msg))
        print("ok")
      ]], 60, "ulimit -S -v 200000; ", dir)
      assert.are.equal(0, rc, out)
      assert.matches("ok\nrc=0$", out)
    end)

    it("refuses every later use with a clear error when another process grew the map beyond reach", function()
      if asan then pending("ulimit -v cannot apply to an ASan build") return end
      local dir = helpers.tmpdir()
      local grow = dir .. "/grow.lua"
      helpers.write_file(grow, [[
        local chronicle = require "chronicle"
        local s = assert(chronicle.open(arg[1], { durability = "nosync", map_size = 2 << 30 }))
        local big = ("x"):rep(1 << 20)
        local puts = {}
        for i = 1, 80 do puts[i] = { "rows", "k" .. i, big } end
        assert(s:write { puts = puts })
        s:close()
      ]])
      -- The grower lifts the child's soft limit for itself.
      local grower = "ulimit -S -v unlimited; " .. helpers.lua_command(grow, dir .. "/shared")
      local rc, out = child([[
        local s = assert(chronicle.open(arg[2], { durability = "nosync" }))
        assert(s:append("b-1", { { type = "B" } }))
        assert(os.execute(arg[3]), "the grower failed")
        local head, err = s:head()          -- its map must grow to 2 GiB: no room
        assert(head == nil and err.code == "out_of_memory", "head: " .. tostring(head) .. " " .. tostring(err))
        for _ = 1, 3 do
          local ok, msg = pcall(s.head, s)
          assert(not ok, "a store without its map answered")
          assert(tostring(msg):find("lost its memory map", 1, true), tostring(msg))
        end
        local ok, msg = pcall(s.append, s, "b-1", { { type = "B" } })
        assert(not ok and tostring(msg):find("close it and open it again", 1, true), tostring(msg))
        local s2, err2 = chronicle.open(arg[2])
        assert(s2 == nil and err2.code == "out_of_memory", "a second handle shares the lost map: " .. tostring(err2))
        s:close()
        local s3 = assert(chronicle.open(arg[2], { durability = "nosync" }))
        assert(s3:head() == 1 and s3:kv_count("rows") == 80 and s3:verify().ok, "reopened, all is there")
        print("ok")
      ]], 60, "ulimit -S -v 500000; ", dir .. "/shared", grower)
      assert.are.equal(0, rc, out)
      assert.matches("ok\nrc=0$", out)
    end)
  end)
end)
