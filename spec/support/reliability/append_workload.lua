-- The append workload of spec/reliability/faults_spec.lua (and spec/reliability/diskfull_spec.lua), run in its own process.
--   lua5.4 append_workload.lua DIR ACKS COUNT [DURABILITY [PAD [MODE [FIRST]]]]
-- Appends COUNT events (ids from support/reliability/common.lua's event_id(i), 3 streams) with
-- durability DURABILITY ("full" by default), each in its own append. After each acknowledged
-- append it writes "i position" to ACKS and fsyncs ACKS (through luv), so the acknowledgement is
-- on disk before the next write to the store starts. A refused append is tried once more (the
-- same id: a retry of an append that did land must not duplicate it). Every failure is printed
-- on stdout as "fail i code": appends must return nil, err, so an error raised, a missing
-- error code or a crash are findings of the spec that runs this.
-- PAD adds that many bytes to each event's data (to fill a disk quickly). MODE "stop" ends the
-- run (exit 0) at the first append that fails twice. FIRST is the first i (default 1).
-- support/reliability/ is found next to this script whatever package.path the parent passed.
package.path = (arg[0]:match("^(.*/)support/reliability/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"
local common = require "support.reliability.common"
local uv = require "luv"

local dir, acks_path, count = arg[1], arg[2], tonumber(arg[3])
local durability, pad = arg[4] or "full", tonumber(arg[5] or "0")
local mode, first = arg[6] or "all", tonumber(arg[7] or "1")
local padding = string.rep("p", pad)

local fd = assert(uv.fs_open(acks_path, "a", tonumber("644", 8)))
local function ack(i, position)
  local line = ("%d %d\n"):format(i, position)
  assert(uv.fs_write(fd, line, -1) == #line)
  assert(uv.fs_fsync(fd))
end

io.stdout:setvbuf("line")
local store, err = chronicle.open(dir, { durability = durability })
if not store then
  print(("open_fail %s %s"):format(tostring(err and err.code), tostring(err)))
  os.exit(3)
end

for i = first, first + count - 1 do
  local events = { { type = "Appended", id = common.event_id(i), data = { i = i, pad = padding } } }
  for attempt = 1, 2 do
    local res, e = store:append(common.stream_of(i), events)
    if res then
      ack(i, res.position)
      break
    end
    assert(type(e) == "table" and type(e.code) == "string", "append returned nil without an error code")
    print(("fail %d %s %s"):format(i, e.code, (tostring(e):gsub("\n", " "))))
    if attempt == 2 and mode == "stop" then
      store:close()
      uv.fs_close(fd)
      print("stopped")
      os.exit(0)
    end
  end
end
store:close()
uv.fs_close(fd)
print("done")
