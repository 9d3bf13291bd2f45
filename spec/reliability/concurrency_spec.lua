-- Eight writer processes, readers and a projection runner on one store at
-- once: every count reconciles, no version twice, no gap.
-- CHRONICLE_CONCURRENT_APPENDS sets the appends per writer (1,000 for the full run).
local helpers = require "helpers"
local chronicle = require "chronicle"

local WRITERS = 8
local PER_WRITER = tonumber(os.getenv("CHRONICLE_CONCURRENT_APPENDS") or "") or 150

describe("eight processes appending to ten shared streams", function()
  after_each(helpers.cleanup)

  it("reconcile exactly, with readers and a projection runner alongside", function()
    local dir = helpers.tmpdir() .. "/store"
    assert(chronicle.open(dir)):close()
    local worker = helpers.root .. "/spec/support/concurrent_worker.lua"
    local out = helpers.tmpdir()
    local jobs = {}
    for w = 1, WRITERS do
      jobs[#jobs + 1] = helpers.lua_command(worker, dir, "writer", tostring(w), tostring(PER_WRITER)) .. " > " .. out .. "/w" .. w
    end
    jobs[#jobs + 1] = helpers.lua_command(worker, dir, "reader", "3") .. " > " .. out .. "/r1"
    jobs[#jobs + 1] = helpers.lua_command(worker, dir, "reader", "3") .. " > " .. out .. "/r2"
    jobs[#jobs + 1] = helpers.lua_command(worker, dir, "runner", "4") .. " > " .. out .. "/runner"
    local script = "pids=''\n" .. table.concat(jobs, " & pids=\"$pids $!\"\n") .. " & pids=\"$pids $!\"\n"
      .. "fail=0\nfor p in $pids; do wait $p || fail=1; done\nexit $fail"
    assert.is_true(os.execute(script) == true, "a worker process failed")

    local store = helpers.track(assert(chronicle.open(dir)))
    local total = WRITERS * PER_WRITER
    assert.are.equal(total, store:head())
    local per_stream, seen = {}, {}
    local last = 0
    for ev in store:read_all() do
      assert.are.equal(last + 1, ev.position)
      last = ev.position
      local key = ev.data.writer .. ":" .. ev.data.i
      assert.is_nil(seen[key], "append " .. key .. " stored twice")
      seen[key] = true
      per_stream[ev.stream] = (per_stream[ev.stream] or 0) + 1
      assert.are.equal(per_stream[ev.stream] - 1, ev.version, "versions of " .. ev.stream .. " run without a gap")
    end
    local sum = 0
    for stream, n in pairs(per_stream) do
      assert.are.equal(n, store:stream_info(stream).count)
      sum = sum + n
    end
    assert.are.equal(total, sum)
    for w = 1, WRITERS do
      for i = 1, PER_WRITER do assert.is_true(seen[w .. ":" .. i], "append " .. w .. ":" .. i .. " is missing") end
    end
    assert.is_true(store:verify().ok)

    -- The projection, run to the end by another process, counts the same.
    local counts = helpers.capture(helpers.lua_command(worker, dir, "catch_up"))
    for stream, n in pairs(per_stream) do
      assert.matches(stream .. " " .. n .. "\n", counts .. "\n", 1, true)
    end
  end)
end)
