--- bench/peers_fields.lua: the peers' W3 and W4 (../shared/peers, README there) on chronicle
-- with the `fields` option, as a user who names the fields a replay uses would write them.
-- Same events, sizes and checks as the peers' lua/p0_chronicle.lua; prints lines in the
-- peers' form (`peer workload value unit`), so bench/peers.sh can run it beside them.
-- Durability "full" (only appends care; the reads are the same).
local chronicle = require "chronicle"

local function param(name, default) return tonumber(os.getenv(name) or default) end
local EVENTS, STREAMS = param("EVENTS", 100000), param("STREAMS", 1000)
local BATCH, LOADS = param("BATCH", 100), param("LOADS", 2000)
local PEER = "P0-chronicle-fields"

local FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
  .. "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam"
local function make_event(s, seq)  -- the peers' events (node/common.mjs)
  return {
    type = (seq % 5 == 4) and "Withdrawn" or "Deposited",
    data = { amount = (s * 31 + seq * 7) % 97 + 1,
             note = string.format("%s #%08d", FILLER, seq), account = "account-" .. s },
  }
end
local function stream_name(s) return "account-" .. s end
local function evolve(balance, type_, data)
  if type_ == "Deposited" then return balance + data.amount else return balance - data.amount end
end
local function gettime() return chronicle.now() / 1e9 end
local function emit(workload, value, unit) print(string.format("%s %s %.0f %s", PEER, workload, value, unit)) end
local function check(cond, msg) if not cond then error("check failed: " .. msg, 2) end end

local dir = assert(io.popen("mktemp -d /tmp/peerbench-fields.XXXXXX")):read("l")
local store = assert(chronicle.open(dir .. "/store", { durability = "full" }))
local ok, err = pcall(function()
  local version, expected = {}, {}
  for s = 0, STREAMS - 1 do version[s], expected[s] = 0, 0 end
  for c = 0, EVENTS // BATCH - 1 do
    local s, evs = c % STREAMS, {}
    for i = 1, BATCH do
      local e = make_event(s, version[s]); version[s] = version[s] + 1
      expected[s] = evolve(expected[s], e.type, e.data)
      evs[i] = e
    end
    assert(store:append(stream_name(s), evs))
  end

  -- W3f: 100-event loads through fold, asking for type and data only
  local t = gettime()
  for j = 0, LOADS - 1 do
    local s = j % STREAMS
    local balance, n = store:fold({ stream = stream_name(s), fields = { "type", "data" } }, 0,
                                  function(b, ev) return evolve(b, ev.type, ev.data) end)
    check(balance == expected[s] and n == version[s], "W3f " .. s)
  end
  emit("W3f", LOADS / (gettime() - t), "loads/s")

  -- W4f: the whole log in global order, one balance per stream, asking for stream, type and data
  t = gettime()
  local b2, n2 = store:fold({ fields = { "stream", "type", "data" } }, {}, function(b, ev)
    b[ev.stream] = evolve(b[ev.stream] or 0, ev.type, ev.data)
  end)
  local dt = gettime() - t
  check(n2 == EVENTS, "W4f count " .. tostring(n2))
  for s = 0, STREAMS - 1 do check((b2[stream_name(s)] or 0) == expected[s], "W4f " .. s) end
  emit("W4f", EVENTS / dt, "events/s")
  io.stderr:write(("# %s: all checks passed (%d events, %d streams)\n"):format(PEER, EVENTS, STREAMS))
end)
store:close()
os.execute("rm -rf '" .. dir .. "'")
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
