-- A measurement, not a test: overwrites each page of a small store's data.mdb in turn (with
-- zeros, then random bytes) and opens, reads and verifies the store in a child process,
-- counting the outcomes. It shows the limit documented in docs/RELIABILITY.md: chronicle's
-- checksums cover event records, not LMDB's own B-tree pages, and LMDB trusts those pages.
--   LUA_PATH/LUA_CPATH set to the tree (as `make test` does), from the repository root:
--   lua5.4 spec/support/reliability/page_damage.lua
package.path = "spec/?.lua;" .. package.path
local chronicle = require "chronicle"

local function sh(cmd) return os.execute(cmd) == true end
local base = os.tmpname()
os.remove(base)
local template = base .. "/template"
local store = assert(chronicle.open(template, { durability = "full" }))
for i = 1, 200 do
  assert(store:append("acct-" .. (i % 5), { { type = "Deposited", data = { i = i, note = ("n"):rep(50) } } }))
end
store:close()
local f = assert(io.open(template .. "/data.mdb", "rb"))
local bytes = f:read("a")
f:close()
local pages = #bytes // 4096
math.randomseed(6)

local outcomes, total = {}, 0
for page = 2, pages - 1 do
  for _, kind in ipairs({ "zeros", "random" }) do
    local dir = base .. "/case"
    sh("rm -rf '" .. dir .. "' && cp -r '" .. template .. "' '" .. dir .. "'")
    local fill = {}
    for i = 1, 4096 do fill[i] = kind == "zeros" and "\0" or string.char(math.random(0, 255)) end
    local damaged = bytes:sub(1, page * 4096) .. table.concat(fill) .. bytes:sub((page + 1) * 4096 + 1)
    f = assert(io.open(dir .. "/data.mdb", "wb"))
    f:write(damaged)
    f:close()
    local p = io.popen("lua5.4 spec/support/reliability/open_probe.lua '" .. dir .. "' read 2>/dev/null; echo \"exit $?\"")
    local out = p:read("a")
    p:close()
    local code = tonumber(out:match("exit (%d+)"))
    local what
    if code >= 128 then what = "crash (signal " .. (code - 128) .. ")"
    elseif out:match("^error") then what = "open: nil, err " .. out:match("^error (%S+)")
    elseif out:match("read_error") then what = "read: error " .. out:match("read_error (%S+)")
    elseif out:match("verify_error") then what = "read ok, verify: nil, err " .. out:match("verify_error (%S+)")
    elseif out:match("verify bad") then what = "read ok, verify reports problems"
    elseif out:match("verify ok") then what = "no effect seen (a free page)"
    else what = "other: " .. out:gsub("\n", " ") end
    outcomes[what] = (outcomes[what] or 0) + 1
    total = total + 1
  end
end
sh("rm -rf '" .. base .. "'")
print(("page damage: %d cases (%d pages x zeros/random)"):format(total, pages - 2))
local keys = {}
for k in pairs(outcomes) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do print(("  %4d  %s"):format(outcomes[k], k)) end
