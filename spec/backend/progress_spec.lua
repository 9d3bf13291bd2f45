-- Progress callbacks (verify's, backup's, scavenge's) behave alike on every backend: an error a
-- callback raises stops the call and reaches the caller as the callback raised it, and the call
-- leaves nothing behind (LMDB: its read transaction and cursor; PostgreSQL: the check's
-- transaction on the store's connection), so the store goes on working.
local helpers = require "helpers"

local N = 5000        -- more than a batch of either backend's verify, so the callback runs midway

local function fill(store)
  for i = 1, N // 500 do
    local events = {}
    for j = 1, 500 do events[j] = { type = "T", data = { i = i, j = j } } end
    assert(store:append("s-" .. i, events))
  end
end

-- PostgreSQL: the connections of the spec server left inside a transaction.
local function idle_in_transaction()
  local out = helpers.psql("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'")
  return tonumber(out)
end

local function still_works(store)
  assert.are.equal(N, store:head())
  assert(store:append("after-1", { { type = "After" } }))
  local result = assert(store:verify())
  assert.is_true(result.ok)
  assert.are.equal(N + 1, result.events)
  if helpers.backend == "postgres" then assert.are.equal(0, idle_in_transaction()) end
end

describe("progress callbacks (" .. helpers.backend .. ")", function()
  after_each(helpers.cleanup)

  it("verify: the callback's error reaches the caller as raised, and nothing is left open", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    local calls = 0
    local ok, err = pcall(store.verify, store, { progress = function(done, total)
      calls = calls + 1
      assert(done < total, "the first call comes before the end")
      error({ mine = true })
    end })
    assert.is_false(ok)
    assert.are.equal("table", type(err))
    assert.is_true(err.mine)
    assert.are.equal(1, calls)
    if helpers.backend == "postgres" then
      assert.are.equal(0, idle_in_transaction(), "the check's transaction was rolled back before the error")
    end
    still_works(store)
  end)

  it("verify: a string error keeps its message", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    local ok, err = pcall(store.verify, store, { progress = function() error("stop here", 0) end })
    assert.is_false(ok)
    assert.are.equal("stop here", err)
    still_works(store)
  end)

  it("verify: the last call says done == total, after which an error still reaches the caller", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    local seen = {}
    local result = assert(store:verify { progress = function(done, total) seen[#seen + 1] = { done, total } end })
    assert.is_true(result.ok)
    assert.is_true(#seen >= 2, "called midway and at the end")
    assert.are.same({ N, N }, seen[#seen])
    local ok, err = pcall(store.verify, store, { progress = function(done, total)
      if done == total then error("at the end", 0) end
    end })
    assert.is_false(ok)
    assert.are.equal("at the end", err)
    still_works(store)
  end)

  it("verify: a callback that uses the store (LMDB: reads allowed, writes raise; PostgreSQL: any use raises)", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    local heads = {}
    local ok, err = pcall(store.verify, store, { progress = function()
      heads[#heads + 1] = store:head()
      store:append("x-1", { { type = "X" } })
    end })
    assert.is_false(ok)
    if helpers.backend == "lmdb" then
      assert.are.same({ N }, heads)
      assert.matches("append: cannot write to the store while its verify runs", tostring(err), 1, true)
    else
      assert.are.same({}, heads)
      assert.matches("cannot use the store while its verify runs", tostring(err), 1, true)
    end
    assert.are.equal(-1, store:stream_version("x-1"), "nothing was written")
    local closed_ok, cerr = pcall(store.verify, store, { progress = function() store:close() end })
    assert.is_false(closed_ok)
    assert.matches("cannot close the store while its verify runs", tostring(cerr), 1, true)
    assert.is_true(store:is_open())
    still_works(store)
  end)

  it("backup: the callback's error reaches the caller (LMDB); PostgreSQL refuses before calling it", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    local dest = helpers.tmpdir() .. "/copy"
    local calls = 0
    local ok, res, err = pcall(store.backup, store, dest, { progress = function()
      calls = calls + 1
      error({ mine = true })
    end })
    if helpers.backend == "lmdb" then
      assert.is_false(ok)
      assert.is_true(res.mine)
      assert.are.equal(1, calls)
      assert.is_false(helpers.exists(dest .. "/data.mdb"), "a stopped backup leaves no copy")
    else
      assert.is_true(ok)
      assert.is_nil(res)
      assert.are.equal("unsupported", err.code)
      assert.are.equal(0, calls)
    end
    still_works(store)
  end)

  it("scavenge: the callback's error reaches the caller, and the batches done so far stay done", function()
    local store = helpers.open({ durability = "nosync" })
    fill(store)
    assert(store:set_stream_metadata("s-1", { truncate_before = 400 }))
    assert(store:set_stream_metadata("s-2", { truncate_before = 400 }))
    local calls = 0
    local ok, err = pcall(store.scavenge, store, { batch = 100, progress = function()
      calls = calls + 1
      if calls == 2 then error({ mine = true }) end
    end })
    assert.is_false(ok)
    assert.is_true(err.mine)
    assert.are.equal(200, assert(store:stats()).scavenged)
    assert.are.equal(600, assert(store:scavenge()).removed)
    local result = assert(store:verify())
    assert.is_true(result.ok)
    if helpers.backend == "postgres" then assert.are.equal(0, idle_in_transaction()) end
  end)
end)
