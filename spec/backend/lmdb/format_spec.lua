-- docs/FORMAT.md is enough to read a store: a decoder written from that page alone (pure Lua:
-- string.unpack, its own MessagePack reader, the LMDB data through `mdb_dump` from lmdb-utils)
-- decodes a store chronicle wrote, and finds every event, value for value, every checksum right
-- (XXH3-64 computed by Debian's libxxhash in a small C program: nothing of chronicle.core), every
-- index entry, and the key-value rows of snapshots, checkpoints, projections, views and dead
-- letters. The page's worked example is checked byte for byte against a real store.
local helpers = require "helpers"
local chronicle = require "chronicle"

local q = helpers.quote

---------------------------------------------------------------------------
-- The independent decoder (FORMAT.md only)

local function unhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local function tohex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- `mdb_dump -s db dir` (format=bytevalue): after HEADER=END, lines " <hex key>", " <hex value>".
local function dump(dir, db)
  local p = assert(io.popen("mdb_dump -s " .. q(db) .. " " .. q(dir) .. " 2>&1"))
  local text = p:read("a")
  assert(p:close(), "mdb_dump -s " .. db .. " failed:\n" .. text)
  assert(text:match("\nformat=bytevalue\n"), text)
  local body = assert(text:match("\nHEADER=END\n(.*)DATA=END\n"), text)
  local rows, key = {}, nil
  for line in body:gmatch("([^\n]*)\n") do
    local h = assert(line:match("^ (%x*)$"), "unexpected mdb_dump line: " .. line)
    if key == nil then key = unhex(h)
    else rows[#rows + 1] = { key, unhex(h) }; key = nil end
  end
  assert(key == nil, "a key without a value")
  return rows
end

local function u64(s, at) return (string.unpack(">I8", s, at or 1)) end

local function uuid_text(b)
  local h = tohex(b)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-" .. h:sub(21, 32)
end

-- MessagePack, as FORMAT.md says chronicle writes it; `strict` also checks the shortest forms.
local function mp_decode(s, strict)
  local pos = 1
  local kinds = {}            -- every string read: "str" or "bin", in order
  local function need(n) assert(pos + n - 1 <= #s, "truncated MessagePack") end
  local function take(fmt, n)
    need(n)
    local v = string.unpack(fmt, s, pos)
    pos = pos + n
    return v
  end
  local function shortest(ok, what) if strict then assert(ok, "not the shortest form: " .. what) end end
  local value
  local function bytes(n, kind)
    need(n)
    local v = s:sub(pos, pos + n - 1)
    pos = pos + n
    kinds[#kinds + 1] = kind
    return v
  end
  local function array(n)
    local t = {}
    for i = 1, n do t[i] = value() end
    return t
  end
  local function map(n)
    local t = {}
    for _ = 1, n do
      local k = value()
      t[k] = value()
    end
    return t
  end
  function value()
    local c = take("B", 1)
    if c <= 0x7f then return c end
    if c >= 0xe0 then return c - 256 end
    if c >= 0xa0 and c <= 0xbf then return bytes(c - 0xa0, "str") end
    if c >= 0x90 and c <= 0x9f then shortest(c > 0x90, "empty array"); return array(c - 0x90) end
    if c >= 0x80 and c <= 0x8f then return map(c - 0x80) end
    if c == 0xc0 then return nil end
    if c == 0xc2 then return false end
    if c == 0xc3 then return true end
    if c == 0xcb then return take(">d", 8) end
    if c == 0xca then shortest(false, "float 32"); return take(">f", 4) end
    if c == 0xcc then local v = take(">I1", 1); shortest(v > 0x7f, "uint8 " .. v); return v end
    if c == 0xcd then local v = take(">I2", 2); shortest(v > 0xff, "uint16 " .. v); return v end
    if c == 0xce then local v = take(">I4", 4); shortest(v > 0xffff, "uint32 " .. v); return v end
    if c == 0xcf then local v = take(">i8", 8); shortest(v > 0xffffffff or v < 0, "uint64 " .. v); return v end
    if c == 0xd0 then local v = take(">i1", 1); shortest(v < -32, "int8 " .. v); return v end
    if c == 0xd1 then local v = take(">i2", 2); shortest(v < -128, "int16 " .. v); return v end
    if c == 0xd2 then local v = take(">i4", 4); shortest(v < -32768, "int32 " .. v); return v end
    if c == 0xd3 then local v = take(">i8", 8); shortest(v < -2147483648, "int64 " .. v); return v end
    if c == 0xd9 then local n = take(">I1", 1); shortest(n > 31, "str8"); return bytes(n, "str") end
    if c == 0xda then local n = take(">I2", 2); shortest(n > 0xff, "str16"); return bytes(n, "str") end
    if c == 0xdb then local n = take(">I4", 4); shortest(n > 0xffff, "str32"); return bytes(n, "str") end
    if c == 0xc4 then return bytes(take(">I1", 1), "bin") end
    if c == 0xc5 then local n = take(">I2", 2); shortest(n > 0xff, "bin16"); return bytes(n, "bin") end
    if c == 0xc6 then local n = take(">I4", 4); shortest(n > 0xffff, "bin32"); return bytes(n, "bin") end
    if c == 0xdc then local n = take(">I2", 2); shortest(n > 15, "array16"); return array(n) end
    if c == 0xdd then local n = take(">I4", 4); shortest(n > 0xffff, "array32"); return array(n) end
    if c == 0xde then local n = take(">I2", 2); shortest(n > 15, "map16"); return map(n) end
    if c == 0xdf then local n = take(">I4", 4); shortest(n > 0xffff, "map32"); return map(n) end
    error(("MessagePack type 0x%02x is not one chronicle writes"):format(c))
  end
  local v = value()
  assert(pos == #s + 1, "bytes left after the MessagePack value")
  return v, kinds
end

-- An event record (FORMAT.md "log: the event record").
local function parse_record(rec)
  assert(#rec >= 52, "record shorter than its header")
  local checksum, format, reserved, S, T, schema, version, time, id, M =
    string.unpack(">I8 B B I2 I2 I2 I8 i8 c16 I4", rec)
  assert(format == 1 and reserved == 0)
  local at = 53
  local stream = rec:sub(at, at + S - 1); at = at + S
  local type_ = rec:sub(at, at + T - 1); at = at + T
  local meta_bytes = rec:sub(at, at + M - 1); at = at + M
  local data_bytes = rec:sub(at)
  assert(#meta_bytes == M and #data_bytes >= 1)
  return { checksum = checksum, stream = stream, type = type_, schema = schema, version = version, time = time,
           id = uuid_text(id), meta_bytes = meta_bytes, data_bytes = data_bytes,
           meta = (mp_decode(meta_bytes, true)), data = (mp_decode(data_bytes, true)), body = rec:sub(9) }
end

-- The whole store, decoded.
local function decode_store(dir)
  local out = { meta = {}, log = {}, streams = {}, stream_index = {}, category_index = {}, event_ids = {}, kv = {} }
  for _, r in ipairs(dump(dir, "meta")) do out.meta[r[1]] = r[2] end
  for _, r in ipairs(dump(dir, "log")) do
    assert(#r[1] == 8)
    local ev = parse_record(r[2])
    ev.position = u64(r[1])
    out.log[#out.log + 1] = ev
  end
  for _, r in ipairs(dump(dir, "streams")) do
    assert(#r[2] == 48)
    local id, count, first, last, created, updated = string.unpack(">I8 I8 I8 I8 i8 i8", r[2])
    out.streams[r[1]] = { id = id, count = count, first = first, last = last, created = created, updated = updated }
  end
  for _, r in ipairs(dump(dir, "stream_index")) do
    assert(#r[1] == 16 and #r[2] == 8)
    out.stream_index[#out.stream_index + 1] = { u64(r[1]), u64(r[1], 9), u64(r[2]) }
  end
  for _, r in ipairs(dump(dir, "category_index")) do
    local L = r[1]:byte(1)
    assert(#r[1] == 1 + L + 8 and r[2] == "")
    out.category_index[#out.category_index + 1] = { r[1]:sub(2, 1 + L), u64(r[1], 2 + L) }
  end
  for _, r in ipairs(dump(dir, "event_ids")) do
    assert(#r[1] == 16 and #r[2] == 8)
    out.event_ids[uuid_text(r[1])] = u64(r[2])
  end
  for _, r in ipairs(dump(dir, "kv")) do
    local L = r[1]:byte(1)
    local space, key = r[1]:sub(2, 1 + L), r[1]:sub(2 + L)
    out.kv[space] = out.kv[space] or {}
    out.kv[space][key] = (mp_decode(r[2], true))
  end
  return out
end

-- XXH3-64 (seed 0) of each string, by Debian's libxxhash: one hex body per line in, one hex hash out.
local function xxh3_all(bodies)
  local work = helpers.tmpdir()
  helpers.write_file(work .. "/xxh3.c", [[
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }
int main(void) {
  static char line[1 << 22];
  static unsigned char bytes[1 << 21];
  while (fgets(line, sizeof line, stdin)) {
    size_t n = strcspn(line, "\n") / 2;
    for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)(hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
    printf("%016llx\n", (unsigned long long)XXH3_64bits(bytes, n));
  }
  return 0;
}
]])
  assert(os.execute("cc -O1 -o " .. q(work .. "/xxh3") .. " " .. q(work .. "/xxh3.c") .. " -lxxhash"),
         "cannot build the XXH3 helper against libxxhash")
  local lines = {}
  for i, b in ipairs(bodies) do lines[i] = tohex(b) end
  helpers.write_file(work .. "/in", table.concat(lines, "\n") .. "\n")
  local out = {}
  for h in helpers.capture(q(work .. "/xxh3") .. " < " .. q(work .. "/in")):gmatch("%x+") do
    out[#out + 1] = tonumber(h:sub(1, 8), 16) << 32 | tonumber(h:sub(9), 16)
  end
  return out
end

-- Deep equality that tells integers from floats.
local function same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
    if a ~= b and not (a ~= a and b ~= b) then return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "[" .. tostring(k) .. "]: missing" end
  end
  return true
end

---------------------------------------------------------------------------
-- A store with a bit of everything, written by chronicle

local function deep(n)
  local t = { leaf = true }
  for i = 1, n do t = { level = i, inner = t } end
  return t
end

local function write_store()
  local store, dir = helpers.open({ durability = "nosync" })
  local long = ("x"):rep(300)
  local many = {}
  for i = 1, 20 do many["k" .. i] = i end
  local big_array = {}
  for i = 1, 40 do big_array[i] = i * 1000 end
  assert(store:append("values-1", {
    { type = "Ints", data = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, math.maxinteger,
                              -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, math.mininteger } },
    { type = "Floats", data = { 0.5, 1.0, -0.0, 1e300, 2.0 ^ 63, 1 / 0, -1 / 0 } },
    { type = "Strings", data = { "", "a", ("s"):rep(31), ("s"):rep(32), ("s"):rep(256), long .. long, "café",
                                 "\0\1\255", ("\255"):rep(300) } },
    { type = "Tables", data = { empty = {}, nested = { { {} } }, deep = deep(20), array = { 1, "two", 3.0, {} },
                                sparse = { [1] = "a", [3] = "c" }, keys = { [true] = "t", [1.5] = "f", [-1] = "n" },
                                many = many, big_array = big_array } },
    { type = "Scalar", data = "just a string", meta = { correlation_id = "c-1", n = 1 } },
    { type = "Bare" },
    { type = "Explicit", id = "01a23560-0000-7000-8000-0000000000ff", time = 1234567890123456789, schema = 3,
      meta = { bin = "\255" }, data = 12.5 },
    { type = "False", data = false, time = 5 },
  }))
  -- an aggregate with snapshots, a projection with an integer view key, a handler with a dead
  -- letter, a reactor
  local Account = chronicle.aggregate {
    name = "account", initial = function() return { balance = 0 } end, snapshot_every = 2,
    apply = { Deposited = function(s, ev) s.balance = s.balance + ev.data.amount end },
    commands = { deposit = function(_, args) return { type = "Deposited", data = { amount = args.amount } } end },
  }
  local accounts = store:repository(Account)
  for i = 1, 3 do assert(accounts:execute("ann", "deposit", { amount = i * 10 })) end
  assert(accounts:execute("bob", "deposit", { amount = 5 }))
  assert(store:append("café-1", { { type = "Unicode", data = { ["ключ"] = "значение" } } }))
  assert(store:projection {
    name = "by_position", version = 1, from = { category = "account" },
    handlers = { Deposited = function(view, ev) view:put(ev.position, { stream = ev.stream, amount = ev.data.amount }) end },
  })
  store:on("Deposited", function(ev) if ev.data.amount == 20 then error("mail server down") end end,
           { name = "mailer", retries = 0 })
  store:reactor { name = "audit", handlers = {
    Deposited = function(ev, ctx) ctx:append("audit-" .. ev.stream, { { type = "Seen", data = ev.position } }) end } }
  chronicle.runner(store):run({ until_idle = true })
  local expected = helpers.collect(store:read_all())
  local info = {}
  for s in store:streams() do info[s.stream] = s end
  local snapshot = accounts:snapshot("ann")
  local head, store_id = store:head(), store:stats().store_id
  store:close()
  return dir, expected, info, snapshot, head, store_id
end

describe("docs/FORMAT.md", function()
  after_each(helpers.cleanup)

  it("is enough to decode a store: every event, checksum, index and key-value row", function()
    local dir, expected, info, snapshot, head, store_id = write_store()
    local s = decode_store(dir)

    -- meta
    assert.equals(1, (string.unpack(">I4", s.meta.format)))
    assert.equals(4, #s.meta.format)
    assert.equals(16, #s.meta.store_id)
    if store_id then assert.equals(store_id, uuid_text(s.meta.store_id)) end
    assert.equals(8, #s.meta.created)
    local seq = u64(s.meta.stream_seq)

    -- every event, value for value, in position order from 1 without gaps
    assert.equals(#expected, #s.log)
    assert.equals(head, #s.log)
    for i, ev in ipairs(s.log) do
      local want = expected[i]
      assert.equals(i, ev.position)
      for _, field in ipairs({ "position", "stream", "type", "version", "time", "id", "schema" }) do
        assert.equals(want[field], ev[field], ("event %d: %s"):format(i, field))
      end
      local ok, why = same(want.data, ev.data, ("event %d data"):format(i))
      assert.is_true(ok, why)
      ok, why = same(want.meta, ev.meta, ("event %d meta"):format(i))
      assert.is_true(ok, why)
      if want.meta == nil then assert.equals("\192", ev.meta_bytes, "an absent meta is nil, one byte") end
      if want.data == nil then assert.equals("\192", ev.data_bytes, "an absent data is nil, one byte") end
    end
    -- valid UTF-8 is str, anything else bin
    local strings = s.log[3]
    local _, kinds = mp_decode(strings.data_bytes)
    assert.same({ "str", "str", "str", "str", "str", "str", "str", "bin", "bin" }, kinds)
    assert.equals(0xcb, s.log[2].data_bytes:byte(2), "floats are float 64")

    -- every checksum: XXH3-64 of bytes 8.. of the record, stored big-endian at 0
    local bodies = {}
    for i, ev in ipairs(s.log) do bodies[i] = ev.body end
    local sums = xxh3_all(bodies)
    assert.equals(#s.log, #sums)
    for i, ev in ipairs(s.log) do
      assert.equals(sums[i], ev.checksum, ("checksum of event %d"):format(i))
    end

    -- streams rows, stream_index, category_index, event_ids
    local n_streams, max_id = 0, 0
    for name, row in pairs(s.streams) do
      n_streams = n_streams + 1
      max_id = math.max(max_id, row.id)
      local want = assert(info[name], "unknown stream " .. name)
      assert.equals(want.count, row.count)
      assert.equals(want.version, row.count - 1)
      assert.equals(want.first_position, row.first)
      assert.equals(want.last_position, row.last)
      assert.equals(want.created, row.created)
      assert.equals(want.updated, row.updated)
    end
    assert.equals(seq, max_id)
    local ids = {}
    for name, row in pairs(s.streams) do ids[row.id] = name end
    assert.equals(#s.log, #s.stream_index)
    local by_stream = {}
    for _, e in ipairs(s.stream_index) do
      local ev = s.log[e[3]]
      assert.equals(ids[e[1]], ev.stream)
      assert.equals(e[2], ev.version)
      by_stream[ev.stream] = (by_stream[ev.stream] or 0) + 1
    end
    for name, row in pairs(s.streams) do assert.equals(row.count, by_stream[name]) end
    assert.equals(#s.log, #s.category_index)
    for _, e in ipairs(s.category_index) do
      local ev = s.log[e[2]]
      assert.equals(ev.stream:match("^([^-]*)"), e[1])
    end
    local n_ids = 0
    for id, position in pairs(s.event_ids) do
      n_ids = n_ids + 1
      assert.equals(id, s.log[position].id)
    end
    assert.equals(#s.log, n_ids)

    -- key-value spaces
    local snap = s.kv.snapshots["account-ann"]
    assert.is_table(snap)
    assert.same(snapshot, snap)
    assert.equals(1, snap.version)
    assert.same({ balance = 30 }, snap.state)
    local proj = s.kv.projections.by_position
    assert.equals("live", proj.status)
    assert.equals(1, proj.generation)
    assert.equals(head, s.kv.checkpoints["p:by_position#" .. proj.generation])
    assert.equals(head, s.kv.checkpoints["h:mailer"])
    assert.equals(head, s.kv.checkpoints["r:audit"])
    local rows = s.kv["v:by_position#" .. proj.generation]
    local n_rows = 0
    for key, row in pairs(rows) do
      n_rows = n_rows + 1
      assert.matches("^%d+$", key, 1, false, "an integer view key is its decimal text")
      local ev = s.log[tonumber(key)]
      assert.same({ stream = ev.stream, amount = ev.data.amount }, row)
    end
    assert.equals(4, n_rows)
    local letters = 0
    for key, row in pairs(s.kv.dead_letters) do
      letters = letters + 1
      assert.equals(("mailer:%020d"):format(row.position), key)
      local ev = s.log[row.position]
      assert.equals("mailer", row.handler)
      assert.equals(ev.stream, row.stream)
      assert.equals(ev.version, row.version)
      assert.equals(ev.type, row.type)
      assert.equals(ev.id, row.id)
      assert.equals(20, ev.data.amount)
      assert.matches("mail server down", row.error)
      assert.equals(1, row.attempts)
      assert.equals("integer", math.type(row.time))
    end
    assert.equals(1, letters)
  end)

  it("shows a worked example that is the record a real store holds, byte for byte", function()
    local f = assert(io.open(helpers.root .. "/docs/FORMAT.md"))
    local page = f:read("a")
    f:close()
    local length, record_hex = page:match("value %((%d+) bytes%):\n\n```\n(%x+)\n```")
    assert.truthy(record_hex, "no worked example")
    local store, dir = helpers.open()
    assert(store:append("order-1", { { type = "OrderPaid", data = { amount = 30 }, meta = { via = "card" },
      id = "01a23560-0000-7000-8000-00000000002a", time = 1764633600123456789 } }))
    store:close()
    local rows = dump(dir, "log")
    assert.equals(1, #rows)
    assert.equals("0000000000000001", tohex(rows[1][1]))
    assert.equals(record_hex, tohex(rows[1][2]))
    assert.equals(tonumber(length), #rows[1][2])
    local ev = parse_record(rows[1][2])
    assert.equals(xxh3_all({ ev.body })[1], ev.checksum)
    assert.matches("= 0x" .. record_hex:sub(1, 16), page, 1, true)
    assert.same({ via = "card" }, ev.meta)
    assert.same({ amount = 30 }, ev.data)
  end)
end)
