-- Repositories: store:repository(Aggregate) loads aggregates from their streams
-- and runs commands: load, decide, append with the loaded version as expected,
-- apply, retry on conflict; rejections and errors write nothing; dry runs roll
-- everything back.
local helpers = require "helpers"
local chronicle = require "chronicle"

local collect = helpers.collect

-- A bank account. `calls` counts how many times each command ran, and
-- `hooks[command](state, args, ctx)` runs first when set (tests use it to
-- interfere with the store in the middle of a command).
local function make_account(calls, hooks)
  calls, hooks = calls or {}, hooks or {}
  local function counted(name, fn)
    return function(state, args, ctx)
      calls[name] = (calls[name] or 0) + 1
      if hooks[name] then hooks[name](state, args, ctx) end
      return fn(state, args, ctx)
    end
  end
  return chronicle.aggregate {
    name = "account",
    initial = function() return { open = false, balance = 0 } end,
    apply = {
      Opened = function(state, ev) state.open = true; state.owner = ev.data.owner end,
      Deposited = function(state, ev) state.balance = state.balance + ev.data.amount end,
      Withdrawn = function(state, ev) state.balance = state.balance - ev.data.amount end,
      -- a handler may also return a new state instead of mutating the old one
      Renamed = function(state, ev)
        return { open = state.open, balance = state.balance, owner = ev.data.owner }
      end,
    },
    commands = {
      open = counted("open", function(state, args)
        if state.open then return nil, "already open" end
        return { type = "Opened", data = { owner = args.owner } }
      end),
      deposit = counted("deposit", function(state, args)
        if not state.open then return nil, "account is not open" end
        return { type = "Deposited", data = { amount = args.amount } }
      end),
      withdraw = counted("withdraw", function(state, args)
        if args.amount > state.balance then return nil, "insufficient funds" end
        return { type = "Withdrawn", data = { amount = args.amount } }
      end),
      -- several events from one command
      open_with = counted("open_with", function(state, args)
        if state.open then return nil, "already open" end
        local events = { { type = "Opened", data = { owner = args.owner } } }
        for _, amount in ipairs(args.deposits) do
          events[#events + 1] = { type = "Deposited", data = { amount = amount }, meta = { source = "opening" } }
        end
        return events
      end),
      rename = counted("rename", function(state, args)
        if state.owner == args.owner then return end   -- nothing to do: no event
        return { type = "Renamed", data = { owner = args.owner } }
      end),
      explode = counted("explode", function() error("the vault is on fire") end),
      explode_table = counted("explode_table", function() error({ code = "vault", detail = 42 }) end),
      bad_return = counted("bad_return", function() return "Deposited" end),
    },
  }
end

describe("a repository", function()
  local store, accounts, calls, hooks

  before_each(function()
    store = helpers.open({ durability = "nosync" })
    calls, hooks = {}, {}
    accounts = store:repository(make_account(calls, hooks))
  end)
  after_each(helpers.cleanup)

  describe("load", function()
    it("gives a fresh initial state and version -1 for an aggregate with no events", function()
      local state, version = accounts:load("nobody")
      assert.same({ open = false, balance = 0 }, state)
      assert.equals(-1, version)
      assert.equals(0, store:head(), "loading wrote something")
    end)

    it("folds the aggregate's stream, and only that stream, into the state", function()
      assert(store:append("account-1", { { type = "Opened", data = { owner = "ann" } },
                                         { type = "Deposited", data = { amount = 30 } } }))
      assert(store:append("account-2", { { type = "Opened", data = { owner = "bo" } },
                                         { type = "Deposited", data = { amount = 999 } } }))
      assert(store:append("account-1", { { type = "Withdrawn", data = { amount = 12 } },
                                         { type = "Renamed", data = { owner = "anne" } } }))
      local state, version = accounts:load("1")
      assert.same({ open = true, balance = 18, owner = "anne" }, state)
      assert.equals(store:stream_info("account-1").version, version)
      assert.equals(3, version)
    end)

    it("replays through store:fold, the C replay loop, not a Lua loop over store:read", function()
      assert(store:append("account-1", { { type = "Opened", data = { owner = "ann" } },
                                         { type = "Deposited", data = { amount = 30 } } }))
      local folds = 0
      local fold = store.fold
      store.fold = function(self, ...) folds = folds + 1; return fold(self, ...) end
      store.read = function() error("load read the stream in Lua") end
      store.read_all = store.read
      local ok, state, version = pcall(accounts.load, accounts, "1")
      store.fold, store.read, store.read_all = nil, nil, nil
      assert(ok, state)
      assert.equals(30, state.balance)
      assert.equals(1, version)
      assert.equals(1, folds)
    end)
  end)

  describe("execute", function()
    it("appends the command's event at the next version and returns state, version, events and position", function()
      local res = assert(accounts:execute("1", "open", { owner = "ann" }))
      assert.same({ open = true, balance = 0, owner = "ann" }, res.state)
      assert.equals(0, res.version)
      assert.equals(store:head(), res.position)
      assert.is_nil(res.dry_run)

      res = assert(accounts:execute("1", "deposit", { amount = 25 }))
      assert.equals(1, res.version)
      assert.equals(25, res.state.balance)
      assert.equals(1, #res.events)

      local stored = collect(store:read("account-1"))
      assert.equals(2, #stored)
      local ev = res.events[1]
      assert.equals(stored[2].position, ev.position)
      assert.equals(stored[2].position, res.position)
      assert.equals(stored[2].version, ev.version)
      assert.equals(stored[2].id, ev.id)
      assert.equals("Deposited", stored[2].type)
      assert.same({ amount = 25 }, stored[2].data)
      -- the returned state is the state a fresh load finds
      assert.same(res.state, (accounts:load("1")))
    end)

    it("appends every event of a list in order, with contiguous versions and positions", function()
      assert(store:append("other-1", { { type = "Noise" } }))   -- positions no longer equal versions
      local res = assert(accounts:execute("9", "open_with", { owner = "cy", deposits = { 5, 7, 11 } }))
      assert.equals(3, res.version)
      assert.equals(23, res.state.balance)
      local stored = collect(store:read("account-9"))
      assert.same({ "Opened", "Deposited", "Deposited", "Deposited" }, helpers.pluck(stored, "type"))
      assert.same(helpers.pluck(stored, "position"), helpers.pluck(res.events, "position"))
      assert.same({ 0, 1, 2, 3 }, helpers.pluck(res.events, "version"))
      assert.equals(stored[4].position, res.position)
      assert.equals("opening", stored[3].meta.source, "an event's own meta is kept")
    end)

    it("writes nothing when the command returns nothing, and returns the unchanged state", function()
      assert(accounts:execute("1", "open", { owner = "ann" }))
      local before = helpers.snapshot(store)
      local res = assert(accounts:execute("1", "rename", { owner = "ann" }))
      assert.equals(0, res.version)
      assert.same({}, res.events)
      assert.is_nil(res.position)
      assert.equals("ann", res.state.owner)
      assert.same(before, helpers.snapshot(store))
    end)

    it("applies the events of a handler that returns a new state", function()
      assert(accounts:execute("1", "open_with", { owner = "ann", deposits = { 40 } }))
      local res = assert(accounts:execute("1", "rename", { owner = "anne" }))
      assert.same({ open = true, balance = 40, owner = "anne" }, res.state)
      assert.same(res.state, (accounts:load("1")))
    end)

    it("returns a rejection as nil, err with code 'rejected' and the reason, writing nothing", function()
      assert(accounts:execute("1", "open_with", { owner = "ann", deposits = { 10 } }))
      local before = helpers.snapshot(store)
      local info = store:stream_info("account-1")
      local res, err = accounts:execute("1", "withdraw", { amount = 50 })
      assert.is_nil(res)
      assert.equals("rejected", err.code)
      assert.equals("insufficient funds", err.reason)
      assert.equals("1", err.id)
      assert.equals("withdraw", err.command)
      assert.matches("insufficient funds", tostring(err), nil, true)
      assert.same(before, helpers.snapshot(store))
      assert.same(info, store:stream_info("account-1"))
      assert.equals(1, calls.withdraw, "a rejection is not retried")
    end)

    it("rejects a command on a new aggregate without creating its stream", function()
      local before = helpers.snapshot(store)
      local _, err = accounts:execute("ghost", "deposit", { amount = 1 })
      assert.equals("rejected", err.code)
      assert.equals("account is not open", err.reason)
      assert.same(before, helpers.snapshot(store))
      assert.is_nil(store:stream_info("account-ghost"))
    end)

    it("lets an error raised in a command propagate, naming the aggregate, id and command, writing nothing", function()
      assert(accounts:execute("x1", "open", { owner = "ann" }))
      local before = helpers.snapshot(store)
      local ok, err = pcall(accounts.execute, accounts, "x1", "explode", {})
      assert.is_false(ok)
      err = tostring(err)
      assert.matches("account", err, nil, true)
      assert.matches("x1", err, nil, true)
      assert.matches("explode", err, nil, true)
      assert.matches("the vault is on fire", err, nil, true)
      assert.same(before, helpers.snapshot(store))
      assert.equals(1, calls.explode, "an error is not retried")
    end)

    it("adds the aggregate, id and command to an error value that is a table", function()
      local ok, err = pcall(accounts.execute, accounts, "x2", "explode_table", {})
      assert.is_false(ok)
      assert.equals("vault", err.code)
      assert.equals(42, err.detail)
      assert.equals("account", err.aggregate)
      assert.equals("x2", err.id)
      assert.equals("explode_table", err.command)
      assert.equals(0, store:head())
    end)

    it("raises for an unknown command or a command returning something that is not an event", function()
      local msg = helpers.raises(accounts.execute, accounts, "1", "launch", {})
      assert.matches("launch", msg, nil, true)
      msg = helpers.raises(accounts.execute, accounts, "1", "bad_return", {})
      assert.matches("bad_return", msg, nil, true)
      assert.equals(0, store:head())
    end)

    it("raises on an unknown option", function()
      local msg = helpers.raises(accounts.execute, accounts, "1", "open", { owner = "a" }, { dryrun = true })
      assert.matches("dryrun", msg, nil, true)
      assert.equals(0, store:head())
    end)
  end)

  describe("execute with meta", function()
    it("copies meta onto every event and keeps a given correlation_id, with the command id as causation", function()
      local res = assert(accounts:execute("m", "open_with", { owner = "ann", deposits = { 1, 2 } }, {
        meta = { user = "u-17", correlation_id = "corr-1" }, command_id = "cmd-1",
      }))
      local stored = collect(store:read("account-m"))
      assert.equals(3, #stored)
      for i, ev in ipairs(stored) do
        assert.equals("u-17", ev.meta.user)
        assert.equals("corr-1", ev.meta.correlation_id)
        assert.equals("cmd-1", ev.meta.causation_id)
        assert.same(ev.meta, res.events[i].meta)
      end
    end)

    it("carries a given causation_id", function()
      assert(accounts:execute("m", "open", { owner = "ann" }, {
        meta = { correlation_id = "corr-2", causation_id = "event-123" },
      }))
      local ev = collect(store:read("account-m"))[1]
      assert.equals("corr-2", ev.meta.correlation_id)
      assert.equals("event-123", ev.meta.causation_id)
    end)

    it("uses one generated command id as both correlation and causation when none is given", function()
      assert(accounts:execute("m", "open_with", { owner = "ann", deposits = { 3 } }))
      assert(accounts:execute("m", "deposit", { amount = 4 }))
      local stored = collect(store:read("account-m"))
      local first = stored[1].meta
      assert.is_string(first.causation_id)
      assert.equals(first.causation_id, first.correlation_id)
      assert.equals(first.causation_id, stored[2].meta.causation_id, "two events of one command share it")
      assert.not_equals(first.causation_id, stored[3].meta.causation_id, "another command has another id")
    end)

    it("hands meta to the command in ctx", function()
      local seen
      hooks.open = function(_, _, ctx) seen = ctx end
      assert(accounts:execute("c", "open", { owner = "ann" }, { meta = { user = "u-1" } }))
      assert.equals("u-1", seen.meta.user)
      assert.equals("c", seen.id)
      assert.equals("account-c", seen.stream)
      assert.equals(-1, seen.version)
      assert.equals("open", seen.command)
    end)
  end)

  describe("execute's kept state", function()
    it("starts from the state its last execute left while the stream has not moved, reading nothing", function()
      assert(accounts:execute("k", "open", { owner = "kim" }))
      local folds = 0
      local fold = store.fold
      store.fold = function(...) folds = folds + 1 return fold(...) end
      finally(function() store.fold = nil end)
      local res = assert(accounts:execute("k", "deposit", { amount = 5 }))
      assert.equals(0, folds, "no replay when the stream is where the last execute left it")
      assert.equals(5, res.state.balance)
    end)

    it("reloads when another writer moved the stream since", function()
      assert(accounts:execute("k", "open", { owner = "kim" }))
      assert(accounts:execute("k", "deposit", { amount = 5 }))
      assert(store:append("account-k", { { type = "Deposited", data = { amount = 100 } } }))
      local res = assert(accounts:execute("k", "deposit", { amount = 1 }))
      assert.equals(106, res.state.balance)
      assert.same(res.state, (accounts:load("k")))
    end)

    it("can be turned off", function()
      local plain = store:repository(make_account(calls, hooks), { cache = false })
      assert(plain:execute("k", "open", { owner = "kim" }))
      local folds = 0
      local fold = store.fold
      store.fold = function(...) folds = folds + 1 return fold(...) end
      finally(function() store.fold = nil end)
      assert(plain:execute("k", "deposit", { amount = 5 }))
      assert.equals(1, folds)
    end)
  end)

  describe("execute on a conflict", function()
    -- Another writer slips an event in between execute's load and its write:
    -- the command itself appends to its own stream directly, `times` times.
    local function interfere(command, times)
      local done = 0
      hooks[command] = function(_, _, ctx)
        if done < times then
          done = done + 1
          assert(ctx.store:append(ctx.stream, { { type = "Deposited", data = { amount = 1000 } } }))
        end
      end
    end

    it("reloads and retries, and then succeeds on the new state", function()
      assert(accounts:execute("r", "open", { owner = "ann" }))
      interfere("deposit", 1)
      local seen = {}
      local inner = hooks.deposit
      hooks.deposit = function(state, args, ctx)
        seen[#seen + 1] = { balance = state.balance, version = ctx.version }
        inner(state, args, ctx)
      end
      local res = assert(accounts:execute("r", "deposit", { amount = 5 }))
      assert.equals(2, calls.deposit, "the command ran once more after the conflict")
      assert.same({ { balance = 0, version = 0 }, { balance = 1000, version = 1 } }, seen)
      assert.equals(2, res.version)
      assert.equals(1005, res.state.balance)
      local stored = collect(store:read("account-r"))
      assert.same({ 0, 1, 2 }, helpers.pluck(stored, "version"))
      assert.same({ amount = 5 }, stored[3].data)
      assert.same(res.state, (accounts:load("r")))
    end)

    it("gives up after the configured retries with code 'conflict', writing none of its own events", function()
      assert(accounts:execute("r", "open", { owner = "ann" }))
      interfere("deposit", math.huge)
      local res, err = accounts:execute("r", "deposit", { amount = 5 }, { retries = 2 })
      assert.is_nil(res)
      assert.equals("conflict", err.code)
      assert.equals(3, calls.deposit, "one attempt and two retries")
      local stored = collect(store:read("account-r"))
      assert.equals(4, #stored, "the open and the three interfering deposits, nothing else")
      for i = 2, 4 do assert.equals(1000, stored[i].data.amount) end
    end)

    it("does not retry at all with retries = 0", function()
      assert(accounts:execute("r", "open", { owner = "ann" }))
      interfere("deposit", 1)
      local res, err = accounts:execute("r", "deposit", { amount = 5 }, { retries = 0 })
      assert.is_nil(res)
      assert.equals("conflict", err.code)
      assert.equals(1, calls.deposit)
      assert.equals(1, store:stream_info("account-r").version)
    end)

    it("retries 3 times by default, or as the repository says", function()
      assert(accounts:execute("r", "open", { owner = "ann" }))
      interfere("deposit", math.huge)
      local _, err = accounts:execute("r", "deposit", { amount = 5 })
      assert.equals("conflict", err.code)
      assert.equals(4, calls.deposit)

      calls.deposit = 0
      local patient = store:repository(make_account(calls, hooks), { retries = 5 })
      local _, err2 = patient:execute("r", "deposit", { amount = 5 })
      assert.equals("conflict", err2.code)
      assert.equals(6, calls.deposit)
    end)
  end)

  describe("execute with dry_run", function()
    it("returns the events and state it would produce and leaves the store unchanged", function()
      assert(accounts:execute("d", "open_with", { owner = "ann", deposits = { 100 } }))
      local before = helpers.snapshot(store)
      local info = store:stream_info("account-d")
      local res = assert(accounts:execute("d", "withdraw", { amount = 30 }, { dry_run = true }))
      assert.is_true(res.dry_run)
      assert.equals(70, res.state.balance)
      assert.equals(2, res.version)
      assert.equals(1, #res.events)
      assert.equals("Withdrawn", res.events[1].type)
      assert.same({ amount = 30 }, res.events[1].data)
      assert.same(before, helpers.snapshot(store))
      assert.same(info, store:stream_info("account-d"))
      local state, version = accounts:load("d")
      assert.equals(100, state.balance)
      assert.equals(1, version)
      -- the same command for real lands where the dry run said it would
      local real = assert(accounts:execute("d", "withdraw", { amount = 30 }))
      assert.equals(res.version, real.version)
      assert.same(res.state, real.state)
    end)

    it("does not create the stream of a new aggregate", function()
      local before = helpers.snapshot(store)
      local res = assert(accounts:execute("new", "open", { owner = "zed" }, { dry_run = true }))
      assert.equals(0, res.version)
      assert.is_true(res.state.open)
      assert.same(before, helpers.snapshot(store))
      assert.is_nil(store:stream_info("account-new"))
      assert.equals(0, #collect(store:streams()))
    end)

    it("still reports a rejection", function()
      local _, err = accounts:execute("new", "deposit", { amount = 1 }, { dry_run = true })
      assert.equals("rejected", err.code)
      assert.equals(0, store:head())
    end)
  end)
end)
