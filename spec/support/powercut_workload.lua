-- The workload of spec/reliability/powercut_spec.lua, run in its own process (under scripts/powercut_shim.c).
--   lua5.4 powercut_workload.lua DIR ACKS FIRST COUNT DURABILITY
-- Opens the store in DIR with DURABILITY, makes appends FIRST .. FIRST+COUNT-1 (see
-- powercut_events.lua) one after the other, and after each acknowledged append writes the line
-- "ack J POSITION" to ACKS with one write() (through luv, so the preloaded shim sees it and puts
-- it into its log between the store's own writes and syncs). Any failure raises: this workload
-- runs on a healthy disk.
package.path = (arg[0]:match("^(.*/)support/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"
local events = require "support.powercut_events"
local uv = require "luv"

local dir, acks_path = arg[1], arg[2]
local first, count, durability = tonumber(arg[3]), tonumber(arg[4]), arg[5]

local fd = assert(uv.fs_open(acks_path, "a", tonumber("644", 8)))
local store = assert(chronicle.open(dir, { durability = durability }))
for j = first, first + count - 1 do
  local res = assert(store:append(events.stream(j), events.batch(j)))
  local line = ("ack %d %d\n"):format(j, res.position)
  assert(uv.fs_write(fd, line, -1) == #line)
end
store:close()
uv.fs_close(fd)
print("done")
