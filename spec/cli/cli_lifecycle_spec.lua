-- chronicle metadata, delete, truncate, scavenge and compact, run as a user runs them
-- (`lua5.4 bin/chronicle ...` in a subprocess, at most 60 s) against real stores.
local helpers = require "helpers"
local chronicle = require "chronicle"
local cjson = require "cjson"

local BIN = helpers.root .. "/bin/chronicle"
local q = helpers.quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function run(...)
  local work = helpers.tmpdir()
  local cmd = "timeout 60 " .. helpers.lua_command(BIN, ...) .. " < /dev/null > " .. q(work .. "/out") ..
              " 2> " .. q(work .. "/err")
  local _, how, code = os.execute(cmd)
  return { out = read_file(work .. "/out"), err = read_file(work .. "/err"), code = how == "exit" and code or 128 + code }
end

local function ok(r)
  assert.equals(0, r.code, "exit status; stderr: " .. r.err)
  return r
end

-- A store with order-1 (10 events), cart-1 (4) and user-1 (3); returns its target, closed.
local function seed()
  local target = helpers.new_target(helpers.tmpdir() .. "/store")
  local store = assert(chronicle.open(target))
  helpers.fill(store, "order-1", 10)
  helpers.fill(store, "cart-1", 4)
  helpers.fill(store, "user-1", 3)
  store:close()
  return target
end

local function with_store(target, fn)
  local store = assert(chronicle.open(target))
  local ok_, err = pcall(fn, store)
  store:close()
  if not ok_ then error(err, 0) end
end

