-- Crash safety: a runner process (a projection and a reactor) is killed with
-- SIGKILL at random moments while another process appends, and restarted.
-- Halfway through, the projection's version changes, so some kills land in a
-- shadow rebuild. At the end the projection equals a from-scratch computation
-- and the reactor answered every event exactly once.
--
-- CHRONICLE_CRASH_ROUNDS=N runs N rounds (default 8); CHRONICLE_CRASH_SEED
-- fixes the random kill moments (the seed used is printed).
local helpers = require "helpers"
local chronicle = require "chronicle"
local common = require "support.projections.common"

local SUPPORT = helpers.root .. "/spec/support/projections/"
local ROUNDS = tonumber(os.getenv("CHRONICLE_CRASH_ROUNDS")) or 8

-- Starts a command in the background; returns its PID (the lua5.4 process:
-- `env` execs it).
local function spawn(cmd, out, err)
  local pid = helpers.capture("sh -c " .. helpers.quote(cmd .. " > " .. helpers.quote(out) .. " 2> "
    .. helpers.quote(err) .. " < /dev/null & echo $!"))
  assert(pid:match("^%d+$"), "could not start: " .. cmd)
  return pid
end

local alive = helpers.alive

local function wait_gone(pid, seconds)
  local deadline = chronicle.now() + math.floor(seconds * 1e9)
  while alive(pid) do
    assert(chronicle.now() < deadline, "process " .. pid .. " is still running")
    os.execute("sleep 0.02")
  end
end

local slurp = helpers.slurp

local function assert_rows(expected, actual, what)
  local ok, where = helpers.identical(expected, actual)
  assert.is_true(ok, what .. ": rows differ at " .. tostring(where)
    .. "\nexpected: " .. common.serialize(expected) .. "\nactual:   " .. common.serialize(actual))
end

describe("a runner killed with SIGKILL at random moments and restarted", function()
  after_each(helpers.cleanup)

  it("leaves every projection equal to a from-scratch rebuild and never appends a reaction twice", function()
    local seed = tonumber(os.getenv("CHRONICLE_CRASH_SEED")) or (os.time() % 100000)
    math.randomseed(seed)
    print(("\n  crash test: %d rounds, seed %d (CHRONICLE_CRASH_SEED=%d to repeat)"):format(ROUNDS, seed, seed))

    local work = helpers.tmpdir()
    local dir = helpers.new_target(work .. "/store")   -- or a fresh PostgreSQL schema
    local store = helpers.open(nil, dir)   -- this process only reads until the end

    local appender = spawn(helpers.lua_command(SUPPORT .. "crash_appender.lua", dir,
      tostring(ROUNDS * 0.4 + 0.5), tostring(seed)), work .. "/appender.out", work .. "/appender.err")

    local kills, during_rebuild = 0, 0
    for round = 1, ROUNDS do
      local version = round <= ROUNDS // 2 and 1 or 2
      local out, err = work .. "/runner-" .. round .. ".out", work .. "/runner-" .. round .. ".err"
      local pid = spawn(helpers.lua_command(SUPPORT .. "crash_runner.lua", dir, tostring(version), "forever"), out, err)
      os.execute(("sleep %.3f"):format(0.05 + math.random() * 0.55))
      assert.is_true(alive(pid), "round " .. round .. ": the runner died by itself: " .. slurp(err))
      os.execute("kill -9 " .. pid)
      wait_gone(pid, 5)
      kills = kills + 1
      assert.equals("", slurp(err), "round " .. round .. ": the runner wrote to stderr before it was killed")

      -- What readers see right after a kill is a complete view as of some
      -- event: never half a batch, never an empty or half-built rebuild.
      local status = store:projection_status().ledger
      if status and status.building and status.generation and status.generation > 0 then
        during_rebuild = during_rebuild + 1
      end
      local view = store:view("ledger")    -- none yet when the kill came before the runner made it
      local rows = view and common.rows(view) or {}
      local handled = rows.total and rows.total.events or 0
      assert_rows(common.expected_ledger(store, handled), rows, "round " .. round .. ", after the kill")
    end

    wait_gone(appender, 30)
    assert.matches("^appended %d+", slurp(work .. "/appender.out"))
    assert.equals("", slurp(work .. "/appender.err"))

    -- A last runner catches up and exits.
    local final = helpers.capture(helpers.lua_command(SUPPORT .. "crash_runner.lua", dir, "2", "idle")
      .. " 2> " .. helpers.quote(work .. "/final.err"))
    assert.equals("", slurp(work .. "/final.err"))
    assert.equals("idle live", final)

    -- The projection equals what a from-scratch computation over the log gives.
    local status = store:projection_status().ledger
    assert.equals(2, status.version)
    assert.equals("live", status.status)
    assert.is_nil(status.building)
    assert.equals(store:head(), status.checkpoint)
    local view = store:view("ledger")
    local expected = common.expected_ledger(store)
    assert_rows(expected, common.rows(view), "at the end")
    local n = 0
    for _ in pairs(expected) do n = n + 1 end
    assert.equals(n, view:count())

    -- The reactor answered every deposit exactly once.
    local deposits, receipts, duplicates, orphans = {}, {}, 0, 0
    for ev in store:read_all() do
      if ev.type == "Deposited" and ev.stream:match("^account%-") then deposits[ev.id] = ev end
    end
    local ndeposits, nreceipts = 0, 0
    for _ in pairs(deposits) do ndeposits = ndeposits + 1 end
    for ev in store:read_all({ types = { "Receipt" } }) do
      nreceipts = nreceipts + 1
      local cause = ev.meta and ev.meta.causation_id
      if receipts[cause] then duplicates = duplicates + 1 end
      receipts[cause] = ev
      local dep = deposits[cause]
      if not dep then
        orphans = orphans + 1
      else
        assert.equals(cause, ev.data.of)
        assert.equals(dep.data.amount, ev.data.amount)
        assert.equals("receipt-" .. dep.stream:match("%-(.+)$"), ev.stream)
      end
    end
    assert.equals(0, duplicates, "reactions appended twice")
    assert.equals(0, orphans, "receipts answering no deposit")
    assert.equals(ndeposits, nreceipts, "one receipt per deposit")

    local check = store:verify()
    assert.is_true(check.ok, "verify: " .. table.concat(check.problems or {}, "; "))
    print(("  crash test: %d kills (%d with a rebuild under way), %d events, %d deposits, %d receipts")
      :format(kills, during_rebuild, store:head(), ndeposits, nreceipts))
  end)
end)
