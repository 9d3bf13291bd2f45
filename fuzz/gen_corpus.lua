-- Regenerates the seed corpus in fuzz/corpus/{value,record}/ with the real library:
-- appends varied events to a fresh store, dumps its `log` database with mdb_dump
-- (lmdb-utils) and writes every record as a file of fuzz/corpus/record/ and its
-- meta and data MessagePack as files of fuzz/corpus/value/.
-- Run through fuzz/gen_corpus.sh (it sets the paths to the tree's build).
local chronicle = require "chronicle"

local root = arg[1] or "fuzz/corpus"
local dir = os.tmpname()
os.remove(dir)

local store = assert(chronicle.open(dir))
local big = {}
for i = 1, 40 do big[i] = i * 1000003 end
local deep = {}
do
  local t = deep
  for _ = 1, 31 do t.x = {}; t = t.x end
end
local values = {
  {}, { 1, 2, 3 }, { a = 1 }, { amount = 100, currency = "EUR" },
  { n = 0, neg = -1, small = -32, byte = 255, short = 65535, word = 4294967296, min = math.mininteger,
    max = math.maxinteger },
  { f = 1.5, z = -0.0, inf = math.huge, ninf = -math.huge, nan = 0 / 0, tiny = 2.2250738585072014e-308 },
  { s = "", u = "héllo wörld ✓", bin = "\0\1\2\255\254", long = string.rep("x", 300) },
  { yes = true, no = false, list = { true, false, "x", 1, 2.5 } },
  { nested = { a = { b = { c = { d = "deep" } } } } },
  { [1] = "a", [3] = "c" }, { [-1] = "neg", [0] = "zero", [1.5] = "float key", [true] = "bool key" },
  big, deep, { items = { { sku = "A-1", qty = 2 }, { sku = "B-7", qty = 1 } }, total = 1234 },
  { key = string.rep("k", 40000 // 1000) }, { ["with space"] = 1, ["\255bin key"] = 2 },
}
for i, data in ipairs(values) do
  local meta = (i % 3 == 0) and { correlation = "c-" .. i, causation = "x-" .. i, user = { id = i } } or nil
  assert(store:append(("acct-%d"):format(i % 4), {
    { type = ("T%d"):format(i), data = data, meta = meta, schema = 1 + i % 3 },
  }))
end
-- a few more shapes: a long stream name and type, empty data, explicit id
assert(store:append(string.rep("s", 200), { { type = string.rep("t", 200) } }))
assert(store:append("x", { { type = "Empty", data = nil, id = "01234567-89ab-7def-8123-456789abcdef" } }))
store:close()

local function hex2bin(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
local function write(path, bytes)
  local f = assert(io.open(path, "wb")); f:write(bytes); f:close()
end

local p = assert(io.popen("mdb_dump -s log '" .. dir .. "'"))
local lines = {}
for line in p:lines() do lines[#lines + 1] = line end
p:close()
local i = 1
while lines[i] ~= "HEADER=END" do i = i + 1 end
i = i + 1
local n, seen, nvalues = 0, {}, 0
while lines[i] and lines[i] ~= "DATA=END" do
  local rec = hex2bin(lines[i + 1]:sub(2))
  i = i + 2
  n = n + 1
  write(("%s/record/seed-%03d"):format(root, n), rec)
  local slen, tlen, mlen = string.unpack(">I2I2", rec, 11), string.unpack(">I2", rec, 13), string.unpack(">I4", rec, 49)
  local meta_at = 53 + slen + tlen
  for _, piece in ipairs({ rec:sub(meta_at, meta_at + mlen - 1), rec:sub(meta_at + mlen) }) do
    if not seen[piece] then
      seen[piece] = true
      nvalues = nvalues + 1
      write(("%s/value/seed-%03d"):format(root, nvalues), piece)
    end
  end
end
os.execute("rm -rf '" .. dir .. "'")
print(("gen_corpus: %d records, %d distinct values"):format(n, nvalues))
