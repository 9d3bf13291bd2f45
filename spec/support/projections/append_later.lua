-- Subprocess: waits arg[2] seconds, then appends one "Pinged" event to
-- stream arg[3] of the store in arg[1]; prints "t0 <ns> position <n>" where
-- t0 is chronicle.now() taken just before the append.
local chronicle = require "chronicle"
local dir, delay, stream = arg[1], arg[2], arg[3] or "ping-1"
local store = assert(chronicle.open(dir))
os.execute("sleep " .. delay)
local t0 = chronicle.now()
local res = assert(store:append(stream, { { type = "Pinged", data = { t0 = t0 } } }))
io.write("t0 ", t0, " position ", res.position, "\n")
store:close()
