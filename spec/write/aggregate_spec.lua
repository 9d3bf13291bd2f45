-- Aggregate definitions: chronicle.aggregate{...} checks a definition when it
-- is made, and replaying an event type the aggregate does not know is an error
-- unless the definition says to ignore it.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- A small, valid definition; `patch` changes fields (use `false` to drop one).
local function account_def(patch)
  local def = {
    name = "account",
    initial = function() return { balance = 0, deposits = 0 } end,
    apply = {
      Deposited = function(state, ev)
        state.balance = state.balance + ev.data.amount
        state.deposits = state.deposits + 1
      end,
    },
    commands = {
      deposit = function(_, args) return { type = "Deposited", data = { amount = args.amount } } end,
    },
  }
  for k, v in pairs(patch or {}) do
    if v == false then def[k] = nil else def[k] = v end
  end
  return def
end

-- The message of the error raised by chronicle.aggregate(def).
local function definition_error(def)
  local ok, err = pcall(chronicle.aggregate, def)
  assert.is_false(ok, "the definition was accepted")
  return tostring(err)
end

describe("chronicle.aggregate", function()
  after_each(helpers.cleanup)

  it("accepts a complete definition and names streams category-id", function()
    local Account = chronicle.aggregate(account_def())
    assert.equals("account", Account.name)
    assert.equals("account-42", Account:stream(42))
    assert.equals("account-alice", Account:stream("alice"))
    assert.equals(3, Account.retries, "conflict retries default to 3")
    assert.equals(1, Account.schema_version)
  end)

  it("gives every instance a fresh state, also when initial is a table template", function()
    local template = { balance = 0, tags = {} }
    local Account = chronicle.aggregate(account_def({ initial = template }))
    local store = helpers.open({ durability = "nosync" })
    local accounts = store:repository(Account)
    local a = accounts:load("a")
    local b = accounts:load("b")
    a.tags.x = true
    assert.is_nil(b.tags.x, "two instances share a state table")
    assert.is_nil(template.tags.x, "the template was mutated")
  end)

  describe("refuses a definition, naming the field, when", function()
    it("initial is missing", function()
      local msg = definition_error(account_def({ initial = false }))
      assert.matches("'initial' is missing", msg, nil, true)
    end)

    it("initial is neither a function nor a table", function()
      assert.matches("initial", definition_error(account_def({ initial = 0 })), nil, true)
    end)

    it("apply is missing", function()
      assert.matches("'apply' is missing", definition_error(account_def({ apply = false })), nil, true)
    end)

    it("an apply handler is not a function", function()
      local msg = definition_error(account_def({ apply = { Deposited = "add the amount" } }))
      assert.matches("apply.Deposited must be a function, got string", msg, nil, true)
    end)

    it("a command handler is not a function", function()
      local msg = definition_error(account_def({ commands = { deposit = true } }))
      assert.matches("commands.deposit must be a function, got boolean", msg, nil, true)
    end)

    it("commands is not a table", function()
      assert.matches("'commands' must be a table", definition_error(account_def({ commands = 7 })), nil, true)
    end)

    it("it has a key chronicle does not know (a typo)", function()
      local msg = definition_error(account_def({ snapshot_evry = 10 }))
      assert.matches("unknown field 'snapshot_evry'", msg, nil, true)
    end)

    it("the name is missing or holds the stream separator '-'", function()
      assert.matches("'name'", definition_error(account_def({ name = false })), nil, true)
      assert.matches("'name'", definition_error(account_def({ name = "bank-account" })), nil, true)
    end)

    it("snapshot_every, schema_version or retries is not a usable integer", function()
      assert.matches("snapshot_every", definition_error(account_def({ snapshot_every = 0 })), nil, true)
      assert.matches("snapshot_every", definition_error(account_def({ snapshot_every = 2.5 })), nil, true)
      assert.matches("schema_version", definition_error(account_def({ schema_version = 0 })), nil, true)
      assert.matches("retries", definition_error(account_def({ retries = -1 })), nil, true)
    end)

    it("an upcaster is not a function at an integer version", function()
      local msg = definition_error(account_def({ upcasters = { Deposited = { [1] = "v2" } } }))
      assert.matches("upcasters.Deposited[1]", msg, nil, true)
    end)
  end)

  it("reports a bad definition at the line that made it", function()
    for _, def in ipairs({ account_def({ apply = { Deposited = 1 } }), account_def({ bogus = 1 }),
                           account_def({ initial = false }) }) do
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local agg = chronicle.aggregate(def); return agg end)
      assert.is_false(ok)
      assert.matches("aggregate_spec.lua:" .. line .. ":", tostring(err), nil, true)
    end
  end)

  describe("replaying an event type that has no apply handler", function()
    local store, Account

    before_each(function()
      store = helpers.open({ durability = "nosync" })
      Account = chronicle.aggregate(account_def())
      assert(store:append("account-7", {
        { type = "Deposited", data = { amount = 10 } },
        { type = "Deposited", data = { amount = 5 } },
        { type = "Audited", data = { by = "carol" } },
        { type = "Deposited", data = { amount = 1 } },
      }))
    end)

    it("is an error naming the type, the stream and the version", function()
      local accounts = store:repository(Account)
      local ok, err = pcall(accounts.load, accounts, "7")
      assert.is_false(ok, "load replayed an unknown event type silently")
      err = tostring(err)
      assert.matches("Audited", err, nil, true)
      assert.matches("account-7", err, nil, true)
      assert.matches("version 2", err, nil, true)
    end)

    it("also stops a command on that aggregate, writing nothing", function()
      local accounts = store:repository(Account)
      local before = helpers.snapshot(store)
      assert.is_false((pcall(accounts.execute, accounts, "7", "deposit", { amount = 1 })))
      assert.same(before, helpers.snapshot(store))
    end)

    it("is skipped when the definition sets ignore_unknown_events", function()
      local Lenient = chronicle.aggregate(account_def({ ignore_unknown_events = true }))
      local accounts = store:repository(Lenient)
      local state, version = accounts:load("7")
      assert.equals(16, state.balance)
      assert.equals(3, state.deposits)
      assert.equals(3, version, "the ignored event still counts in the version")
      local res = assert(accounts:execute("7", "deposit", { amount = 4 }))
      assert.equals(4, res.version)
      assert.equals(20, res.state.balance)
    end)

    it("names the version also past a snapshot and in rebuild_snapshots, and leaves later loads alone", function()
      local Snapped = chronicle.aggregate(account_def({ snapshot_every = 1 }))
      local accounts = store:repository(Snapped)
      assert(store:append("account-8", { { type = "Deposited", data = { amount = 2 } } }))
      assert.equals(2, accounts:load("8").balance)        -- writes a snapshot at version 0
      assert(store:append("account-8", { { type = "Audited" }, { type = "Deposited", data = { amount = 1 } },
                                         { type = "Audited" } }))
      local ok, err = pcall(accounts.load, accounts, "8")
      assert.is_false(ok)
      assert.matches("'Audited' (stream account-8, version 1)", tostring(err), nil, true)
      ok, err = pcall(accounts.rebuild_snapshots, accounts)
      assert.is_false(ok)
      assert.matches("(stream account-7, version 2)", tostring(err), nil, true)
      assert(store:append("account-9", { { type = "Deposited", data = { amount = 5 } } }))
      assert.equals(5, accounts:load("9").balance)
    end)
  end)
