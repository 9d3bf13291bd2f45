-- Damages a closed store on purpose, for `chronicle verify` to find.
-- lua5.4 damage.lua DIR HEX_PATTERN OFFSET HEX_BYTE
-- Overwrites, in DIR/data.mdb, the byte at OFFSET of every copy of the pattern (LMDB keeps
-- stale copies of pages, so all of them) with HEX_BYTE; prints how many copies it changed.
local dir, pattern, offset, byte = arg[1], arg[2], tonumber(arg[3]), arg[4]

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
pattern, byte = unhex(pattern), unhex(byte)

local f = assert(io.open(dir .. "/data.mdb", "r+b"))
local bytes = f:read("a")
local n, init = 0, 1
while true do
  local i = bytes:find(pattern, init, true)
  if not i then break end
  f:seek("set", i - 1 + offset)
  f:write(byte)
  n = n + 1
  init = i + 1
end
f:close()
print(n)
