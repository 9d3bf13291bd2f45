-- A well-behaved sandboxed reactor next to the hostile ones.
return { kind = "reactor", name = "fine", handlers = { Deposited = function(ev)
  return { { stream = "fine-" .. ev.position, type = "Noted", data = { amount = ev.data.amount } } } end } }
