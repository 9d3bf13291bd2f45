-- Another process appending to a store while the chronicle command works on it.
-- lua5.4 appender.lua DIR STREAM MAX STOPFILE [PAUSE]
-- Appends "Ping" events ({n = i}) to STREAM one at a time, pausing PAUSE seconds between
-- them, until MAX are written or STOPFILE exists and is not empty; then prints "appended N".
local chronicle = require "chronicle"

local dir, stream, max, stopfile = arg[1], arg[2], tonumber(arg[3]), arg[4]
local pause = tonumber(arg[5] or "0")

local function stopped()
  local f = io.open(stopfile, "rb")
  if not f then return false end
  local size = f:seek("end")
  f:close()
  return size > 0
end

local store = assert(chronicle.open(dir))
local n = 0
while n < max and not stopped() do
  n = n + 1
  assert(store:append(stream, { { type = "Ping", data = { n = n } } }))
  if pause > 0 then os.execute("sleep " .. pause) end
end
store:close()
print("appended " .. n)
