-- The PostgreSQL backend's own behaviour, against the real server `make test` starts
-- (scripts/pg_cluster.sh; CHRONICLE_PG_URL and CHRONICLE_PG_DIR). The backend contract itself
-- (append, read, fold, the write and read sides) runs on PostgreSQL as a second pass of the
-- contract specs with CHRONICLE_SPEC_BACKEND=postgres (see the Makefile's PG_SPECS).
local helpers = require "helpers"
local chronicle = require "chronicle"

local url = helpers.pg_url()
local pgdir = os.getenv("CHRONICLE_PG_DIR")

local function port_of(u) return tonumber(u:match("://[^/]*:(%d+)/")) end

-- Runs several shell commands at once (each bounded by `timeout`), waits for all.
local function run_parallel(cmds)
  local parts = {}
  for i, c in ipairs(cmds) do parts[i] = "(" .. c .. ") &" end
  return os.execute("sh -c " .. helpers.quote(table.concat(parts, " ") .. " wait"))
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

describe("chronicle.open on a postgresql:// URL", function()
  after_each(helpers.cleanup)

  it("creates the schema and its tables on first open, with the format version", function()
    local target, schema = helpers.pg_target()
    local store = helpers.track(assert(chronicle.open(target)))
    assert.equal("1", helpers.psql("SELECT value FROM " .. schema .. ".meta WHERE key = 'format'"))
    local tables = helpers.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = '" ..
                                schema .. "'")
    assert.equal("events,kv,meta,streams", tables)
    assert.equal(0, store:head())
    local stats = store:stats()
    assert.equal("postgres", stats.backend)
    assert.equal(schema, stats.schema)
    assert.matches("^%x+%-%x+%-7%x+%-%x+%-%x+$", stats.store_id)
  end)

  it("accepts postgres:// as well, and the schema defaults to 'chronicle'", function()
    local short = url:gsub("^postgresql://", "postgres://")
    helpers.psql("DROP SCHEMA IF EXISTS chronicle CASCADE")
    local store = assert(chronicle.open(short))
    assert(store:append("s-1", { { type = "T" } }))
    store:close()
    assert.equal("1", helpers.psql("SELECT count(*) FROM chronicle.events"))
    helpers.psql("DROP SCHEMA chronicle CASCADE")
  end)

  it("keeps each schema an independent store, and reopening finds the events", function()
    local a = helpers.pg_target()
    local b = helpers.pg_target()
    local sa = assert(chronicle.open(a))
    local sb = helpers.track(assert(chronicle.open(b)))
    helpers.fill(sa, "x-1", 3)
    assert.equal(3, sa:head())
    assert.equal(0, sb:head())
    sa:close()
    local again = helpers.track(assert(chronicle.open(a)))
    assert.equal(3, again:head())
    assert.same({ 1, 2, 3 }, helpers.pluck(helpers.collect(again:read("x-1")), "position"))
  end)

  it("refuses a schema whose format is newer with unsupported_format, and writes nothing", function()
    local target, schema = helpers.pg_target()
    assert(chronicle.open(target)):close()
    helpers.psql("UPDATE " .. schema .. ".meta SET value = 99 WHERE key = 'format'")
    local store, err = chronicle.open(target)
    assert.is_nil(store)
    assert.equal("unsupported_format", err.code)
    assert.matches("format 99", err.message)
    assert.equal("0", helpers.psql("SELECT value FROM " .. schema .. ".meta WHERE key = 'head'"))
  end)

  it("refuses a schema that holds other tables with not_a_store", function()
    local target, schema = helpers.pg_target()
    helpers.psql("CREATE SCHEMA " .. schema .. "; CREATE TABLE " .. schema .. ".other (x int)")
    local store, err = chronicle.open(target, { readonly = true })
    assert.is_nil(store)
    assert.equal("not_a_store", err.code)
  end)

  it("opens read-only without creating anything: not_found for a missing schema, readonly for appends", function()
    local target, schema = helpers.pg_target()
    local store, err = chronicle.open(target, { readonly = true })
    assert.is_nil(store)
    assert.equal("not_found", err.code)
    assert.equal("0", helpers.psql("SELECT count(*) FROM pg_namespace WHERE nspname = '" .. schema .. "'"))
    local w = assert(chronicle.open(target))
    helpers.fill(w, "r-1", 2)
    local r = helpers.track(assert(chronicle.open(target, { readonly = true })))
    assert.equal(2, r:head())
    local res, rerr = r:append("r-1", { { type = "T" } })
    assert.is_nil(res)
    assert.equal("readonly", rerr.code)
    w:close()
  end)

  it("gives clear errors for a bad URL, a bad schema name, a refused connection and a missing database", function()
    local s, err = chronicle.open("postgresql://127.0.0.1:notaport/x")
    assert.is_nil(s)
    assert.equal("invalid_url", err.code)

    s, err = chronicle.open(url .. "?schema=Bad-Name")
    assert.is_nil(s)
    assert.equal("invalid_url", err.code)
    assert.matches("schema", err.message)

    -- A port nobody listens on: the server's own port plus one is free unless by bad luck.
    local dead = url:gsub(":(%d+)/", function(p) return ":" .. tostring(tonumber(p) == 65535 and 1 or tonumber(p) + 1) .. "/" end)
    s, err = chronicle.open(dead .. "?connect_timeout=5")
    assert.is_nil(s)
    assert.equal("unavailable", err.code)
    assert.matches("cannot open postgresql://", err.message)

    s, err = chronicle.open((url:gsub("/[^/?]*$", "/no_such_database_here")))
    assert.is_nil(s)
    assert.equal("not_found", err.code)
    assert.matches("no_such_database_here", err.message)

    s, err = chronicle.open("mysql://localhost/x")
    assert.is_nil(s)
    assert.equal("unsupported", err.code)
  end)

  it("gives auth_failed for a wrong password, and never shows the password", function()
    assert(pgdir, "CHRONICLE_PG_DIR is not set (make test sets it)")
    helpers.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chronicle_pw') THEN " ..
                 "CREATE ROLE chronicle_pw LOGIN PASSWORD 'right-one'; END IF; END $$")
    local hba = pgdir .. "/data/pg_hba.conf"
    local text = read_file(hba)
    if not text:find("chronicle_pw", 1, true) then
      helpers.write_file(hba, "host all chronicle_pw 127.0.0.1/32 scram-sha-256\n" .. text)
      helpers.psql("SELECT pg_reload_conf()")
    end
    local wrong = url:gsub("://[^@/]*@", "://chronicle_pw:wrong-secret@")
    local s, err = chronicle.open(wrong)
    assert.is_nil(s)
    assert.equal("auth_failed", err.code)
    assert.is_nil(err.message:find("wrong-secret", 1, true))
    local right = url:gsub("://[^@/]*@", "://chronicle_pw:right-one@")
    helpers.psql("GRANT CREATE ON DATABASE postgres TO chronicle_pw")
    local target, schema = helpers.pg_target()
    target = target:gsub("://[^@/]*@", "://chronicle_pw:right-one@")
    local store = helpers.track(assert(chronicle.open(target)))
    assert.is_nil(tostring(store):find("right-one", 1, true))
    assert.is_nil(store:stats().path:find("right-one", 1, true))
    assert(right)
    assert(schema)
  end)

  it("lets several processes create the same new schema at once", function()
    local target = helpers.pg_target()
    local dir = helpers.tmpdir()
    local script = dir .. "/open.lua"
    helpers.write_file(script, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1]))
      assert(store:append("p-" .. arg[2], { { type = "Opened" } }))
      print("ok")
    ]])
    local cmds = {}
    for i = 1, 4 do
      cmds[i] = "timeout 60 " .. helpers.lua_command(script, target, tostring(i)) .. " > " .. dir .. "/out" .. i .. " 2>&1"
    end
    run_parallel(cmds)
    for i = 1, 4 do assert.equal("ok\n", read_file(dir .. "/out" .. i)) end
    local store = helpers.track(assert(chronicle.open(target)))
    assert.equal(4, store:head())
  end)
