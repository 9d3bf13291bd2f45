-- Time travel: repo:load(id, {version = n}), {position = p} and {time = t}
-- return the state as it was; repo:history(id) iterates (version, event, state
-- after it) and closes its reader when the loop breaks.
local helpers = require "helpers"
local chronicle = require "chronicle"

local deep_copy = require("chronicle.write.aggregate").deep_copy

local function same(expected, actual, what)
  local ok, where = helpers.identical(expected, actual)
  assert(ok, (what or "value") .. " differs: " .. tostring(where))
end

-- A ledger: a balance, a map of tags and the last few amounts.
local function ledger_def(extra)
  local def = {
    name = "ledger",
    initial = function() return { balance = 0, entries = 0, tags = {}, last = {} } end,
    apply = {
      Credited = function(s, ev)
        s.balance = s.balance + ev.data.amount
        s.entries = s.entries + 1
        s.last[#s.last + 1] = ev.data.amount
        if #s.last > 3 then table.remove(s.last, 1) end
      end,
      Debited = function(s, ev)
        s.balance = s.balance - ev.data.amount
        s.entries = s.entries + 1
      end,
      Tagged = function(s, ev)
        local t = {}
        for k, v in pairs(s.tags) do t[k] = v end
        t[ev.data.tag] = (t[ev.data.tag] or 0) + 1
        return { balance = s.balance, entries = s.entries, tags = t, last = s.last }
      end,
    },
    commands = {
      credit = function(_, a) return { type = "Credited", data = { amount = a.amount } } end,
      debit = function(s, a)
        if a.amount > s.balance then return nil, "insufficient" end
        return { type = "Debited", data = { amount = a.amount } }
      end,
      batch = function(_, a)
        local out = {}
        for i = 1, a.n do out[i] = { type = "Credited", data = { amount = i } } end
        out[#out + 1] = { type = "Tagged", data = { tag = "batch" } }
        return out
      end,
      tag = function(_, a) return { type = "Tagged", data = { tag = a.tag } } end,
    },
  }
  for k, v in pairs(extra or {}) do def[k] = v end
  return chronicle.aggregate(def)
end

-- Drives `n` random commands at ledgers "a" and "b" (interleaved, so that
-- positions and versions differ), through `repo`.
local function random_history(repo, n)
  for _ = 1, n do
    local id = math.random(2) == 1 and "a" or "b"
    local r = math.random(10)
    if r <= 5 then assert(repo:execute(id, "credit", { amount = math.random(100) }))
    elseif r <= 7 then repo:execute(id, "debit", { amount = math.random(150) })
    elseif r <= 8 then assert(repo:execute(id, "batch", { n = math.random(4) }))
    else assert(repo:execute(id, "tag", { tag = "t" .. math.random(4) })) end
  end
end

-- Independent reference: the raw events of a stream and the state after each,
-- folded in plain Lua with the same apply functions.
local function replay(store, Def, stream)
  local events, states = {}, {}
  local state = Def.initial()
  for ev in store:read(stream) do
    local next_state = Def.apply[ev.type](state, ev)
    if next_state ~= nil then state = next_state end
    events[#events + 1] = ev
    states[#states + 1] = deep_copy(state)
  end
  return events, states
end

describe("time travel", function()
  local store, seed
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    seed = tonumber(os.getenv("CHRONICLE_SEED")) or (os.time() + math.random(1000))
    print("\ntime_travel_spec random seed: " .. seed .. " (set CHRONICLE_SEED to repeat)")
    math.randomseed(seed)
  end)
  after_each(helpers.cleanup)

  describe("load at", function()
    local Ledger, ledgers, events, states

    before_each(function()
      -- with snapshots, so travelling also has to decide when a snapshot is too new
      Ledger = ledger_def({ snapshot_every = 16 })
      ledgers = store:repository(Ledger)
      -- another stream's event comes first: positions never equal versions + 1
      assert(store:append("other-1", { { type = "Elsewhere" } }))
      random_history(ledgers, 300)
      events, states = replay(store, Ledger, "ledger-a")
      assert.is_true(#events > 100, "the random history is too short")
      assert.is_table(store:kv_get("snapshots", "ledger-a"), "no snapshot was made")
    end)

    it("every version gives the state after the first version + 1 events", function()
      for v = 0, #events - 1 do
        local state, version = ledgers:load("a", { version = v })
        assert.equals(v, version, "seed " .. seed)
        same(states[v + 1], state, ("seed %d: state at version %d"):format(seed, v))
      end
      -- beyond the last version: the current state
      local state, version = ledgers:load("a", { version = #events + 50 })
      assert.equals(#events - 1, version)
      same(states[#states], state, "seed " .. seed .. ": state beyond the last version")
    end)

    it("every position gives the state after the events at or before it", function()
      local first = events[1].position
      local state, version = ledgers:load("a", { position = first - 1 })
      assert.equals(-1, version)
      same(Ledger.initial(), state, "before the first event")
      for i, ev in ipairs(events) do
        state, version = ledgers:load("a", { position = ev.position })
        assert.equals(ev.version, version, "seed " .. seed)
        same(states[i], state, ("seed %d: state at position %d"):format(seed, ev.position))
        -- a position between this event and the next (another stream's event) changes nothing
        local next_ev = events[i + 1]
        if next_ev and next_ev.position > ev.position + 1 then
          local between, bv = ledgers:load("a", { position = next_ev.position - 1 })
          assert.equals(ev.version, bv)
          same(states[i], between, ("seed %d: state at position %d"):format(seed, next_ev.position - 1))
        end
      end
    end)

    it("every event's time gives the state after all events up to that time", function()
      local state, version = ledgers:load("a", { time = events[1].time - 1 })
      assert.equals(-1, version)
      same(Ledger.initial(), state, "before the first event")
      for i, ev in ipairs(events) do
        -- several events of one command share a time: the state includes them all
        local last = i
        while events[last + 1] and events[last + 1].time <= ev.time do last = last + 1 end
        state, version = ledgers:load("a", { time = ev.time })
        assert.equals(events[last].version, version, "seed " .. seed)
        same(states[last], state, ("seed %d: state at time %d"):format(seed, ev.time))
      end
    end)

    it("does not disturb the present: the current state and snapshot are unchanged", function()
      local snap = store:kv_get("snapshots", "ledger-a")
      for v = 0, #events - 1, 7 do ledgers:load("a", { version = v }) end
      local state, version = ledgers:load("a")
      assert.equals(#events - 1, version)
      same(states[#states], state, "current state")
      assert.is_true(store:kv_get("snapshots", "ledger-a").version >= snap.version, "a snapshot went back in time")
    end)
  end)

  it("before the first event of the store (position 0, time 0) gives the initial state", function()
    local Ledger = ledger_def()
    local ledgers = store:repository(Ledger)
    assert(ledgers:execute("a", "credit", { amount = 5 }))
    assert(ledgers:execute("a", "credit", { amount = 7 }))
    assert.equals(1, store:stream_info("ledger-a").first_position)
    local state, version = ledgers:load("a", { time = 0 })
    assert.equals(-1, version)
    same(Ledger.initial(), state, "state at time 0")
    state, version = ledgers:load("a", { position = 0 })
    assert.equals(-1, version, "position 0 is before every event, but load saw some")
    same(Ledger.initial(), state, "state at position 0")
  end)

  it("refuses a malformed 'at'", function()
    local ledgers = store:repository(ledger_def())
    assert.matches("exactly one", helpers.raises(ledgers.load, ledgers, "a", { version = 1, time = 2 }), nil, true)
    assert.matches("when", helpers.raises(ledgers.load, ledgers, "a", { when = 1 }), nil, true)
    assert.matches("version", helpers.raises(ledgers.load, ledgers, "a", { version = -1 }), nil, true)
    assert.matches("'at'", helpers.raises(ledgers.load, ledgers, "a", 5), nil, true)
  end)

  describe("history", function()
    it("iterates version, event and the state after it, for a random history", function()
      local Ledger = ledger_def({ snapshot_every = 10 })
      local ledgers = store:repository(Ledger)
      random_history(ledgers, 200)
      local events, states = replay(store, Ledger, "ledger-b")
      local n = 0
      for version, ev, state in ledgers:history("b") do
        n = n + 1
        assert.equals(n - 1, version)
        assert.equals(events[n].position, ev.position)
        assert.equals(events[n].id, ev.id)
        assert.equals(events[n].type, ev.type)
        same(states[n], state, ("seed %d: state after version %d"):format(seed, version))
      end
      assert.equals(#events, n)
    end)

    it("of an aggregate with no events yields nothing", function()
      local ledgers = store:repository(ledger_def())
      for _ in ledgers:history("nobody") do error("history yielded something") end
    end)

    it("closes its reader when the loop breaks, even 2000 times over", function()
      local ledgers = store:repository(ledger_def())
      for i = 1, 30 do assert(ledgers:execute("a", "credit", { amount = i })) end
      collectgarbage("collect")
      -- with the collector stopped, only the for loop's closing value can release a reader
      collectgarbage("stop")
      local still_open = 0
      local ok, err = pcall(function()
        for i = 1, 2000 do
          local step, s, init, closing = ledgers:history("a")
          assert(closing ~= nil, "history returns no closing value")
          for version in step, s, init, closing do
            if version >= i % 5 then break end
          end
          -- a closed iterator yields nothing more
          if step(s, init) ~= nil then still_open = still_open + 1 end
        end
      end)
      collectgarbage("restart")
      assert(ok, err)
      assert.equals(0, still_open, "iterators still yielding after the loop broke")
      -- and the store is fully usable
      local res = assert(ledgers:execute("a", "credit", { amount = 1 }))
      assert.equals(30, res.version)
      local n = 0
      for _ in ledgers:history("a") do n = n + 1 end
      assert.equals(31, n)
    end)
  end)
end)
