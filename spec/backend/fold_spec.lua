-- store:fold: replay with the loop in C.
local helpers = require "helpers"

-- the reference computation, done with a plain read loop
local function summarize(state, ev)
  state.count = state.count + 1
  state.sum = state.sum + ev.data.amount
  state.trail[#state.trail + 1] = ev.stream .. "#" .. ev.version .. "@" .. ev.position .. ":" .. ev.type
  return state
end

local function fresh() return { count = 0, sum = 0, trail = {} } end

describe("store:fold", function()
  after_each(helpers.cleanup)

  local store
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    for i = 1, 40 do
      local stream = (i % 3 == 0) and "account-2" or (i % 5 == 0 and "loan-1" or "account-1")
      assert(store:append(stream, { { type = i % 2 == 0 and "Deposited" or "Withdrawn", data = { amount = i } } }))
    end
  end)

  it("over a stream equals the same computation over read()", function()
    local expected = fresh()
    for ev in store:read("account-1") do summarize(expected, ev) end
    local state, count, last_position, last_version = store:fold("account-1", fresh(), summarize)
    assert.same(expected, state)
    assert.equals(expected.count, count)
    local info = store:stream_info("account-1")
    assert.equals(info.last_position, last_position)
    assert.equals(info.version, last_version)
  end)

  it("over a stream query with from, count and backward equals read() with the same options", function()
    for _, opts in ipairs({ { from = 3 }, { from = 2, count = 4 }, { backward = true }, { backward = true, from = 5, count = 3 } }) do
      local expected = fresh()
      for ev in store:read("account-1", opts) do summarize(expected, ev) end
      local query = { stream = "account-1" }
      for k, v in pairs(opts) do query[k] = v end
      local state, count = store:fold(query, fresh(), summarize)
      assert.same(expected, state)
      assert.equals(expected.count, count)
    end
  end)

  it("over read_all queries equals the same computation over read_all()", function()
    local queries = {
      {}, { from = 10 }, { from = 5, to = 20 }, { count = 7 }, { backward = true },
      { category = "account" }, { types = { "Deposited" } }, { types = "Withdrawn", category = "account" },
      { category = "account", backward = true, count = 5 },
    }
    for _, q in ipairs(queries) do
      local expected, last = fresh(), nil
      for ev in store:read_all(q) do
        summarize(expected, ev)
        last = ev
      end
      local state, count, last_position, last_version = store:fold(q, fresh(), summarize)
      assert.same(expected, state)
      assert.equals(expected.count, count)
      assert.equals(last.position, last_position)
      assert.equals(last.version, last_version)
    end
  end)

  it("keeps the mutated state when fn returns nil, and takes the new one when fn returns a value", function()
    local kept = store:fold("account-1", { n = 0 }, function(s) s.n = s.n + 1 end)
    assert.equals(#helpers.collect(store:read("account-1")), kept.n)
    local total = store:fold("account-1", 0, function(sum, ev) return sum + ev.data.amount end)
    local expected = 0
    for ev in store:read("account-1") do expected = expected + ev.data.amount end
    assert.equals(expected, total)
    -- returning nil after a replacement keeps the latest replacement
    local mixed = store:fold("account-1", 0, function(n, ev)
      if ev.version % 2 == 0 then return n + 1 end
    end)
    assert.equals(math.ceil(kept.n / 2), mixed)
  end)

  it("returns the initial state and a count of 0 for a stream that does not exist", function()
    local initial = { untouched = true }
    local calls = 0
    local state, count = store:fold("ghost-1", initial, function() calls = calls + 1 end)
    assert.equals(initial, state)
    assert.equals(0, count)
    assert.equals(0, calls)
  end)

  it("gives every short string of data and meta as stored, however many look alike (its string cache)", function()
    local store = helpers.open()
    -- same length, first, middle and last byte: one slot of the cache for all of them
    local events, want = {}, {}
    for i = 1, 300 do
      local k = string.format("a%03d%sz", i, "m")
      local v = string.format("a%03dmz", 300 - i)
      events[i] = { type = "T", data = { [k] = v, [v] = k, s = k .. v, n = i, [""] = "" }, meta = { [k] = i } }
      want[i] = { k, v }
    end
    assert(store:append("s-1", events))
    local _, n = store:fold({}, 0, function(c, ev)
      local k, v = want[ev.version + 1][1], want[ev.version + 1][2]
      assert.equals(v, ev.data[k])
      assert.equals(k, ev.data[v])
      assert.equals(k .. v, ev.data.s)
      assert.equals("", ev.data[""])
      assert.equals(ev.version + 1, ev.meta[k])
      return c + 1
    end)
    assert.equals(300, n)
  end)

  it("runs over more events than one batch", function()
    for _ = 1, 3 do helpers.fill(store, "bulk-1", 200) end
    local state, count, last_position, last_version = store:fold("bulk-1", 0, function(n, ev)
      assert.equals(n, ev.version)
      return n + 1
    end)
    assert.equals(600, state)
    assert.equals(600, count)
    assert.equals(store:head(), last_position)
    assert.equals(599, last_version)
    local all = store:fold({}, 0, function(n) return n + 1 end)
    assert.equals(store:stats().events, all)
  end)

  describe("when fn raises", function()
    it("propagates the error unchanged and leaves the store usable", function()
      local boom = { reason = "boom" }
      local ok, err = pcall(store.fold, store, "account-1", 0, function(n)
        if n == 2 then error(boom) end
        return n + 1
      end)
      assert.is_false(ok)
      assert.equals(boom, err)
      local ok2, err2 = pcall(store.fold, store, {}, 0, function() error("no funds") end)
      assert.is_false(ok2)
      assert.matches("no funds", err2, 1, true)
      local version = store:stream_info("account-1").version
      helpers.result(store:append("account-1", { { type = "Deposited", data = { amount = 1 } } }), version + 1, 41)
    end)

    it("leaks nothing, even 500 times over", function()
      for i = 1, 500 do
        local ok = pcall(store.fold, store, i % 2 == 0 and "account-1" or { category = "account" }, 0,
                         function(n) if n == 3 then error("stop") end return n + 1 end)
        assert.is_false(ok)
      end
      local state, count = store:fold({}, 0, function(n) return n + 1 end)
      assert.equals(40, state)
      assert.equals(40, count)
      helpers.result(store:append("after-1", { { type = "T", data = { amount = 0 } } }), 0, 41)
    end)
  end)
end)
