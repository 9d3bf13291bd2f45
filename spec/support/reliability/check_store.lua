-- Checks a store after a fault, in its own process (a crash here is a finding too).
--   lua5.4 check_store.lua DIR ACKS MAX_I
-- Prints "ok events=E acked=A" and exits 0, or prints "problem ..." lines and exits 1:
--   the store opens; verify() is ok; positions are 1..head with no gap; no event id twice;
--   every acknowledged event is there exactly once, at the position its append returned;
--   every event is one the workload tried (i in 1..MAX_I); streams' versions are gap-free.
-- support/reliability/ is found next to this script whatever package.path the parent passed.
package.path = (arg[0]:match("^(.*/)support/reliability/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"
local common = require "support.reliability.common"

local dir, acks_path, max_i = arg[1], arg[2], tonumber(arg[3])
local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end

local acks, nacks = common.read_acks(acks_path)
local store, err = chronicle.open(dir)
if not store then
  print(("problem open: %s %s"):format(tostring(err and err.code), tostring(err)))
  os.exit(1)
end
local v, verr = store:verify()
if not v then problem("verify returned an error: %s", tostring(verr))
elseif not v.ok then problem("verify: %s", table.concat(v.problems, "; ")) end

local seen, n, expect_pos = {}, 0, 1
local versions = {}
local ok, iter_err = pcall(function()
  for ev in store:read_all() do
    n = n + 1
    if ev.position ~= expect_pos then problem("position %d where %d was expected", ev.position, expect_pos) end
    expect_pos = ev.position + 1
    local i = common.event_index(ev.id)
    if not i or i < 1 or i > max_i then problem("event %s at %d was never appended", ev.id, ev.position)
    elseif seen[i] then problem("event %d twice (positions %d and %d)", i, seen[i], ev.position)
    else seen[i] = ev.position end
    if i and ev.stream ~= common.stream_of(i) then problem("event %d in stream %s", i, ev.stream) end
    local want = versions[ev.stream] or 0
    if ev.version ~= want then problem("%s version %d where %d was expected", ev.stream, ev.version, want) end
    versions[ev.stream] = ev.version + 1
  end
end)
if not ok then problem("read_all raised: %s", tostring(iter_err)) end
if store:head() ~= n then problem("head %d but %d events", store:head(), n) end
for i, pos in pairs(acks) do
  if not seen[i] then problem("acknowledged event %d (position %d) is missing", i, pos)
  elseif seen[i] ~= pos then problem("acknowledged event %d at position %d, acknowledged at %d", i, seen[i], pos) end
end
store:close()
if #problems > 0 then
  for _, p in ipairs(problems) do print("problem " .. p) end
  os.exit(1)
end
print(("ok events=%d acked=%d"):format(n, nacks))
