-- The chronicle command, run as a user runs it: `lua5.4 bin/chronicle ...` in a subprocess,
-- against real stores in temporary directories, with its standard output, standard error and
-- exit status captured. Other processes append while it backs up and follows.
local helpers = require "helpers"
local chronicle = require "chronicle"
local cjson = require "cjson"
local json = require "chronicle.cli.json"

local BIN = helpers.root .. "/bin/chronicle"
local SUPPORT = helpers.root .. "/spec/support/cli/"
local q = helpers.quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function sleep(seconds) os.execute("sleep " .. seconds) end

-- Polls `check()` every 0.05 s for up to `seconds`; returns its first truthy result.
local function eventually(seconds, check)
  local deadline = os.time() + seconds
  repeat
    local v = check()
    if v then return v end
    sleep(0.05)
  until os.time() > deadline
  return check()
end

-- Runs the chronicle command with `args`; `opts.stdin` is a file for its standard input.
-- @return { out = stdout, err = stderr, code = exit status }
local function run(args, opts)
  opts = opts or {}
  local work = helpers.tmpdir()
  local cmd = helpers.lua_command(BIN, table.unpack(args))
  cmd = cmd .. " < " .. q(opts.stdin or "/dev/null") .. " > " .. q(work .. "/out") .. " 2> " .. q(work .. "/err")
  local _, how, code = os.execute(cmd)
  return { out = read_file(work .. "/out"), err = read_file(work .. "/err"),
           code = how == "exit" and code or 128 + code }
end

