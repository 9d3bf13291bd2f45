-- Personal data and its erasure: events carry `subject` and `personal`; personal is stored
-- sealed with the subject's key, read back by every read, and gone for good once
-- store:forget(subject) destroyed the key. On both backends.
local chronicle = require "chronicle"
local helpers = require "helpers"

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Every byte of every file under `dir`, concatenated.
local function all_bytes(dir)
  local out = {}
  for path in helpers.capture("find " .. helpers.quote(dir) .. " -type f"):gmatch("[^\n]+") do
    out[#out + 1] = slurp(path)
  end
  return table.concat(out)
end

local function register(store, subject, name, email)
  return store:append("customer-" .. subject, {
    { type = "Registered", subject = subject, personal = { name = name, email = email }, data = { plan = "pro" },
      meta = { source = "web" } },
    { type = "PlanChanged", data = { plan = "team" } },
  })
end

local function new_key_file()
  local path = helpers.tmpdir() .. "/store.key"
  assert(require("chronicle.crypto").new_key_file(path))
  return path
end

describe("personal data", function()
  after_each(helpers.cleanup)

  it("reads back decrypted as ev.personal from read, read_all and fold, with ev.subject", function()
    local store = helpers.open()
    assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
    local evs = helpers.collect(store:read("customer-alice"))
    assert.same({ name = "Alice Liddell", email = "alice@example.org" }, evs[1].personal)
    assert.equals("alice", evs[1].subject)
    assert.same({ source = "web" }, evs[1].meta)          -- the sealed box is not in meta
    assert.same({ plan = "pro" }, evs[1].data)
    assert.is_nil(evs[1].erased)
    assert.is_nil(evs[2].personal)
    assert.is_nil(evs[2].meta)
    local all = helpers.collect(store:read_all())
    assert.equals("Alice Liddell", all[1].personal.name)
    local names = store:fold({ from = 1 }, {}, function(acc, ev)
      acc[#acc + 1] = ev.personal and ev.personal.name or "-"
    end)
    assert.same({ "Alice Liddell", "-" }, names)
  end)

  it("is opened for a read naming fields that leave out meta and id, which the events then do not hold", function()
    local store = helpers.open()
    assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
    local function keys_of(t)
      local out = {}
      for k in pairs(t) do out[#out + 1] = k end
      table.sort(out)
      return out
    end
    local fields = { "type", "data" }
    local evs = helpers.collect(store:read("customer-alice", { fields = fields }))
    assert.same({ name = "Alice Liddell", email = "alice@example.org" }, evs[1].personal)
    assert.same({ "data", "personal", "subject", "type" }, keys_of(evs[1]))
    assert.same({ "data", "type" }, keys_of(evs[2]))
    local names = store:fold({ stream = "customer-alice", fields = fields }, {}, function(acc, ev)
      acc[#acc + 1] = (ev.personal and ev.personal.name or "-") .. ":" .. table.concat(keys_of(ev), ",")
    end)
    assert.same({ "Alice Liddell:data,personal,subject,type", "-:data,type" }, names)
    -- meta named, id not: the box still opens (it is sealed to the id), and id stays out
    evs = helpers.collect(store:read_all({ fields = { "meta" } }))
    assert.same({ "meta", "personal", "subject" }, keys_of(evs[1]))
    assert.same({ source = "web" }, evs[1].meta)
    -- a sealed read (no reveal function) keeps to the fields as well
    evs = helpers.collect(store:read_all({ sealed = true, fields = fields }))
    assert.same({ "data", "type" }, keys_of(evs[1]))
  end)

  it("is opened by the store's reveal function, which the backend calls for those events only", function()
    local store = helpers.open()
    assert(register(store, "alice", "Alice", "a@example.org"))
    assert(store:append("customer-bob", { { type = "Noted", meta = { ["$personal"] = false, source = "x" } },
                                          { type = "Noted", meta = "just a string" } }))
    local h, calls = store._h, {}
    local function reveal(ev)
      calls[#calls + 1] = ev and ev.type or "end"
      if ev then ev.meta["$personal"] = nil; ev.personal = "opened" end
      return true
    end
    local seen = {}
    for ev in h:read_all(nil, reveal) do seen[#seen + 1] = ev.type .. ":" .. tostring(ev.personal) end
    assert.same({ "Registered:opened", "PlanChanged:nil", "Noted:nil", "Noted:nil" }, seen)
    assert.same({ "Registered", "end" }, calls)
    calls = {}
    for ev in h:read("customer-alice", nil, reveal) do assert.is_table(ev); break end
    assert.same({ "Registered", "end" }, calls)             -- a loop left early ends it too
    calls = {}
    for _ in h:read("customer-bob", nil, reveal) do end
    assert.same({}, calls)                                   -- nothing revealed: never called
    calls = {}
    local n = assert(h:fold({}, 0, function(c, ev) return c + (ev.personal == "opened" and 1 or 0) end, reveal))
    assert.equals(1, n)
    assert.same({ "Registered", "end" }, calls)
    local failing = function(ev) if ev then return nil, { code = "corrupt", message = "no key" } end return true end
    local st, err = h:fold("customer-alice", 0, function(c) return c + 1 end, failing)
    assert.is_nil(st)
    assert.equals("corrupt", err.code)
    local ok, raised = pcall(function() for _ in h:read_all(nil, failing) do end end)
    assert.is_false(ok)
    assert.equals("corrupt", raised.code)
  end)

  it("is sealed in the record: the plaintext is in no read with sealed = true nor in the store's bytes", function()
    local store, dir = helpers.open()
    assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
    for ev in store:read_all({ sealed = true }) do
      if ev.version == 0 then
        assert.is_nil(ev.personal)
        assert.equals("alice", ev.meta["$personal"].s)
        assert.is_string(ev.meta["$personal"].c)
        assert.is_nil(ev.meta["$personal"].c:find("Alice", 1, true))
      end
    end
    if helpers.backend == "lmdb" then
      assert.is_nil(all_bytes(dir):find("Alice Liddell", 1, true))
    end
  end)

  it("works through append_many and write, and an aggregate sees it", function()
    local store = helpers.open()
    assert(store:append_many({
      { stream = "customer-bob", events = { { type = "Registered", subject = "bob", personal = { name = "Bob" } } } },
      { stream = "customer-eve", events = { { type = "Registered", subject = "eve", personal = { name = "Eve" } } } },
    }))
    assert(store:write({ appends = { { stream = "customer-bob", events = {
      { type = "Renamed", subject = "bob", personal = { name = "Robert" } } } } },
      puts = { { "notes", "k", 1 } } }))
    local Customer = chronicle.aggregate {
      name = "customer",
      initial = function() return { names = {} } end,
      apply = {
        Registered = function(s, ev) s.names[#s.names + 1] = ev.personal and ev.personal.name or "?" end,
        Renamed = function(s, ev) s.names[#s.names + 1] = ev.personal and ev.personal.name or "?" end,
      },
      commands = {},
    }
    local repo = store:repository(Customer)
    assert.same({ "Bob", "Robert" }, assert(repo:load("bob")).names)
    assert.same({ "Eve" }, assert(repo:load("eve")).names)
    assert.equals(1, store:kv_get("notes", "k"))
  end)

  it("replays idempotently: the same event with the same id is stored once", function()
    local store = helpers.open()
    local id = chronicle.uuid()
    local ev = { type = "Registered", id = id, subject = "alice", personal = { name = "Alice" } }
    local first = assert(store:append("customer-alice", { ev }, { expected = chronicle.NO_STREAM }))
    local again = assert(store:append("customer-alice", { ev }, { expected = chronicle.NO_STREAM }))
    assert.equals(first.position, again.position)
    assert.equals(1, store:head())
  end)

  describe("after store:forget(subject)", function()
    it("reads return the subject's events with personal = nil and erased = true, never an error", function()
      local store = helpers.open()
      assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
      assert(register(store, "bob", "Bob Bobson", "bob@example.org"))
      local res = assert(store:forget("alice"))
      assert.equals("alice", res.subject)
      assert.equals("integer", math.type(res.forgotten))
      for ev in store:read("customer-alice") do
        assert.is_nil(ev.personal)
        if ev.version == 0 then
          assert.is_true(ev.erased)
          assert.equals("alice", ev.subject)
          assert.equals("Registered", ev.type)
          assert.same({ plan = "pro" }, ev.data)
          assert.same({ source = "web" }, ev.meta)
        else
          assert.is_nil(ev.erased)
        end
      end
      local bob = helpers.collect(store:read("customer-bob"))
      assert.equals("Bob Bobson", bob[1].personal.name)
      local state, count = store:fold({ from = 1 }, { erased = 0 }, function(s, ev)
        if ev.erased then s.erased = s.erased + 1 end
      end)
      assert.equals(4, count)
      assert.equals(1, state.erased)
      -- forgetting again changes nothing
      local again = assert(store:forget("alice"))
      assert.is_true(again.already)
      assert.equals(res.forgotten, again.forgotten)
    end)

    it("is seen by another handle of the same store", function()
      local store, dir = helpers.open()
      assert(register(store, "alice", "Alice", "a@example.org"))
      local other = helpers.track(assert(chronicle.open(dir)))
      assert.equals("Alice", helpers.collect(other:read("customer-alice"))[1].personal.name)
      assert(store:forget("alice"))
      assert.is_true(helpers.collect(other:read("customer-alice"))[1].erased)
    end)

    it("is seen by the writes of another handle that sealed with the subject's key before", function()
      local store, dir = helpers.open()
      local other = helpers.track(assert(chronicle.open(dir)))
      assert(register(other, "alice", "Alice", "a@example.org"))  -- other keeps alice's key for its writes
      assert(register(other, "bob", "Bob", "b@example.org"))
      assert(store:forget("alice"))
      local res, err = other:append("customer-alice", { { type = "Renamed", subject = "alice", personal = { name = "A" } } })
      assert.is_nil(res)
      assert.equals("forgotten", err.code)
      -- its other subjects' keys still seal, and a new subject gets a key
      assert(other:append_many({
        { stream = "customer-bob", events = { { type = "Renamed", subject = "bob", personal = { name = "Robert" } } } },
        { stream = "customer-eve", events = { { type = "Registered", subject = "eve", personal = { name = "Eve" } } } },
      }))
      assert.equals("Robert", helpers.collect(store:read("customer-bob", { from = 2 }))[1].personal.name)
      assert.equals("Eve", helpers.collect(store:read("customer-eve"))[1].personal.name)
      assert.is_true(helpers.collect(store:read("customer-alice"))[1].erased)
    end)

    it("a failed write keeps no key it made: the subject gets its key from the write that stores it", function()
      local store = helpers.open()
      local res, err = store:append("customer-zoe", {
        { type = "Registered", subject = "zoe", personal = { name = "Zoe" } } }, { expected = 5 })
      assert.is_nil(res)
      assert.equals("conflict", err.code)
      assert.is_nil(store:kv_get("subject_keys", "zoe"))
      assert(store:append("customer-zoe", { { type = "Registered", subject = "zoe", personal = { name = "Zoe" } } }))
      local row = store:kv_get("subject_keys", "zoe")
      assert.is_string(row)
      assert.equals("Zoe", helpers.collect(store:read("customer-zoe"))[1].personal.name)
      -- a misuse in the middle of a batch leaves nothing behind either
      assert.matches("personal must be a table", helpers.raises(store.append_many, store, {
        { stream = "customer-yan", events = { { type = "Registered", subject = "yan", personal = { name = "Yan" } } } },
        { stream = "customer-yan", events = { { type = "Registered", subject = "yan", personal = "Yan" } } } }))
      assert.is_nil(store:kv_get("subject_keys", "yan"))
      assert(store:append("customer-yan", { { type = "Registered", subject = "yan", personal = { name = "Yan" } } }))
      assert.equals("Yan", helpers.collect(store:read("customer-yan"))[1].personal.name)
      -- and so does one the backend refuses after the sealing
      assert.matches("unknown field", helpers.raises(store.append, store, "customer-ida",
        { { type = "Registered", subject = "ida", personal = { name = "Ida" }, colour = "red" } }))
      assert.is_nil(store:kv_get("subject_keys", "ida"))
      assert(store:append("customer-ida", { { type = "Registered", subject = "ida", personal = { name = "Ida" } } }))
      assert.equals("Ida", helpers.collect(store:read("customer-ida"))[1].personal.name)
    end)

    it("aggregates load, projections rebuild and handlers run without the data", function()
      local store = helpers.open()
      assert(register(store, "alice", "Alice", "a@example.org"))
      assert(register(store, "bob", "Bob", "b@example.org"))
      local Customer = chronicle.aggregate {
        name = "customer",
        initial = function() return {} end,
        apply = {
          Registered = function(s, ev) s.name = ev.personal and ev.personal.name or "(erased)"; s.plan = ev.data.plan end,
          PlanChanged = function(s, ev) s.plan = ev.data.plan end,
        },
        commands = {},
      }
      store:projection {
        name = "customer_names",
        version = 1,
        handlers = {
          Registered = function(view, ev) view:put(ev.stream, ev.personal and ev.personal.name or "(erased)") end,
        },
      }
      assert(store:run_projections())
      assert.equals("Alice", store:view("customer_names"):get("customer-alice"))
      assert(store:forget("alice"))
      assert.same({ name = "(erased)", plan = "team" }, assert(store:repository(Customer):load("alice")))
      assert.same({ name = "Bob", plan = "team" }, assert(store:repository(Customer):load("bob")))
      assert(store:reset_projection("customer_names"))
      assert(store:run_projections())
      assert.equals("(erased)", store:view("customer_names"):get("customer-alice"))
      assert.equals("Bob", store:view("customer_names"):get("customer-bob"))
      local seen = {}
      store:on("Registered", function(ev) seen[#seen + 1] = ev.erased and "erased" or ev.personal.name end,
               { name = "mailer" })
      assert(chronicle.runner(store):run_once())
      assert.same({ "erased", "Bob" }, seen)
    end)

    it("refuses new personal data of the forgotten subject (forgotten) and keeps other writes", function()
      local store = helpers.open()
      assert(register(store, "alice", "Alice", "a@example.org"))
      assert(store:forget("alice"))
      local res, err = store:append("customer-alice", { { type = "Renamed", subject = "alice", personal = { name = "A" } } })
      assert.is_nil(res)
      assert.equals("forgotten", err.code)
      assert.equals("alice", err.subject)
      assert(store:append("customer-alice", { { type = "Closed", subject = "alice" } }))
      local last = helpers.collect(store:read("customer-alice", { backward = true, count = 1 }))[1]
      assert.equals("alice", last.subject)
      assert.is_nil(last.erased)
    end)

    it("leaves neither the key nor any plaintext in any byte of a compacted copy", function()
      if helpers.backend ~= "lmdb" then return pending("a compacting copy is LMDB's backup") end
      local store, dir = helpers.open()
      assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
      assert(register(store, "bob", "Bob Bobson", "bob@example.org"))
      local row = store:kv_get("subject_keys", "alice")
      local key = row:sub(2)
      assert.equals(32, #key)
      assert.truthy(all_bytes(dir):find(key, 1, true))       -- the grep finds the key before
      assert(store:forget("alice"))
      local copy = helpers.tmpdir() .. "/copy"
      assert(store:backup(copy))
      local bytes = all_bytes(copy)
      assert.is_nil(bytes:find(key, 1, true))
      for _, text in ipairs({ "Alice Liddell", "alice@example.org", "Bob Bobson", "bob@example.org" }) do
        assert.is_nil(bytes:find(text, 1, true), text)
      end
      -- and the copy reads: alice erased, bob intact
      local c = helpers.track(assert(chronicle.open(copy)))
      assert.is_true(helpers.collect(c:read("customer-alice"))[1].erased)
      assert.equals("Bob Bobson", helpers.collect(c:read("customer-bob"))[1].personal.name)
    end)
  end)

  describe("with a key file", function()
    it("wraps the subject keys: the store alone holds no usable key", function()
      local keyfile = new_key_file()
      local store, dir = helpers.open({ key_file = keyfile })
      assert(register(store, "alice", "Alice", "a@example.org"))
      local row = store:kv_get("subject_keys", "alice")
      assert.equals(2, row:byte(1))                          -- a wrapped row
      store:close()
      local again = helpers.track(assert(chronicle.open(dir, { key_file = keyfile })))
      assert.equals("Alice", helpers.collect(again:read("customer-alice"))[1].personal.name)
      again:close()
      -- without the key file the store opens, but its personal data does not: bad_key
      local bare = helpers.track(assert(chronicle.open(dir)))
      assert.equals("PlanChanged", helpers.collect(bare:read("customer-alice", { from = 1 }))[1].type)
      local ok, err = pcall(function() for _ in bare:read("customer-alice") do end end)
      assert.is_false(ok)
      assert.equals("bad_key", err.code)
      local state, ferr = bare:fold("customer-alice", 0, function(n) return n + 1 end)
      assert.is_nil(state)
      assert.equals("bad_key", ferr.code)
      local res, aerr = bare:append("customer-carol", { { type = "Registered", subject = "carol", personal = { name = "C" } } })
      assert.is_nil(res)
      assert.equals("bad_key", aerr.code)
    end)

    it("refuses a wrong, malformed or missing key file with bad_key", function()
      local keyfile = new_key_file()
      local store, dir = helpers.open({ key_file = keyfile })
      assert(register(store, "alice", "Alice", "a@example.org"))
      store:close()
      local wrong = new_key_file()
      local s, err = chronicle.open(dir, { key_file = wrong })
      assert.is_nil(s)
      assert.equals("bad_key", err.code)
      local short = helpers.tmpdir() .. "/short.key"
      helpers.write_file(short, "not a key\n")
      s, err = chronicle.open(dir, { key_file = short })
      assert.is_nil(s)
      assert.equals("bad_key", err.code)
      s, err = chronicle.open(dir, { key_file = helpers.tmpdir() .. "/missing.key" })
      assert.is_nil(s)
      assert.equals("bad_key", err.code)
      assert.has_error(function() chronicle.open(dir, { key_file = 42 }) end)
    end)

    it("after forget and a compacting copy, neither the wrapped key nor plaintext is in the copy", function()
      if helpers.backend ~= "lmdb" then return pending("a compacting copy is LMDB's backup") end
      local keyfile = new_key_file()
      local store = helpers.open({ key_file = keyfile })
      assert(register(store, "alice", "Alice Liddell", "alice@example.org"))
      local row = store:kv_get("subject_keys", "alice")
      assert(store:forget("alice"))
      local copy = helpers.tmpdir() .. "/copy"
      assert(store:backup(copy))
      local bytes = all_bytes(copy)
      assert.is_nil(bytes:find(row:sub(2), 1, true))
      assert.is_nil(bytes:find("Alice Liddell", 1, true))
      local c = helpers.track(assert(chronicle.open(copy, { key_file = keyfile })))
      assert.is_true(helpers.collect(c:read("customer-alice"))[1].erased)
    end)
  end)

  describe("bad input", function()
    it("forgetting an unknown subject is not_found", function()
      local store = helpers.open()
      local res, err = store:forget("nobody")
      assert.is_nil(res)
      assert.equals("not_found", err.code)
      assert.equals("nobody", err.subject)
    end)

    it("personal without subject, a bad subject or a non-table personal raise and write nothing", function()
      local store = helpers.open()
      assert.matches("personal data needs a subject", helpers.raises(store.append, store, "s",
        { { type = "T", personal = { a = 1 } } }))
      assert.matches("subject must be a string", helpers.raises(store.append, store, "s",
        { { type = "T", subject = 7, personal = { a = 1 } } }))
      assert.matches("subject must be a string", helpers.raises(store.append, store, "s",
        { { type = "T", subject = ("x"):rep(201), personal = { a = 1 } } }))
      assert.matches("personal must be a table", helpers.raises(store.append, store, "s",
        { { type = "T", subject = "a", personal = "secret" } }))
      assert.matches("cannot store a function", helpers.raises(store.append, store, "s",
        { { type = "T", subject = "a", personal = { f = print } } }))
      assert.matches("is chronicle's", helpers.raises(store.append, store, "s",
        { { type = "T", subject = "a", personal = {}, meta = { ["$personal"] = 1 } } }))
      assert.matches("subject must be a string", helpers.raises(store.forget, store, ""))
      assert.equals(0, store:head())
      assert.is_nil(store:kv_get("subject_keys", "a"))
    end)

    it("a forged or damaged envelope in a record reads as corrupt, never as garbage; other $personal values are left alone", function()
      local store = helpers.open()
      assert(register(store, "alice", "Alice", "a@example.org"))
      local h = rawget(store, "_h")
      assert(h:append("odd", { { type = "T", meta = { ["$personal"] = "a string", k = 1 } } }))
      local evs = helpers.collect(store:read("odd"))
      assert.same({ ["$personal"] = "a string", k = 1 }, evs[1].meta)
      assert.is_nil(evs[1].personal)
      for _, envelope in ipairs { { s = "alice", c = ("x"):rep(60) },   -- a box alice's key does not open
                                  { s = "", c = ("x"):rep(60) } } do    -- no subject
        assert(h:append("forged", { { type = "T", meta = { ["$personal"] = envelope } } }, "any"))
      end
      for v = 1, 2 do
        local ok, err = pcall(function() for _ in store:read("forged", { from = v - 1, count = 1 }) do end end)
        assert.is_false(ok)
        assert.equals("corrupt", err.code)
        local state, ferr = store:fold({ stream = "forged", from = v - 1, count = 1 }, 0, function(n) return n + 1 end)
        assert.is_nil(state)
        assert.equals("corrupt", ferr.code)
      end
      assert.same({ name = "Alice", email = "a@example.org" }, helpers.collect(store:read("customer-alice"))[1].personal)
    end)

    it("the backend takes personal and subject only in a write sealed with a keyring (ops.seal)", function()
      local store = helpers.open()
      local h = rawget(store, "_h")
      local event = { type = "T", subject = "a", personal = { name = "A" } }
      assert.matches("unknown field", helpers.raises(h.write, h, { appends = { { stream = "s", events = { event } } } }))
      assert.matches("unknown field", helpers.raises(h.append, h, "s", { event }))
      assert.matches("seal must be a chronicle.crypto keyring",
        helpers.raises(h.write, h, { seal = {}, appends = { { stream = "s", events = { event } } } }))
      local ring = require("chronicle.crypto").keyring(nil)
      assert.matches("no key of subject 'a'",      -- ring:prepare puts the keys in first
        helpers.raises(h.write, h, { seal = ring, appends = { { stream = "s", events = { event } } } }))
      ring:close()
      assert.equals(0, store:head())
    end)

    it("keeps the event's own meta, a list or a map, beside the sealed box", function()
      local store = helpers.open()
      assert(store:append("s", {
        { type = "T", subject = "a", personal = { name = "A" }, meta = { "x", "y" } },
        { type = "T", subject = "a", personal = { name = "B" }, meta = { [1] = "x", k = { 1, 2 } } },
        { type = "T", subject = "b" },
      }))
      local evs = helpers.collect(store:read("s"))
      assert.same({ "x", "y" }, evs[1].meta)
      assert.same({ name = "A" }, evs[1].personal)
      assert.same({ [1] = "x", k = { 1, 2 } }, evs[2].meta)
      assert.same({ name = "B" }, evs[2].personal)
      assert.equals("b", evs[3].subject)
      assert.is_nil(evs[3].personal)
      assert.is_nil(evs[3].meta)
      assert.is_nil(evs[3].erased)
    end)

    it("a damaged box is corrupt, never garbage", function()
      local store = helpers.open()
      assert(register(store, "alice", "Alice", "a@example.org"))
      local ev = helpers.collect(store:read("customer-alice", { sealed = true }))[1]
      local box = ev.meta["$personal"].c
      local flipped = box:sub(1, 30) .. string.char(box:byte(31) ~ 1) .. box:sub(32)
      local crypto = require "chronicle.crypto"
      local ring = crypto.keyring(nil)
      assert(ring:add("alice", store:kv_get("subject_keys", "alice")))
      assert.same({ name = "Alice", email = "a@example.org" }, ring:open("alice", ev.id, box))
      local value, err = ring:open("alice", ev.id, flipped)
      assert.is_nil(value)
      assert.equals("corrupt", err.code)
      value, err = ring:open("alice", chronicle.uuid(), box)    -- moved to another event
      assert.is_nil(value)
      assert.equals("corrupt", err.code)
      ring:close()
    end)
  end)
end)
