-- The embedding example (examples/embed): a C program that embeds Lua 5.4,
-- built here with the project's warnings, runs the bank rules from JSON Lines
-- on its standard input. Sessions go in, answers come out, and the store it
-- leaves is checked with chronicle. Under `make check` the host is built with
-- ASan+UBSan (when chronicle.core is) or runs under valgrind (when the suite
-- does: CHRONICLE_TEST_WRAP), and any report fails its exit status.
local helpers = require "helpers"
local chronicle = require "chronicle"
local cjson = require "cjson"

local q = helpers.quote
local ASAN = package.cpath:find("build-asan", 1, true) ~= nil
local WRAP = os.getenv("CHRONICLE_TEST_WRAP")
local VALGRIND = WRAP and WRAP:find("valgrind", 1, true) and WRAP or nil
local LIMIT = tonumber(os.getenv("EMBED_LIMIT")) or VALGRIND and 600 or 120    -- seconds any one host process may live

-- The Makefile's warning flags, so that the spec builds exactly as the project does.
local function makefile_warn()
  local f = assert(io.open(helpers.root .. "/Makefile"))
  local text = f:read("a")
  f:close()
  return assert(text:match("\nWARN = ([^\n]+)"), "no WARN line in the Makefile")
end

local slurp = helpers.slurp

