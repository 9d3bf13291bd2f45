-- Several OS processes executing commands on the same aggregate at once: the
-- repository's optimistic concurrency and retries let every command succeed in
-- turn, and the result equals a serial run.
local helpers = require "helpers"
local chronicle = require "chronicle"

local WORKERS = 3
local PER_WORKER = 150

local slurp = helpers.slurp

local function wait_for(path, seconds)
  local deadline = os.time() + seconds
  while not helpers.exists(path) do
    if os.time() > deadline then return false end
    os.execute("sleep 0.01")
  end
  return true
end

describe("several processes executing commands on one aggregate", function()
  after_each(helpers.cleanup)

  it("all succeed thanks to retries, with contiguous versions and the balance of a serial run", function()
    local work = helpers.tmpdir()
    local dir = helpers.new_target(work .. "/store")   -- or a fresh PostgreSQL schema
    local Account = chronicle.aggregate {
      name = "account",
      initial = function() return { balance = 0, deposits = 0 } end,
      apply = {
        Opened = function() end,
        Deposited = function(s, ev) s.balance = s.balance + ev.data.amount; s.deposits = s.deposits + 1 end,
      },
      commands = { open = function() return { type = "Opened" } end },
    }
    do
      local store = helpers.open(nil, dir)
      assert(store:repository(Account):execute("shared", "open"))
      store:close()
    end

    local script = helpers.root .. "/spec/support/deposit_worker.lua"
    local go = work .. "/go"
    local jobs = {}
    for w = 1, WORKERS do
      jobs[#jobs + 1] = helpers.lua_command(script, dir, tostring(w), tostring(PER_WORKER), go, work .. "/ready-" .. w)
        .. " > " .. helpers.quote(work .. "/out-" .. w) .. " 2> " .. helpers.quote(work .. "/err-" .. w) .. " &"
    end
    local started = os.time()
    local shell = assert(io.popen("{ " .. table.concat(jobs, " ") .. " wait; }", "r"))
    local all_ready = true
    for w = 1, WORKERS do all_ready = wait_for(work .. "/ready-" .. w, 30) and all_ready end
    helpers.write_file(go, "go")   -- always, so that no worker is left waiting
    shell:read("a")
    shell:close()
    assert.is_true(all_ready, "a worker never got ready: " .. slurp(work .. "/err-1"))
    assert.is_true(os.time() - started < 60, "the workers took too long")

    -- what the workers were told
    local acked, versions, attempts, expected_sum = {}, {}, 0, 0
    for w = 1, WORKERS do
      local out, errors = slurp(work .. "/out-" .. w), slurp(work .. "/err-" .. w)
      assert.equals("", errors, "worker " .. w .. " wrote to stderr")
      local done, tries = out:match("done (%d+) (%d+)\n$")
      assert.equals(tostring(w), done, "worker " .. w .. " did not finish:\n" .. out)
      attempts = attempts + tonumber(tries)
      local n = 0
      for amount, version, position in out:gmatch("ok (%d+) (%d+) (%d+)\n") do
        amount, version = tonumber(amount), tonumber(version)
        n = n + 1
        assert.is_nil(versions[version], "two commands were told they wrote version " .. version)
        versions[version] = amount
        acked[amount] = { version = version, position = tonumber(position) }
        expected_sum = expected_sum + amount
      end
      assert.equals(PER_WORKER, n, "worker " .. w .. " acknowledged too few deposits")
    end
    local total = WORKERS * PER_WORKER
    print(("\n%d deposits from %d processes took %d command runs (%d retried after a conflict)")
      :format(total, WORKERS, attempts, attempts - total))

    -- what the store holds
    local store = helpers.open(nil, dir)
    local events = helpers.collect(store:read("account-shared"))
    assert.equals(total + 1, #events)
    local switches, previous = 0, nil
    for i, ev in ipairs(events) do
      assert.equals(i - 1, ev.version, "versions are not contiguous")
      if i > 1 then
        assert.equals("Deposited", ev.type)
        local ack = acked[ev.data.amount]
        assert.is_table(ack, "a deposit nobody was told about: " .. tostring(ev.data.amount))
        assert.equals(ack.version, ev.version)
        assert.equals(ack.position, ev.position)
        assert.equals(versions[ev.version], ev.data.amount)
        acked[ev.data.amount] = nil   -- each exactly once
        if previous and previous ~= ev.data.worker then switches = switches + 1 end
        previous = ev.data.worker
      end
    end
    assert.is_nil(next(acked), "an acknowledged deposit is missing from the stream")
    assert.is_true(switches > 0, "the workers never interleaved: they did not run concurrently")

    local state, version = store:repository(Account):load("shared")
    assert.equals(total, version)
    assert.equals(total, state.deposits)
    assert.equals(expected_sum, state.balance)
    assert.is_true(store:verify().ok)
  end)
end)
