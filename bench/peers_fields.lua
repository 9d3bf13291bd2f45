--- bench/peers_fields.lua: the peers' W3 and W4 (../shared/peers, README there) on chronicle
-- with the `fields` option (and fold's `spread`, and a repository), as a user who names the
-- fields a replay uses would write them.
-- Same events, sizes and checks as the peers' lua/p0_chronicle.lua; prints lines in the
-- peers' form (`peer workload value unit`), so bench/peers.sh can run it beside them.
-- Durability "full" (only appends care; the reads are the same).
local chronicle = require "chronicle"

local function param(name, default) return tonumber(os.getenv(name) or default) end
local EVENTS, STREAMS = param("EVENTS", 100000), param("STREAMS", 1000)
local BATCH, LOADS = param("BATCH", 100), param("LOADS", 2000)
local ROUNDS = param("FIELDS_ROUNDS", 9)
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

  -- W3f: 100-event loads through fold, asking for type and data only. W3r: the same loads
  -- through a repository (an aggregate whose `fields` default to type and data); W3a: the raw
  -- read the repository runs on, fold with the same fields, apply functions and state. The
  -- three alternate (rotating order) in FIELDS_ROUNDS rounds, so that W3r / W3a is measured
  -- in one run; its median over the rounds is printed, by wall clock and by CPU time.
  local apply = {
    Deposited = function(st, ev) st.balance = st.balance + ev.data.amount end,
    Withdrawn = function(st, ev) st.balance = st.balance - ev.data.amount end,
  }
  local Account = chronicle.aggregate { name = "account", initial = function() return { balance = 0 } end,
                                        apply = apply }
  local repo = store:repository(Account)
  local function applier(st, ev) return apply[ev.type](st, ev) end
  local work = {
    f = function()
      for j = 0, LOADS - 1 do
        local s = j % STREAMS
        local balance, n = store:fold({ stream = stream_name(s), fields = { "type", "data" } }, 0,
                                      function(b, ev) return evolve(b, ev.type, ev.data) end)
        check(balance == expected[s] and n == version[s], "W3f " .. s)
      end
    end,
    a = function()
      for j = 0, LOADS - 1 do
        local s = j % STREAMS
        local state, n = store:fold({ stream = stream_name(s), fields = { "type", "data" } }, Account.initial(),
                                    applier)
        check(state.balance == expected[s] and n == version[s], "W3a " .. s)
      end
    end,
    r = function()
      for j = 0, LOADS - 1 do
        local s = j % STREAMS
        local state, v = repo:load(tostring(s))
        check(state.balance == expected[s] and v == version[s] - 1, "W3r " .. s)
      end
    end,
  }
  local orders = { { "f", "a", "r" }, { "r", "f", "a" }, { "a", "r", "f" } }
  local best, wall, cpu = { f = 0, a = 0, r = 0 }, { ra = {}, rf = {} }, { ra = {}, rf = {} }
  for round = 1, ROUNDS do
    local w, c = {}, {}
    for _, k in ipairs(orders[(round - 1) % 3 + 1]) do
      local t0, c0 = gettime(), os.clock()
      work[k]()
      w[k], c[k] = LOADS / (gettime() - t0), LOADS / (os.clock() - c0)
      if w[k] > best[k] then best[k] = w[k] end
    end
    wall.ra[round], cpu.ra[round] = w.r / w.a, c.r / c.a
    wall.rf[round], cpu.rf[round] = w.r / w.f, c.r / c.f
  end
  local function median(xs)
    table.sort(xs)
    return xs[(#xs + 1) // 2]
  end
  emit("W3f", best.f, "loads/s")
  emit("W3a", best.a, "loads/s")
  emit("W3r", best.r, "loads/s")
  print(("# %s W3r/W3a (repository load / the raw fold it runs on), %d rounds: best %.3f, median %.3f wall, %.3f CPU")
    :format(PEER, ROUNDS, best.r / best.a, median(wall.ra), median(cpu.ra)))
  print(("# %s W3r/W3f (repository load / the peers' fold with fields): best %.3f, median %.3f wall, %.3f CPU")
    :format(PEER, best.r / best.f, median(wall.rf), median(cpu.rf)))

  -- W4f: the whole log in global order, one balance per stream, asking for stream, type and data
  local t = gettime()
  local b2, n2 = store:fold({ fields = { "stream", "type", "data" } }, {}, function(b, ev)
    b[ev.stream] = evolve(b[ev.stream] or 0, ev.type, ev.data)
  end)
  local dt = gettime() - t
  check(n2 == EVENTS, "W4f count " .. tostring(n2))
  for s = 0, STREAMS - 1 do check((b2[stream_name(s)] or 0) == expected[s], "W4f " .. s) end
  emit("W4f", EVENTS / dt, "events/s")

  -- W4s: the same replay with spread = true: fn(state, stream, type, data), no event table
  t = gettime()
  local b3, n3 = store:fold({ fields = { "stream", "type", "data" }, spread = true }, {},
    function(b, stream, type_, data) b[stream] = evolve(b[stream] or 0, type_, data) end)
  dt = gettime() - t
  check(n3 == EVENTS, "W4s count " .. tostring(n3))
  for s = 0, STREAMS - 1 do check((b3[stream_name(s)] or 0) == expected[s], "W4s " .. s) end
  emit("W4s", EVENTS / dt, "events/s")
  io.stdout:flush()
  io.stderr:write(("# %s: all checks passed (%d events, %d streams)\n"):format(PEER, EVENTS, STREAMS))
end)
store:close()
os.execute("rm -rf '" .. dir .. "'")
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
