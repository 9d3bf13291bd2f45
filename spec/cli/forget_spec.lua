-- chronicle forget: erasing a subject's personal data from the command line, run as a user
-- runs it (a subprocess with a timeout), and what export and copy do with personal data.
local helpers = require "helpers"
local chronicle = require "chronicle"
local cjson = require "cjson"

local BIN = helpers.root .. "/bin/chronicle"
local q = helpers.quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function run(args, env)
  local work = helpers.tmpdir()
  local cmd = "timeout 60 env " .. (env or "") .. " " .. helpers.lua_command(BIN, table.unpack(args))
  cmd = cmd .. " < /dev/null > " .. q(work .. "/out") .. " 2> " .. q(work .. "/err")
  local _, how, code = os.execute(cmd)
  return { out = read_file(work .. "/out"), err = read_file(work .. "/err"), code = how == "exit" and code or 128 + code }
end

local function new_store(opts)
  local target = helpers.new_target(helpers.tmpdir() .. "/store")
  local store = helpers.track(assert(chronicle.open(target, opts)))
  assert(store:append("customer-alice", { { type = "Registered", subject = "alice",
    personal = { name = "Alice Liddell" }, data = { plan = "pro" } } }))
  assert(store:append("customer-bob", { { type = "Registered", subject = "bob", personal = { name = "Bob" } } }))
  return store, target
end

describe("chronicle forget", function()
  after_each(helpers.cleanup)

  it("needs --yes when it cannot ask, and then erases nothing", function()
    local store, target = new_store()
    local r = run({ "forget", target, "alice" })
    assert.equals(2, r.code)
    assert.matches("give %-%-yes", r.err)
    assert.equals("Alice Liddell", helpers.collect(store:read("customer-alice"))[1].personal.name)
  end)

  it("with --yes erases the subject's personal data, and says so in JSON with --json", function()
    local store, target = new_store()
    local r = run({ "forget", target, "alice", "--yes" })
    assert.equals(0, r.code, r.err)
    assert.matches("forgot subject 'alice'", r.out)
    local ev = helpers.collect(store:read("customer-alice"))[1]
    assert.is_true(ev.erased)
    assert.is_nil(ev.personal)
    assert.equals("Bob", helpers.collect(store:read("customer-bob"))[1].personal.name)
    r = run({ "forget", target, "alice", "--yes", "--json" })
    assert.equals(0, r.code, r.err)
    local doc = cjson.decode(r.out)
    assert.equals("alice", doc.subject)
    assert.is_true(doc.already)
    assert.is_string(doc.forgotten)
  end)

  it("fails with one line for an unknown subject", function()
    local _, target = new_store()
    local r = run({ "forget", target, "nobody", "--yes" })
    assert.equals(1, r.code)
    assert.matches("no subject 'nobody'", r.err)
  end)

  it("uses --key-file (or CHRONICLE_KEY_FILE) and refuses a wrong one with bad_key", function()
    local keyfile = helpers.tmpdir() .. "/k"
    assert(require("chronicle.crypto").new_key_file(keyfile))
    local store, target = new_store({ key_file = keyfile })
    local wrong = helpers.tmpdir() .. "/w"
    assert(require("chronicle.crypto").new_key_file(wrong))
    local r = run({ "forget", target, "alice", "--yes", "--key-file", wrong })
    assert.equals(1, r.code)
    assert.matches("is not the one", r.err)
    r = run({ "forget", target, "alice", "--yes" }, "CHRONICLE_KEY_FILE=" .. q(keyfile))
    assert.equals(0, r.code, r.err)
    assert.is_true(helpers.collect(store:read("customer-alice"))[1].erased)
  end)

  it("export writes personal data in the clear and erased events as erased; import seals it again", function()
    local store, target = new_store()
    assert(store:forget("bob"))
    local r = run({ "export", target })
    assert.equals(0, r.code, r.err)
    local lines = {}
    for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(line) end
    assert.equals("Alice Liddell", lines[1].personal.name)
    assert.equals("alice", lines[1].subject)
    assert.is_true(lines[2].erased)
    assert.is_nil(lines[2].personal)
    local file = helpers.tmpdir() .. "/export.jsonl"
    helpers.write_file(file, r.out)
    local dst = helpers.new_target(helpers.tmpdir() .. "/imported")
    r = run({ "import", dst, file })
    assert.equals(0, r.code, r.err)
    local imported = helpers.track(assert(chronicle.open(dst)))
    local evs = helpers.collect(imported:read_all())
    assert.equals("Alice Liddell", evs[1].personal.name)
    assert.equals("bob", evs[2].subject)
    assert.is_nil(evs[2].personal)
  end)

  it("copy keeps personal data sealed with its keys, so the copy can forget on its own", function()
    local store, target = new_store()
    local dst = helpers.new_target(helpers.tmpdir() .. "/copy")
    local r = run({ "copy", target, dst })
    assert.equals(0, r.code, r.err)
    local copy = helpers.track(assert(chronicle.open(dst)))
    assert.equals("Alice Liddell", helpers.collect(copy:read("customer-alice"))[1].personal.name)
    assert(copy:forget("alice"))
    assert.is_true(helpers.collect(copy:read("customer-alice"))[1].erased)
    assert.equals("Alice Liddell", helpers.collect(store:read("customer-alice"))[1].personal.name)
  end)
end)
