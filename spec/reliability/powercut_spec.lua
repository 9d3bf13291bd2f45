-- Power cuts: what a store keeps when the machine loses power (or the OS crashes), tested the way
-- ALICE and LazyFS do it. A workload of acknowledged appends runs under scripts/powercut_shim.c,
-- which logs every write and sync of data.mdb and every acknowledgement, in order;
-- spec/support/powercut.lua builds from the file before the workload and that log the states a
-- power cut could leave (everything up to the last completed sync, plus any subset of the later
-- writes, torn at sector boundaries; the model is described there and in docs/RELIABILITY.md),
-- and each state is opened and checked in a fresh process under `timeout`
-- (spec/support/powercut_check.lua): LMDB's pages are sound (trees, counts, free list), it
-- opens, verify() is clean, every append acknowledged and synced before the cut is there
-- exactly once, nothing is there in part or changed, and the store takes another append.
--
-- CHRONICLE_POWERCUT_STATES  states drawn per durability mode (default 30; `make crash`: 1200);
--                            a state whose file is the same as one already checked is skipped
-- CHRONICLE_POWERCUT_APPENDS appends in the recorded workload (default 16; `make crash`: 60)
-- CHRONICLE_POWERCUT_SEED    the seed the states are drawn from (default: the time; printed)
-- CHRONICLE_POWERCUT_STATE   check only this state number (with the seed of a failure)
-- A failing state's data.mdb is kept in a directory named in the failure message.
local helpers = require "helpers"
local pc = require "support.powercut"
local events = require "support.powercut_events"
local core = require "chronicle.core"
local lmdb = require "support.powercut_lmdb"

local STATES = tonumber(os.getenv("CHRONICLE_POWERCUT_STATES") or "") or 30
local APPENDS = tonumber(os.getenv("CHRONICLE_POWERCUT_APPENDS") or "") or 16
local SEED = tonumber(os.getenv("CHRONICLE_POWERCUT_SEED") or "") or os.time()
local ONLY = tonumber(os.getenv("CHRONICLE_POWERCUT_STATE") or "")
local BASE = 8   -- appends already in the store before the recorded workload (not recorded)

local function sh(cmd) assert(os.execute(cmd), cmd) end