end)

describe("a PostgreSQL store", function()
  after_each(helpers.cleanup)

  it("round-trips values exactly: integers vs floats, binary strings, empty tables", function()
    local store = helpers.open(nil, (helpers.pg_target()))
    local data = { i = 3, f = 3.0, big = math.maxinteger, neg = -0.0, bin = "\0\255\1", list = { 1, 2.5, "x" },
                   empty = {}, nested = { a = { b = { c = true } } } }
    assert(store:append("v-1", { { type = "T", data = data, meta = { m = 1 } } }))
    local ev = helpers.collect(store:read("v-1"))[1]
    assert(helpers.identical(data, ev.data))
    assert.same({ m = 1 }, ev.meta)
    assert.is_true(store:verify().ok)
  end)

  it("reads large events in batches of about a mebibyte, every one of them, both ways", function()
    local store = helpers.open(nil, (helpers.pg_target()))
    local big = string.rep("x", 300 * 1024)
    for i = 1, 12 do assert(store:append("big-1", { { type = "Big", data = { i = i, blob = big } } })) end
    local fwd = helpers.collect(store:read_all())
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, helpers.pluck(fwd, "position"))
    assert.equal(big, fwd[12].data.blob)
    local back = helpers.collect(store:read("big-1", { backward = true }))
    assert.same({ 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 }, helpers.pluck(back, "version"))
    local _, n = store:fold({ category = "big" }, 0, function(acc) return acc + 1 end)
    assert.equal(12, n)
  end)

  it("rolls a dry run back: nothing of it is stored", function()
    local store = helpers.open(nil, (helpers.pg_target()))
    local res = assert(store:write { appends = { { stream = "d-1", events = { { type = "T" } } } },
                                     puts = { { "sp", "k", 1 } }, dry_run = true })
    assert.is_true(res.dry_run)
    assert.equal(1, res.position)
    assert.equal(0, store:head())
    assert.is_nil(store:kv_get("sp", "k"))
  end)

  it("gives unavailable when the server restarts, writes nothing half, and reconnects on the next call", function()
    assert(pgdir, "CHRONICLE_PG_DIR is not set (make test sets it)")
    local store = helpers.open(nil, (helpers.pg_target()))
    helpers.fill(store, "u-1", 2)
    assert(os.execute("bash " .. helpers.quote(helpers.root .. "/scripts/pg_cluster.sh") .. " restart " ..
                      helpers.quote(pgdir) .. " > /dev/null"))
    local events = { { type = "T", id = helpers.uuid(1) }, { type = "T", id = helpers.uuid(2) } }
    local res, err = store:append("u-1", events, 1)
    assert.is_nil(res)
    assert.equal("unavailable", err.code)
    -- The retry with the same ids is exactly-once.
    res = assert(store:append("u-1", events, 1))
    assert.equal(3, res.version)
    res = assert(store:append("u-1", events, 1))
    assert.equal(3, res.version)
    assert.equal(4, store:head())
    assert.is_true(store:verify().ok)
  end)

  it("leaves a projection equal to a rebuild and reactions exactly once when the server is stopped -m immediate under a runner", function()
    assert(pgdir, "CHRONICLE_PG_DIR is not set (make test sets it)")
    local common = require "support.projections.common"
    local target = helpers.pg_target()
    local store = helpers.open(nil, target)
    for a = 1, 20 do assert(store:append("account-" .. a, { { type = "Opened", data = { owner = "o" .. a } } })) end
    local batches = {}
    for i = 1, 600 do
      batches[#batches + 1] = { stream = "account-" .. (i % 20 + 1), events = {
        { type = "Deposited", data = { amount = i % 97 + 1 } }, { type = "Withdrawn", data = { amount = i % 13 } } } }
      if #batches == 30 then assert(store:append_many(batches)); batches = {} end
    end
    local dir = helpers.tmpdir()
    local runner = "timeout 60 " .. helpers.lua_command(helpers.root .. "/spec/support/projections/crash_runner.lua", target, "1", "forever")
    local cluster = "bash " .. helpers.quote(helpers.root .. "/scripts/pg_cluster.sh")
    -- The runner works through the backlog in small batches; the server dies under it and comes back.
    local script = runner .. " > " .. helpers.quote(dir .. "/runner.out") .. " 2>&1 & pid=$!; sleep 0.3; " ..
      "MODE=immediate " .. cluster .. " restart " .. helpers.quote(pgdir) .. " > /dev/null; sleep 1; " ..
      "kill -9 $pid 2>/dev/null; wait $pid; true"
    assert(os.execute("sh -c " .. helpers.quote(script)))
    if not store:head() then assert(store:head()) end    -- this connection died with the server
    local status = store:projection_status().ledger
    print(("  the server stopped with the ledger at %s of %d"):format(tostring(status and status.checkpoint), store:head()))
    local final = helpers.capture(helpers.lua_command(helpers.root .. "/spec/support/projections/crash_runner.lua", target, "1", "idle"))
    assert.equal("idle live", final)
    local view = store:view("ledger")
    local ok, where = helpers.identical(common.expected_ledger(store), common.rows(view))
    assert.is_true(ok, "the view differs from a rebuild at " .. tostring(where))
    local answered, deposits = {}, 0
    for ev in store:read_all({ category = "account", types = { "Deposited" } }) do deposits = deposits + 1 end
    for ev in store:read_all({ types = { "Receipt" } }) do
      local cause = ev.meta.causation_id
      assert.is_nil(answered[cause], "a deposit answered twice")
      answered[cause] = true
    end
    local receipts = 0
    for _ in pairs(answered) do receipts = receipts + 1 end
    assert.equal(deposits, receipts)
  end)

  it("keeps every acknowledged event exactly once when the server is stopped -m immediate during appends", function()
    assert(pgdir, "CHRONICLE_PG_DIR is not set (make test sets it)")
    local target = helpers.pg_target()
    local store = helpers.open(nil, target)
    local dir = helpers.tmpdir()
    local writer = dir .. "/writer.lua"
    -- Appends N events with ids, retrying each after `unavailable` (the exactly-once recipe), and
    -- prints the id of every append the store acknowledged.
    helpers.write_file(writer, [[
      local chronicle = require "chronicle"
      local target, n, started = arg[1], tonumber(arg[2]), arg[3]
      local store
      for _ = 1, 600 do
        store = chronicle.open(target)
        if store then break end
        os.execute("sleep 0.05")
      end
      assert(store, "cannot open")
      io.open(started, "w"):close()
      local retries = 0
      for i = 1, n do
        local id = string.format("%08x-0000-7000-8000-%012x", 7, i)
        local events = { { type = "Paid", id = id, data = { i = i } } }
        local deadline = os.time() + 60
        while true do
          local res, err = store:append("pay-" .. (i % 5), events)
          if res then break end
          assert(err.code == "unavailable", tostring(err))
          retries = retries + 1
          assert(os.time() < deadline, "the server did not come back")
          os.execute("sleep 0.05")
        end
        io.stdout:write(id, "\n")
        io.stdout:flush()
      end
      io.stderr:write("retries ", retries, "\n")
    ]])
    local started = dir .. "/started"
    local n = 150
    local child = "timeout 120 " .. helpers.lua_command(writer, target, tostring(n), started) ..
                  " > " .. dir .. "/acked 2> " .. dir .. "/err"
    local cluster = "bash " .. helpers.quote(helpers.root .. "/scripts/pg_cluster.sh")
    -- The writer runs in the background; once it has started, the server is killed and restarted.
    local script = child .. " & pid=$!; " ..
      "for i in $(seq 600); do [ -e " .. helpers.quote(started) .. " ] && break; sleep 0.05; done; sleep 0.3; " ..
      "MODE=immediate " .. cluster .. " restart " .. helpers.quote(pgdir) .. " > /dev/null; wait $pid"
    local ok = os.execute("sh -c " .. helpers.quote(script))
    local acked = {}
    for id in read_file(dir .. "/acked"):gmatch("[^\n]+") do acked[#acked + 1] = id end
    assert.is_true(ok == true, "the writer failed: " .. read_file(dir .. "/err"))
    assert.equal(n, #acked)
    -- This process's connection died with the server too: its first call says so, the next reconnects.
    local head, herr = store:head()
    if head == nil then assert.equal("unavailable", herr.code) end
    assert.equal(n, store:head())
    local seen = {}
    local events = helpers.collect(store:read_all())
    for i, ev in ipairs(events) do
      assert.equal(i, ev.position)
      assert.is_nil(seen[ev.id], "stored twice: " .. ev.id)
      seen[ev.id] = true
    end
    for _, id in ipairs(acked) do assert.is_true(seen[id], "acknowledged but missing: " .. id) end
    assert.equal(n, #events)
    assert.is_true(store:verify().ok)
  end)

  it("wakes store:wait in one process on an append from another (LISTEN/NOTIFY)", function()
    local target = helpers.pg_target()
    local store = helpers.open(nil, target)
    helpers.fill(store, "w-1", 1)
    local dir = helpers.tmpdir()
    local script = dir .. "/append.lua"
    helpers.write_file(script, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1]))
      os.execute("sleep 0.3")
      assert(store:append("w-2", { { type = "Later" } }))
    ]])
    local child = io.popen("timeout 60 " .. helpers.lua_command(script, target) .. " 2>&1", "r")
    local head = store:wait(1, 30)
    local out = child:read("a")
    child:close()
    assert.equal("", out)
    assert.equal(2, head)
    assert.is_false(store:wait(2, 0.05))
  end)

  it("keeps positions gap-free and in commit order under concurrent writer processes", function()
    local target = helpers.pg_target()
    local store = helpers.open(nil, target)
    local dir = helpers.tmpdir()
    local writer, reader = dir .. "/writer.lua", dir .. "/reader.lua"
    helpers.write_file(writer, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1]))
      for i = 1, tonumber(arg[3]) do
        assert(store:append(arg[2], { { type = "W", data = { i = i } } }, i == 1 and chronicle.NO_STREAM or i - 2))
      end
      print("done")
    ]])
    -- A reader that has seen position p must never later find an event at or below p.
    helpers.write_file(reader, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1]))
      local total, seen = tonumber(arg[2]), 0
      local deadline = os.time() + 50
      while seen < total and os.time() < deadline do
        for ev in store:read_all { from = seen + 1 } do
          if ev.position ~= seen + 1 then print("jump from " .. seen .. " to " .. ev.position); os.exit(1) end
          seen = ev.position
        end
        store:wait(seen, 0.2)
      end
      print("seen " .. seen)
    ]])
    local writers, per = 4, 60
    local cmds = {}
    for i = 1, writers do
      cmds[i] = "timeout 60 " .. helpers.lua_command(writer, target, "g-" .. i, tostring(per)) .. " > " ..
                dir .. "/w" .. i .. " 2>&1"
    end
    cmds[#cmds + 1] = "timeout 60 " .. helpers.lua_command(reader, target, tostring(writers * per)) .. " > " ..
                      dir .. "/r 2>&1"
    run_parallel(cmds)
    for i = 1, writers do assert.equal("done\n", read_file(dir .. "/w" .. i)) end
    assert.equal("seen " .. writers * per .. "\n", read_file(dir .. "/r"))
    local positions = helpers.pluck(helpers.collect(store:read_all()), "position")
    assert.equal(writers * per, #positions)
    for i, p in ipairs(positions) do assert.equal(i, p) end
    for i = 1, writers do assert.equal(per - 1, store:stream_version("g-" .. i)) end
  end)

  describe("replaying appends by id", function()
    local function ev(n, data) return { type = "T", id = helpers.uuid(n), data = data or { n = n } } end
    -- What a replay returns: the original result, marked replayed.
    local function replay_of(result)
      local out = helpers.shallow_copy(result)
      out.replayed = true
      return out
    end

    it("succeeds with the original result only at the place `expected` names", function()
      local store = helpers.open(nil, (helpers.pg_target()))
      local first = assert(store:append("r-1", { ev(1), ev(2) }, chronicle.NO_STREAM))
      local later = assert(store:append("r-1", { ev(3) }, 1))
      -- The first batch again: NO_STREAM and ANY name its place (it starts at version 0), EXISTS does not.
      assert.same(replay_of(first), assert(store:append("r-1", { ev(1), ev(2) }, chronicle.NO_STREAM)))
      assert.same(replay_of(first), assert(store:append("r-1", { ev(1), ev(2) })))
      local res, err = store:append("r-1", { ev(1), ev(2) }, chronicle.EXISTS)
      assert.is_nil(res)
      assert.equal("conflict", err.code)
      assert.equal(2, err.actual)
      -- The second: EXISTS and version 1 name its place; NO_STREAM and version 0 do not.
      assert.same(replay_of(later), assert(store:append("r-1", { ev(3) }, chronicle.EXISTS)))
      assert.same(replay_of(later), assert(store:append("r-1", { ev(3) }, 1)))
      for _, expected in ipairs({ chronicle.NO_STREAM, 0, 2 }) do
        res, err = store:append("r-1", { ev(3) }, expected)
        assert.is_nil(res)
        assert.equal("conflict", err.code)
        assert.equal(expected, err.expected)
      end
      assert.equal(3, store:head())
    end)

    it("refuses a partial replay with duplicate_id naming the first stored id and its position", function()
      local store = helpers.open(nil, (helpers.pg_target()))
      assert(store:append("p-1", { ev(1), ev(2) }))
      local res, err = store:append("p-1", { ev(5), ev(2), ev(1) })
      assert.is_nil(res)
      assert.equal("duplicate_id", err.code)
      assert.equal(helpers.uuid(2), err.id)
      assert.equal(2, err.position)
      assert.equal(2, store:head())
    end)

    it("holds for appends of more ids than one lookup statement takes", function()
      local store = helpers.open(nil, (helpers.pg_target()))
      local events = {}
      for i = 1, 2500 do events[i] = ev(i) end
      local first = assert(store:append("big-1", events, chronicle.NO_STREAM))
      assert.same(replay_of(first), assert(store:append("big-1", events, chronicle.NO_STREAM)))
      local more = {}
      for i = 1, 1500 do more[i] = ev(10000 + i) end
      more[1300] = ev(2400)                     -- one stored id, in the second lookup
      local res, err = store:append("big-1", more)
      assert.is_nil(res)
      assert.equal("duplicate_id", err.code)
      assert.equal(helpers.uuid(2400), err.id)
      assert.equal(2400, err.position)
      assert.equal(2500, store:head())
    end)

    it("refuses the same ids with other data or meta with duplicate_id", function()
      local store = helpers.open(nil, (helpers.pg_target()))
      assert(store:append("d-1", { ev(1) }))
      local res, err = store:append("d-1", { ev(1, { n = 2 }) })
      assert.is_nil(res)
      assert.equal("duplicate_id", err.code)
      local other = ev(1)
      other.meta = { by = "someone" }
      res, err = store:append("d-1", { other })
      assert.is_nil(res)
      assert.equal("duplicate_id", err.code)
    end)
  end)

  it("reports a statement the server refuses inside a write as an error, writes nothing, and stays usable", function()
    local target, schema = helpers.pg_target()
    local store = helpers.open(nil, target)
    helpers.psql("ALTER TABLE " .. schema .. ".kv ADD CONSTRAINT short_keys CHECK (length(key) < 5)")
    local res, err = store:write { appends = { { stream = "e-1", events = { { type = "T" } } } },
                                   puts = { { "sp", "ok", 1 }, { "sp", "too-long", 2 } } }
    assert.is_nil(res)
    assert.equal("storage", err.code)
    assert.equal("23514", err.sqlstate)
    assert.equal(0, store:head())
    assert.is_nil(store:kv_get("sp", "ok"))
    res = assert(store:write { appends = { { stream = "e-1", events = { { type = "T" } } } }, puts = { { "sp", "ok", 1 } } })
    assert.equal(1, res.position)
    assert.equal(1, store:kv_get("sp", "ok"))
  end)

  it("is what the CLI's subcommands open when given the URL instead of a directory", function()
    local target = helpers.pg_target()
    local store = helpers.open(nil, target)
    assert(store:append("c-1", { { type = "Said", data = { n = 7 } } }))
    local cli = helpers.root .. "/bin/chronicle"
    local function run(args)
      return helpers.capture("timeout 60 " .. helpers.lua_command(cli, table.unpack(args)) .. " 2>&1")
    end
    assert.matches("events%s+1", run { "stats", target })
    assert.matches("c%-1@0%s+Said", run { "tail", target })
    assert.matches("^ok: 1 events", run { "verify", target })
    assert.matches('"type":"Said"', run { "export", target })
    local missing = helpers.pg_target()
    assert.matches("does not exist", run { "tail", missing })
  end)

  it("is copied from and to a directory by `chronicle copy`, resumably, with ids, times, positions and spaces", function()
    local cli = helpers.root .. "/bin/chronicle"
    local function copy(a, b)
      return helpers.capture("timeout 120 " .. helpers.lua_command(cli, "copy", a, b) .. " 2>&1")
    end
    local dir = helpers.tmpdir() .. "/src"
    local src = helpers.open(nil, dir)
    for i = 1, 25 do
      assert(src:append("acct-" .. i % 3, { { type = "D", data = { n = i, f = i / 2, e = {} }, meta = { i = i } } }))
    end
    assert(src:write { puts = { { "views#1", "a", { 1, 2.0 } }, { "checkpoints", "p:x", 25 } } })
    local target = helpers.pg_target()
    assert.matches("25 events %(25 new%), 2 keys in 2 spaces; verified", copy(dir, target))
    -- More events in SRC: running it again copies only those.
    helpers.fill(src, "acct-9", 5)
    assert.matches("30 events %(5 new%), 2 keys in 2 spaces; verified", copy(dir, target))
    local pg = helpers.track(assert(chronicle.open(target)))
    local a, b = helpers.collect(src:read_all()), helpers.collect(pg:read_all())
    assert(helpers.identical(a, b))
    assert(helpers.identical({ 1, 2.0 }, pg:kv_get("views#1", "a")))
    -- And back into a new directory.
    local back = helpers.tmpdir() .. "/back"
    assert.matches("30 events %(30 new%)", copy(target, back))
    local again = helpers.track(assert(chronicle.open(back)))
    assert(helpers.identical(a, helpers.collect(again:read_all())))
    -- A DST that is not a copy of SRC is refused.
    local otherdir = helpers.tmpdir() .. "/other"
    local other = helpers.open(nil, otherdir)
    helpers.fill(other, "x-1", 3)
    other:close()
    assert.matches("not a copy of SRC", copy(dir, otherdir))
  end)

  it("has no backup of its own: unsupported, pointing to pg_dump", function()
    local store = helpers.open(nil, (helpers.pg_target()))
    local ok, err = store:backup(helpers.tmpdir() .. "/b")
    assert.is_nil(ok)
    assert.equal("unsupported", err.code)
    assert.matches("pg_dump", err.message)
  end)
end)

