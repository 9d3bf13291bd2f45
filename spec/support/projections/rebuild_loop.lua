-- Subprocess: rebuilds projection "wide" (one row per Item event) again and
-- again for arg[2] seconds: reset_projection, then catch up (which swaps the
-- new generation in). Prints "rebuilds N".
-- Usage: lua5.4 rebuild_loop.lua STORE_DIR SECONDS
local chronicle = require "chronicle"
local wide = require "support.projections.wide"
local dir, seconds = arg[1], tonumber(arg[2])
local store = assert(chronicle.open(dir, { durability = "nosync" }))
assert(store:projection(wide))
local deadline = chronicle.now() + math.floor(seconds * 1e9)
local n = 0
repeat   -- at least once, however slow the machine
  assert(store:reset_projection("wide"))
  local statuses = assert(store:run_projections())
  assert(statuses.wide == "idle", "wide: " .. tostring(statuses.wide))
  n = n + 1
until chronicle.now() >= deadline
store:close()
io.write("rebuilds ", n, "\n")
