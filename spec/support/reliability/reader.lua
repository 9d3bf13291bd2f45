-- A process that reads a store without pause: store:verify() holds one read transaction for
-- the whole check, so most of the time this process owns a reader slot in lock.mdb.
--   lua5.4 reader.lua DIR READY_FILE SECONDS
-- Writes READY_FILE once the store is open, then verifies again and again for SECONDS at most
-- (the spec kills it with SIGKILL long before that).
package.path = (arg[0]:match("^(.*/)support/reliability/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"

local store = assert(chronicle.open(arg[1]))
local f = assert(io.open(arg[2], "w"))
f:write("ready\n")
f:close()
local deadline = os.time() + tonumber(arg[3] or "30")
while os.time() < deadline do
  assert(store:verify().ok)
end
store:close()
