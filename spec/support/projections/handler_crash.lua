-- Subprocess: an event handler that logs each delivery to a file (one
-- "position i" line, flushed before it returns) and, when it handles the
-- event whose data.i is arg[3], kills its own process with SIGKILL right
-- after logging it: before the handler's checkpoint can be written.
-- Usage: lua5.4 handler_crash.lua STORE_DIR LOG_FILE CRASH_AT_I
local chronicle = require "chronicle"
local dir, log_path, crash_at = arg[1], arg[2], tonumber(arg[3])

local function my_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return pid
end

local store = assert(chronicle.open(dir))
store:on("Ping", function(ev)
  local log = assert(io.open(log_path, "a"))
  log:write(ev.position, " ", ev.data.i, "\n")
  log:close()
  if ev.data.i == crash_at then os.execute("kill -9 " .. my_pid()) end
end, { name = "pinger", batch_size = 1 })
chronicle.runner(store):run({ until_idle = true })
store:close()
print("done")