describe("chronicle metadata", function()
  after_each(helpers.cleanup)

  it("shows and changes a stream's metadata, checked against --expected", function()
    local target = seed()
    local r = ok(run("metadata", target, "order-1", "--json"))
    assert.same({ stream = "order-1", metadata_version = -1, metadata = {}, version = 9 }, cjson.decode(r.out))
    r = ok(run("metadata", target, "order-1", "--max-count", "3", "--set", "owner=ops", "--set", 'tags=["a",1]', "--json"))
    assert.same({ stream = "order-1", metadata_version = 0, version = 9,
                  metadata = { max_count = 3, owner = "ops", tags = { "a", 1 } } }, cjson.decode(r.out))
    r = ok(run("metadata", target, "order-1", "--unset", "tags", "--expected", "0"))
    assert.matches("metadata version%s+1", r.out)
    assert.matches("owner%s+\"ops\"", r.out)
    r = run("metadata", target, "order-1", "--max-count", "1", "--expected", "0")
    assert.equals(1, r.code)
    assert.matches("^chronicle metadata: the metadata of stream 'order%-1' is at version 1, expected 0\n$", r.err)
    with_store(target, function(store)
      assert.same({ max_count = 3, owner = "ops" }, store:stream_info("order-1").metadata)
      assert.equals(3, #helpers.collect(store:read("order-1")))
    end)
    r = run("metadata", target, "order-1", "--truncate-before", "99")
    assert.equals(1, r.code)
    assert.matches("truncate_before 99 is beyond stream 'order%-1', whose next version is 10", r.err)
    r = run("metadata", target, "order-1", "--max-age", "1.5")
    assert.equals(2, r.code)
    assert.matches("%-%-max%-age must be an integer >= 0", r.err)
  end)
end)

describe("chronicle delete and truncate", function()
  after_each(helpers.cleanup)

  it("need --yes off a terminal, then delete (soft or hard) and truncate", function()
    local target = seed()
    local r = run("delete", target, "cart-1")
    assert.equals(1, r.code)
    assert.matches("not confirmed %(give %-%-yes", r.err)
    with_store(target, function(store) assert.equals(4, #helpers.collect(store:read("cart-1"))) end)
    r = ok(run("delete", target, "cart-1", "--yes", "--json"))
    assert.same({ stream = "cart-1", deleted = "soft", version = 4, position = 18 }, cjson.decode(r.out))
    r = ok(run("delete", target, "user-1", "--hard", "--yes"))
    assert.matches("deleted stream 'user%-1' %(hard: a tombstone%)", r.out)
    r = run("delete", target, "nobody-1", "--yes")
    assert.equals(1, r.code)
    assert.matches("^chronicle delete: stream 'nobody%-1' does not exist\n$", r.err)
    r = run("delete", target, "order-1", "--yes", "--expected", "3")
    assert.equals(1, r.code)
    assert.matches("^chronicle delete: stream 'order%-1' is at version 9, expected 3\n$", r.err)
    r = run("truncate", target, "order-1", "--before", "6")
    assert.equals(1, r.code)
    r = ok(run("truncate", target, "order-1", "--before", "6", "--yes", "--json"))
    assert.same({ stream = "order-1", truncate_before = 6, metadata_version = 0 }, cjson.decode(r.out))
    with_store(target, function(store)
      assert.same({}, helpers.collect(store:read("cart-1")))
      assert.equals("hard", store:stream_info("user-1").deleted)
      assert.same({ 6, 7, 8, 9 }, helpers.pluck(helpers.collect(store:read("order-1")), "version"))
    end)
    ok(run("delete", "--help"))
    ok(run("truncate", "--help"))
  end)
end)

describe("chronicle scavenge and compact", function()
  after_each(helpers.cleanup)

  it("stats shows what is reclaimable, scavenge removes it, compact gives the space back", function()
    local target = seed()
    with_store(target, function(store)
      assert(store:set_stream_metadata("order-1", { max_count = 2 }))
      assert(store:delete_stream("cart-1"))
    end)
    local st = cjson.decode(ok(run("stats", target, "--json")).out)
    assert.equals(8 + 4, st.reclaimable)
    local r = cjson.decode(ok(run("scavenge", target, "--dry-run", "--json")).out)
    assert.same({ 0, 12 }, { r.removed, r.reclaimable })
    r = run("scavenge", target)
    assert.equals(1, r.code)
    assert.matches("remove 12 hidden events for good%?: not confirmed", r.err)
    r = cjson.decode(ok(run("scavenge", target, "--yes", "--batch", "5", "--json")).out)
    assert.equals(12, r.removed)
    assert.equals(2, r.streams)
    assert.is_true(r.batches >= 3)
    assert.equals(18 - 12, r.events)
    st = cjson.decode(ok(run("stats", target, "--json")).out)
    assert.same({ 0, 12, 6 }, { st.reclaimable, st.scavenged, st.events })
    ok(run("verify", target))
    r = ok(run("scavenge", target, "--yes"))
    assert.matches("^removed 0 events", r.out)
    if helpers.backend == "lmdb" then
      local dst = helpers.tmpdir() .. "/compacted"
      r = cjson.decode(ok(run("compact", target, dst, "--json")).out)
      assert.equals(6, r.events)
      assert.is_true(r.file_size_after <= r.file_size_before)
      with_store(dst, function(copy)
        assert.same({ 8, 9 }, helpers.pluck(helpers.collect(copy:read("order-1")), "version"))
        assert.is_true(copy:verify().ok)
      end)
    else
      r = run("compact", target, helpers.tmpdir() .. "/x")
      assert.equals(1, r.code)
      assert.matches("VACUUM FULL", r.err)
    end
    ok(run("scavenge", "--help"))
    ok(run("compact", "--help"))
    ok(run("metadata", "--help"))
  end)
end)

describe("chronicle copy of a store with stream metadata", function()
  after_each(helpers.cleanup)

  it("copies the hidden events too, so the copy hides the same; a scavenged store is refused", function()
    local target = seed()
    with_store(target, function(store)
      assert(store:set_stream_metadata("order-1", { max_count = 2 }))
      assert(store:delete_stream("cart-1"))
      assert(store:delete_stream("user-1", { hard = true }))
    end)
    local dst = helpers.tmpdir() .. "/copy"
    ok(run("copy", target, dst))
    with_store(dst, function(copy)
      assert.same({ 8, 9 }, helpers.pluck(helpers.collect(copy:read("order-1")), "version"))
      assert.same({}, helpers.collect(copy:read("cart-1")))
      assert.equals("hard", copy:stream_info("user-1").deleted)
      assert.equals(19, copy:head())
      assert.equals(8 + 4 + 3, copy:stats().reclaimable)
      assert(copy:append("cart-1", { { type = "Filled" } }, 4), "the soft-deleted stream goes on at the same version")
    end)
    with_store(target, function(store) assert(store:scavenge()) end)
    local r = run("copy", target, helpers.tmpdir() .. "/copy2")
    assert.equals(1, r.code)
    assert.matches("SRC has had 15 events scavenged", r.err)
  end)
end)
