-- Checks one simulated power-cut state of spec/reliability/powercut_spec.lua, in its own process (a damaged
-- state could make LMDB abort; the spec runs this under `timeout`).
--   lua5.4 powercut_check.lua DIR REQUIRED MAX
-- Appends 1..REQUIRED must be there (they were acknowledged and synced before the cut); appends
-- up to MAX may be (MAX is the append in progress at the cut); nothing else. Checks, in order:
--   LMDB's pages are sound (support/powercut_lmdb.lua: trees, page counts, free list);
--   the store opens; verify() is ok;
--   every event is one of appends 1..MAX (by its id), at the position, stream, stream version,
--     type and data that append gave it, with no event twice;
--   the appends present are 1..P with every event of each (never part of an append), and
--     REQUIRED <= P <= MAX; head() is the number of events;
--   the store takes one more append, and after close and reopen verify() is still ok with it
--     and LMDB's pages are still sound.
-- Prints "ok appends=P events=E" and exits 0, or "problem ..." lines and exits 1.
package.path = (arg[0]:match("^(.*/)support/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"
local events = require "support.powercut_events"
local lmdb = require "support.powercut_lmdb"

local dir, required, max = arg[1], tonumber(arg[2]), tonumber(arg[3])
local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end
local function finish(store)
  if store then pcall(store.close, store) end
  for _, p in ipairs(problems) do print("problem " .. p) end
  os.exit(#problems == 0 and 0 or 1)
end

-- Where each append's events belong when appends 1..max all happened, in order.
local first_pos, stream_before = {}, {}
do
  local pos, versions = 1, {}
  for j = 1, max do
    first_pos[j] = pos
    local s = events.stream(j)
    stream_before[j] = versions[s] or 0
    versions[s] = (versions[s] or 0) + events.size(j)
    pos = pos + events.size(j)
  end
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b and math.type(a) == math.type(b) end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- LMDB's own structure first (a damaged free list shows nowhere else)
local function lmdb_check(when)
  local f = io.open(dir .. "/data.mdb", "rb")
  local bytes = f and f:read("a") or ""
  if f then f:close() end
  for _, p in ipairs((lmdb.check(bytes))) do problem("LMDB structure %s: %s", when, p) end
end
lmdb_check("at the cut")

local store, err = chronicle.open(dir)
if not store then
  problem("open: %s %s", tostring(err and err.code), tostring(err))
  finish()
end
local v, verr = store:verify()
if not v then problem("verify returned an error: %s", tostring(verr))
elseif not v.ok then problem("verify: %s", table.concat(v.problems, "; ")) end

local seen, count = {}, 0   -- seen[j] = number of events of append j
local ok, read_err = pcall(function()
  for ev in store:read_all() do
    count = count + 1
    local j, k = events.parse_id(ev.id)
    if not j or j < 1 or j > max or k < 1 or k > events.size(j) then
      problem("event %s at position %d was never appended (appends 1..%d were tried)", ev.id, ev.position, max)
    else
      local want = first_pos[j] + k - 1
      if ev.position ~= want then problem("append %d event %d at position %d, expected %d", j, k, ev.position, want) end
      if ev.stream ~= events.stream(j) then problem("append %d event %d in stream %s", j, k, ev.stream) end
      if ev.version ~= stream_before[j] + k - 1 then
        problem("append %d event %d has version %d, expected %d", j, k, ev.version, stream_before[j] + k - 1)
      end
      if ev.type ~= "Deposited" then problem("append %d event %d has type %s", j, k, tostring(ev.type)) end
      if not same(ev.data, events.data(j, k)) then problem("append %d event %d: data differs from what was appended", j, k) end
      seen[j] = (seen[j] or 0) + 1
    end
  end
end)
if not ok then problem("read_all raised: %s", tostring(read_err)) end

local present = 0
while seen[present + 1] do present = present + 1 end
for j = 1, max do
  if seen[j] and seen[j] ~= events.size(j) then
    problem("append %d is half there: %d of its %d events", j, seen[j], events.size(j))
  end
  if seen[j] and j > present then problem("append %d is there but append %d is not", j, present + 1) end
end
if present < required then
  problem("acknowledged append %d (synced before the cut) is missing: only appends 1..%d are there", present + 1, present)
end
local head = store:head()
if head ~= count then problem("head() is %d but read_all gave %d events", head, count) end
if #problems > 0 then finish(store) end

-- The store must go on: one more append, then close, reopen and verify again.
local res, aerr = store:append("after-the-cut", { { type = "Resumed", data = { after = present } } })
if not res then problem("append after the cut failed: %s", tostring(aerr))
elseif res.position ~= count + 1 then problem("append after the cut went to position %d, expected %d", res.position, count + 1) end
store:close()
store, err = chronicle.open(dir)
if not store then
  problem("reopen: %s", tostring(err))
  finish()
end
v, verr = store:verify()
if not v or not v.ok then problem("verify after one more append: %s", v and table.concat(v.problems, "; ") or tostring(verr)) end
if store:head() ~= count + 1 then problem("head() after one more append is %d, expected %d", store:head(), count + 1) end
if #problems > 0 then finish(store) end
store:close()
lmdb_check("after one more append")
if #problems > 0 then finish() end
print(("ok appends=%d events=%d"):format(present, count))
