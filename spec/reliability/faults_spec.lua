-- I/O errors: the Nth write, sync or truncate on data.mdb / lock.mdb fails (scripts/faultshim.c,
-- preloaded into a child lua5.4), for every N across an append workload. The append must report
-- an error (nil, err) and nothing may crash; reopened without the shim, the store must pass
-- verify() and hold every acknowledged event exactly once at gap-free positions.
-- Default: 20 events with durability "full", every N, with EIO and with ENOSPC.
-- CHRONICLE_LONG=1 adds "nometasync" and "nosync", a failing disk (every call from N on fails)
-- and a longer workload.
local helpers = require "helpers"
local run = require "support.reliability.run"

-- Counts the workload's watched calls: returns n and { [i] = "pwrite data.mdb", ... }.
local counts = 0
local function count_calls(shim, dir, events, durability)
  counts = counts + 1
  local base = ("%s/count%d"):format(dir, counts)   -- a fresh store each time
  local count_file = base .. ".count"
  local r = run.lua("append_workload.lua", { base .. "/store", base .. ".acks", events, durability },
                    { FAULT_AT = "0", FAULT_COUNT_FILE = count_file }, shim)
  assert(not r.crashed and r.code == 0, "the workload failed without faults: " .. run.describe(r))
  local text = run.read(count_file)
  local n = tonumber(text:match("^count (%d+)"))
  assert(n and n > 0, "the shim counted no call: did LD_PRELOAD reach the workload? " .. text)
  local kinds = {}
  for i, kind in text:gmatch("\n(%d+) ([^\n]+)") do kinds[tonumber(i)] = kind end
  return n, kinds
end