-- Records the workload with `durability`: the store in dir/store gets BASE appends with
-- "full" (unrecorded: its data.mdb is the initial image), then APPENDS more under the shim.
local function record(dir, durability, shim)
  local store = dir .. "/store"
  local r = pc.run("powercut_workload.lua", { store, dir .. "/base.acks", 1, BASE, "full" })
  assert(r.code == 0 and not r.crashed, "the base workload failed: " .. pc.describe_run(r))
  local base = assert(pc.read(store .. "/data.mdb"))
  r = pc.run("powercut_workload.lua", { store, dir .. "/workload.acks", BASE + 1, APPENDS, durability },
             { preload = shim, env = { POWERCUT_LOG = dir .. "/log", POWERCUT_MARK = "/workload.acks" } })
  assert(r.code == 0 and not r.crashed, "the recorded workload failed: " .. pc.describe_run(r))
  local log = pc.parse(dir .. "/log")
  assert(#log.ops > 0, "the shim logged nothing: did LD_PRELOAD reach the workload?")
  return { log = log, base = base, final = assert(pc.read(store .. "/data.mdb")), durability = durability }
end

-- Writes a state's data.mdb into a fresh directory (no lock.mdb: LMDB makes a new one).
local states_made = 0
local function state_dir(dir, bytes)
  states_made = states_made + 1
  local d = ("%s/state%d"):format(dir, states_made)
  sh("mkdir " .. helpers.quote(d))
  helpers.write_file(d .. "/data.mdb", bytes)
  return d
end

local function remove_state(d)
  os.remove(d .. "/data.mdb")
  os.remove(d .. "/lock.mdb")
  os.remove(d)
end

-- Checks one state; returns the run and whether it passed.
local function check(d, required, max)
  local r = pc.run("powercut_check.lua", { d, required, math.min(max, BASE + APPENDS) }, { timeout = 60 })
  return r, r.code == 0 and not r.crashed and r.stdout:match("^ok ") ~= nil
end

-- Keeps a failing state for inspection (outside the spec's temporary directory).
local function keep(d)
  local kept = helpers.capture("mktemp -d /tmp/chronicle-powercut-failed.XXXXXX")
  os.execute(("cp %s/data.mdb %s/"):format(helpers.quote(d), helpers.quote(kept)))
  return kept
end

local function count_table(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. t[k] end
  return table.concat(out, " ")
end

-- Builds and checks `count` states of a recording. Returns the figures and the failures.
local function sweep(dir, rec, count)
  local st = { states = 0, distinct = 0, kinds = {}, pending = 0, torn = 0, required_appends = 0,
               at_risk = 0, lost_at_risk = 0, more_than_required = 0, ok = 0, failures = {} }
  local seen = {}
  pc.each_state(rec.log, rec.base, SEED, count, BASE, function(plan, bytes)
    local cut = plan.cut
    local what = pc.describe(rec.log, plan)
    st.states = st.states + 1
    local signature = core.hash(bytes)   -- XXH3-64 of the whole file
    if seen[signature] then return end   -- the same file as a state already checked
    seen[signature] = true
    st.distinct = st.distinct + 1
    st.kinds[plan.kind] = (st.kinds[plan.kind] or 0) + 1
    st.pending = st.pending + #cut.pending
    for _, k in pairs(plan.keep) do if type(k) == "table" then st.torn = st.torn + 1 end end
    st.at_risk = st.at_risk + (cut.acked - cut.required)
    local d = state_dir(dir, bytes)
    local r, ok = check(d, cut.required, cut.max)
    if ok then
      st.ok = st.ok + 1
      local present = tonumber(r.stdout:match("appends=(%d+)"))
      st.required_appends = st.required_appends + cut.required
      if present > cut.required then st.more_than_required = st.more_than_required + 1 end
      if present < cut.acked then st.lost_at_risk = st.lost_at_risk + 1 end
      remove_state(d)
    else
      st.failures[#st.failures + 1] = ("%s: %s; kept in %s"):format(what, pc.describe_run(r), keep(d))
      remove_state(d)
    end
  end, ONLY)
  return st
end

local function report(label, rec, st)
  local s = pc.summary(rec.log)
  print(("\npowercut: %s: workload of %d appends: %d ops on data.mdb (%d writes, %d of them O_DSYNC, "
         .. "%d syncs, %d acknowledgements, %d KB written); seed %d"):format(label, APPENDS, s.ops, s.writes,
         s.dsync_writes, s.syncs, s.acks, s.bytes // 1024, SEED))
  print(("powercut: %s: %d states drawn, %d distinct files checked (%s), %d pending writes, %d torn; %d passed; "
         .. "acknowledged but not yet synced at the cut: %d appends in all, %d states lost one; "
         .. "%d states kept more than was synced"):format(label, st.states, st.distinct, count_table(st.kinds),
         st.pending, st.torn, st.ok, st.at_risk, st.lost_at_risk, st.more_than_required))
end

local function assert_clean(label, st)
  if #st.failures > 0 then
    local lines = {}
    for i = 1, math.min(5, #st.failures) do lines[i] = st.failures[i] end
    error(("%s: %d of %d power-cut states failed (seed %d; rerun one with CHRONICLE_POWERCUT_SEED=%d "
           .. "CHRONICLE_POWERCUT_APPENDS=%d CHRONICLE_POWERCUT_STATE=N):\n%s"):format(label, #st.failures,
           st.states, SEED, SEED, APPENDS, table.concat(lines, "\n")), 2)
  end
end

describe("power cuts", function()
  local dir, shim
  local recordings = {}
  setup(function()
    dir = helpers.tmpdir()
    shim = pc.build_shim(dir)
  end)
  teardown(helpers.cleanup)

  local function recording(durability)
    if not recordings[durability] then
      local d = dir .. "/" .. durability
      sh("mkdir " .. helpers.quote(d))
      recordings[durability] = record(d, durability, shim)
    end
    return recordings[durability]
  end

  it("the model: what is durable, pending, in flight and required at a cut, and what a state holds", function()
    local function W(off, ch, n, dsync) return { kind = "W", off = off, data = ch:rep(n), dsync = dsync or false } end
    local log = pc.log({
      W(0, "a", 1024),            -- 1
      { kind = "S", how = "fdatasync" },  -- 2
      W(0, "m", 100, true),       -- 3  an O_DSYNC meta write: durable on return
      { kind = "A", j = 1 },      -- 4
      W(1024, "b", 8192),         -- 5
      W(512, "c", 10),            -- 6
      { kind = "S", how = "fdatasync" },  -- 7
      W(200, "n", 50),            -- 8  a meta write without O_DSYNC ("nometasync")
      { kind = "A", j = 2 },      -- 9
      W(9216, "d", 4096),         -- 10
    })
    local function facts(c)
      local cut = pc.cut(log, c, 0)
      return { last_sync = cut.last_sync, pending = cut.pending, required = cut.required, acked = cut.acked, max = cut.max }
    end
    assert.are.same({ last_sync = 0, pending = { 1 }, required = 0, acked = 0, max = 1 }, facts(0))
    assert.are.same({ last_sync = 2, pending = { 5 }, required = 1, acked = 1, max = 2 }, facts(4))
    assert.are.same({ last_sync = 2, pending = { 5, 6 }, required = 1, acked = 1, max = 2 }, facts(6))
    assert.are.same({ last_sync = 7, pending = { 8, 10 }, required = 1, acked = 2, max = 3 }, facts(9))
    assert.are.same({ last_sync = 7, pending = { 8, 10 }, required = 1, acked = 2, max = 3 }, facts(10))

    local durable = pc.image("")
    pc.apply(durable, 0, ("a"):rep(1024))
    local function state(c, keep, zeros)
      local plan = { cut = pc.cut(log, c, 0), keep = keep, zeros = zeros }
      return pc.bytes(pc.build(log, durable, plan))
    end
    local m_a = ("m"):rep(100) .. ("a"):rep(412)
    -- op 6 kept, op 5 lost: the file keeps its length
    assert.are.equal(m_a .. ("c"):rep(10) .. ("a"):rep(502), state(6, { [5] = "none", [6] = "all" }))
    -- the same where a lost write past the end leaves zeros
    assert.are.equal(m_a .. ("c"):rep(10) .. ("a"):rep(502) .. ("\0"):rep(8192),
                     state(6, { [5] = "none", [6] = "all" }, true))
    -- op 5 torn at 512 bytes after two sectors; then in 4096-byte pieces, the middle one kept
    assert.are.equal(m_a .. ("a"):rep(512) .. ("b"):rep(1024),
                     state(6, { [5] = { g = 512, kept = { true, true } }, [6] = "none" }))
    assert.are.equal(m_a .. ("a"):rep(512) .. ("\0"):rep(3072) .. ("b"):rep(4096),
                     state(6, { [5] = { g = 4096, kept = { false, true, false } }, [6] = "none" }))
    -- both kept: log order, the later write wins where they overlap
    local all = m_a .. ("c"):rep(10) .. ("a"):rep(502) .. ("b"):rep(8192)
    assert.are.equal(all, state(6, { [5] = "all", [6] = "all" }))
    assert.are.equal(#all + 4096, #pc.replay("", log))
    -- the plans a seed gives are the same every time, and differ between seeds
    assert.are.same(pc.plan(log, 7, 3, 0), pc.plan(log, 7, 3, 0))
    local differ = false
    for n = 1, 20 do
      if pc.describe(log, pc.plan(log, 7, n, 0)):gsub("^state %d+ of seed %d+", "")
         ~= pc.describe(log, pc.plan(log, 8, n, 0)):gsub("^state %d+ of seed %d+", "") then differ = true end
    end
    assert.is_true(differ)
  end)

  it("the recorder sees every write: replaying the log on the initial file gives the final file", function()
    for _, durability in ipairs({ "full", "nometasync" }) do
      local rec = recording(durability)
      local replayed = pc.replay(rec.base, rec.log)
      assert.is_true(replayed == rec.final, durability .. ": replaying the log does not give the final data.mdb ("
        .. #replayed .. " bytes vs " .. #rec.final .. "): some write was not recorded")
      -- the acknowledgements are all there, in order, at the positions the appends returned
      local j, position = BASE, 0
      for k = 1, BASE do position = position + events.size(k) end
      for _, op in ipairs(rec.log.ops) do
        if op.kind == "A" then
          j = j + 1
          position = position + events.size(j)
          assert.are.equal(j, op.j)
          assert.are.equal(position, op.position, "acknowledged position of append " .. j)
        end
      end
      assert.are.equal(BASE + APPENDS, j)
      local s = pc.summary(rec.log)
      assert.is_true(s.syncs >= APPENDS, durability .. ": fewer syncs than appends")
      -- "full" writes each meta page through LMDB's O_DSYNC descriptor; "nometasync" does not
      -- (the one O_DSYNC write there is the store's first commit, made before the mode applies)
      if durability == "full" then assert.is_true(s.dsync_writes >= APPENDS)
      else assert.is_true(s.dsync_writes <= 1, "nometasync made " .. s.dsync_writes .. " O_DSYNC writes") end
    end
  end)

  it("the checker fails a store with half an append, changed data or an event never appended", function()
    local chronicle = require "chronicle"
    local cases = {
      half = function(s, j) s:append(events.stream(j), { events.batch(j)[1] }) end,
      changed = function(s, j)
        local b = events.batch(j)
        b[#b].data.k = 99
        s:append(events.stream(j), b)
      end,
      stranger = function(s, j) s:append(events.stream(j), { { type = "Deposited", data = { j = j } } }) end,
    }
    local want = { half = "append 5 is half there", changed = "append 5 event %d+: data differs",
                   stranger = "was never appended" }
    for name, damage in pairs(cases) do
      local d = dir .. "/checker-" .. name
      local s = assert(chronicle.open(d))
      for j = 1, 4 do assert(s:append(events.stream(j), events.batch(j))) end
      damage(s, 5)
      s:close()
      local r, ok = check(d, 4, 6)
      assert.is_false(ok, name .. ": the checker passed a bad store: " .. pc.describe_run(r))
      assert.is_false(r.crashed, pc.describe_run(r))
      assert.matches(want[name], r.stdout)
      -- the same store without its last append is fine
      local good = dir .. "/checker-good-" .. name
      s = assert(chronicle.open(good))
      for j = 1, 4 do assert(s:append(events.stream(j), events.batch(j))) end
      s:close()
      r, ok = check(good, 4, 6)
      assert.is_true(ok, pc.describe_run(r))
    end
  end)

  it("the checker catches a state that lost a synced write or had one torn", function()
    -- States the model never makes: the whole workload done and synced, then one write of the
    -- last commit (its pages and its meta page: all of them live in the last tree) taken away,
    -- or cut after its first sector.
    local rec = recording("full")
    local ops = rec.log.ops
    local last_ack = #ops
    while ops[last_ack].kind ~= "A" do last_ack = last_ack - 1 end
    local targets = {}
    for i = last_ack - 1, 1, -1 do
      if ops[i].kind == "A" then break end
      if ops[i].kind == "W" then targets[#targets + 1] = i end
    end
    assert.is_true(#targets >= 2, "the last commit made fewer than two writes")
    -- A page LMDB rewrote may come out the same as the stale copy under it where it matters:
    -- a branch page copied back onto the page number it had two commits before, pointing to
    -- the same children. Losing such a write damages nothing; those are counted, not checked.
    local function same_where_read(good, bad, off, len)
      for p = off, off + len - 1, 4096 do
        local g, b = good:sub(p + 1, p + 4096), bad:sub(p + 1, p + 4096)
        local flags = string.unpack("<I2", g, 11)
        if flags & 0x03 ~= 0 then   -- branch or leaf: header, pointers, and the nodes from `upper`
          local lower, upper = string.unpack("<I2I2", g, 13)
          if g:sub(1, lower) ~= b:sub(1, lower) or g:sub(upper + 1) ~= b:sub(upper + 1) then return false end
        elseif g ~= b then
          return false
        end
      end
      return true
    end
    local caught, harmless, missed = 0, 0, {}
    for _, i in ipairs(targets) do
      for _, how in ipairs({ "dropped", "torn" }) do
        if how == "dropped" or #ops[i].data > 512 then
          local img = pc.image(rec.base)
          for k = 1, #ops do
            local op = ops[k]
            if op.kind == "W" then
              if k ~= i then pc.apply(img, op.off, op.data)
              elseif how == "torn" then pc.apply(img, op.off, op.data:sub(1, 512)) end
            end
          end
          local bad = pc.bytes(img)
          if ops[i].off % 4096 == 0 and same_where_read(rec.final, bad, ops[i].off, #ops[i].data) then
            harmless = harmless + 1
          else
            local d = state_dir(dir, bad)
            local r, ok = check(d, BASE + APPENDS, BASE + APPENDS)
            if ok then missed[#missed + 1] = ("op %d (W %d+%d) %s"):format(i, ops[i].off, #ops[i].data, how)
            else caught = caught + 1 end
            remove_state(d)
          end
        end
      end
    end
    print(("\npowercut: checker self-test: %d broken states (a synced write of the last commit dropped "
           .. "or torn): %d caught, %d missed, %d harmless (the stale page reads the same)"):format(
           caught + #missed + harmless, caught, #missed, harmless))
    assert.are.same({}, missed)
    assert.is_true(caught >= 3, "fewer than three broken states were checked")

    -- a free list that lists a page in use (the main database's root): only LMDB's page walk
    -- sees it before a later commit hands that page out again
    local m = assert(lmdb.meta(rec.final))
    assert.are.equal(1, m.free.depth, "the free list is not one leaf page")
    local off = m.free.root * m.psize
    local node = off + string.unpack("<I2", rec.final, off + 17)
    local _, _, nflags, ksize = string.unpack("<I2I2I2I2", rec.final, node + 1)
    assert.are.equal(0, nflags & 1, "the free list record is on overflow pages")
    local ids = node + 8 + ksize
    assert.is_true(string.unpack("<I8", rec.final, ids + 1) >= 1, "the free list record is empty")
    local bad = rec.final:sub(1, ids + 8) .. string.pack("<I8", m.main.root) .. rec.final:sub(ids + 17)
    local d = state_dir(dir, bad)
    local r, ok = check(d, BASE + APPENDS, BASE + APPENDS)
    assert.is_false(ok, "a free list listing a page in use passed: " .. pc.describe_run(r))
    assert.matches("LMDB structure at the cut: page %d+ is free and in the main database", r.stdout)
    remove_state(d)
  end)

  for _, durability in ipairs({ "full", "nometasync" }) do
    it(("%q: every state a power cut can leave holds every acknowledged, synced append once, "
        .. "and nothing damaged"):format(durability), function()
      local rec = recording(durability)
      local st = sweep(dir, rec, STATES)
      report(durability, rec, st)
      assert_clean(durability, st)
      assert.is_true(st.states == STATES or ONLY ~= nil)
      if durability == "full" then
        -- "full": at no cut is an acknowledged append not yet synced
        for c = 0, #rec.log.ops do
          local cut = pc.cut(rec.log, c, BASE)
          assert.are.equal(cut.acked, cut.required, "with \"full\", cut after op " .. c .. ": acknowledged but not synced")
        end
      end
    end)
  end

  it("\"nometasync\": only the last acknowledged append can be lost", function()
    local rec = recording("nometasync")
    local worst, risky = 0, 0
    for c = 0, #rec.log.ops do
      local cut = pc.cut(rec.log, c, BASE)
      worst = math.max(worst, cut.acked - cut.required)
      if cut.acked > cut.required then risky = risky + 1 end
    end
    assert.are.equal(1, worst)
    assert.is_true(risky > 0)
  end)

  it("\"nosync\" promises nothing across a power cut: states lose acknowledged appends", function()
    local rec = recording("nosync")
    local st = { states = 0, ok = 0, lost = 0, damaged = 0, crashed = 0 }
    local count = math.max(10, STATES // 3, ONLY or 0)
    pc.each_state(rec.log, rec.base, SEED, count, BASE, function(plan, bytes)
      local d = state_dir(dir, bytes)
      -- what the program was told: every acknowledged append
      local r, ok = check(d, plan.cut.acked, plan.cut.max)
      st.states = st.states + 1
      if ok then st.ok = st.ok + 1
      elseif not r.crashed and r.stdout:match("^problem acknowledged append %d+ %(synced before the cut%) is missing") then
        st.lost = st.lost + 1
      elseif r.crashed then st.crashed = st.crashed + 1
      else st.damaged = st.damaged + 1 end
      remove_state(d)
    end, ONLY)
    print(("\npowercut: nosync: %d states: %d kept every acknowledged append, %d lost some, %d damaged "
           .. "(refused at open, or verify or a read found it), %d crashed the checker (LMDB abort or "
           .. "signal)"):format(st.states, st.ok, st.lost, st.damaged, st.crashed))
    -- the cut at the end with no unsynced write kept is the file from before the workload
    local last = pc.cut(rec.log, #rec.log.ops, BASE)
    local img = pc.image(rec.base)
    for i = 1, last.last_sync do
      local op = rec.log.ops[i]
      if op.kind == "W" then pc.apply(img, op.off, op.data) end
    end
    local d = state_dir(dir, pc.bytes(img))
    local r, ok = check(d, last.acked, last.max)
    assert.is_false(ok, "nosync kept everything acknowledged with no write after the last sync on disk")
    assert.matches("acknowledged append", r.stdout)
  end)
end)
