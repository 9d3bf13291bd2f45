-- Subprocess for the crash spec: appends bank-like events to 20 accounts
-- (Opened first, then Deposited, Withdrawn and unhandled noise, 1 to 4 events
-- per append) for arg[2] seconds; prints "appended N" at the end.
-- Usage: lua5.4 crash_appender.lua STORE_DIR SECONDS SEED
local chronicle = require "chronicle"
local dir, seconds, seed = arg[1], tonumber(arg[2]), tonumber(arg[3])
math.randomseed(seed)
local store = assert(chronicle.open(dir))
local ACCOUNTS = 20
local n = 0
for a = 1, ACCOUNTS do
  assert(store:append("account-" .. a, { { type = "Opened", data = { owner = "owner " .. a } } }))
  n = n + 1
end
local deadline = chronicle.now() + math.floor(seconds * 1e9)
while chronicle.now() < deadline do
  local events = {}
  for i = 1, math.random(4) do
    local r = math.random(10)
    if r <= 6 then events[i] = { type = "Deposited", data = { amount = math.random(100) } }
    elseif r <= 9 then events[i] = { type = "Withdrawn", data = { amount = math.random(50) } }
    else events[i] = { type = "Viewed" } end
  end
  assert(store:append("account-" .. math.random(ACCOUNTS), events))
  n = n + #events
  if math.random(20) == 1 then
    assert(store:append("other-1", { { type = "Deposited", data = { amount = 1 } } }))
    n = n + 1
  end
end
store:close()
io.write("appended ", n, "\n")