end)

-- The `fields` of a definition: what apply uses, all a repository's loads read.
describe("an aggregate's fields", function()
  after_each(helpers.cleanup)

  local function keys_of(t)
    local out = {}
    for k in pairs(t) do out[#out + 1] = k end
    table.sort(out)
    return out
  end

  -- An account whose apply records the keys of every event it is given.
  local function recording(seen, patch)
    local def = account_def(patch)
    def.apply = { Deposited = function(state, ev)
      seen[#seen + 1] = keys_of(ev)
      state.balance = state.balance + ev.data.amount
    end }
    return chronicle.aggregate(def)
  end

  local store
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    assert(store:append("account-1", {
      { type = "Deposited", data = { amount = 3 }, meta = { by = "ann" } },
      { type = "Deposited", data = { amount = 4 } },
    }))
  end)

  it("are type and data by default: a load reads those and nothing else", function()
    local seen = {}
    local repo = store:repository(recording(seen))
    local state, version = repo:load("1")
    assert.equals(7, state.balance)
    assert.equals(1, version)
    assert.same({ { "data", "type" }, { "data", "type" } }, seen)
    for i = #seen, 1, -1 do seen[i] = nil end
    assert(repo:execute("1", "deposit", { amount = 1 }))    -- loads, then applies the new event
    assert.equals(3, #seen)
    assert.same({ "data", "type" }, seen[2])
    -- the event a command just made is applied as built, whole
    assert.same({ "data", "id", "meta", "schema", "stream", "time", "type", "version" }, seen[3])
  end)

  it("are what the definition names, with type added", function()
    local seen = {}
    local repo = store:repository(recording(seen, { fields = { "data", "meta", "time" } }))
    assert.equals(7, repo:load("1").balance)
    assert.same({ "data", "meta", "time", "type" }, seen[1])
    assert.same({ "data", "time", "type" }, seen[2])   -- no meta: none
  end)

  it("are read whole when the definition names all nine", function()
    local all = { "position", "stream", "version", "type", "time", "id", "schema", "meta", "data" }
    local got = {}
    local Agg = chronicle.aggregate(account_def({ apply = { Deposited = function(_, ev) got[#got + 1] = ev end },
                                                  fields = all }))
    store:repository(Agg):load("1")
    assert.same(helpers.collect(store:read("account-1")), got)
  end)

  it("gain stream, version, position and schema when upcasters are in force", function()
    local seen = {}
    local repo = store:repository(recording(seen, { upcasters = { Deposited = { [1] = function(d) return d end } } }))
    assert.equals(7, repo:load("1").balance)
    assert.same({ "data", "position", "schema", "stream", "type", "version" }, seen[2])
  end)

  it("also apply to rebuild_snapshots", function()
    local seen = {}
    local repo = store:repository(recording(seen, { snapshot_every = 100 }))
    assert.equals(1, repo:rebuild_snapshots())
    assert.same({ "data", "type" }, seen[1])
    assert.equals(7, repo:snapshot("1").state.balance)
  end)

  it("must be a non-empty list of event field names", function()
    assert.matches("'fields' must be a non-empty list", definition_error(account_def({ fields = "data" })), nil, true)
    assert.matches("'fields' must be a non-empty list", definition_error(account_def({ fields = {} })), nil, true)
    assert.matches("fields[2] must be one of position, stream", definition_error(account_def({ fields = { "data", "colour" } })),
      nil, true)
  end)
end)
