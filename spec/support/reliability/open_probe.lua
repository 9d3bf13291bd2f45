-- Opens a (possibly damaged) store in its own process and says what happened, so that a crash
-- is seen by the parent as a signal instead of taking the spec down.
--   lua5.4 open_probe.lua DIR [read]
-- Prints "opened" (then, with `read`, "read N" after reading every event and "verify ok|bad"),
-- or "error CODE MESSAGE" when open returns nil, err. Exits 0 in both cases.
package.path = (arg[0]:match("^(.*/)support/reliability/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"

io.stdout:setvbuf("line")
local store, err = chronicle.open(arg[1])
if not store then
  print(("error %s %s"):format(tostring(type(err) == "table" and err.code), tostring(err)))
  os.exit(0)
end
print("opened")
if arg[2] == "read" then
  local n = 0
  local ok, e = pcall(function() for _ in store:read_all() do n = n + 1 end end)
  if ok then print("read " .. n) else print(("read_error %s %s"):format(tostring(type(e) == "table" and e.code), tostring(e))) end
  local v, verr = store:verify()
  if v then print("verify " .. (v.ok and "ok" or "bad")) else print("verify_error " .. tostring(verr and verr.code)) end
end
store:close()
