-- The cart example: a busy cart of a few hundred events, loaded from its
-- latest snapshot plus the events after it.
-- Usage: lua5.4 examples/cart/main.lua [store-dir]   (default: data/cart)
local chronicle = require "chronicle"
package.path = "./examples/?.lua;" .. package.path
local Cart = require "cart.cart"

local dir = arg[1] or "data/cart"
os.execute("rm -rf '" .. dir:gsub("'", "") .. "'")
local store = assert(chronicle.open(dir, { durability = "nometasync" }))
local carts = store:repository(Cart)

assert(carts:execute("42", "create", { customer = "Carol" }))
for i = 1, 250 do
  assert(carts:execute("42", "add", { sku = "sku-" .. (i % 20), quantity = 1 }))
end
assert(carts:execute("42", "remove", { sku = "sku-3" }))
local done = assert(carts:execute("42", "checkout"))

local snap = carts:snapshot("42")
print(("cart 42: %d items in %d kinds, checked out at version %d"):format(done.state.count,
  (function() local n = 0 for _ in pairs(done.state.items) do n = n + 1 end return n end)(), done.version))
print(("latest snapshot at version %d: loading replays only %d events after it"):format(snap.version,
  done.version - snap.version))
local before = carts:load("42", { version = 100 })
print(("at version 100 the cart held %d items"):format(before.count))
local _, err = carts:execute("42", "add", { sku = "late" })
print("adding after checkout: " .. err.reason)
store:close()
