-- The map grows by itself: a user never sees map_full while the disk has room,
-- also when another process grew the map while this one had the store open.
local helpers = require "helpers"
local chronicle = require "chronicle"

local function payload(i) return { i = i, text = string.rep("x", 2000) } end

describe("the memory map", function()
  after_each(helpers.cleanup)

  it("grows past its initial size without an error", function()
    local dir = helpers.tmpdir()
    local store = helpers.track(assert(chronicle.open(dir, { durability = "nosync", map_size = 1 << 20 })))
    local before = store:stats().map_size
    for i = 1, 40 do
      local events = {}
      for j = 1, 50 do events[j] = { type = "Big", data = payload(i * 100 + j) } end
      assert(store:append("big-" .. i, events))
    end
    local st = store:stats()
    assert.are.equal(2000, st.events)
    assert.is_true(st.map_size > before, "map_size should have grown from " .. before)
    assert.is_true(store:verify().ok)
  end)

  it("keeps working in a process whose map another process grew", function()
    local dir = helpers.tmpdir()
    local store = helpers.track(assert(chronicle.open(dir, { durability = "nosync", map_size = 1 << 20 })))
    assert(store:append("mine", { { type = "Before" } }))
    local small = store:stats().map_size
    local script = dir .. "-grow.lua"
    helpers.write_file(script, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1], { durability = "nosync", map_size = 1 << 20 }))
      for i = 1, 40 do
        local events = {}
        for j = 1, 50 do events[j] = { type = "Big", data = { text = string.rep("y", 2000) } } end
        assert(store:append("theirs-" .. i, events))
      end
      print(store:stats().map_size)
    ]])
    local grown = tonumber(helpers.capture(helpers.lua_command(script, dir)))
    os.remove(script)
    assert.is_true(grown > small, "the other process should have grown the map")
    -- This process still has the small map: reads and appends adopt the new size.
    local n = 0
    for _ in store:read_all() do n = n + 1 end
    assert.are.equal(2001, n)
    assert(store:append("mine", { { type = "After", data = payload(1) } }))
    assert.are.equal(2002, store:head())
    assert.is_true(store:verify().ok)
  end)

  it("grows while another process holds a long read", function()
    local dir = helpers.tmpdir()
    local store = helpers.track(assert(chronicle.open(dir, { durability = "nosync", map_size = 1 << 20 })))
    for i = 1, 5 do
      local events = {}
      for j = 1, 50 do events[j] = { type = "Big", data = payload(j) } end
      assert(store:append("seed-" .. i, events))
    end
    -- The reader verifies the store over and over: verify holds one read
    -- transaction for its whole pass.
    local script = dir .. "-reader.lua"
    helpers.write_file(script, [[
      local chronicle = require "chronicle"
      local store = assert(chronicle.open(arg[1], { readonly = true }))
      local passes, deadline = 0, os.time() + 2
      repeat
        local report = assert(store:verify())
        assert(report.ok, table.concat(report.problems, "; "))
        passes = passes + 1
      until os.time() >= deadline
      print(passes)
    ]])
    local reader = io.popen(helpers.lua_command(script, dir))
    local small = store:stats().map_size
    for i = 1, 40 do
      local events = {}
      for j = 1, 50 do events[j] = { type = "Big", data = payload(j) } end
      assert(store:append("grow-" .. i, events))
    end
    local passes = tonumber(reader:read("a"))
    local ok = reader:close()
    os.remove(script)
    assert.is_true(ok, "the reader process failed")
    assert.is_true(passes >= 1)
    assert.is_true(store:stats().map_size > small)
    assert.are.equal(2250, store:head())
    assert.is_true(store:verify().ok)
  end)
end)
