-- Consumer groups: several runner processes serving one handler or reactor
-- share its work by stream, take the share of a member killed mid-run, give
-- a share to a member that joins; a reactor's outputs stay exactly-once.
local helpers = require "helpers"
local chronicle = require "chronicle"
local group = require "chronicle.read.group"

local MEMBER = helpers.root .. "/spec/support/group_member.lua"
local LEASE = "1"
-- The handler run's size: CHRONICLE_GROUP_SIZE="members,streams,events per stream,kills,delay ms"
-- (default "2,40,25,1,4": two members, a third joining, one killed; the issue's full run is
-- "4,200,100,2,1").
local SIZE = {}
for n in (os.getenv("CHRONICLE_GROUP_SIZE") or "2,40,25,1,4"):gmatch("%d+") do SIZE[#SIZE + 1] = tonumber(n) end
local MEMBERS, STREAMS, PER_STREAM, KILLS, DELAY = table.unpack(SIZE)

local slurp, alive = helpers.slurp, helpers.alive

-- Polls `cond` every 20 ms; fails the test after `seconds` (a bound, not a measurement).
local function wait_for(what, seconds, cond)
  local deadline = chronicle.now() + math.floor(seconds * 1e9)
  while not cond() do
    assert(chronicle.now() < deadline, "gave up waiting: " .. what)
    os.execute("sleep 0.02")
  end
end

-- Starts member `i` (bounded by `timeout`); returns its record.
local function start(work, target, kind, i, delay)
  local m = { out = work .. "/member-" .. i, err = work .. "/member-" .. i .. ".err" }
  local cmd = "timeout -s KILL 90 " .. helpers.lua_command(MEMBER, target, kind, m.out, work .. "/stop", LEASE,
                                                          tostring(delay))
  os.execute("sh -c " .. helpers.quote(cmd .. " > /dev/null 2> " .. helpers.quote(m.err) .. " < /dev/null &"))
  wait_for("member " .. i .. " to start", 20, function() return slurp(m.out .. ".pid"):match("^%d+") ~= nil end)
  m.pid = slurp(m.out .. ".pid"):match("^(%d+)")
  return m
end

local function deliveries(m)
  local list = {}
  for line in slurp(m.out):gmatch("[^\n]+") do
    local pid, stream, version, position, t0, t1 = line:match("^(%d+) (%S+) (%d+) (%d+) (%d+) (%d+)$")
    if pid then
      list[#list + 1] = { member = m, stream = stream, version = tonumber(version), position = tonumber(position),
                          t0 = tonumber(t0), t1 = tonumber(t1) }
    end
  end
  return list
end

local function count_lines(m)
  local n = 0
  for _ in slurp(m.out):gmatch("\n") do n = n + 1 end
  return n
end

local function fill(store, streams, per_stream)
  local n = 0
  for v = 1, per_stream do
    local batch = {}
    for s = 1, streams do
      batch[#batch + 1] = { stream = "order-" .. s, events = { { type = "Ticked", data = { v = v } } } }
      n = n + 1
    end
    assert(store:append_many(batch))
  end
  return n
end

local function stop_all(work, members)
  helpers.write_file(work .. "/stop", "")
  for _, m in ipairs(members) do
    if m.stopped then os.execute("kill -CONT " .. m.pid) end
    if not m.killed then wait_for("member " .. m.out .. " to exit", 30, function() return not alive(m.pid) end) end
  end
  for _, m in ipairs(members) do
    assert.equals("", slurp(m.err), "member " .. m.out .. " wrote to stderr")
  end
end

-- Every member saw each stream's events in version order, and no two members
-- handled events of one stream at overlapping times (except what the killed
-- member had in hand: it never finished it, so it left no record).
local function check_order_and_exclusion(members)
  local by_stream = {}
  for _, m in ipairs(members) do
    local last = {}
    for _, d in ipairs(deliveries(m)) do
      assert.is_true((last[d.stream] or -1) < d.version or m.paused,
        ("member %s saw %s version %d after %d"):format(m.out, d.stream, d.version, last[d.stream] or -1))
      last[d.stream] = d.version
      local list = by_stream[d.stream] or {}
      by_stream[d.stream] = list
      list[#list + 1] = d
    end
  end
  for stream, list in pairs(by_stream) do
    table.sort(list, function(a, b) return a.t0 < b.t0 end)
    for i = 2, #list do
      local a, b = list[i - 1], list[i]
      if a.member ~= b.member then
        assert.is_true(a.t1 <= b.t0, ("%s: version %d (member %s) and version %d (member %s) were handled at once")
          :format(stream, a.version, a.member.out, b.version, b.member.out))
      end
    end
  end
end

describe("a handler served by several runner processes", function()
  after_each(helpers.cleanup)

  it("handles every event, by stream, one member at a time; a joining member takes a share, a killed member's share moves", function()
    local store, target = helpers.open()
    local work = helpers.tmpdir()
    local total = fill(store, STREAMS, PER_STREAM)
    local members = {}
    for i = 1, MEMBERS do members[i] = start(work, target, "handler", i, DELAY) end
    local function delivered()
      local n = 0
      for _, m in ipairs(members) do n = n + count_lines(m) end
      return n
    end
    wait_for("the first deliveries", 120, function() return delivered() >= total * 0.15 end)
    local joiner = start(work, target, "handler", MEMBERS + 1, DELAY)
    members[#members + 1] = joiner
    wait_for("the new member to take a share", 60, function() return count_lines(joiner) >= 20 end)
    local handled_by_victim = {}
    for k = 1, KILLS do
      local victim = members[k]
      os.execute("kill -KILL " .. victim.pid)
      victim.killed = true
      wait_for("the killed member to be gone", 10, function() return not alive(victim.pid) end)
      for _, d in ipairs(deliveries(victim)) do handled_by_victim[d.position] = true end
    end
    wait_for("every event to be handled", 300, function()
      local seen, n = {}, 0
      for _, m in ipairs(members) do
        for _, d in ipairs(deliveries(m)) do
          if not seen[d.position] then seen[d.position], n = true, n + 1 end
        end
      end
      return n == total
    end)
    stop_all(work, members)

    local times = {}
    for _, m in ipairs(members) do
      assert.is_true(#deliveries(m) > 0, "member " .. m.out .. " handled nothing")
      for _, d in ipairs(deliveries(m)) do
        times[d.position] = (times[d.position] or 0) + 1
        -- only what the killed member handled and had not committed is handled twice
        if times[d.position] > 1 then
          assert.is_true(handled_by_victim[d.position] == true, "position " .. d.position .. " handled twice")
        end
      end
    end
    for p = 1, total do assert.is_true((times[p] or 0) >= 1, "position " .. p .. " was never handled") end
    local twice = 0
    for _, n in pairs(times) do if n > 1 then twice = twice + 1 end end
    local shares = {}
    for i, m in ipairs(members) do shares[i] = #deliveries(m) end
    print(("\n  %d events in %d streams; deliveries by member: %s (the first %d killed, the last joined); handled twice: %d")
      :format(total, STREAMS, table.concat(shares, ", "), KILLS, twice))
    check_order_and_exclusion(members)
    -- the group's low-water mark reached the head; its members left
    assert.equals(store:head(), store:kv_get("checkpoints", "h:mailer"))
    local st = group.status(store, "handler", "mailer")
    assert.equals(16, st.partitions)
    assert.equals(0, st.lag)
  end)
end)

describe("a reactor served by several runner processes", function()
  after_each(helpers.cleanup)

  it("answers every event exactly once, in stream order, across a SIGKILL and a member stopped past its lease", function()
    local store, target = helpers.open()
    local work = helpers.tmpdir()
    local total = fill(store, 30, 20)
    local members = {}
    for i = 1, 3 do members[i] = start(work, target, "reactor", i, 3) end
    wait_for("the first 100 reactions", 60, function()
      return count_lines(members[1]) + count_lines(members[2]) + count_lines(members[3]) >= 100
    end)
    os.execute("kill -KILL " .. members[1].pid)
    members[1].killed = true
    -- stopped for twice its lease (alive, so its leases expire; the others take
    -- its share unless it stopped holding the store's write lock): when it goes
    -- on it cannot commit what it had in hand
    os.execute("kill -STOP " .. members[2].pid)
    members[2].stopped, members[2].paused = true, true
    local outputs = function()
      local n = 0
      for _ in store:read_all({ types = "Echoed" }) do n = n + 1 end
      return n
    end
    os.execute("sleep " .. 2 * tonumber(LEASE))
    os.execute("kill -CONT " .. members[2].pid)
    members[2].stopped = false
    wait_for("every event to be answered", 60, function() return outputs() >= total end)
    stop_all(work, members)

    local answered = {}
    local last_source = {}
    for ev in store:read_all({ types = "Echoed" }) do
      local source = ev.data.source
      assert.is_nil(answered[source], "event " .. source .. " was answered twice")
      answered[source] = true
      assert.is_true((last_source[ev.stream] or 0) < source, ev.stream .. ": answers out of order")
      last_source[ev.stream] = source
    end
    local n = 0
    for _ in pairs(answered) do n = n + 1 end
    assert.equals(total, n)
    local shares = {}
    for i, m in ipairs(members) do shares[i] = #deliveries(m) end
    print(("\n  %d events; reactions tried by member: %s (1 killed, 2 stopped past its lease)")
      :format(total, table.concat(shares, ", ")))
    local st = group.status(store, "reactor", "echo")
    assert.equals(0, #st.members, "every member left or was tidied away")
  end)
end)

-- Members with identities of their own (as if in other processes on another
-- host), driven beat by beat.
local function member(store, id, opts)
  opts = opts or {}
  return group.new(store, opts.kind or "handler", opts.name or "mailer", {
    lease = opts.lease or 30, partitions = opts.partitions or 4,
    me = { id = id, pid = 1, start = "0", boot = "elsewhere", host = "host-" .. id },
  })
end

local function owned(g)
  local out = {}
  for p in pairs(g.owned) do out[#out + 1] = p end
  table.sort(out)
  return out
end

describe("a consumer group", function()
  after_each(helpers.cleanup)

  it("deals its partitions to the live members: a joining member gets its share once the holder lets it go", function()
    local store = helpers.open()
    local a, b = member(store, "aaaa"), member(store, "bbbb")
    assert.is_true(a:beat())
    assert.same({ 0, 1, 2, 3 }, owned(a))
    assert.is_true(a.settled)
    assert.is_true(b:beat())
    assert.same({}, owned(b), "what a live member holds is not taken")
    assert.is_false(b.settled)
    assert.is_true(a:beat())          -- a sees b and releases what is dealt to b
    assert.same({ 0, 2 }, owned(a))
    assert.is_true(b:beat())
    assert.same({ 1, 3 }, owned(b))
    assert.is_true(b.settled)
    local st = store:group_status("handler", "mailer")
    assert.equals(4, st.partitions)
    assert.equals(2, #st.members)
    assert.same({ 0, 2 }, st.members[1].partitions)
    assert.equals(0.5, st.members[2].share)
    assert.equals("host-bbbb", st.members[2].host)
    assert.same({}, st.unowned)
    -- b leaves: its partitions go back to a at a's next beat
    assert.truthy(b:leave())
    assert.is_true(a:beat())
    assert.same({ 0, 1, 2, 3 }, owned(a))
    assert.equals(1, #store:group_status("handler", "mailer").members)
  end)

  it("gives the partitions of a member that stopped renewing to the others once its lease expired", function()
    local store = helpers.open()
    local a, b = member(store, "aaaa", { lease = 30 }), member(store, "bbbb", { lease = 0.3 })
    assert.is_true(b:beat())
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(a:beat())
    assert.same({ 0, 2 }, owned(a))
    -- b stops beating; a takes over only after b's lease ran out
    local until_ = store:now() + 300000000
    assert.is_true(a:beat())
    if store:now() < until_ then assert.same({ 0, 2 }, owned(a)) end
    while store:now() <= until_ do os.execute("sleep 0.05") end
    assert.is_true(a:beat())
    assert.same({ 0, 1, 2, 3 }, owned(a))
  end)

  it("takes the partitions of a member whose process on this host is gone, even as an unreaped zombie", function()
    local store = helpers.open()
    -- a child of this process, killed and left unreaped until the end: a zombie,
    -- as a killed runner is when no one waits for it
    local child = assert(io.popen("echo $$; exec sleep 30"))
    local pid = child:read("l")
    finally(function()
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      child:close()
    end)
    local stat = slurp("/proc/" .. pid .. "/stat")
    local start = stat:match("^%d+ %b() %a (.*)$"):match(("%S+ "):rep(18) .. "(%S+)")
    local boot = slurp("/proc/sys/kernel/random/boot_id"):gsub("%s", "")
    local a = member(store, "aaaa")
    local b = group.new(store, "handler", "mailer", {
      lease = 30, partitions = 4, me = { id = "0000", pid = tonumber(pid), start = start, boot = boot, host = "here" } })
    assert.is_true(b:beat())
    assert.is_true(a:beat())
    assert.same({}, owned(a), "a live member keeps what it holds")
    assert.is_true(b:beat())          -- b sees a and releases what is dealt to a
    assert.is_true(a:beat())
    assert.same({ 1, 3 }, owned(a))
    os.execute("kill -9 " .. pid)
    wait_for("the child to die", 10, function() return slurp("/proc/" .. pid .. "/stat"):match("^%d+ %b() Z") ~= nil end)
    assert.is_true(a:beat())
    assert.same({ 0, 1, 2, 3 }, owned(a), "a zombie holds nothing")
    assert.is_true(a.settled)
  end)

  it("does not let a member whose lease was taken commit: a reactor's outputs happen once", function()
    local reactor = require "chronicle.read.reactor"
    local store = helpers.open()
    for i = 1, 5 do assert(store:append("order-" .. i, { { type = "Placed" } })) end
    local r = store:reactor { name = "echo", handlers = {
      Placed = function(ev) return { { stream = "echo-" .. ev.stream, type = "Echoed", data = { source = ev.position } } } end } }
    local a = member(store, "aaaa", { kind = "reactor", name = "echo", lease = 0.2 })
    local b = member(store, "bbbb", { kind = "reactor", name = "echo", lease = 30 })
    assert.is_true(a:beat())
    local until_ = store:now() + 200000000
    while store:now() <= until_ do os.execute("sleep 0.05") end
    assert.is_true(b:beat())            -- a's leases expired: b takes every partition
    assert.same({ 0, 1, 2, 3 }, owned(b))
    -- a still believes it holds them; its batch does not commit
    assert.equals("progress", reactor.run_batch(store, r, a))
    assert.equals(5, store:head(), "nothing was appended by the member that lost its leases")
    assert.equals(0, a.owned_count, "it knows it lost them")
    for _ = 1, 10 do
      if reactor.run_batch(store, r, b) == "idle" then break end
    end
    local sources = {}
    for ev in store:read_all({ types = "Echoed" }) do sources[#sources + 1] = ev.data.source end
    table.sort(sources)
    assert.same({ 1, 2, 3, 4, 5 }, sources)
  end)

  it("does not lose a batch that commits while another member takes its partitions over", function()
    local reactor = require "chronicle.read.reactor"
    local store, target = helpers.open()
    local other = helpers.track(assert(chronicle.open(target)))
    for i = 1, 5 do assert(store:append("order-" .. i, { { type = "Placed" } })) end
    local r = store:reactor { name = "echo", handlers = {
      Placed = function(ev) return { { stream = "echo-" .. ev.stream, type = "Echoed", data = { source = ev.position } } } end } }
    local a = member(store, "aaaa", { kind = "reactor", name = "echo", lease = 0.2 })
    local b = member(other, "bbbb", { kind = "reactor", name = "echo", lease = 30 })
    assert.is_true(a:beat())
    local until_ = store:now() + 200000000
    while store:now() <= until_ do os.execute("sleep 0.05") end
    -- b reads a's checkpoints to take its partitions over; a's batch commits right then
    local get, fired = other.kv_get, false
    rawset(other, "kv_get", function(self, space, key)
      local v, e = get(self, space, key)
      if key == "reactor:echo:k:aaaa" and not fired then
        fired = true
        assert.equals("progress", reactor.run_batch(store, r, a))
      end
      return v, e
    end)
    assert.is_true(b:beat())
    assert.is_true(fired)
    assert.same({ 0, 1, 2, 3 }, owned(b))
    local rb = other:reactor { name = "echo", handlers = r.handlers }
    for _ = 1, 10 do
      if reactor.run_batch(other, rb, b) == "idle" then break end
    end
    local n = 0
    for _ in store:read_all({ types = "Echoed" }) do n = n + 1 end
    assert.equals(5, n, "every event answered once: b started from what a committed")
  end)

  it("brings its low-water mark to the head when its members leave, though each last batch saw the other behind", function()
    local reactor = require "chronicle.read.reactor"
    local store, target = helpers.open()
    local other = helpers.track(assert(chronicle.open(target)))
    for i = 1, 8 do assert(store:append("order-" .. i, { { type = "Placed" } })) end
    local handlers = { Placed = function() return {} end }
    local ra, rb = store:reactor { name = "echo", handlers = handlers }, other:reactor { name = "echo", handlers = handlers }
    local a = member(store, "aaaa", { kind = "reactor", name = "echo" })
    local b = member(other, "bbbb", { kind = "reactor", name = "echo" })
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(a.settled and b.settled)
    assert.equals(4, #owned(a) + #owned(b))
    assert.is_true(#owned(a) > 0 and #owned(b) > 0)
    -- b reads where its partitions are (and a's, still at 0) before a's batch commits
    assert.truthy(b:cursor(20))
    assert.equals("progress", reactor.run_batch(store, ra, a))
    assert.equals("progress", reactor.run_batch(other, rb, b))
    assert.is_nil(store:kv_get("checkpoints", "r:echo"), "each batch saw the other member's partitions at 0")
    assert.truthy(a:leave())
    assert.truthy(b:leave())
    assert.equals(store:head(), store:kv_get("checkpoints", "r:echo"))
    assert.equals(0, group.status(store, "reactor", "echo").lag)
  end)

  it("deals a backlog so the members' pending events are even, not the partitions round robin", function()
    local store = helpers.open()
    -- one stream in each of the 4 partitions: 30 events pending in partitions 0 and 2, 10 in 1 and 3
    -- (round robin over two members would give one of them 60 and the other 20)
    local stream, n = {}, 0
    while not (stream[0] and stream[1] and stream[2] and stream[3]) do
      n = n + 1
      local p = group.partition("order-" .. n, 4)
      stream[p] = stream[p] or ("order-" .. n)
    end
    local size = { [0] = 30, [1] = 10, [2] = 30, [3] = 10 }
    for p = 0, 3 do
      for i = 1, size[p] do assert(store:append(stream[p], { { type = "Ticked", data = { i = i } } })) end
    end
    local a, b = member(store, "aaaa"), member(store, "bbbb")
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(a:changed(), "a notices b joined")
    assert.is_true(a:beat())          -- a deals (it has the lowest id) and lets b's share go
    assert.is_true(b:beat())
    local function pending_of(g)
      local sum = 0
      for p in pairs(g.owned) do sum = sum + size[p] end
      return sum
    end
    assert.equals(2, #owned(a))
    assert.equals(2, #owned(b))
    assert.equals(40, pending_of(a))
    assert.equals(40, pending_of(b))
    assert.is_true(a.settled and b.settled)
    -- the deal holds while the members stay: no partition moves at the next beats
    local before_a, before_b = owned(a), owned(b)
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.same(before_a, owned(a))
    assert.same(before_b, owned(b))
    -- a settled member looks again when the deal row changes (a holder must let go mid-batch)
    local later = require("chronicle.common").now() + 1000000000
    assert.is_false(b:changed(later))
    local deal = store:kv_get(group.SPACE, "handler:mailer:d")
    assert(store:write { puts = { { group.SPACE, "handler:mailer:d", deal:gsub("|.*", "|") } } })
    assert.is_true(b:changed(later + 1000000000))
    assert(store:write { puts = { { group.SPACE, "handler:mailer:d", deal } } })
    -- a member joins: the deal is made again, for three
    local c = member(store, "cccc")
    assert.is_true(c:beat())
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(c:beat())
    assert.equals(4, #owned(a) + #owned(b) + #owned(c))
    assert.truthy(store:kv_get(group.SPACE, "handler:mailer:d"):match("^aaaa,bbbb,cccc|"))
  end)

  it("balances weights heaviest first, ties to the member with the fewest partitions", function()
    local owner = group.balance({ [0] = 5, [1] = 1, [2] = 5, [3] = 1, [4] = 0, [5] = 0 }, { "x", "y" }, 6)
    local load, count = { x = 0, y = 0 }, { x = 0, y = 0 }
    local w = { [0] = 5, [1] = 1, [2] = 5, [3] = 1, [4] = 0, [5] = 0 }
    for p = 0, 5 do load[owner[p]], count[owner[p]] = load[owner[p]] + w[p], count[owner[p]] + 1 end
    assert.same({ x = 6, y = 6 }, load)
    assert.same({ x = 3, y = 3 }, count)
  end)

  it("starts each partition from its own checkpoint, then moves them all together", function()
    local handler = require "chronicle.read.handler"
    local store = helpers.open()
    fill(store, 8, 3)                  -- positions 1..24: version v of order-s at 8 * (v - 1) + s
    local a = member(store, "aaaa")
    -- partitions 0 and 1 were released at 8 and 16; a's own row has 2 at 16
    assert(store:write { puts = { { group.SPACE, "handler:mailer:c:0000", 8 }, { group.SPACE, "handler:mailer:c:0001", 16 },
                                  { group.SPACE, "handler:mailer:k:aaaa", "2:16 3:0" } } })
    local from = { [0] = 8, [1] = 16, [2] = 16, [3] = 0 }
    local seen = {}
    local h = handler.define("Ticked", function(ev)
      assert.is_nil(seen[ev.position], "handled twice: " .. ev.position)
      seen[ev.position] = ev.stream
    end, { name = "mailer", batch_size = 3 })
    assert.is_true(a:beat())
    assert.same({ 0, 1, 2, 3 }, owned(a))
    for _ = 1, 50 do
      if handler.run_batch(store, h, a) == "idle" then break end
    end
    for pos = 1, 24 do
      local stream = "order-" .. ((pos - 1) % 8 + 1)
      local wanted = pos > from[group.partition(stream, 4)]
      assert.equals(wanted, seen[pos] ~= nil, ("position %d of %s"):format(pos, stream))
    end
    assert.same({ [0] = 24, [1] = 24, [2] = 24, [3] = 24 }, group.decode_marks(store:kv_get(group.SPACE, "handler:mailer:k:aaaa")))
    assert.equals(24, store:kv_get("checkpoints", "h:mailer"))
    -- the row, with one checkpoint for every partition or one each
    assert.equals("0:7 1:7 5:7", group.encode_marks({ 0, 1, 5 }, 7))
    local row = group.encode_marks({ 0, 1, 5 }, { [0] = 7, [1] = 9, [5] = 7 })
    assert.equals("0:7 1:9 5:7", row)
    assert.same({ [0] = 7, [1] = 9, [5] = 7 }, group.decode_marks(row))
  end)

  it("runs a projection on one member at a time", function()
    local store = helpers.open()
    local a = member(store, "aaaa", { kind = "projection", name = "counts", partitions = 1 })
    local b = member(store, "bbbb", { kind = "projection", name = "counts", partitions = 1 })
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.is_true(a:beat())
    assert.is_true(b:beat())
    assert.equals(1, a.owned_count + b.owned_count)
  end)

  it("serves everything with one runner alone, and shows it in the status calls", function()
    local store = helpers.open()
    helpers.fill(store, "order-1", 3, "Placed")
    helpers.fill(store, "order-2", 2, "Placed")
    local seen = 0
    store:on("Placed", function() seen = seen + 1 end, { name = "mailer" })
    local runner = chronicle.runner(store, { lease = 2 })
    runner:run_once()
    assert.equals(5, seen)
    local st = store:handler_status().mailer
    assert.equals(5, st.checkpoint)
    assert.equals(0, st.lag)
    assert.equals(1, #st.group.members)
    assert.equals(16, #st.group.members[1].partitions)
    assert.equals(0, st.group.members[1].lag)
    assert.equals(1, #runner:group_status())
    assert.equals("idle", (runner:run({ until_idle = true })))
    assert.equals(0, #store:group_status("handler", "mailer").members, "run leaves its groups when it returns")
    helpers.fill(store, "order-3", 1, "Placed")
    runner:run_once()
    assert.equals(6, seen)
  end)

  it("refuses bad runner options, and a member asking for another partition count", function()
    local store = helpers.open()
    for _, bad in ipairs({ { lease = 0 }, { lease = -1 }, { lease = "5" }, { partitions = 0 }, { partitions = 1.5 },
                           { partitions = 5000 }, { groups = "yes" } }) do
      local k = next(bad)
      assert.matches("option '" .. k .. "' must be", helpers.raises(chronicle.runner, store, bad), nil, true)
    end
    helpers.fill(store, "order-1", 2, "Placed")
    local seen = 0
    store:on("Placed", function() seen = seen + 1 end, { name = "mailer" })
    chronicle.runner(store, { partitions = 8 }):run_once()
    assert.equals(2, seen)
    helpers.fill(store, "order-1", 1, "Placed")
    local _, report = chronicle.runner(store, { partitions = 4 }):run_once()
    assert.equals(2, seen, "a member that disagrees on the partitions does nothing")
    assert.equals(1, #report.errors)
    assert.equals("group_mismatch", report.errors[1].error.code)
    assert.matches("every member must use the same 'partitions'", report.errors[1].message, nil, true)
    assert.is_false(report.ok)
  end)

  it("with groups = false does all the work, as a runner alone", function()
    local store = helpers.open()
    helpers.fill(store, "order-1", 3, "Placed")
    local seen = 0
    store:on("Placed", function() seen = seen + 1 end, { name = "mailer" })
    chronicle.runner(store, { groups = false }):run_once()
    assert.equals(3, seen)
    assert.is_nil(store:group_status("handler", "mailer"))
  end)
end)