-- Checks a failed run: exit status `code` and exactly one line on standard error matching `pattern`.
local function assert_fails(r, code, pattern)
  assert.equals(code, r.code, "exit status; stderr: " .. r.err)
  assert.equals(1, #lines(r.err), "one line on stderr, got: " .. r.err)
  assert.matches(pattern, r.err)
end

-- Starts a command in the background. Returns paths: out, err, rc (written when it ends), pid.
local function start(cmd)
  local work = helpers.tmpdir()
  local p = { out = work .. "/out", err = work .. "/err", rc = work .. "/rc", pid = work .. "/pid" }
  os.execute(("sh -c %s > /dev/null 2>&1 &"):format(q(("%s < /dev/null > %s 2> %s & echo $! > %s; wait $!; echo $? > %s")
    :format(cmd, q(p.out), q(p.err), q(p.pid), q(p.rc)))))
  return p
end

local function exit_status(p, seconds)
  local rc = eventually(seconds or 10, function()
    local text = read_file(p.rc)
    return text and text:match("%d+")
  end)
  return rc and tonumber(rc)
end

-- A store with a few events in two categories; returns its directory (the store is closed).
local function small_store()
  local store, dir = helpers.open()
  assert(store:append("account-1", { { type = "Opened", data = { owner = "Ada" } },
                                     { type = "Deposited", data = { amount = 100 } } }))
  assert(store:append("account-2", { { type = "Opened", data = { owner = "Bob" } } }))
  assert(store:append("transfer-1", { { type = "Started", data = { from = "1", to = "2", amount = 30 } } }))
  assert(store:append("account-1", { { type = "Withdrawn", data = { amount = 30 } } }))
  store:close()
  return dir
end

local function deep(n)
  local t = { leaf = true }
  for i = 1, n do t = { level = i, inner = t } end
  return t
end

-- Every kind of value a store holds, and then some: the export/import round trip must keep them all.
local function tricky_store()
  local store, dir = helpers.open()
  local many = {}
  for i = 1, 16 do many["key" .. i] = i * 1.5 end
  assert(store:append("values-1", {
    { type = "Scalars", data = {
      int = 42, neg = -7, float = 0.1, one = 1.0, negzero = -0.0, max = math.maxinteger, min = math.mininteger,
      beyond = 9007199254740993, edge = 9007199254740992, fbig = 2.0 ^ 60, huge = 1e300, tiny = 5e-324,
      nan = 0 / 0, inf = 1 / 0, ninf = -1 / 0, yes = true, no = false } },
    { type = "Strings", data = {
      utf8 = "café ☕ \u{2028}", ctrl = "tab\tnl\ncr\rquote\"back\\\1\127", bin = "\0\1\255\254",
      empty = "", dollar = "$float", ["key with spaces"] = "v" } },
    { type = "Tables", data = {
      empty = {}, nested = { { {} } }, deep = deep(25), array = { 1, "two", 3.0, {} }, sparse = { [1] = "a", [3] = "c" },
      mixed = { 1, 2, x = "y" }, zero = { [0] = "zero", [1] = "one" },
      keys = { [true] = "t", [false] = "f", [1.5] = "float", [2.0 ^ 63] = "bigfloat", [-1] = "neg", ["\255"] = "binkey" },
      lookalike = { ["$float"] = "1.0" }, dollars = { ["$a"] = 1, b = 2 }, many = many } },
    { type = "Scalar", data = "just a string" },
    { type = "Bare" },
    { type = "Explicit", id = helpers.uuid(7), time = 1234567890123456789, schema = 3,
      meta = { correlation = "c-1", bin = "\255", list = { 1, 2 } }, data = 12.5 },
  }))
  assert(store:append("café-1", { { type = "Unicode", data = { ["ключ"] = "значение" } } }))
  assert(store:append("raw-\255\1", { { type = "Binary\254", data = false, time = 5 } }))
  assert(store:append("values-1", { { type = "Last", data = { 1, 2, 3 }, meta = {} } }))
  store:close()
  return dir
end

local function all_events(dir)
  local store = assert(chronicle.open(dir, { readonly = true }))
  local out = helpers.collect(store:read_all())
  store:close()
  return out
end

-- What only a store directory has (LMDB's copy, its files to damage): pending on PostgreSQL.
local lmdb_it = helpers.backend == "lmdb" and it or function(name) pending(name .. " (a store directory only)") end

describe("the chronicle command", function()
  after_each(helpers.cleanup)

  describe("on its command line", function()
    it("has --help for itself and every subcommand, exiting 0", function()
      local r = run({ "--help" })
      assert.equals(0, r.code)
      assert.matches("Usage: chronicle", r.out)
      for _, cmd in ipairs({ "repl", "stats", "streams", "show", "tail", "export", "import", "backup", "verify",
                             "project", "rebuild", "dead-letters" }) do
        assert.matches("\n   " .. cmd .. " ", r.out, 1, true)
        local h = run({ cmd, "--help" })
        assert.equals(0, h.code, cmd .. " --help")
        assert.matches("Usage: chronicle " .. cmd, h.out, 1, true)
        assert.equals("", h.err)
      end
    end)

    it("says in export's help that it carries events only, so handlers and reactors run again, and points to backup", function()
      local h = run({ "export", "--help" })
      local text = h.out:gsub("%s+", " ")
      assert.matches("events only", text, 1, true)
      assert.matches("every handler and reactor again", text, 1, true)
      assert.matches("chronicle backup", text, 1, true)
    end)

    it("keeps the test-only options of tail out of its help", function()
      local h = run({ "tail", "--help" })
      assert.matches("--follow", h.out, 1, true)
      assert.is_nil(h.out:find("--max-events", 1, true))
      assert.is_nil(h.out:find("--timeout", 1, true))
    end)

    it("prints its version", function()
      local r = run({ "--version" })
      assert.equals(0, r.code)
      assert.equals(chronicle._VERSION .. "\n", r.out)
    end)

    it("refuses a bad command line with status 2 and one line on stderr", function()
      assert_fails(run({}), 2, "^chronicle: a command is required")
      assert_fails(run({ "frobnicate" }), 2, "^chronicle: unknown command 'frobnicate'")
      assert_fails(run({ "show" }), 2, "^chronicle show: missing argument 'dir'")
      assert_fails(run({ "tail", "x", "-n", "many" }), 2, "^chronicle tail: %-n must be an integer >= 0, got 'many'")
      assert_fails(run({ "stats", "x", "--bogus" }), 2, "^chronicle stats: unknown option '%-%-bogus'")
    end)

    it("fails with one line, and creates nothing, when a reading command finds no store", function()
      local dir = helpers.tmpdir() .. "/missing"
      for _, args in ipairs({ { "stats", dir }, { "streams", dir }, { "show", dir, "s-1" }, { "tail", dir },
                              { "export", dir }, { "verify", dir }, { "backup", dir, dir .. "-copy" },
                              { "project", dir }, { "dead-letters", dir }, { "dead-letters", dir, "discard", "--all" } }) do
        local r = run(args)
        assert_fails(r, 1, "^chronicle " .. args[1]:gsub("%p", "%%%0") .. ": no store at " .. dir:gsub("%p", "%%%0") .. "\n$")
        assert.equals("", r.out)
      end
      assert.is_false(helpers.exists(dir))
    end)
  end)

  describe("stats", function()
    it("reports counts, the head and sizes, aligned", function()
      local dir = small_store()
      local r = run({ "stats", dir })
      assert.equals(0, r.code, r.err)
      assert.equals("", r.err)
      assert.matches("\nevents       5\n", r.out, 1, true)
      assert.matches("\nstreams      3\n", r.out, 1, true)
      assert.matches("\nhead         5\n", r.out, 1, true)
      assert.matches("^path         " .. dir:gsub("%p", "%%%0") .. "\n", r.out)
      assert.matches("\nfirst event  %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ\n", r.out)
    end)

    it("writes one JSON object with --json", function()
      local dir = small_store()
      local r = run({ "stats", dir, "--json" })
      assert.equals(0, r.code, r.err)
      local s = cjson.decode(r.out)
      assert.equals(5, s.events)
      assert.equals(3, s.streams)
      assert.equals(5, s.head)
      assert.equals(dir, s.path)
      assert.matches("^{\"path\":", r.out)
    end)
  end)

  describe("streams", function()
    it("lists streams in name order as a table", function()
      local dir = small_store()
      local r = run({ "streams", dir })
      assert.equals(0, r.code, r.err)
      local l = lines(r.out)
      assert.equals(4, #l)
      assert.matches("^stream%s+version%s+events%s+first%s+last%s+updated$", l[1])
      assert.matches("^account%-1%s+2%s+3%s+1%s+5%s+%d%d%d%d%-", l[2])
      assert.matches("^account%-2%s+0%s+1%s+3%s+3%s", l[3])
      assert.matches("^transfer%-1%s+0%s+1%s+4%s+4%s", l[4])
      -- columns line up: every row's date starts where the header's "updated" does
      local col = l[1]:find("updated", 1, true)
      for i = 2, 4 do assert.equals(col, l[i]:find("%d%d%d%d%-%d%d%-")) end
    end)

    it("filters by --prefix and writes JSON Lines with --json", function()
      local dir = small_store()
      local r = run({ "streams", dir, "--prefix", "account-", "--json" })
      assert.equals(0, r.code, r.err)
      local l = lines(r.out)
      assert.equals(2, #l)
      local first = cjson.decode(l[1])
      assert.equals("account-1", first.stream)
      assert.equals("account", first.category)
      assert.equals(2, first.version)
      assert.equals(3, first.count)
      assert.equals("account-2", cjson.decode(l[2]).stream)
      assert.equals("no streams\n", run({ "streams", dir, "--prefix", "zzz" }).out)
    end)
  end)

  describe("show", function()
    it("prints a stream's events as aligned lines", function()
      local dir = small_store()
      local r = run({ "show", dir, "account-1" })
      assert.equals(0, r.code, r.err)
      local l = lines(r.out)
      assert.equals(3, #l)
      assert.matches("^1  %S+Z  account%-1@0  Opened     { owner = \"Ada\" }$", l[1])
      assert.matches("^2  %S+Z  account%-1@1  Deposited  { amount = 100 }$", l[2])
      assert.matches("^5  %S+Z  account%-1@2  Withdrawn  { amount = 30 }$", l[3])
    end)

    it("takes --from, --count and --backward, and --meta", function()
      local dir = small_store()
      local r = run({ "show", dir, "account-1", "--from", "1", "--count", "1" })
      assert.equals(1, #lines(r.out))
      assert.matches("account%-1@1  Deposited", r.out)
      r = run({ "show", dir, "account-1", "--backward", "--count", "2" })
      local l = lines(r.out)
      assert.matches("account%-1@2", l[1])
      assert.matches("account%-1@1", l[2])
    end)

    it("shows any value readably: floats keep their point, bytes that are not text are escaped", function()
      local dir = tricky_store()
      local r = run({ "show", dir, "values-1", "--from", "5", "--count", "1", "--meta" })
      assert.equals(0, r.code, r.err)
      assert.matches('^6  2009%-02%-13T23:31:30%.123Z  values%-1@5  Explicit  12%.5  ' ..
                     'meta { bin = "\\xFF", correlation = "c%-1", list = { 1, 2 } }\n$', r.out)
      r = run({ "show", dir, "raw-\255\1" })
      assert.matches('^8  1970%-01%-01T00:00:00%.000Z  "raw%-\\xFF\\x01"@0  "Binary\\xFE"  false\n$', r.out)
      r = run({ "show", dir, "values-1", "--count", "1" })
      for _, shown in ipairs({ "one = 1.0", "negzero = -0.0", "float = 0.1", "nan = nan", "ninf = -inf",
                               "max = 9223372036854775807", "fbig = 1.152921504606847e+18", "no = false" }) do
        assert.matches(shown, r.out, 1, true)
      end
    end)

    it("writes the export's JSON Lines with --json", function()
      local dir = small_store()
      local r = run({ "show", dir, "account-2", "--json" })
      assert.equals(0, r.code, r.err)
      local ev = cjson.decode(r.out)
      assert.equals(3, ev.position)
      assert.equals("account-2", ev.stream)
      assert.equals("Opened", ev.type)
      assert.same({ owner = "Bob" }, ev.data)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d%d%d%dZ$", ev.time)
    end)

    it("fails with one line for a stream that does not exist", function()
      local dir = small_store()
      assert_fails(run({ "show", dir, "nope-1" }), 1, "^chronicle show: stream 'nope%-1' does not exist\n$")
    end)
  end)

  describe("tail", function()
    it("prints the newest events, oldest first", function()
      local dir = small_store()
      local r = run({ "tail", dir, "-n", "2" })
      assert.equals(0, r.code, r.err)
      local l = lines(r.out)
      assert.equals(2, #l)
      assert.matches("^4  %S+  transfer%-1@0  Started    { amount = 30, from = \"1\", to = \"2\" }$", l[1])
      assert.matches("^5  %S+  account%-1@2   Withdrawn  { amount = 30 }$", l[2])
      assert.equals(5, #lines(run({ "tail", dir }).out))
      assert.equals("", run({ "tail", dir, "-n", "0" }).out)
    end)

    it("filters by --category and --type", function()
      local dir = small_store()
      local r = run({ "tail", dir, "--category", "account", "--type", "Opened", "--json" })
      local l = lines(r.out)
      assert.equals(2, #l)
      assert.equals(1, cjson.decode(l[1]).position)
      assert.equals(3, cjson.decode(l[2]).position)
    end)

    it("--follow prints what another process appends", function()
      local dir = small_store()
      local tail = start(helpers.lua_command(BIN, "tail", dir, "-n", "0", "--follow", "--json",
                                             "--max-events", "1", "--timeout", "20"))
      -- the appender keeps appending until the follower has printed something
      local appender = start(helpers.lua_command(SUPPORT .. "appender.lua", dir, "ping-1", "200", tail.out, "0.1"))
      assert.equals(0, exit_status(tail, 25), "tail --follow: " .. tostring(read_file(tail.err)))
      assert.equals(0, exit_status(appender, 10), tostring(read_file(appender.err)))
      local l = lines(read_file(tail.out))
      assert.equals(1, #l)
      local ev = cjson.decode(l[1])
      assert.equals("ping-1", ev.stream)
      assert.equals("Ping", ev.type)
      assert.is_true(ev.position > 5)
      assert.equals("", read_file(tail.err))
    end)

    it("--follow ends with status 0 on SIGINT", function()
      local dir = small_store()
      local tail = start(helpers.lua_command(BIN, "tail", dir, "-n", "1", "--follow"))
      assert.truthy(eventually(10, function() return (read_file(tail.out) or "") ~= "" end), "tail printed nothing")
      local pid = assert(read_file(tail.pid):match("%d+"))
      os.execute("kill -INT " .. pid)
      assert.equals(0, exit_status(tail, 10))
      assert.matches("^5  .*Withdrawn", read_file(tail.out))
      assert.equals("", read_file(tail.err))
    end)
  end)

  describe("export and import", function()
    it("round-trip every storable value: export, import into an empty store, export again gives the same bytes", function()
      local src = tricky_store()
      local work = helpers.tmpdir()
      local first, second = work .. "/first.jsonl", work .. "/second.jsonl"

      local r = run({ "export", src, "--output", first })
      assert.equals(0, r.code, r.err)
      assert.equals("exported 9 events (positions 1 to 9) to " .. first .. "\n", r.out)
      local stdout_export = run({ "export", src })
      assert.equals(read_file(first), stdout_export.out)
      assert.equals("", stdout_export.err)

      local dst = work .. "/copy"
      r = run({ "import", dst, first })
      assert.equals(0, r.code, r.err)
      assert.equals("imported " .. first .. ": 9 events read, 9 written, 0 already in the store\n", r.out)

      r = run({ "export", dst, "--output", second })
      assert.equals(0, r.code, r.err)
      assert.equals(read_file(first), read_file(second))

      -- and the values themselves, integer/float, NaN and -0.0 included
      local a, b = all_events(src), all_events(dst)
      assert.equals(#a, #b)
      for i = 1, #a do
        for _, field in ipairs({ "position", "stream", "version", "type", "time", "id", "schema", "meta", "data" }) do
          local ok, where = helpers.identical(a[i][field], b[i][field], field)
          assert.is_true(ok, "event " .. i .. ": " .. tostring(where))
        end
      end
    end)

    it("writes nothing when the same file is imported again, from a file or standard input", function()
      local src = tricky_store()
      local work = helpers.tmpdir()
      local file = work .. "/events.jsonl"
      assert.equals(0, run({ "export", src, "--output", file }).code)
      local dst = work .. "/copy"
      assert.equals(0, run({ "import", dst, file }).code)
      local before = read_file(dst .. "/data.mdb")

      local r = run({ "import", dst, file })
      assert.equals(0, r.code, r.err)
      assert.equals("imported " .. file .. ": 9 events read, 0 written, 9 already in the store\n", r.out)
      r = run({ "import", dst, "-" }, { stdin = file })
      assert.equals(0, r.code, r.err)
      assert.equals("imported standard input: 9 events read, 0 written, 9 already in the store\n", r.out)
      assert.equals(#before, #read_file(dst .. "/data.mdb"))
      assert.equals(9, #all_events(dst))
      assert.equals(read_file(file), run({ "export", dst }).out)
    end)

    it("imports only what is missing from an overlapping file", function()
      local src = small_store()
      local work = helpers.tmpdir()
      local part, whole = work .. "/part.jsonl", work .. "/whole.jsonl"
      assert.equals(0, run({ "export", src, "--to", "2", "--output", part }).code)
      assert.equals(0, run({ "export", src, "--output", whole }).code)
      local dst = work .. "/copy"
      assert.matches("2 written, 0 already", run({ "import", dst, part }).out)
      assert.matches("3 written, 2 already", run({ "import", dst, whole }).out)
      assert.equals(read_file(whole), run({ "export", dst }).out)
    end)

    it("counts truthfully when two imports of the same file run at the same time", function()
      local work = helpers.tmpdir()
      local file = work .. "/many.jsonl"
      local f = assert(io.open(file, "wb"))
      local n = 20000
      for i = 1, n do
        f:write(string.format('{"stream":"item-%d","type":"Counted","id":"%s","data":%d}\n', i % 97,
                              helpers.uuid(i), i))
      end
      f:close()
      local dst = work .. "/store"
      assert(chronicle.open(dst)):close()
      local a = start("timeout 120 " .. helpers.lua_command(BIN, "import", dst, file))
      local b = start("timeout 120 " .. helpers.lua_command(BIN, "import", dst, file))
      local ca, cb = exit_status(a, 150), exit_status(b, 150)
      assert.equals(0, ca, read_file(a.err))
      assert.equals(0, cb, read_file(b.err))
      local total_written = 0
      for _, p in ipairs({ a, b }) do
        local out = read_file(p.out):gsub("(%d),(%d)", "%1%2")
        local r, w, s = out:match("(%d+) events read, (%d+) written, (%d+) already in the store")
        assert.equals(n, tonumber(r), out)
        assert.equals(n, tonumber(w) + tonumber(s), read_file(p.out))
        total_written = total_written + tonumber(w)
      end
      assert.equals(n, total_written, "the two imports claim to have written more events than the store holds")
      assert.equals(n, #all_events(dst))
    end)

    it("names the input line of an event the store refuses, without chronicle's own paths", function()
      local work = helpers.tmpdir()
      local file = work .. "/bad.jsonl"
      helpers.write_file(file, '{"stream":"a-1","type":"T"}\n\n{"stream":"a-1","type":"T","id":"nope"}\n')
      local r = run({ "import", work .. "/store", file })
      assert_fails(r, 1, "^chronicle import: line 3: id must be a UUID string")
      assert.is_nil(r.err:find(".lua:", 1, true), r.err)
      assert.is_nil(r.err:find("append_many", 1, true), r.err)
      helpers.write_file(file, '{"stream":"a-1","type":"T"}\n{"stream":"a-2","type":"' .. ("x"):rep(300) .. '"}\n')
      r = run({ "import", work .. "/store2", file })
      assert_fails(r, 1, "^chronicle import: line 2: type must be a string of 1 to %d+ bytes")
    end)

    it("names the input line of an event whose id is stored as a different event, in a batch with new events", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      local file = work .. "/e.jsonl"
      local lines_out = lines(run({ "export", dir }).out)
      lines_out[3] = lines_out[3]:gsub('"owner":"Bob"', '"owner":"Eve"')
      table.insert(lines_out, 1, '{"stream":"new-1","type":"T"}')
      helpers.write_file(file, table.concat(lines_out, "\n") .. "\n")
      local r = run({ "import", dir, file })
      assert_fails(r, 1, "^chronicle import: line 4: event id %S+ is already stored at position 3 as a different event: its data differs")
    end)

    it("exports a range of positions", function()
      local dir = small_store()
      local r = run({ "export", dir, "--from", "2", "--to", "3" })
      local l = lines(r.out)
      assert.equals(2, #l)
      assert.equals(2, cjson.decode(l[1]).position)
      assert.equals(3, cjson.decode(l[2]).position)
      assert.equals("", run({ "export", dir, "--from", "9" }).out)
    end)

    it("stops at a bad line with its number, keeping what was written before it", function()
      local work = helpers.tmpdir()
      local file = work .. "/bad.jsonl"
      helpers.write_file(file, '{"stream":"a-1","type":"T","data":{"$int":"12"}}\n\n' ..
                               '{"stream":"a-1","type":"T","data":{"$float":"one"}}\n')
      local r = run({ "import", work .. "/store", file })
      assert_fails(r, 1, "^chronicle import: line 3: data: %$float needs a decimal number")
      assert.equals(1, #all_events(work .. "/store"))
      helpers.write_file(file, "not json\n")
      assert_fails(run({ "import", work .. "/store", file }), 1, "^chronicle import: line 1: expected value")
      assert_fails(run({ "import", work .. "/store", work .. "/nope.jsonl" }), 1,
                   "^chronicle import: cannot read .*nope%.jsonl")
    end)

    it("refuses an event whose id is taken by a different event", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      local file = work .. "/e.jsonl"
      helpers.write_file(file, run({ "export", dir, "--to", "1" }).out:gsub('"owner":"Ada"', '"owner":"Eve"'))
      local r = run({ "import", dir, file })
      assert_fails(r, 1, "^chronicle import: line 1: event id %S+ is already stored at position 1 as a different event")
    end)
  end)

  describe("the JSON of export", function()
    it("tags what JSON cannot say and writes maps with sorted keys", function()
      assert.equals("42", json.encode(42))
      assert.equals('{"$int":"9007199254740993"}', json.encode(9007199254740993))
      assert.equals('{"$float":"1.0"}', json.encode(1.0))
      assert.equals('{"$float":"-0.0"}', json.encode(-0.0))
      assert.equals('{"$float":"nan"}', json.encode(0 / 0))
      assert.equals('{"$float":"-inf"}', json.encode(-1 / 0))
      assert.equals("0.1", json.encode(0.1))
      assert.equals('{"$bin":"AP8="}', json.encode("\0\255"))
      assert.equals('"café\\n"', json.encode("café\n"))
      assert.equals("{}", json.encode({}))
      assert.equals("[1,[2],{}]", json.encode({ 1, { 2 }, {} }))
      assert.equals('{"a":1,"b":true}', json.encode({ b = true, a = 1 }))
      assert.equals('{"$map":[[false,0],[1,"x"],[3,"y"],["k",{"$float":"2.0"}]]}',
                    json.encode({ [1] = "x", [3] = "y", k = 2.0, [false] = 0 }))
      assert.equals('{"$map":[["$float","1.0"]]}', json.encode({ ["$float"] = "1.0" }))
    end)

    it("reads back exactly what it wrote, and refuses numbers it cannot hold exactly", function()
      for _, v in ipairs({ 1, 1.0, -0.0, 2 ^ 53, math.maxinteger, math.mininteger, 0.1, "\0\255", { 1, 2 },
                           { [2] = 1 }, { a = { {} } }, { [true] = 1.5 } }) do
        local back = assert(json.decode(json.encode(v)))
        assert.is_true(helpers.identical(v, back), json.encode(v))
      end
      local nan = json.decode('{"$float":"nan"}')
      assert.is_true(nan ~= nan)
      assert.equals("integer", math.type(json.decode("3")))
      assert.equals("float", math.type(json.decode("3.5")))
      assert.is_nil(json.decode("9007199254740994"))
      assert.matches("beyond 2%^53", select(2, json.decode("9007199254740994")))
      assert.matches("unknown tag %$nope", select(2, json.decode('{"$nope":1}')))
    end)
  end)

  describe("backup", function()
    lmdb_it("copies a store while another process appends, and the copy opens and verifies", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      local stop = work .. "/stop"
      local appender = start(helpers.lua_command(SUPPORT .. "appender.lua", dir, "busy-1", "100000", stop))
      -- let the appender get going
      assert.truthy(eventually(10, function()
        local s = assert(chronicle.open(dir, { readonly = true }))
        local head = s:head()
        s:close()
        return head > 50
      end), "the appender wrote nothing")
      local r = run({ "backup", dir, work .. "/copy" })
      helpers.write_file(stop, "stop")
      assert.equals(0, exit_status(appender, 20), tostring(read_file(appender.err)))
      assert.equals(0, r.code, r.err)
      assert.equals("", r.err)
      assert.matches("^backed up [%d,]+ events in 4 streams to " .. (work .. "/copy"):gsub("%p", "%%%0") ..
                     " %(.*%); the copy verifies: ok\n$", r.out)
      local appended = tonumber(read_file(appender.out):match("appended (%d+)"))

      local copy = assert(chronicle.open(work .. "/copy", { readonly = true }))
      local check = copy:verify()
      assert.is_true(check.ok)
      local head = copy:head()
      -- a snapshot: some of the appends, gap-free up to its head
      assert.is_true(head > 50 and head <= 5 + appended, "copy head " .. head .. ", appended " .. appended)
      local n = 0
      for ev in copy:read_all() do n = n + 1; assert.equals(n, ev.position) end
      assert.equals(head, n)
      copy:close()
    end)

    lmdb_it("refuses a destination that already holds a store", function()
      local dir = small_store()
      local dest = helpers.tmpdir() .. "/copy"
      assert.equals(0, run({ "backup", dir, dest }).code)
      assert_fails(run({ "backup", dir, dest }), 1, "^chronicle backup: .*already holds a store")
    end)
  end)

  describe("verify", function()
    it("passes a sound store", function()
      local dir = small_store()
      local r = run({ "verify", dir })
      assert.equals(0, r.code, r.err)
      assert.equals("ok: 5 events in 3 streams; every record checks and the indexes agree\n", r.out)
      local j = cjson.decode(run({ "verify", dir, "--json" }).out)
      assert.is_true(j.ok)
      assert.equals(5, j.events)
    end)

    -- Builds a store whose category index or records are then damaged on purpose.
    local function damaged_store(pattern, offset, byte)
      local store, dir = helpers.open()
      for i = 1, 5 do
        assert(store:append("ledger-7", { { type = "Booked", data = { n = i, note = "CHECKSUM-TARGET-" .. i } } }))
      end
      assert(store:append("other-1", { { type = "Noted" } }))
      store:close()
      local hex = pattern:gsub(".", function(c) return string.format("%02x", c:byte()) end)
      local out = helpers.capture(helpers.lua_command(SUPPORT .. "damage.lua", dir, hex, tostring(offset), byte))
      assert.is_true(tonumber(out) >= 1, "the pattern was not found in data.mdb")
      return dir
    end

    lmdb_it("reports a damaged index and exits non-zero", function()
      -- category index keys are <length byte><category><position, 8 bytes BE>: rename the category
      local dir = damaged_store("\6ledger\0\0\0\0\0\0\0", 6, "71")
      local r = run({ "verify", dir })
      assert_fails(r, 1, "^chronicle verify: .* has 5 problems\n$")
      local l = lines(r.out)
      assert.equals(5, #l)
      for i = 1, 5 do assert.equals("problem  position " .. i .. ": missing from the category index", l[i]) end
      local j = cjson.decode(run({ "verify", dir, "--json", "--max-problems", "2" }).out)
      assert.is_false(j.ok)
      assert.equals(5, j.problem_count)
      assert.equals(2, #j.problems)
    end)

    lmdb_it("reports a record whose bytes changed (checksum) and exits non-zero", function()
      local dir = damaged_store("CHECKSUM-TARGET-3", 0, "63")
      local r = run({ "verify", dir })
      assert_fails(r, 1, "^chronicle verify: .* has 1 problem\n$")
      assert.equals("problem  position 3: record checksum mismatch\n", r.out)
    end)
  end)

  describe("repl", function()
    it("evaluates what it reads on standard input, like lua5.4, with the store and helpers bound", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      local input = work .. "/input.lua"
      helpers.write_file(input, table.concat({
        "store:head()",
        "1 + 1, 'two'",
        "for i = 1, 2 do",
        "  print('line', i)",
        "end",
        "error('boom')",
        "t = { b = 2, a = { 1, 2.0 }, ['x y'] = true }",
        "t",
        "nosuch.field",
        "streams('account-')",
        "show('account-1', { count = 2 })",
        "tail(1)",
        "Account = chronicle.aggregate { name = 'account', initial = { balance = 0 }, apply = {",
        "  Opened = function(s) end,",
        "  Deposited = function(s, e) s.balance = s.balance + e.data.amount end,",
        "  Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end } }",
        "state(Account, '1')",
        "state(Account, '1', 1)",
        "_.balance",
        "",
      }, "\n"))
      local r = run({ "repl", dir }, { stdin = input })
      assert.equals(0, r.code, r.err)
      local expected = table.concat({
        "> 5",
        "> 2\t\"two\"",
        "> >> >> line\t1",
        "line\t2",
        "> > > { a = { 1, 2.0 }, b = 2, [\"x y\"] = true }",
        "> > stream     version  events  first  last  updated",
      }, "\n")
      assert.equals(expected, r.out:sub(1, #expected))
      assert.matches("\naccount%-1        2       3      1     5  %S+Z\naccount%-2        0       1      3     3  %S+Z\n", r.out)
      assert.matches("\n> 1  %S+Z  account%-1@0  Opened     { owner = \"Ada\" }\n2  %S+Z  account%-1@1  Deposited  { amount = 100 }\n", r.out)
      assert.matches("\n> 5  %S+Z  account%-1@2  Withdrawn  { amount = 30 }\n", r.out)
      assert.matches("\n> >> >> >> > { balance = 70 }\t2\n> { balance = 100 }\t1\n> 100\n> $", r.out)
      assert.equals("stdin:1: boom\nstdin:1: attempt to index a nil value (global 'nosuch')\n", r.err)
    end)

    it("prints event times as ISO 8601 UTC times, the integer nanoseconds still a keystroke away", function()
      local store, dir = helpers.open()
      local t = 1795000000123456789
      assert(store:append("a-1", { { type = "T", time = t, data = { x = 1 } } }))
      store:close()
      local work = helpers.tmpdir()
      helpers.write_file(work .. "/in", "tail(1)\ntail(1)[1]\ntail(1)[1].time\nmath.type(tail(1)[1].time)\n")
      local r = run({ "repl", dir }, { stdin = work .. "/in" })
      assert.equals(0, r.code, r.err)
      local iso = require("chronicle.cli.time").iso(t)
      assert.equals("2026-11-18T11:06:40.123456789Z", iso)
      assert.matches("> 1  2026-11-18T11:06:40.123456Z  a-1@0  T  { x = 1 }\n", r.out, 1, true)
      assert.matches("  time = 1795000000123456789 --[[2026-11-18T11:06:40.123456789Z]],\n", r.out, 1, true)
      assert.matches("\n> 1795000000123456789\n> \"integer\"\n", r.out, 1, true)
    end)

    it("says view('nope') names no projection instead of showing an empty one", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      helpers.write_file(work .. "/in", "view('nope')\nview('nope', 'k')\n1\n")
      local r = run({ "repl", dir }, { stdin = work .. "/in" })
      assert.equals(0, r.code, r.err)
      assert.equals("> > > 1\n> ", r.out)
      assert.equals("no projection 'nope' in this store\nno projection 'nope' in this store\n", r.err)
    end)

    it("opens an existing store read-only with --readonly", function()
      local dir = small_store()
      local work = helpers.tmpdir()
      helpers.write_file(work .. "/in", "select(2, store:append('x-1', {{ type = 'T' }})).code\n")
      local r = run({ "repl", dir, "--readonly" }, { stdin = work .. "/in" })
      assert.equals(0, r.code, r.err)
      assert.equals("> \"readonly\"\n> ", r.out)
    end)

    it("runs in a terminal with colours, completion and continuation lines (through tmux)", function()
      if os.execute("command -v tmux > /dev/null 2>&1") ~= true then
        pending("tmux is not installed")
        return
      end
      local dir = small_store()
      local work = helpers.tmpdir()
      local socket = "chronicle-spec-" .. work:match("[^.]+$")
      local tmux = "tmux -L " .. q(socket) .. " -f /dev/null "
      local cmd = "env HOME=" .. q(work) .. " TERM=xterm-256color COLUMNS=100 " ..
                  helpers.lua_command(BIN, "repl", dir) .. " 2>&1; echo EXITED $?; sleep 30"
      local started = os.execute(tmux .. "new-session -d -s spec -x 100 -y 40 " .. q(cmd) .. " > /dev/null 2>&1")
      if started ~= true then
        pending("tmux could not start a session")
        return
      end
      local function screen(escapes)
        return helpers.capture(tmux .. "capture-pane -p " .. (escapes and "-e " or "") .. "-t spec 2>/dev/null")
      end
      local function keys(...)
        local args = {}
        for i, k in ipairs({ ... }) do args[i] = q(k) end
        os.execute(tmux .. "send-keys -t spec " .. table.concat(args, " ") .. " > /dev/null 2>&1")
      end
      local function wait_for(pattern)
        return eventually(10, function() return screen():find(pattern) ~= nil end)
      end
      local ok, err = pcall(function()
        assert.truthy(wait_for("helpers: streams%(%)"), "no banner:\n" .. screen())
        keys("store:hea", "Tab")
        assert.truthy(wait_for("> store:head"), "no completion:\n" .. screen())
        keys("()", "Enter")
        assert.truthy(wait_for("\n5\n"), "no result:\n" .. screen())
        assert.truthy(screen(true):find("\27[35m5", 1, true), "the number is not coloured:\n" .. screen(true))
        keys("x = {", "Enter")
        assert.truthy(wait_for("\n>>"), "no continuation prompt:\n" .. screen())
        keys("n = 1.0 }", "Enter", "x", "Enter")
        assert.truthy(wait_for("{ n = 1%.0 }"), "no table:\n" .. screen())
        keys("error('oops')", "Enter", "1 + 2", "Enter")
        assert.truthy(wait_for("stdin:1: oops\n> 1 %+ 2\n3\n"), "the session did not go on:\n" .. screen())
        keys("C-d")
        assert.truthy(wait_for("EXITED 0"), "no clean exit:\n" .. screen())
      end)
      os.execute(tmux .. "kill-server > /dev/null 2>&1")
      if not ok then error(err, 0) end
      assert.matches("store:head%(%)", read_file(work .. "/.chronicle_history") or "")
    end)
  end)

  describe("project and rebuild", function()
    local COUNTS = [[
return {
  kind = "projection",
  name = "type_counts",
  version = 1,
  handlers = {
    Opened = function(view, ev) view:update(ev.type, function(n) return (n or 0) + 1 end) end,
    Deposited = function(view, ev) view:update(ev.type, function(n) return (n or 0) + 1 end) end,
    Withdrawn = function(view, ev) view:update(ev.type, function(n) return (n or 0) + 1 end) end,
  },
}
]]

    local function scripts_folder()
      local folder = helpers.tmpdir() .. "/scripts"
      os.execute("mkdir -p " .. q(folder))
      helpers.write_file(folder .. "/type_counts.lua", COUNTS)
      return folder
    end

    local function rows(dir)
      local store = assert(chronicle.open(dir, { readonly = true }))
      local out = {}
      for k, v in store:view("type_counts"):pairs() do out[k] = v end
      store:close()
      return out
    end

    it("says so when this build has no scripts layer", function()
      if chronicle.load_scripts then return end
      local dir = small_store()
      assert_fails(run({ "project", dir, scripts_folder() }), 1, "not available in this build")
    end)

    it("runs a folder's projections to the head, and rebuilds one", function()
      if not chronicle.load_scripts then
        pending("this build has no scripts layer (chronicle.load_scripts)")
        return
      end
      local dir = small_store()
      local folder = scripts_folder()
      local r = run({ "project", dir, folder })
      assert.equals(0, r.code, r.err)
      assert.matches("^caught up to position 5\nkind%s+name%s+position%s+lag%s+dead%s+status\n"
                     .. "projection%s+type_counts%s+5%s+0%s+0%s+live\n$", r.out)
      assert.same({ Opened = 2, Deposited = 1, Withdrawn = 1 }, rows(dir))

      r = run({ "rebuild", dir, "type_counts", "--scripts", folder })
      assert.equals(0, r.code, r.err)
      assert.matches("^rebuilt type_counts up to position 5, 3 rows\n", r.out)
      assert.same({ Opened = 2, Deposited = 1, Withdrawn = 1 }, rows(dir))

      assert_fails(run({ "rebuild", dir, "nope", "--scripts", folder }), 1,
                   "^chronicle rebuild: no projection 'nope' in ")
      assert_fails(run({ "rebuild", dir, "type_counts" }), 2, "^chronicle rebuild: missing option '%-%-scripts'")
      helpers.write_file(folder .. "/broken.lua", "return {")
      assert_fails(run({ "project", dir, folder }), 1, "^chronicle project: script error: .*broken%.lua")
    end)

    -- A scripts folder with a projection, a reactor that faults on "Withdrawn" and a handler that
    -- fails on account-2's events; `good` is the same handler without the failure.
    local function troubled_folder()
      local folder = scripts_folder()
      helpers.write_file(folder .. "/audit.lua", [[
return { kind = "reactor", name = "audit", handlers = {
  Opened = function(ev, ctx) ctx:append("audit-" .. ev.stream, { { type = "Seen" } }) end,
  Withdrawn = function(ev) error("audit cannot handle withdrawals") end,
} }
]])
      helpers.write_file(folder .. "/mailer.lua", [[
return { kind = "handler", name = "mailer", types = { "Opened", "Deposited" }, retries = 1,
  handle = function(ev) if ev.stream == "account-2" then error("smtp down for " .. ev.stream) end end }
]])
      local good = helpers.tmpdir() .. "/good"
      os.execute("mkdir -p " .. q(good))
      helpers.write_file(good .. "/mailer.lua", [[
return { kind = "handler", name = "mailer", types = { "Opened", "Deposited" }, handle = function(ev) end }
]])
      return folder, good
    end

    it("lists projections, reactors and handlers with position, lag, dead letters and status, "
       .. "and fails when one is faulted or has dead letters", function()
      local dir = small_store()
      local folder = troubled_folder()
      local r = run({ "project", dir, folder })
      assert.equals(1, r.code, r.err)
      local out = lines(r.out)
      assert.equals("caught up to position 5", out[1])
      assert.matches("^kind%s+name%s+position%s+lag%s+dead%s+status$", out[2])
      assert.matches("^projection%s+type_counts%s+5%s+0%s+0%s+live$", out[3])
      assert.matches("^reactor%s+audit%s+0%s+5%s+0%s+faulted at position 5: .*audit cannot handle withdrawals$", out[4])
      assert.matches("^handler%s+mailer%s+5%s+0%s+1%s+dead letters$", out[5])
      assert.equals(5, #out)
      assert.matches("reactor audit is faulted; handler mailer has 1 dead letter %(see chronicle dead%-letters ", r.err)

      -- (the faulted batch wrote nothing: the reactor stays at 0, 5 behind)
      -- the same list from the store alone, without a scripts folder, read-only
      r = run({ "project", dir })
      assert.equals(1, r.code, r.err)
      assert.same(out, { "caught up to position 5", table.unpack(lines(r.out)) })
    end)

    it("lists the live members of a group with their share and lag, and the persistent subscriptions", function()
      local dir = small_store()
      local folder = scripts_folder()
      assert.equals(0, run({ "project", dir, folder }).code)
      local store = assert(chronicle.open(dir))
      -- a runner in another process (on another host) serving the projection
      local g = require("chronicle.read.group").new(store, "projection", "type_counts", { lease = 60, partitions = 1,
        me = { id = "feedbeef", pid = 4242, start = "0", boot = "elsewhere", host = "web-7" } })
      assert(g:beat())
      local sub = assert(store:subscription("billing"))
      sub:take(2)
      store:close()
      local r = run({ "project", dir })
      assert.equals(0, r.code, r.err)
      assert.matches("\nkind%s+name%s+member%s+process%s+share%s+lag\nprojection%s+type_counts%s+feedbeef%s+web%-7:4242%s+1/1%s+%-\n",
                     r.out)
      assert.matches("\nsubscription%s+position%s+lag%s+leased%s+waiting%s+parked%s+consumers\nbilling%s+2%s+3%s+2%s+0%s+0%s+1\n$",
                     r.out)
    end)

    it("dead-letters lists, shows, retries (with the handlers' code) and discards", function()
      local dir = small_store()
      local folder, good = troubled_folder()
      local store = assert(chronicle.open(dir))
      assert(store:append("account-2", { { type = "Deposited", data = { amount = 5 } } }))
      store:close()
      assert.equals(1, run({ "project", dir, folder }).code)

      local r = run({ "dead-letters", dir })
      assert.equals(0, r.code, r.err)
      local out = lines(r.out)
      assert.matches("^id%s+event%s+type%s+attempts%s+last failed%s+error$", out[1])
      assert.matches("^mailer:3%s+account%-2@0%s+Opened%s+2%s+%S+Z%s+.*smtp down for account%-2$", out[2])
      assert.matches("^mailer:6%s+account%-2@1%s+Deposited%s+2%s+%S+Z%s+.*smtp down for account%-2$", out[3])
      assert.equals(3, #out)

      r = run({ "dead-letters", dir, "list", "--json" })
      assert.equals(0, r.code, r.err)
      local first = cjson.decode(lines(r.out)[1])
      assert.equals("mailer:3", first.id)
      assert.equals("account-2", first.stream)
      assert.equals(3, first.position)

      r = run({ "dead-letters", dir, "show", "mailer:6" })
      assert.equals(0, r.code, r.err)
      assert.matches("\nstream%s+account%-2\n", r.out)
      assert.matches("\n6  %S+Z  account%-2@1  Deposited  { amount = 5 }", r.out)
      assert_fails(run({ "dead-letters", dir, "show", "mailer:9" }), 1, "^chronicle dead%-letters: no dead letter mailer:9")
      assert_fails(run({ "dead-letters", dir, "show", "mailer" }), 2, "ID is HANDLER:POSITION")

      -- retry needs the code; the failing code fails again and keeps both, the fixed code clears them
      assert_fails(run({ "dead-letters", dir, "retry" }), 2, "%-%-scripts FOLDER")
      r = run({ "dead-letters", dir, "retry", "--scripts", folder })
      assert.equals(1, r.code)
      assert.matches("^mailer: 0 handled, 2 still failing\n$", r.out)
      assert.equals(2, #lines(run({ "dead-letters", dir }).out) - 1)

      -- discard one, then retry the other with the fixed handler
      r = run({ "dead-letters", dir, "discard", "mailer:3" })
      assert.equals(0, r.code, r.err)
      assert.equals("discarded 1 dead letter\n", r.out)
      assert_fails(run({ "dead-letters", dir, "discard", "mailer:3" }), 1, "no dead letter mailer:3")
      r = run({ "dead-letters", dir, "retry", "mailer", "--scripts", good })
      assert.equals(0, r.code, r.err)
      assert.equals("mailer: 1 handled, 0 still failing\n", r.out)
      assert.equals("no dead letters\n", run({ "dead-letters", dir }).out)
      assert.matches("\nhandler%s+mailer%s+6%s+0%s+0%s+live\n", run({ "project", dir }).out)

      -- discard --all
      assert.equals(1, run({ "project", dir, folder }).code)   -- nothing new: no new dead letters
      store = assert(chronicle.open(dir))
      assert(store:append("account-2", { { type = "Deposited", data = { amount = 1 } } }))
      store:close()
      assert.equals(1, run({ "project", dir, folder }).code)
      assert.equals(2, #lines(run({ "dead-letters", dir }).out))
      r = run({ "dead-letters", dir, "discard", "--all" })
      assert.equals("discarded 1 dead letter\n", r.out)
      assert.equals("no dead letters\n", run({ "dead-letters", dir }).out)
    end)

    it("--follow says at once when a reactor faults on an event another process appends", function()
      local dir = small_store()
      local folder = scripts_folder()
      helpers.write_file(folder .. "/guard.lua", [[
return { kind = "reactor", name = "guard", handlers = { Closed = function(ev) error("cannot close " .. ev.stream) end } }
]])
      local proj = start(helpers.lua_command(BIN, "project", dir, folder, "--follow", "--timeout", "6"))
      assert.truthy(eventually(10, function() return (read_file(proj.out) or ""):find("guard") end))
      local store = assert(chronicle.open(dir))
      assert(store:append("account-1", { { type = "Closed" } }))
      store:close()
      assert.truthy(eventually(10, function() return (read_file(proj.err) or ""):find("guard is faulted") end),
                    "no word of the fault while following")
      assert.equals(1, exit_status(proj, 15))
      local err = lines(read_file(proj.err))
      assert.equals("chronicle project: reactor guard is faulted", err[1])
      assert.equals("chronicle project: reactor guard is faulted", err[2])
      assert.equals(2, #err)
    end)

    it("--follow keeps the projections caught up with another process's appends", function()
      if not chronicle.load_scripts then
        pending("this build has no scripts layer (chronicle.load_scripts)")
        return
      end
      local dir = small_store()
      local folder = scripts_folder()
      local proj = start(helpers.lua_command(BIN, "project", dir, folder, "--follow", "--timeout", "3"))
      assert.truthy(eventually(10, function() return (read_file(proj.out) or ""):find("live") end))
      local store = assert(chronicle.open(dir))
      assert(store:append("account-3", { { type = "Opened", data = { owner = "Cy" } } }))
      store:close()
      assert.equals(0, exit_status(proj, 10), tostring(read_file(proj.err)))
      assert.matches("\ncaught up to position 6\n$", read_file(proj.out))
      assert.same({ Opened = 3, Deposited = 1, Withdrawn = 1 }, rows(dir))
    end)
  end)
end)
