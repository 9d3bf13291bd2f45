-- The bad-input table: misuse of every public function raises an error that
-- names the problem, and the store is exactly as it was afterwards: the same
-- head, the same stats, and the same export of every event and every
-- key-value row.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- Everything a store holds, as one string: events in order and kv rows.
local function export(store)
  local out = {}
  local function dump(v)
    if type(v) ~= "table" then return (math.type(v) or type(v)) .. ":" .. tostring(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = dump(k) .. "=" .. dump(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  for ev in store:read_all() do out[#out + 1] = dump(ev) end
  for _, space in ipairs({ "snapshots", "checkpoints", "projections", "rows" }) do
    for k, v in store:kv_scan(space) do out[#out + 1] = space .. "/" .. k .. "=" .. dump(v) end
  end
  return table.concat(out, "\n")
end

local function state(store)
  local st = store:stats()
  return { head = store:head(), events = st.events, streams = st.streams, used = st.used_bytes, export = export(store) }
end

local deep = {}
do
  local t = deep
  for _ = 1, 40 do t.next = {} t = t.next end
end
local cycle = {}
cycle.self = cycle

local Account = chronicle.aggregate {
  name = "acct", initial = function() return { n = 0 } end,
  apply = { Added = function(s) s.n = s.n + 1 end },
  commands = { add = function() return { type = "Added" } end },
}

-- { what it is, function(store) doing the bad call, words the error must contain }
local cases = {
  { "open without a directory", function() chronicle.open() end, { "open" } },
  { "open with options that are not a table", function() chronicle.open("x", "full") end, { "open" } },
  { "open with an unknown option", function(s) chronicle.open(s.path, { durabilty = "full" }) end, { "durabilty" } },
  { "open with a bad durability", function(s) chronicle.open(s.path, { durability = "fast" }) end, { "durability" } },
  { "open with a map size that is not a number", function(s) chronicle.open(s.path, { map_size = "1G" }) end, { "map_size" } },
  -- (map_size is LMDB's; a PostgreSQL store ignores it)
  helpers.backend == "lmdb" and
  { "open with a tiny map size", function(s) chronicle.open(s.path, { map_size = 10 }) end, { "map_size" } } or
  { "open with a map size that is not an integer", function(s) chronicle.open(s.path, { map_size = 1.5 }) end,
    { "map_size" } },
  { "append to an empty stream name", function(s) s:append("", { { type = "T" } }) end, { "stream" } },
  { "append to a 201-byte stream name", function(s) s:append(("s"):rep(201), { { type = "T" } }) end, { "stream" } },
  { "append to a 100 kB stream name", function(s) s:append(("s"):rep(100000), { { type = "T" } }) end, { "stream" } },
  { "append no events", function(s) s:append("a-1", {}) end, { "events" } },
  { "append an event without a type", function(s) s:append("a-1", { { data = 1 } }) end, { "type" } },
  { "append a 100 kB type", function(s) s:append("a-1", { { type = ("t"):rep(100000) } }) end, { "type" } },
  { "append a function", function(s) s:append("a-1", { { type = "T", data = { f = print } } }) end, { "data.f", "function" } },
  { "append a coroutine", function(s) s:append("a-1", { { type = "T", meta = { co = coroutine.create(print) } } }) end, { "meta.co", "thread" } },
  { "append userdata", function(s) s:append("a-1", { { type = "T", data = { io.stdout } } }) end, { "data[1]", "userdata" } },
  { "append a cycle", function(s) s:append("a-1", { { type = "T", data = cycle } }) end, { "cycle" } },
  { "append 40 levels of nesting", function(s) s:append("a-1", { { type = "T", data = deep } }) end, { "nested" } },
  { "append an infinite key", function(s) s:append("a-1", { { type = "T", data = { [math.huge] = 1 } } }) end, { "infinite" } },
  { "append a table as a key", function(s) s:append("a-1", { { type = "T", data = { [{}] = 1 } } }) end, { "key" } },
  { "append an event over max_event_size", function(s) s:append("a-1", { { type = "T", data = ("x"):rep(5 << 20) } }) end, { "max_event_size" } },
  { "append with expected -1", function(s) s:append("a-1", { { type = "T" } }, { expected = -1 }) end, { "expected" } },
  { "append with expected 1.5", function(s) s:append("a-1", { { type = "T" } }, { expected = 1.5 }) end, { "expected" } },
  { "append with an overflowing expected", function(s) s:append("a-1", { { type = "T" } }, { expected = 2^64 }) end, { "expected" } },
  { "append with expected 'maybe'", function(s) s:append("a-1", { { type = "T" } }, { expected = "maybe" }) end, { "expected" } },
  { "append with an unknown option", function(s) s:append("a-1", { { type = "T" } }, { expect = 0 }) end, { "expect" } },
  { "append a bad id", function(s) s:append("a-1", { { type = "T", id = "not-a-uuid" } }) end, { "id" } },
  { "append a schema of 0", function(s) s:append("a-1", { { type = "T", schema = 0 } }) end, { "schema" } },
  { "append a negative time", function(s) s:append("a-1", { { type = "T", time = -5 } }) end, { "time" } },
  { "append an unknown event field", function(s) s:append("a-1", { { type = "T", dta = 1 } }) end, { "dta" } },
  { "append_many nothing", function(s) s:append_many({}) end, { "append_many" } },
  { "append_many with one bad entry among good ones", function(s)
      s:append_many({ { stream = "a-1", events = { { type = "T" } } }, { stream = "", events = { { type = "T" } } } })
    end, { "append_many[2]", "stream" } },
  { "write with an unknown field", function(s) s:write({ appends = {}, putz = {} }) end, { "putz" } },
  { "write a nil value", function(s) s:write({ puts = { { "rows", "k" } } }) end, { "nil" } },
  { "write to a 100-byte space name", function(s) s:write({ puts = { { ("s"):rep(100), "k", 1 } } }) end, { "space" } },
  { "write a 1000-byte key", function(s) s:write({ puts = { { "rows", ("k"):rep(1000), 1 } } }) end, { "key" } },
  { "write a function value", function(s) s:write({ puts = { { "rows", "k", print } } }) end, { "function" } },
  { "read a stream that is not a string", function(s) s:read(42) end, { "stream" } },
  { "read from version -1", function(s) s:read("a-1", { from = -1 }) end, { "from" } },
  { "read an overflowing count", function(s) s:read("a-1", { count = 2^70 }) end, { "count" } },
  { "read with an unknown option", function(s) s:read("a-1", { form = 1 }) end, { "form" } },
  { "read_all from a negative position", function(s) s:read_all({ from = -3 }) end, { "from" } },
  { "read_all a category with a dash", function(s) s:read_all({ category = "a-1" }) end, { "category" } },
  { "read_all 65 types", function(s)
      local types = {}
      for i = 1, 65 do types[i] = "T" .. i end
      s:read_all({ types = types })
    end, { "types" } },
  { "fold without a function", function(s) s:fold("a-1", 0, "sum") end, { "function" } },
  { "fold a stream with a category", function(s) s:fold({ stream = "a-1", category = "a" }, 0, print) end, { "category" } },
  { "stream_info of a number", function(s) s:stream_info(7) end, { "string" } },
  { "streams with an unknown option", function(s) s:streams({ prefx = "a" }) end, { "prefx" } },
  { "kv_get with an empty key", function(s) s:kv_get("rows", "") end, { "key" } },
  { "kv_scan with an unknown option", function(s) s:kv_scan("rows", { limit = 3 }) end, { "limit" } },
  { "wait for a negative position", function(s) s:wait(-1, 0) end, { "position" } },
  { "verify with max_problems 0", function(s) s:verify({ max_problems = 0 }) end, { "max_problems" } },
  { "a repository of something that is not an aggregate", function(s) s:repository({ name = "x" }) end, { "aggregate" } },
  { "execute an unknown command", function(s) s:repository(Account):execute("1", "remove") end, { "remove" } },
  { "execute with an unknown option", function(s) s:repository(Account):execute("1", "add", {}, { dryrun = true }) end, { "dryrun" } },
  { "load at a negative version", function(s) s:repository(Account):load("1", { version = -2 }) end, { "version" } },
  { "a projection without handlers", function(s) s:projection({ name = "p" }) end, { "handlers" } },
  { "a projection with a bad name", function(s) s:projection({ name = "a b", handlers = { T = print } }) end, { "name" } },
  { "a handler that is not a function", function(s) s:on("T", "print") end, { "function" } },
  { "a reactor with an unknown field", function(s) s:reactor({ name = "r", handlers = { T = print }, form = {} }) end, { "form" } },
  { "a bad append inside an open read loop", function(s)
      for _ in s:read("a-1") do s:append("a-1", { { type = "" } }) end
    end, { "type" } },
  { "a bad append inside an open fold", function(s)
      s:fold("a-1", 0, function() s:append("a-1", { { data = 1 } }) end)
    end, { "type" } },
  { "use after close", function(s)
      local other = assert(chronicle.open(s.path))
      other:close()
      other:append("a-1", { { type = "T" } })
    end, { "closed" } },
}

describe("the bad-input table", function()
  after_each(helpers.cleanup)

  it("has at least 40 cases", function()
    assert.is_true(#cases >= 40)
  end)

  for i, case in ipairs(cases) do
    local what, fn, words = case[1], case[2], case[3]
    it(("%d. refuses to %s and changes nothing"):format(i, what), function()
      local store = helpers.open()
      assert(store:append("a-1", { { type = "Added", data = { n = 1 } }, { type = "Added", meta = { m = true } } }))
      assert(store:write({ puts = { { "rows", "r1", { v = 1 } } } }))
      assert(store:repository(Account):execute("2", "add"))
      local before = state(store)
      local ok, err = pcall(fn, store)
      assert.is_false(ok, "the call succeeded")
      local msg = tostring(err)
      for _, w in ipairs(words) do assert.matches(w, msg, 1, true) end
      assert.same(before, state(store))
    end)
  end
end)
