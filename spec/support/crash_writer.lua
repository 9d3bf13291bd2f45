-- Appends to a store until it is killed, recording every acknowledged
-- append in a side file that it fsyncs before the next append.
-- usage: lua5.4 crash_writer.lua STORE_DIR ACK_FILE DURABILITY WRITER_ID
local chronicle = require "chronicle"
local dir, ack_path, durability, writer = arg[1], arg[2], arg[3], arg[4]
local ok, uv = pcall(require, "luv")

local store = assert(chronicle.open(dir, { durability = durability }))
local fd = ok and assert(uv.fs_open(ack_path, "a", tonumber("644", 8)))
local fallback = not ok and assert(io.open(ack_path, "a"))

local function record(line)
  if fd then
    assert(uv.fs_write(fd, line))
    assert(uv.fs_fsync(fd))
  else
    fallback:write(line)
    fallback:flush()
  end
end

math.randomseed(os.time() + tonumber(writer))
local n = 0
while true do
  local batch = {}
  for i = 1, math.random(1, 4) do
    n = n + 1
    batch[i] = { type = "Tick", id = chronicle.uuid(), data = { writer = writer, n = n, pad = string.rep("p", math.random(0, 300)) } }
  end
  local stream = "crash-" .. math.random(1, 5)
  local res = assert(store:append(stream, batch))
  local lines = {}
  for i, ev in ipairs(batch) do lines[i] = ev.id .. " " .. stream .. "\n" end
  record(table.concat(lines))
  assert(res.position > 0)
end
