-- Several OS processes appending to the same streams of one store at once.
local helpers = require "helpers"
local chronicle = require "chronicle"

local WORKERS = 4
local PER_WORKER = 250
local STREAMS = 3

-- Each worker appends PER_WORKER events, one at a time, to streams shared with
-- the other workers. Before each append it reads the stream's last version and
-- passes it as `expected`; on a conflict it reads again and retries. It prints
-- one line per acknowledged event: "ack <id> <stream> <version> <position>".
local WORKER = [=[
local chronicle = require "chronicle"
local dir, worker, n, nstreams = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local store = assert(chronicle.open(dir))
local retries = 0
for i = 1, n do
  local stream = "acct-" .. ((worker + i) % nstreams + 1)
  local id = string.format("%08x-0000-7000-8000-%012x", worker, i)
  while true do
    local last = chronicle.NO_STREAM
    for ev in store:read(stream, { backward = true, count = 1 }) do last = ev.version end
    local res, err = store:append(stream, { { type = "Ticked", id = id, data = { worker = worker, i = i } } },
                                  { expected = last })
    if res then
      io.write(string.format("ack %s %s %d %d\n", id, stream, res.version, res.position))
      io.flush()
      break
    end
    if err.code ~= "conflict" then
      io.stderr:write("worker ", worker, ": ", tostring(err), "\n")
      os.exit(3)
    end
    retries = retries + 1
  end
end
store:close()
io.write("done ", worker, " ", retries, "\n")
]=]

describe("several processes appending to one store", function()
  after_each(helpers.cleanup)

  it("keep every acknowledged event exactly once, with gap-free positions and unique versions", function()
    local work = helpers.tmpdir()
    local dir = helpers.new_target(work .. "/store")   -- or a fresh PostgreSQL schema
    -- the store exists before the workers start, so they race on appends, not on creation
    helpers.open(nil, dir):close()
    local script = work .. "/worker.lua"
    helpers.write_file(script, WORKER)

    local jobs = {}
    for w = 1, WORKERS do
      jobs[#jobs + 1] = helpers.lua_command(script, dir, tostring(w), tostring(PER_WORKER), tostring(STREAMS))
        .. " > " .. helpers.quote(work .. "/out-" .. w) .. " 2> " .. helpers.quote(work .. "/err-" .. w) .. " &"
    end
    local started = os.time()
    os.execute("{ " .. table.concat(jobs, " ") .. " wait; }")
    assert.is_true(os.time() - started < 60, "the workers took too long")

    -- what the workers were told was written
    local acks, total = {}, 0
    for w = 1, WORKERS do
      local f = assert(io.open(work .. "/out-" .. w))
      local out = f:read("a")
      f:close()
      local ef = assert(io.open(work .. "/err-" .. w))
      local errors = ef:read("a")
      ef:close()
      assert.equals("", errors, "worker " .. w .. " wrote to stderr")
      assert.matches("done " .. w .. " %d+\n$", out, nil, false)
      for id, stream, version, position in out:gmatch("ack (%S+) (%S+) (%d+) (%d+)\n") do
        assert.is_nil(acks[id], "id acknowledged twice: " .. id)
        acks[id] = { stream = stream, version = tonumber(version), position = tonumber(position) }
        total = total + 1
      end
    end
    assert.equals(WORKERS * PER_WORKER, total)

    local store = helpers.open(nil, dir)
    -- every acknowledged event is in the log exactly once, where the worker was told
    local seen, position, versions, per_stream = {}, 0, {}, {}
    for ev in store:read_all() do
      position = position + 1
      assert.equals(position, ev.position, "positions must run 1..N without a gap")
      assert.is_nil(seen[ev.id], "event stored twice: " .. ev.id)
      seen[ev.id] = true
      local ack = acks[ev.id]
      assert.is_table(ack, "an event nobody acknowledged: " .. ev.id)
      assert.equals(ack.stream, ev.stream)
      assert.equals(ack.version, ev.version)
      assert.equals(ack.position, ev.position)
      assert.equals(tonumber(ev.id:sub(1, 8), 16), ev.data.worker)
      versions[ev.stream] = versions[ev.stream] or {}
      assert.is_nil(versions[ev.stream][ev.version], ev.stream .. " has version " .. ev.version .. " twice")
      versions[ev.stream][ev.version] = true
      per_stream[ev.stream] = (per_stream[ev.stream] or 0) + 1
    end
    assert.equals(total, position)
    for id in pairs(acks) do assert.is_true(seen[id], "acknowledged but missing: " .. id) end
    assert.equals(total, store:head())
    assert.equals(total, store:stats().events)
    assert.equals(STREAMS, store:stats().streams)

    -- each stream's versions run 0..count-1 and agree with stream_info and read()
    for stream, count in pairs(per_stream) do
      local info = assert(store:stream_info(stream))
      assert.equals(count, info.count)
      assert.equals(count - 1, info.version)
      local v = -1
      for ev in store:read(stream) do
        assert.equals(v + 1, ev.version)
        v = ev.version
      end
      assert.equals(count - 1, v)
    end
  end)
end)
