--- bench/replay_work.lua: one replay workload of the peers' events, to count instructions with
-- callgrind (bench/README.md, issue 17). `REPLAY_DIR=dir REPLAY=setup lua5.4 bench/replay_work.lua`
-- writes 20,000 events (200 streams of 100, ~200 bytes each with a 150-character note, as
-- ../shared/peers makes them); `REPLAY=<what>` opens that store and runs one workload
-- (environment variables, not arguments: bench/luahost sets no `arg`):
--   none        open and close (the startup to subtract)
--   w4          fold over the whole log, fields { stream, type, data }
--   w4all       the same fold, every field
--   w4spread    the same fold with spread = true: fn(state, stream, type, data), no event table
--   w3fold      200 loads of a 100-event stream by fold, fields { type, data }
--   w3apply     the same 200 loads by fold with the aggregate's apply functions and state (what
--               the repository runs on)
--   w3repo      the same 200 loads through a repository (the aggregate's default fields)
local chronicle = require "chronicle"
local dir, what = assert(os.getenv("REPLAY_DIR"), "REPLAY_DIR"), os.getenv("REPLAY") or "none"
local STREAMS, PER = 200, 100

local FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
  .. "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam"
local function evolve(balance, type_, data)
  if type_ == "Deposited" then return balance + data.amount else return balance - data.amount end
end

local store = assert(chronicle.open(dir, { durability = "nosync" }))
if what == "setup" then
  for round = 0, PER // 10 - 1 do
    for s = 0, STREAMS - 1 do
      local evs = {}
      for i = 1, 10 do
        local seq = round * 10 + i - 1
        evs[i] = { type = (seq % 5 == 4) and "Withdrawn" or "Deposited",
                   data = { amount = (s * 31 + seq * 7) % 97 + 1,
                            note = string.format("%s #%08d", FILLER, seq), account = "account-" .. s } }
      end
      assert(store:append("account-" .. s, evs))
    end
  end
elseif what == "w4" or what == "w4all" then
  local fields = what == "w4" and { "stream", "type", "data" } or nil
  local _, n = store:fold({ fields = fields }, {}, function(b, ev)
    b[ev.stream] = evolve(b[ev.stream] or 0, ev.type, ev.data)
  end)
  assert(n == STREAMS * PER)
elseif what == "w4spread" then
  local _, n = store:fold({ fields = { "stream", "type", "data" }, spread = true }, {}, function(b, stream, type_, data)
    b[stream] = evolve(b[stream] or 0, type_, data)
  end)
  assert(n == STREAMS * PER)
elseif what == "w3fold" then
  for s = 0, STREAMS - 1 do
    local _, n = store:fold({ stream = "account-" .. s, fields = { "type", "data" } }, 0,
                            function(b, ev) return evolve(b, ev.type, ev.data) end)
    assert(n == PER)
  end
elseif what == "w3apply" then
  local apply = {
    Deposited = function(st, ev) st.balance = st.balance + ev.data.amount end,
    Withdrawn = function(st, ev) st.balance = st.balance - ev.data.amount end,
  }
  local function applier(st, ev) return apply[ev.type](st, ev) end
  for s = 0, STREAMS - 1 do
    local _, n = store:fold({ stream = "account-" .. s, fields = { "type", "data" } }, { balance = 0 }, applier)
    assert(n == PER)
  end
elseif what == "w3repo" then
  local repo = store:repository(chronicle.aggregate {
    name = "account", initial = function() return { balance = 0 } end,
    apply = {
      Deposited = function(st, ev) st.balance = st.balance + ev.data.amount end,
      Withdrawn = function(st, ev) st.balance = st.balance - ev.data.amount end,
    },
  })
  for s = 0, STREAMS - 1 do
    local _, v = repo:load(tostring(s))
    assert(v == PER - 1)
  end
elseif what ~= "none" then
  error("replay_work: unknown workload " .. what)
end
store:close()