describe("a PostgreSQL store on a hot standby", function()
  local standby_url
  local cluster = helpers.quote(helpers.root .. "/scripts/pg_cluster.sh")

  setup(function()
    assert(pgdir, "CHRONICLE_PG_DIR is not set (make test sets it)")
    local out = helpers.capture("timeout 120 bash " .. cluster .. " standby " .. helpers.quote(pgdir) .. " 2>&1")
    assert(out:match("/standby$"), "the standby did not start: " .. out)
    standby_url = read_file(pgdir .. "/standby/url"):gsub("%s+$", "")
  end)

  teardown(function()
    if pgdir then os.execute("timeout 120 bash " .. cluster .. " stop-standby " .. helpers.quote(pgdir)) end
  end)

  after_each(helpers.cleanup)

  it("serves reads, key-value reads and wait with readonly = true while the primary takes appends", function()
    local target, schema = helpers.pg_target()
    local primary = helpers.open(nil, target)
    helpers.fill(primary, "s-1", 3)
    assert(primary:write { puts = { { "views", "k", { n = 1 } } } })
    local on_standby = standby_url .. "?schema=" .. schema
    -- The schema reaches the standby by replay: retry opening until it is there.
    local replica, err
    for _ = 1, 300 do
      replica, err = chronicle.open(on_standby, { readonly = true })
      if replica then break end
      assert.equal("not_found", err.code)
      os.execute("sleep 0.05")
    end
    assert(replica, "the standby never showed the schema: " .. tostring(err))
    helpers.track(replica)
    assert(replica:wait(2, 30), "the standby never replayed the first events")
    assert.equal(3, replica:wait(2, 30))
    assert.same({ 0, 1, 2 }, helpers.pluck(helpers.collect(replica:read("s-1")), "version"))
    assert.same({ n = 1 }, replica:kv_get("views", "k"))
    -- Appends on the primary appear on the standby, and wake its wait.
    helpers.fill(primary, "s-2", 2)
    assert.equal(5, replica:wait(3, 30))
    assert.equal(1, replica:stream_version("s-2"))
    assert.is_true(replica:verify().ok)
    local res, aerr = replica:append("s-3", { { type = "T" } })
    assert.is_nil(res)
    assert.equal("readonly", aerr.code)
    -- Opened for writing, the standby refuses: the server is read-only.
    local w, werr = chronicle.open(on_standby)
    assert.is_nil(w)
    assert.equal("readonly", werr.code)
  end)
end)