-- Runs the workload failing call N, then checks the store. Returns a table of what happened.
local runs = 0
local function one(shim, dir, n, events, durability, env)
  -- a fresh directory per run (chronicle.open makes it), all removed at teardown
  runs = runs + 1
  local case = ("%s/run%d"):format(dir, runs)
  local e = { FAULT_AT = tostring(n) }
  for k, v in pairs(env or {}) do e[k] = v end
  local w = run.lua("append_workload.lua", { case .. "/store", case .. ".acks", events, durability }, e, shim)
  local c = run.lua("check_store.lua", { case .. "/store", case .. ".acks", events })
  -- the store has been checked: drop it now (a long sweep makes thousands)
  for _, f in ipairs({ "/store/data.mdb", "/store/lock.mdb", "/store", ".acks", "" }) do os.remove(case .. f) end
  local fails = {}
  for code in w.stdout:gmatch("fail %d+ (%S+)") do fails[#fails + 1] = code end
  local open_fail = w.stdout:match("open_fail (%S+)")
  return { workload = w, check = c, fails = fails, open_fail = open_fail,
           raised = not w.crashed and w.code ~= 0 and w.code ~= 3 }
end

-- Every N from 1 to the count; fails on the first crash or bad store with the details.
local function sweep(label, shim, dir, events, durability, env, expect_code)
  local n, kinds = count_calls(shim, dir, events, durability)
  local stats = { runs = 0, failed_appends = 0, open_failures = 0, raised = 0, codes = {}, checked = 0 }
  for at = 1, n do
    local r = one(shim, dir, at, events, durability, env)
    local where = ("%s, FAULT_AT=%d of %d (%s)"):format(label, at, n, kinds[at] or "?")
    assert(not r.workload.crashed, where .. ": the workload crashed: " .. run.describe(r.workload))
    assert(not r.check.crashed, where .. ": the check crashed: " .. run.describe(r.check))
    assert(r.check.code == 0, where .. ": " .. run.describe(r.check))
    -- The injected error itself comes back with its own code (later appends on a store
    -- that LMDB has marked failed may say "storage").
    if expect_code and #r.fails > 0 then
      assert(r.fails[1] == expect_code, where .. ": first failed append has code " .. r.fails[1]
             .. ", expected " .. expect_code .. ": " .. r.workload.stdout:sub(1, 300))
    end
    if r.open_fail then
      stats.open_failures = stats.open_failures + 1
      stats.codes["open:" .. r.open_fail] = (stats.codes["open:" .. r.open_fail] or 0) + 1
    end
    stats.runs = stats.runs + 1
    if r.raised then
      stats.raised = stats.raised + 1
      stats.first_raise = stats.first_raise or (("FAULT_AT=%d: %s"):format(at, r.workload.stderr:match("[^\n]*")))
    end
    stats.failed_appends = stats.failed_appends + #r.fails
    for _, code in ipairs(r.fails) do stats.codes[code] = (stats.codes[code] or 0) + 1 end
    stats.checked = stats.checked + tonumber(r.check.stdout:match("events=(%d+)") or 0)
  end
  local codes = {}
  for code, k in pairs(stats.codes) do codes[#codes + 1] = code .. "=" .. k end
  table.sort(codes)
  print(("\nfaults: %s: %d calls, %d runs, %d failed appends and %d failed opens (codes: %s), "
         .. "%d Lua errors, %d events checked after reopening, no crash"):format(label, n, stats.runs,
         stats.failed_appends, stats.open_failures, table.concat(codes, " "), stats.raised, stats.checked))
  if stats.first_raise then print("faults: first Lua error: " .. stats.first_raise) end
  return stats
end

describe("I/O errors injected into every write, sync and truncate of an append workload", function()
  local shim, dir
  setup(function()
    dir = helpers.tmpdir()
    local err
    shim, err = run.build_shim(dir)
    assert(shim, "cannot build scripts/faultshim.c: " .. tostring(err))
  end)
  teardown(helpers.cleanup)

  local events = run.long and "60" or "20"

  it("the shim sees the workload's writes and syncs, and a fault makes the append return nil, err", function()
    local n, kinds = count_calls(shim, dir, events, "full")
    local seen = {}
    for _, k in pairs(kinds) do seen[k:match("^%S+")] = true end
    assert.is_true(seen.fdatasync or seen.fsync, "no sync counted")
    assert.is_true(seen.pwrite or seen.pwritev or seen.writev or seen.write, "no write counted")
    -- a fault late in the run (on a sync) reaches Lua as an error value, not a raise
    local last_sync
    for i = n, 1, -1 do
      if kinds[i]:match("sync") then last_sync = i break end
    end
    local r = one(shim, dir, last_sync, events, "full")
    assert.is_false(r.workload.crashed, run.describe(r.workload))
    assert.are.equal(0, r.workload.code, run.describe(r.workload))
    assert.are.equal("io", r.fails[1], r.workload.stdout)
    assert.are.equal(0, r.check.code, run.describe(r.check))
  end)

  it("after an I/O error, even one LMDB treats as fatal, the same process closes, reopens and appends", function()
    -- the first calls cover open, the first appends' page writes, syncs and meta page write
    local outcomes = {}
    for at = 1, 15 do
      local r = run.lua("reopen_after_panic.lua", { ("%s/panic%d"):format(dir, at), 5 }, { FAULT_AT = tostring(at) }, shim)
      assert.is_false(r.crashed, run.describe(r))
      assert.are.equal(0, r.code, run.describe(r))
      local out = r.stdout
      if not out:match("^open ") then
        assert.matches("append %d+ io\n", out)
        assert.matches("reopen ok\nafter ok\n$", out)
        local retry = out:match("retry (%S+)")
        outcomes[retry] = (outcomes[retry] or 0) + 1
      end
    end
    -- a failed meta page write leaves the handle failing ("storage") until it is reopened
    assert.is_true((outcomes.storage or 0) > 0, "no fault hit the meta page write")
  end)

  it("EIO at every N, durability full: no crash, the store reopens with every acknowledged event", function()
    sweep("EIO, full", shim, dir, events, "full", nil, "io")
  end)

  it("ENOSPC at every N, durability full: appends say disk_full, the store reopens intact", function()
    sweep("ENOSPC, full", shim, dir, events, "full", { FAULT_ERRNO = "ENOSPC" }, "disk_full")
  end)

  if run.long then
    it("(long) EIO at every N with durability nometasync and nosync", function()
      sweep("EIO, nometasync", shim, dir, events, "nometasync", nil, "io")
      sweep("EIO, nosync", shim, dir, events, "nosync", nil, "io")
    end)

    it("(long) a disk that fails every call from N on", function()
      sweep("EIO sticky, full", shim, dir, events, "full", { FAULT_STICKY = "1" }, "io")
      sweep("ENOSPC sticky, full", shim, dir, events, "full", { FAULT_STICKY = "1", FAULT_ERRNO = "ENOSPC" },
            "disk_full")
    end)
  end
end)
