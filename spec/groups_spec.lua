-- Consumer groups: several runner processes serving one handler or reactor
-- share its work by stream, take the share of a member killed mid-run, give
-- a share to a member that joins; a reactor's outputs stay exactly-once.
local helpers = require "helpers"
local chronicle = require "chronicle"
local group = require "chronicle.group"

local MEMBER = helpers.root .. "/spec/support/group_member.lua"
local LEASE = "1"

local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function alive(pid)
  local stat = slurp("/proc/" .. pid .. "/stat")
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

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
      assert.is_true((last[d.stream] or -1) < d.version or m.killed or m.stopped,
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
    local total = fill(store, 40, 25)
    local members = { start(work, target, "handler", 1, 4), start(work, target, "handler", 2, 4) }
    wait_for("the first 150 deliveries", 60, function() return count_lines(members[1]) + count_lines(members[2]) >= 150 end)
    members[3] = start(work, target, "handler", 3, 4)
    wait_for("the new member to take a share", 60, function() return count_lines(members[3]) >= 20 end)
    local victim = members[1]
    local before_kill = count_lines(victim)
    os.execute("kill -KILL " .. victim.pid)
    victim.killed = true
    wait_for("the killed member to be gone", 10, function() return not alive(victim.pid) end)
    local handled_by_victim = {}
    for _, d in ipairs(deliveries(victim)) do handled_by_victim[d.position] = true end
    assert.is_true(before_kill <= #deliveries(victim))
    wait_for("every event to be handled", 60, function()
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
    print(("\n  %d events; deliveries by member: %s (member 1 killed); handled twice: %d")
      :format(total, table.concat(shares, ", "), twice))
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
    -- stopped (alive, so its leases must expire): the others take its share, and
    -- when it goes on it cannot commit what it had in hand
    os.execute("kill -STOP " .. members[2].pid)
    members[2].stopped = true
    local outputs = function()
      local n = 0
      for _ in store:read_all({ types = "Echoed" }) do n = n + 1 end
      return n
    end
    local at_stop = outputs()
    wait_for("the third member to take over", 60, function() return outputs() >= at_stop + 100 or outputs() == total end)
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
