-- After an append fails with an I/O error, can the same process go on? Appends once; on failure
-- tries again on the same handle, then closes the store, reopens it and appends again.
--   lua5.4 reopen_after_panic.lua DIR COUNT
-- Prints one line per step: "open CODE" (when the first open fails), "append i ok|CODE", "retry CODE|ok", "reopen ok|CODE", "after ok|CODE".
package.path = (arg[0]:match("^(.*/)support/reliability/[^/]+$") or "./") .. "?.lua;" .. package.path
local chronicle = require "chronicle"
io.stdout:setvbuf("line")

local dir, count = arg[1], tonumber(arg[2])
local store, open_err = chronicle.open(dir, { durability = "full" })
if not store then print("open " .. open_err.code) os.exit(0) end
local function try(s, i)
  local res, err = s:append("acct-1", { { type = "Appended", data = { i = i } } })
  return res and "ok" or err.code
end
for i = 1, count do
  local r = try(store, i)
  print(("append %d %s"):format(i, r))
  if r ~= "ok" then
    print("retry " .. try(store, i))
    store:close()
    local err
    store, err = chronicle.open(dir, { durability = "full" })
    print("reopen " .. (store and "ok" or err.code))
    if not store then os.exit(0) end
    print("after " .. try(store, i))
    break
  end
end
store:close()