local function lines_of(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- Builds the host once for this file (in a directory removed at the end).
local build_dir, exe
local function host()
  if exe then return exe end
  build_dir = helpers.capture("mktemp -d /tmp/chronicle-spec.XXXXXX")
  exe = build_dir .. "/chronicle-host"
  local sanitize = ASAN and "-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" or ""
  local log = build_dir .. "/cc.log"
  local ok = os.execute(("cd %s && timeout 120 cc -O1 -g %s %s -I/usr/include/lua5.4 examples/embed/host.c -o %s -llua5.4 > %s 2>&1")
    :format(q(helpers.root), makefile_warn(), sanitize, q(exe), q(log)))
  local out = slurp(log)
  assert(ok == true, "examples/embed/host.c does not build:\n" .. out)
  assert(out == "", "examples/embed/host.c builds with output:\n" .. out)
  if ASAN then   -- the sanitizer half of make check must really check the host
    assert(helpers.capture("ldd " .. q(exe)):find("libasan", 1, true), "the host was not linked with ASan")
  end
  return exe
end

-- The command line that runs the host (under `timeout`, and valgrind when the suite runs under it).
local function command(args)
  local parts = { "timeout -k 5", tostring(LIMIT) }
  if VALGRIND then parts[#parts + 1] = VALGRIND end
  parts[#parts + 1] = q(host())
  parts[#parts + 1] = "--driver examples/embed/driver.lua --lua-path " .. q(package.path)
    .. " --lua-cpath " .. q(package.cpath)
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

-- ASan, LSan, UBSan and valgrind report on stderr, their lines starting "==PID==" (or naming
-- "runtime error"); the exit status tells too, but not on a path that fails anyway.
local function assert_clean(err)
  assert(not err:find("==%d+==") and not err:find("runtime error:", 1, true), "a memory checker reported:\n" .. err)
end

-- Runs the host on `input` (text); returns exit status, the decoded answers, stdout, stderr.
local function run(args, input)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/in", input)
  local ok, how, code = os.execute(("cd %s && %s < %s > %s 2> %s"):format(q(helpers.root), command(args),
    q(dir .. "/in"), q(dir .. "/out"), q(dir .. "/err")))
  local status = ok and 0 or (how == "exit" and code or 128 + code)
  local out, err = slurp(dir .. "/out"), slurp(dir .. "/err")
  assert_clean(err)
  local answers = {}
  for i, line in ipairs(lines_of(out)) do
    local dok, a = pcall(cjson.decode, line)
    assert(dok, ("answer %d is not JSON: %s\n%s"):format(i, line, err))
    answers[i] = a
  end
  return status, answers, out, err
end

local function jsonl(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = type(v) == "string" and v or cjson.encode(v) end
  return table.concat(out, "\n") .. "\n"
end

local function exec(req, id, command, args)
  return { req = req, op = "execute", aggregate = "account", id = id, command = command, args = args }
end

-- A folder with copies of the files in `from` (and more files: name -> text).
local function folder(from, extra)
  local dir = helpers.tmpdir() .. "/rules"
  os.execute(("mkdir -p %s && cp %s/*.lua %s/"):format(q(dir), q(helpers.root .. "/" .. from), q(dir)))
  for name, text in pairs(extra or {}) do helpers.write_file(dir .. "/" .. name, text) end
  return dir
end

local Account = dofile(helpers.root .. "/examples/bank/rules/account.lua")

describe("the embedding host", function()
  after_each(helpers.cleanup)

  it("answers the demo session line by line and leaves the store its answers describe", function()
    local store_dir = helpers.tmpdir() .. "/store"
    local status, a, out, err = run({ "--store", store_dir, "--rules", "examples/bank/rules",
      "--sandboxed", "examples/embed/sandboxed" }, slurp(helpers.root .. "/examples/embed/session.jsonl"))
    assert.equals(0, status, "exit status; stderr:\n" .. err)
    assert.equals(15, #a, out)
    for i = 1, 4 do assert.is_true(a[i].ok, out) end
    assert.same({ "Opened" }, a[1].events)
    assert.same({ open = true, owner = "Alice", balance = 150 }, a[3].state)
    assert.equals(false, a[5].ok)
    assert.equals("rejected", a[5].error.code)
    assert.equals("insufficient funds: balance 20, asked 500", a[5].error.reason)
    assert.equals(30, a[6].state.balance)
    assert.same({ { key = "alice", value = 30 }, { key = "bob", value = 20 } }, a[7].rows)
    assert.equals("LargeWithdrawal", a[8].events[1].type)
    assert.same({ account = "account-alice", amount = 120 }, a[8].events[1].data)
    -- carol opens without an owner: the sandboxed "owners" projection faults on it, and says so
    assert.is_true(a[9].ok)
    assert.equals(1, #a[9].faults)
    assert.equals("owners", a[9].faults[1].name)
    assert.equals(7, a[9].faults[1].position)
    assert.matches("owners.lua:%d+: attempt to index a nil value", a[9].faults[1].error)
    -- ... and everything else goes on
    assert.is_true(a[10].ok)
    assert.is_nil(a[10].faults)
    assert.same({ { key = "carol", value = 5 } }, a[11].rows)
    assert.equals(cjson.null, a[12].req)
    assert.equals("bad_request", a[12].error.code)
    assert.matches("line 12 is not JSON", a[12].error.message)
    -- a command function that raises: caught by the host's lua_pcall, logged with its traceback
    assert.equals(13, a[13].req)
    assert.equals("script_error", a[13].error.code)
    assert.matches("account.lua:%d+: attempt to compare", a[13].error.message)
    assert.matches("line 13: account alice: command 'withdraw' failed", err, 1, true)
    assert.matches("stack traceback:", err, 1, true)
    assert.equals("faulted", a[14].status)
    assert.equals("faulted", a[15].projections.owners.status)
    assert.equals("live", a[15].projections.balances.status)
    assert.equals("live", a[15].reactors.large_withdrawals.status)
    assert.matches("store closed at position 8\n$", err)

    local store = helpers.open(nil, store_dir)
    local accounts = store:repository(Account)
    assert.equals(30, accounts:load("alice").balance)
    assert.equals(2, select(2, accounts:load("alice")))   -- the raising withdraw wrote nothing
    assert.equals(20, accounts:load("bob").balance)
    assert.equals(5, accounts:load("carol").balance)
    assert.equals(30, store:view("balances"):get("alice"))
    assert.equals(5, store:view("balances"):get("carol"))
    assert.equals("faulted", store:projection_status().owners.status)
    assert.equals(8, store:head())
    assert.is_true(store:verify().ok)
    store:close()

    -- started again on that store: it says what it found, faults included, and goes on
    status, a, out, err = run({ "--store", store_dir, "--rules", "examples/bank/rules",
      "--sandboxed", "examples/embed/sandboxed" }, jsonl { exec(1, "bob", "deposit", { amount = 1 }) })
    assert.equals(0, status, "exit status; stderr:\n" .. err)
    assert.matches("store " .. store_dir .. " at position 8;", err, 1, true)
    assert.matches("\n  faulted: projection owners: [^\n]*owners.lua:%d+", err)
    assert.same({ true, 21 }, { a[1].ok, a[1].state.balance }, out)
    assert.is_nil(a[1].faults)             -- an old fault is not news
  end)

  it("goes on past hostile rules, malformed lines, a broken script and a line too long", function()
    local store_dir = helpers.tmpdir() .. "/store"
    local rules = folder("examples/bank/rules", { ["broken.lua"] = "return { kind = 'projection', name = " })
    local sandboxed = folder("examples/embed/sandboxed", {
      -- loops forever inside pcall on a deposit of 7: the instruction budget stops it
      ["spin.lua"] = [[return { kind = "projection", name = "spin", from = { category = "account" },
        handlers = { Deposited = function(view, ev)
          if ev.data.amount == 7 then while true do pcall(function() while true do end end) end end
          view:put(ev.stream, ev.data.amount)
        end } }]],
    })
    local input = jsonl {
      exec(1, "dan", "open", { owner = "Dan" }),
      exec(2, "dan", "deposit", { amount = 7 }),
      exec(3, "dan", "deposit", { amount = 1.5 }),
      "[1, 2, 3]",
      '{"req": 5, "op": "explode"}',
      '{"req": 6, "op": "execute", "aggregate": "nosuch", "id": "x", "command": "open"}',
      '{"req": 7, "op": "execute", "aggregate": "account", "id": "dan", "command": "deposit", "args": 5}',
      "",
      '{"req": 9, "op": "view", "name": "balances", "count": 0}',
      '{"req": 10, "op": "view", "name": "nosuch"}',
      ("x"):rep(1100 * 1024),
      exec(12, "dan", "deposit", { amount = 3 }),
      '{"req": 13, "op": "status"}',
    } .. '{"req": 14, "op": "load", "aggregate": "account", "id": "dan"}'   -- no newline at the end
    local status, a, out, err = run({ "--store", store_dir, "--rules", rules, "--sandboxed", sandboxed }, input)
    assert.equals(0, status, "exit status; stderr:\n" .. err)
    assert.matches("rule not loaded: [^\n]*broken.lua", err)
    assert.equals(13, #a, out)            -- one answer per line, none for the blank line 8
    assert.is_true(a[1].ok)
    assert.is_true(a[2].ok)
    assert.equals("spin", a[2].faults[1].name)
    assert.matches("instruction", a[2].faults[1].error)
    assert.same({ "rejected", "amount must be a positive integer" }, { a[3].error.code, a[3].error.reason })
    assert.same({ "bad_request", "line 4: a JSON object expected" }, { a[4].error.code, a[4].error.message })
    assert.equals(5, a[5].req)
    assert.matches("unknown op 'explode'", a[5].error.message)
    assert.matches("no aggregate named 'nosuch'", a[6].error.message)
    assert.matches("'args' must be an object", a[7].error.message)
    assert.equals(9, a[8].req)
    assert.matches("'count' must be an integer >= 1", a[8].error.message)
    assert.equals("not_found", a[9].error.code)
    assert.same({ "bad_request", "line 11: line longer than 1 MiB" }, { a[10].error.code, a[10].error.message })
    assert.equals(12, a[11].req)
    assert.equals(10, a[11].state.balance)
    assert.equals("faulted", a[12].projections.spin.status)
    assert.equals("live", a[12].projections.balances.status)
    assert.equals(1, #a[12].script_errors)
    assert.matches("broken.lua", a[12].script_errors[1].file)
    assert.same({ 14, 10, 2 }, { a[13].req, a[13].state.balance, a[13].version })

    local store = helpers.open(nil, store_dir)
    assert.equals(10, store:repository(Account):load("dan").balance)
    assert.equals(10, store:view("balances"):get("dan"))
    assert.equals(2, store:projection_status().spin.fault.position)
    assert.is_true(store:verify().ok)
  end)

  it("refuses to start without its options or its store, with a message and a non-zero status", function()
    local status, a, _, err = run({ "--rules", "examples/bank/rules" }, "")
    assert.equals(2, status)
    assert.same({}, a)
    assert.matches("usage: chronicle-host", err, 1, true)

    local file = helpers.tmpdir() .. "/not-a-dir"
    helpers.write_file(file, "x")
    status, a, _, err = run({ "--store", file, "--rules", "examples/bank/rules" }, "")
    assert.equals(1, status)
    assert.same({}, a)
    assert.matches("cannot start: ", err, 1, true)
  end)
end)

-- A host reading a FIFO, so that a test can talk to it and signal it while it waits.
local function live(args)
  local dir = helpers.tmpdir()
  local h = { fifo = dir .. "/in", out = dir .. "/out", err = dir .. "/err", pidfile = dir .. "/pid",
              rcfile = dir .. "/rc" }
  assert(os.execute("mkfifo " .. q(h.fifo)) == true)
  local script = ("cd %s && %s < %s > %s 2> %s & echo $! > %s; wait $!; echo $? > %s"):format(q(helpers.root),
    command(args), q(h.fifo), q(h.out), q(h.err), q(h.pidfile), q(h.rcfile))
  assert(os.execute("sh -c " .. q(script) .. " > /dev/null 2>&1 &") == true)
  h.writer = assert(io.open(h.fifo, "w"))  -- meets the host's open of the FIFO
  return h
end

-- Waits (bounded) until `fn()` is true; fails the test when the bound passes.
local function wait_until(what, fn, h)
  local deadline = os.time() + LIMIT
  while not fn() do
    assert(os.time() < deadline, "gave up waiting for " .. what .. (h and ("; the host's log:\n" .. slurp(h.err)) or ""))
    os.execute("sleep 0.05")
  end
end

local function answers(h)
  local out = {}
  for i, line in ipairs(lines_of(slurp(h.out))) do out[i] = cjson.decode(line) end
  return out
end

local function send(h, req)
  local n = #answers(h)
  h.writer:write(cjson.encode(req), "\n")
  h.writer:flush()
  wait_until("the answer to " .. cjson.encode(req), function()
    return #answers(h) > n or slurp(h.rcfile):match("%d") ~= nil
  end, h)
  return assert(answers(h)[n + 1], "the host exited without answering; its log:\n" .. slurp(h.err))
end

local function pid(h)
  wait_until("the host's pid", function() return slurp(h.pidfile):match("%d+") ~= nil end)
  return slurp(h.pidfile):match("%d+")
end

-- The host's exit status, once it has exited.
local function exit_status(h)
  wait_until("the host to exit", function() return slurp(h.rcfile):match("%d+") ~= nil end, h)
  assert_clean(slurp(h.err))
  return tonumber(slurp(h.rcfile):match("%d+"))
end

describe("the embedding host, live", function()
  teardown(function()   -- the last block of this file: the build goes too
    if build_dir then os.execute("rm -rf " .. q(build_dir)) end
  end)
  local hosts = {}
  after_each(function()
    for i = #hosts, 1, -1 do
      local h = hosts[i]
      pcall(h.writer.close, h.writer)
      if not slurp(h.rcfile):match("%d") and slurp(h.pidfile):match("%d+") then
        os.execute("kill -TERM " .. slurp(h.pidfile):match("%d+") .. " 2>/dev/null")
      end
      hosts[i] = nil
    end
    helpers.cleanup()
  end)

  for _, sig in ipairs({ "TERM", "INT" }) do
    it("shuts down cleanly on SIG" .. sig .. " while it waits for input, closing the store", function()
      local store_dir = helpers.tmpdir() .. "/store"
      local h = live({ "--store", store_dir, "--rules", "examples/bank/rules" })
      hosts[#hosts + 1] = h
      assert.is_true(send(h, exec(1, "eve", "open", { owner = "Eve" })).ok)
      assert.same({ { key = "eve", value = 0 } }, send(h, { req = 2, op = "view", name = "balances", key = "eve" }).rows)
      assert(os.execute("kill -" .. sig .. " " .. pid(h)) == true)
      assert.equals(0, exit_status(h), slurp(h.err))
      local err = slurp(h.err)
      assert.matches("SIG" .. sig .. ": stopping\n", err, 1, true)
      assert.matches("store closed at position 1\n$", err)
      local store = helpers.open(nil, store_dir)
      assert.equals("Eve", store:repository(Account):load("eve").owner)
      assert.is_true(store:verify().ok)
    end)
  end

  it("reloads a fixed rule: the faulted projection rebuilds and goes live", function()
    local store_dir = helpers.tmpdir() .. "/store"
    local sandboxed = folder("examples/embed/sandboxed")
    local h = live({ "--store", store_dir, "--rules", "examples/bank/rules", "--sandboxed", sandboxed })
    hosts[#hosts + 1] = h
    assert.is_nil(send(h, exec(1, "fay", "open", { owner = "Fay" })).faults)
    local opened = send(h, exec(2, "gus", "open", {}))
    assert.equals("owners", opened.faults[1].name)
    helpers.write_file(sandboxed .. "/owners.lua", [[return {
      kind = "projection", name = "owners", from = { category = "account", types = { "Opened" } },
      handlers = { Opened = function(view, ev) view:put((ev.data.owner or "?"):lower(), ev.stream) end } }]])
    local reloaded = send(h, { req = 3, op = "reload" })
    assert.same({ "changed projection owners" }, reloaded.sandboxed)
    assert.is_nil(reloaded.faults)
    local view = send(h, { req = 4, op = "view", name = "owners" })
    assert.equals("live", view.status)
    assert.same({ { key = "?", value = "account-gus" }, { key = "fay", value = "account-fay" } }, view.rows)
    h.writer:close()                      -- end of input: the same clean shutdown
    assert.equals(0, exit_status(h), slurp(h.err))
    assert.matches("store closed at position 2\n$", slurp(h.err))
  end)
end)
