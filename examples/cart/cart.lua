-- The shopping cart aggregate, snapshotted every 100 events.
local chronicle = require "chronicle"

return chronicle.aggregate {
  name = "cart",
  snapshot_every = 100,
  initial = function() return { created = false, items = {}, count = 0, checked_out = false } end,

  apply = {
    CartCreated = function(cart, ev) cart.created = true; cart.customer = ev.data.customer end,
    ItemAdded = function(cart, ev)
      local sku = ev.data.sku
      cart.items[sku] = (cart.items[sku] or 0) + ev.data.quantity
      cart.count = cart.count + ev.data.quantity
    end,
    ItemRemoved = function(cart, ev)
      local sku = ev.data.sku
      cart.count = cart.count - cart.items[sku]
      cart.items[sku] = nil
    end,
    CheckedOut = function(cart) cart.checked_out = true end,
  },

  commands = {
    create = function(cart, args)
      if cart.created then return nil, "cart exists" end
      return { type = "CartCreated", data = { customer = args.customer } }
    end,
    add = function(cart, args)
      if not cart.created or cart.checked_out then return nil, "cart is not open" end
      return { type = "ItemAdded", data = { sku = args.sku, quantity = args.quantity or 1 } }
    end,
    remove = function(cart, args)
      if not cart.items[args.sku] then return nil, "no " .. tostring(args.sku) .. " in the cart" end
      return { type = "ItemRemoved", data = { sku = args.sku } }
    end,
    checkout = function(cart)
      if cart.checked_out then return nil, "already checked out" end
      if cart.count == 0 then return nil, "cart is empty" end
      return { type = "CheckedOut", data = { items = cart.count } }
    end,
  },
}
