-- A persistent subscription consumed by several processes that ack, retry,
-- park and forget at random, two of them killed with SIGKILL with events in
-- hand and a new one joining: at the end every event was acked once or
-- parked, nothing was acked twice, and the parked ones replay and ack.
local helpers = require "helpers"
local chronicle = require "chronicle"

local CONSUMER = helpers.root .. "/spec/support/sub_consumer.lua"
local EVENTS = 400

local slurp, alive = helpers.slurp, helpers.alive

local function wait_for(what, seconds, cond)
  local deadline = chronicle.now() + math.floor(seconds * 1e9)
  while not cond() do
    assert(chronicle.now() < deadline, "gave up waiting: " .. what)
    os.execute("sleep 0.02")
  end
end

local function start(work, target, i)
  local c = { out = work .. "/consumer-" .. i, err = work .. "/consumer-" .. i .. ".err" }
  local cmd = "timeout -s KILL 90 " .. helpers.lua_command(CONSUMER, target, c.out, work .. "/stop", tostring(1000 + i))
  os.execute("sh -c " .. helpers.quote(cmd .. " > /dev/null 2> " .. helpers.quote(c.err) .. " < /dev/null &"))
  wait_for("consumer " .. i .. " to start", 20, function() return slurp(c.out .. ".pid"):match("^%d+") ~= nil end)
  c.pid = slurp(c.out .. ".pid"):match("^(%d+)")
  return c
end

local function lines(c, what)
  local out = {}
  for pos in slurp(c.out):gmatch(what .. " (%d+)") do out[#out + 1] = tonumber(pos) end
  return out
end

describe("a persistent subscription consumed by several processes", function()
  after_each(helpers.cleanup)

  it("ends with every event acked once or parked, across kills of consumers holding events", function()
    local store, target = helpers.open()
    local work = helpers.tmpdir()
    for i = 1, EVENTS / 20 do
      local batch = {}
      for j = 1, 20 do batch[j] = { stream = "order-" .. ((i * 20 + j) % 37), events = { { type = "Placed" } } } end
      assert(store:append_many(batch))
    end
    assert(store:subscription("billing", { ack_timeout = 0.5, max_retries = 2, max_in_flight = 40 }))
    local consumers = {}
    for i = 1, 4 do consumers[i] = start(work, target, i) end
    local function acked()
      local n = 0
      for _, c in ipairs(consumers) do n = n + #lines(c, "acked") end
      return n
    end
    wait_for("100 acks", 60, function() return acked() >= 100 end)
    for i = 1, 2 do
      os.execute("kill -KILL " .. consumers[i].pid)
      consumers[i].killed = true
    end
    consumers[5] = start(work, target, 5)
    wait_for("the subscription to drain", 90, function()
      local st = store:subscription_status("billing")
      return st.position == store:head() and st.in_flight == 0
    end)
    helpers.write_file(work .. "/stop", "")
    for _, c in ipairs(consumers) do
      if not c.killed then wait_for("a consumer to exit", 30, function() return not alive(c.pid) end) end
      assert.equals("", slurp(c.err), c.out .. " wrote to stderr")
    end

    local acks, acking_killed, took, redelivered = {}, {}, 0, 0
    for _, c in ipairs(consumers) do
      for _, p in ipairs(lines(c, "acked")) do
        assert.is_nil(acks[p], "position " .. p .. " acked twice")
        acks[p] = true
      end
      if c.killed then for _, p in ipairs(lines(c, "acking")) do acking_killed[p] = true end end
      for attempt in slurp(c.out):gmatch("take %d+ (%d+)") do
        took = took + 1
        if attempt ~= "1" then redelivered = redelivered + 1 end
      end
    end
    local parked = {}
    local sub = assert(store:subscription("billing"))
    for p in sub:parked() do
      assert.is_nil(acks[p.position], "position " .. p.position .. " is parked and was acked")
      parked[p.position] = true
    end
    local n_parked = 0
    for p = 1, EVENTS do
      -- a killed consumer may have acked without living to write it down
      assert.is_true(acks[p] or parked[p] or acking_killed[p] or false, "position " .. p .. " was neither acked nor parked")
      if parked[p] then n_parked = n_parked + 1 end
    end
    assert.is_true(n_parked > 0, "the consumers park some events")
    -- the parked ones come back, once each
    assert.equals(n_parked, sub:replay_parked())
    local back = {}
    for ev in sub:take(1000) do
      assert.is_true(parked[ev.position] or false)
      assert.is_nil(back[ev.position])
      back[ev.position] = true
      assert.is_true(sub:ack(ev))
    end
    local n_back = 0
    for _ in pairs(back) do n_back = n_back + 1 end
    assert.equals(n_parked, n_back)
    local st = store:subscription_status("billing")
    assert.equals(0, st.in_flight)
    assert.equals(0, st.parked)
    print(("\n  %d events: %d deliveries (%d redeliveries), %d parked and replayed"):format(EVENTS, took, redelivered,
      n_parked))
  end)
end)
