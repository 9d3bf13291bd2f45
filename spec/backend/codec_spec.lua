-- The value codec, seen through append and read: what can be stored and what comes back.
local helpers = require "helpers"

-- The deepest nesting of tables the store accepts (documented in csrc/common/codec.h).
local MAX_DEPTH = helpers.c_define("common/codec.h", "CODEC_MAX_DEPTH")

local function nest(levels)
  local root = {}
  local t = root
  for _ = 2, levels do
    t[1] = {}
    t = t[1]
  end
  return root
end

local function depth_of(v)
  local d = 0
  while type(v) == "table" do
    d = d + 1
    v = v[1]
  end
  return d
end

describe("stored values", function()
  after_each(helpers.cleanup)

  local store, n
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    n = 0
  end)

  -- Appends `value` as data and as meta, reads it back, returns both copies.
  local function round_trip(value)
    n = n + 1
    local stream = "value-" .. n
    assert(store:append(stream, { { type = "V", data = value, meta = value } }))
    local evs = helpers.collect(store:read(stream))
    assert.equals(1, #evs)
    return evs[1].data, evs[1].meta
  end

  -- Asserts that `value` comes back identical (integers stay integers, floats floats).
  local function survives(value)
    local data, meta = round_trip(value)
    local ok, where = helpers.identical(value, data, "data")
    assert.is_true(ok, where)
    ok, where = helpers.identical(value, meta, "meta")
    assert.is_true(ok, where)
    return data
  end

  it("keep nil", function()
    local data, meta = round_trip(nil)
    assert.is_nil(data)
    assert.is_nil(meta)
  end)

  it("keep booleans", function()
    assert.is_true(survives(true))
    assert.is_false(survives(false))
  end)

  it("keep integers as integers, down to the extremes", function()
    for _, v in ipairs({ 0, 1, -1, 127, 128, -32, -33, 255, 65536, 2 ^ 31 | 0, -(2 ^ 31 | 0) - 1,
                         1 << 40, math.maxinteger, math.mininteger }) do
      local back = survives(v)
      assert.equals("integer", math.type(back))
      assert.equals(v, back)
    end
  end)

  it("keep floats as floats, bit for bit", function()
    for _, v in ipairs({ 1.0, 0.0, 0.1, -2.5, 1e300, 5e-324, math.pi, 2.0 ^ 63 }) do
      local back = survives(v)
      assert.equals("float", math.type(back))
      assert.equals(v, back)
      assert.equals(string.format("%a", v), string.format("%a", back))
    end
  end)

  it("keep 1.0 a float, distinct from the integer 1", function()
    assert.equals("float", math.type(survives(1.0)))
    assert.equals("integer", math.type(survives(1)))
  end)

  it("keep the sign of -0.0", function()
    local back = survives(-0.0)
    assert.equals("float", math.type(back))
    assert.equals(-math.huge, 1 / back)
  end)

  it("keep infinities and NaN as values", function()
    assert.equals(math.huge, survives(math.huge))
    assert.equals(-math.huge, survives(-math.huge))
    local nan = survives(0 / 0)
    assert.equals("float", math.type(nan))
    assert.is_true(nan ~= nan)
  end)

  it("keep strings byte for byte, binary included", function()
    for _, v in ipairs({ "", "hello", "h\195\169llo \226\130\172", "\0", "\0\255\1", "a\0b", "\255\254",
                         "\192\128", string.rep("\0", 300) }) do
      assert.equals(v, survives(v))
    end
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    assert.equals(table.concat(bytes), survives(table.concat(bytes)))
  end)

  it("keep long strings (1 MB)", function()
    local parts = {}
    for i = 1, 1024 do parts[i] = string.format("%04d", i) .. string.rep(string.char(i % 256), 1020) end
    local big = table.concat(parts)
    assert.equals(1024 * 1024, #big)
    local back = store:append("long", { { type = "V", data = { blob = big } } }) and
                 helpers.collect(store:read("long"))[1].data.blob
    assert.equals(#big, #back)
    assert.is_true(big == back)
  end)

  it("keep arrays as arrays", function()
    local back = survives({ 10, 20, 30, "x", true, 1.5 })
    assert.equals(6, #back)
    assert.same({}, survives({ {}, {} })[1])
    local list = {}
    for i = 1, 10000 do list[i] = i * 3 end
    assert.same(list, survives(list))
  end)

  it("keep nested tables", function()
    survives({ customer = { name = "ann", tags = { "a", "b" }, address = { city = "x", zip = 12345 } },
               lines = { { sku = "s1", qty = 2, price = 9.5 }, { sku = "s2", qty = 1, price = 3.0 } } })
  end)

  it("keep sparse arrays: the same keys come back, holes stay holes", function()
    local back = survives({ [1] = "a", [3] = "c", [10] = "j" })
    assert.is_nil(back[2])
    assert.equals("c", back[3])
    local keys = {}
    for k in pairs(back) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ 1, 3, 10 }, keys)
    for _, k in ipairs(keys) do assert.equals("integer", math.type(k)) end
  end)

  it("keep mixed tables (array part and hash part)", function()
    survives({ 1, 2, 3, name = "mixed", [0] = "zero", [-5] = "neg" })
  end)

  it("give back an empty table as an empty table", function()
    local back = survives({})
    assert.is_table(back)
    assert.is_nil(next(back))
    local nested = survives({ items = {}, more = { {} } })
    assert.is_table(nested.items)
    assert.is_nil(next(nested.items))
  end)

  it("keep boolean and float keys", function()
    local back = survives({ [true] = "yes", [false] = "no", [1.5] = "one and a half", [-0.25] = "q" })
    assert.equals("yes", back[true])
    assert.equals("no", back[false])
    assert.equals("one and a half", back[1.5])
    for k in pairs(back) do
      if type(k) == "number" then assert.equals("float", math.type(k)) end
    end
  end)

  it("keep string keys that are not identifiers, and binary keys", function()
    survives({ ["with space"] = 1, ["a.b"] = 2, [""] = 3, ["\0\255"] = 4, ["1"] = "string one", [1] = "integer one" })
  end)

  it("keep tables nested exactly as deep as the documented limit", function()
    assert.is_true(MAX_DEPTH >= 8)
    local back = survives(nest(MAX_DEPTH))
    assert.equals(MAX_DEPTH, depth_of(back))
  end)
end)

describe("the stored encoding", function()
  after_each(helpers.cleanup)

  -- The MessagePack size of `value`, read from the size an append reports
  -- when the event is over max_event_size: data = { value, PAD } is an array
  -- of two (1 byte of header) and PAD, 300 bytes, takes 303 (str16).
  local PAD = string.rep("p", 300)
  local function encoded_size(store, value)
    local msg = helpers.raises(store.append, store, "enc", { { type = "T", data = { value, PAD } } })
    local stored = tonumber(msg:match("is (%d+) bytes stored"))
    assert(stored, msg)
    local record_header, meta_nil = 52, 1
    return stored - record_header - #"enc" - #"T" - meta_nil - 1 - 303
  end

  it("takes MessagePack's shortest form for every integer, string and container size", function()
    local store = helpers.open({ max_event_size = 256 })
    local array = function(n) local t = {} for i = 1, n do t[i] = 0 end return t end
    local cases = {
      { 0, 1 }, { 127, 1 }, { 128, 2 }, { 255, 2 }, { 256, 3 }, { 65535, 3 }, { 65536, 5 },
      { 0xffffffff, 5 }, { 0x100000000, 9 }, { math.maxinteger, 9 },
      { -1, 1 }, { -32, 1 }, { -33, 2 }, { -128, 2 }, { -129, 3 }, { -32768, 3 }, { -32769, 5 },
      { -(1 << 31), 5 }, { -(1 << 31) - 1, 9 }, { math.mininteger, 9 },
      { 1.5, 9 }, { 0.0, 9 }, { true, 1 }, { false, 1 },
      { "", 1 }, { string.rep("a", 31), 32 }, { string.rep("a", 32), 34 }, { string.rep("a", 255), 257 },
      { string.rep("a", 256), 259 }, { string.rep("a", 65535), 65538 }, { string.rep("a", 65536), 65541 },
      { "\xff", 3 }, { string.rep("\xff", 256), 259 }, { string.rep("\xff", 65536), 65541 },
      { array(15), 16 }, { array(16), 19 }, { array(65536), 65541 },
      { {}, 1 }, { { k = 1 }, 4 },          -- fixmap, "k" (fixstr, 2), 1
    }
    for _, c in ipairs(cases) do
      local value, want = c[1], c[2]
      local label = type(value) == "string" and ("string of " .. #value .. " bytes")
                    or type(value) == "table" and ("table of " .. #value .. " items") or tostring(value)
      assert.equals(want, encoded_size(store, value), label)
    end
    assert.equals(0, store:head())
  end)
end)

describe("values that cannot be stored", function()
  after_each(helpers.cleanup)

  local store, before
  before_each(function()
    store = helpers.open()
    helpers.fill(store, "existing", 2)
    before = helpers.snapshot(store)
  end)

  -- Appends `events` to a fresh stream; returns the error message it must raise.
  local function refusal(events)
    local msg = helpers.raises(store.append, store, "bad-1", events)
    assert.same(before, helpers.snapshot(store))
    assert.is_nil(store:stream_info("bad-1"))
    return msg
  end

  it("raise an error naming the path to a function", function()
    local msg = refusal({ { type = "T", data = { items = { 1, 2, function() end } } } })
    assert.matches("events[1].data.items[3]: cannot store a function", msg, 1, true)
  end)

  it("name the event and the field (data or meta) in the path", function()
    local msg = refusal({ { type = "T" }, { type = "T", meta = { user = { callback = print } } } })
    assert.matches("events[2].meta.user.callback: cannot store a function", msg, 1, true)
    local top = refusal({ { type = "T", data = print } })
    assert.matches("events[1].data: cannot store a function", top, 1, true)
  end)

  it("raise for userdata", function()
    local msg = refusal({ { type = "T", data = { out = io.stdout } } })
    assert.matches("events[1].data.out", msg, 1, true)
    assert.matches("userdata", msg, 1, true)
  end)

  it("raise for a thread (coroutine)", function()
    local msg = refusal({ { type = "T", data = { co = coroutine.create(function() end) } } })
    assert.matches("events[1].data.co", msg, 1, true)
    assert.matches("thread", msg, 1, true)
  end)

  it("raise for a cycle", function()
    local t = { name = "loop" }
    t.self = t
    local msg = refusal({ { type = "T", data = t } })
    assert.matches("events[1].data.self", msg, 1, true)
    assert.matches("cycle", msg, 1, true)
    local a, b = {}, {}
    a.b, b.a = b, a
    local msg2 = refusal({ { type = "T", data = { list = { a } } } })
    assert.matches("events[1].data.list[1].b.a", msg2, 1, true)
    assert.matches("cycle", msg2, 1, true)
  end)

  it("accept the same table twice when it is not a cycle", function()
    local shared = { x = 1 }
    assert(store:append("dag", { { type = "T", data = { left = shared, right = shared } } }))
    local back = helpers.collect(store:read("dag"))[1].data
    assert.same({ x = 1 }, back.left)
    assert.same({ x = 1 }, back.right)
  end)

  it("raise for an infinite key", function()
    local msg = refusal({ { type = "T", data = { scores = { [math.huge] = 1 } } } })
    assert.matches("events[1].data.scores", msg, 1, true)
    assert.matches("infinite", msg, 1, true)
    local neg = refusal({ { type = "T", data = { [-math.huge] = 1 } } })
    assert.matches("events[1].data", neg, 1, true)
    assert.matches("infinite", neg, 1, true)
    -- (a NaN key cannot even be put into a Lua table, so there is nothing to test there)
  end)

  it("raise for a table used as a key", function()
    local msg = refusal({ { type = "T", data = { index = { [{}] = true } } } })
    assert.matches("events[1].data.index: cannot store a table as a key", msg, 1, true)
  end)

  it("raise for a function used as a key", function()
    local msg = refusal({ { type = "T", data = { [print] = 1 } } })
    assert.matches("events[1].data", msg, 1, true)
    assert.matches("function", msg, 1, true)
  end)

  it("raise for nesting one level deeper than the documented limit", function()
    local msg = refusal({ { type = "T", data = nest(MAX_DEPTH + 1) } })
    assert.matches("events[1].data", msg, 1, true)
    assert.matches(tostring(MAX_DEPTH), msg, 1, true)
    local much = refusal({ { type = "T", meta = nest(MAX_DEPTH * 5) } })
    assert.matches("events[1].meta", much, 1, true)
  end)

  it("leave nothing written when only a later event of the batch is bad", function()
    refusal({ { type = "Good", data = { 1 } }, { type = "Good" }, { type = "Bad", data = { f = print } } })
  end)

  it("round-trips maps of every header size (fixmap, map16, map32)", function()
    local store = helpers.open()
    for _, n in ipairs({ 15, 16, 65535, 65536 }) do
      local t = {}
      for i = 1, n do t["k" .. i] = i end
      assert(store:append("maps", { { type = "T", data = t } }))
      local got
      for ev in store:read("maps", { backward = true, count = 1 }) do got = ev.data end
      -- compared in plain Lua, one assertion per size (65,536 luassert calls take minutes under valgrind)
      local count, wrong = 0, nil
      for k, v in pairs(got) do
        count = count + 1
        if t[k] ~= v and wrong == nil then wrong = tostring(k) end
      end
      assert.is_nil(wrong, "a key came back with another value")
      assert.are.equal(n, count)
    end
  end)
end)
