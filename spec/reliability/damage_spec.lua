-- Damaged files. A bit flipped inside an event record is caught by the record's checksum and
-- reported by read, read_all, fold and verify with code "corrupt". A truncated or overwritten
-- data.mdb, a foreign file named data.mdb and a store of a newer format make open return
-- nil, err with a clear code; every open of a damaged store runs in its own process
-- (spec/support/reliability/open_probe.lua) so that a crash shows as a signal instead of ending the spec.
local helpers = require "helpers"
local chronicle = require "chronicle"
local common = require "support.reliability.common"
local run = require "support.reliability.run"

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function copy_store(from)
  local to = helpers.tmpdir() .. "/store"
  assert(os.execute(("cp -r %s %s"):format(helpers.quote(from), helpers.quote(to))))
  return to
end

-- The 16 bytes of a UUID string.
local function uuid_bytes(id)
  return (id:gsub("-", ""):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- Offsets in data.mdb of every copy of the record of event id `id` in stream `stream`:
-- LMDB leaves stale copies of pages in its free pages, so a damage test must hit all of them.
-- (The id is also a key of the event_ids database: a hit counts only with a record around it.)
local function record_copies(bytes, id, stream)
  local needle, starts, from = uuid_bytes(id), {}, 1
  while true do
    local at = bytes:find(needle, from, true)
    if not at then break end
    local start = at - 32        -- 1-based offset of the record's first byte
    if start >= 1 and bytes:byte(start + 8) == 1 and bytes:sub(start + 52, start + 51 + #stream) == stream then
      starts[#starts + 1] = start
    end
    from = at + 1
  end
  return starts
end

-- Flips bit `mask` of the byte at `offset` (0-based, within the record) in every copy.
local function flip_records(dir, id, stream, offset, mask)
  local path = dir .. "/data.mdb"
  local bytes = read_file(path)
  local starts = record_copies(bytes, id, stream)
  assert(#starts > 0, "no copy of the record of " .. id .. " found in data.mdb")
  local parts, last = {}, 1
  for _, s in ipairs(starts) do
    local at = s + offset
    parts[#parts + 1] = bytes:sub(last, at - 1)
    parts[#parts + 1] = string.char(bytes:byte(at) ~ mask)
    last = at + 1
  end
  parts[#parts + 1] = bytes:sub(last)
  write_file(path, table.concat(parts))
  return #starts
end

-- The template store: 12 events over 3 streams, event 8 in the middle of stream acct-2,
-- plus one event large enough to sit on LMDB overflow pages.
local N, TARGET, BIG = 12, 8, 13
local template
local function make_template()
  local store, dir = helpers.open({ durability = "full" })
  for i = 1, N do
    assert(store:append(common.stream_of(i), {
      { type = "Deposited", id = common.event_id(i), data = { i = i, marker = ("MARK-%04d"):format(i) },
        meta = { correlation = "c-" .. i } },
    }))
  end
  assert(store:append("big-1", { { type = "Big", id = common.event_id(BIG),
                                   data = { blob = string.rep("b", 20000) } } }))
  store:close()
  return dir
end

describe("a bit flipped inside an event record", function()
  setup(function() template = make_template() end)
  teardown(helpers.cleanup)

  -- where the flip lands: 0-based offsets in the record (see csrc/common/record.h)
  local stream = common.stream_of(TARGET)
  local fields = {
    { "the checksum", 3 }, { "the record format", 8 }, { "the reserved byte", 9 },
    { "the stream name length", 11 }, { "the type length", 13 }, { "the schema", 15 },
    { "the stream version", 23 }, { "the time", 28 }, { "the event id", 40 },
    { "the meta length", 51 }, { "the stream name", 52 + 2 }, { "the type", 52 + #stream + 1 },
    { "the meta", 52 + #stream + #"Deposited" + 2 }, { "the last byte of the data", -1 },
  }

  for _, f in ipairs(fields) do
    local what, offset = f[1], f[2]
    it("in " .. what .. ": read, read_all, fold and verify say corrupt; other streams read fine", function()
      local dir = copy_store(template)
      local pos_of_target = TARGET   -- one event per append: event i is at position i
      if offset < 0 then
        -- data = {i=8, marker="MARK-0008"}: flip the marker's last byte
        local bytes = read_file(dir .. "/data.mdb")
        local s = record_copies(bytes, common.event_id(TARGET), stream)[1]
        local slen, tlen, mlen = string.unpack(">I2I2", bytes, s + 10), string.unpack(">I2", bytes, s + 12),
                                 string.unpack(">I4", bytes, s + 48)
        local data_start = s + 52 + slen + tlen + mlen
        local marker_at = bytes:find("MARK-0008", data_start, true)
        offset = marker_at + 8 - s
      end
      local copies = flip_records(dir, common.event_id(TARGET), stream, offset, 0x10)
      assert.is_true(copies >= 1)

      local store = helpers.track(assert(chronicle.open(dir)))
      -- read: the events before the damaged one come out, then an error object "corrupt"
      local got = {}
      local ok, err = pcall(function() for ev in store:read(stream) do got[#got + 1] = ev.position end end)
      assert.is_false(ok, "read went through a damaged record")
      assert.are.equal("table", type(err), tostring(err))
      assert.are.equal("corrupt", err.code)
      assert.are.equal(pos_of_target, err.position)
      assert.matches("position " .. pos_of_target, tostring(err))
      for _, p in ipairs(got) do assert.is_true(p < pos_of_target) end
      -- read_all: the same
      ok, err = pcall(function() for _ in store:read_all() do end end)
      assert.is_false(ok)
      assert.are.equal("corrupt", err.code)
      -- fold: nil, err
      local state, ferr = store:fold(stream, 0, function(n) return n + 1 end)
      assert.is_nil(state)
      assert.are.equal("corrupt", ferr.code)
      state, ferr = store:fold({ category = "acct" }, 0, function(n) return n + 1 end)
      assert.is_nil(state)
      assert.are.equal("corrupt", ferr.code)
      -- verify names the position
      local v = assert(store:verify())
      assert.is_false(v.ok)
      assert.matches("position " .. pos_of_target .. ":", v.problems[1], 1, true)
      -- the other streams are intact
      for _, other in ipairs({ common.stream_of(TARGET + 1), common.stream_of(TARGET + 2), "big-1" }) do
        local n = #helpers.collect(store:read(other))
        assert.is_true(n > 0, other)
      end
      store:close()
    end)
  end

  it("in an event large enough for LMDB overflow pages: caught the same way", function()
    local dir = copy_store(template)
    local bytes = read_file(dir .. "/data.mdb")
    local s = record_copies(bytes, common.event_id(BIG), "big-1")
    assert.is_true(#s >= 1)
    flip_records(dir, common.event_id(BIG), "big-1", 52 + 5 + 3 + 10000, 0x01)
    local store = helpers.track(assert(chronicle.open(dir)))
    local ok, err = pcall(function() for _ in store:read("big-1") do end end)
    assert.is_false(ok)
    assert.are.equal("corrupt", err.code)
    assert.are.equal(BIG, err.position)
    assert.is_false(store:verify().ok)
    assert.are.equal(N, #helpers.collect(store:read_all({ to = N })))
    store:close()
  end)
end)

-- Opens `dir` in a child process; returns the probe's outcome line(s).
local function probe(dir, read_too)
  local r = run.lua("open_probe.lua", { dir, read_too and "read" or nil })
  assert.is_false(r.crashed, "opening the damaged store crashed: " .. run.describe(r))
  assert.are.equal(0, r.code, run.describe(r))
  return r.stdout
end

local function expect_error(dir, code)
  local out = probe(dir, true)
  local got, message = out:match("^error (%S+) (.*)")
  assert(got, "open did not return nil, err: " .. out)
  assert.are.equal(code, got, out)
  assert.is_true(#message > 20, out)
  return message
end

describe("opening a damaged data.mdb", function()
  local size
  setup(function()
    template = make_template()
    size = #read_file(template .. "/data.mdb")
  end)
  teardown(helpers.cleanup)

  it("the intact template opens and reads (the probe works)", function()
    assert.matches("^opened\nread " .. (N + 1) .. "\nverify ok", probe(template, true))
  end)

  for _, cut in ipairs({ "100", "4096", "8192", "12288", "half", "one page short", "one byte short" }) do
    it("truncated to " .. cut .. (tonumber(cut) and " bytes" or "") .. ": corrupt or not_a_store, no crash", function()
      local dir = copy_store(template)
      local bytes = read_file(dir .. "/data.mdb")
      local keep = tonumber(cut) or (cut == "half" and size // 2) or (cut == "one page short" and size - 4096)
                   or size - 1
      write_file(dir .. "/data.mdb", bytes:sub(1, keep))
      -- shorter than LMDB's two meta pages: LMDB says "not an LMDB file"; longer: the pages in
      -- use are missing (chronicle checks the size against the meta before touching a page)
      expect_error(dir, keep < 8192 and "not_a_store" or "corrupt")
    end)
  end

  it("truncated to 0 bytes: opens as a new, empty store (a creation that never finished looks the same)", function()
    local dir = copy_store(template)
    write_file(dir .. "/data.mdb", "")
    assert.matches("^opened\nread 0\nverify ok", probe(dir, true))
  end)

  it("overwritten with zeros: not_a_store", function()
    local dir = copy_store(template)
    write_file(dir .. "/data.mdb", string.rep("\0", size))
    expect_error(dir, "not_a_store")
  end)

  it("overwritten with random bytes: not_a_store", function()
    local dir = copy_store(template)
    math.randomseed(6)
    local t = {}
    for i = 1, size do t[i] = string.char(math.random(0, 255)) end
    write_file(dir .. "/data.mdb", table.concat(t))
    expect_error(dir, "not_a_store")
  end)

  it("with both meta pages zeroed: not_a_store", function()
    local dir = copy_store(template)
    local bytes = read_file(dir .. "/data.mdb")
    write_file(dir .. "/data.mdb", string.rep("\0", 8192) .. bytes:sub(8193))
    expect_error(dir, "not_a_store")
  end)

  it("a foreign file: a text file named data.mdb", function()
    local dir = helpers.tmpdir() .. "/store"
    os.execute("mkdir -p " .. helpers.quote(dir))
    write_file(dir .. "/data.mdb", ("this is not a database\n"):rep(400))
    expect_error(dir, "not_a_store")
    -- and it is left as it was
    assert.are.equal(("this is not a database\n"):rep(400), read_file(dir .. "/data.mdb"))
  end)

  it("a foreign file: an LMDB environment that is not a chronicle store", function()
    local dir = helpers.tmpdir() .. "/store"
    os.execute("mkdir -p " .. helpers.quote(dir))
    -- mdb_load (lmdb-utils) makes a plain LMDB environment with one key in its main database
    local ok = os.execute(("printf 'VERSION=3\\nformat=print\\ntype=btree\\nHEADER=END\\n hello\\n world\\nDATA=END\\n'"
                           .. " | mdb_load %s 2>/dev/null"):format(helpers.quote(dir)))
    if not ok then pending("mdb_load (lmdb-utils) is not installed") return end
    expect_error(dir, "not_a_store")
  end)

  it("a store whose meta says format 99: unsupported_format", function()
    local dir = copy_store(template)
    local bytes = read_file(dir .. "/data.mdb")
    -- the meta database's node: key "format", then its 4-byte big-endian value 1
    local patched, n = bytes:gsub("format\0\0\0\1", "format\0\0\0\99")
    assert.is_true(n >= 1, "the format value was not found in data.mdb")
    write_file(dir .. "/data.mdb", patched)
    local message = expect_error(dir, "unsupported_format")
    assert.matches("99", message)
  end)

  it("a damaged lock.mdb is rebuilt by LMDB: the store opens with every event", function()
    local dir = copy_store(template)
    math.randomseed(7)
    local t = {}
    for i = 1, 8192 do t[i] = string.char(math.random(0, 255)) end
    write_file(dir .. "/lock.mdb", table.concat(t))
    assert.matches("^opened\nread " .. (N + 1) .. "\nverify ok", probe(dir, true))
  end)
end)
