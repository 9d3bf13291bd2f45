-- A hostile sandboxed projection: writes a row under a key over the store's limit.
return { kind = "projection", name = "long_key", handlers = { Deposited = function(view, ev)
  view:put(("k"):rep(1000), ev.data.amount) end } }
