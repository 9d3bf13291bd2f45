-- A hostile sandboxed reactor: returns a 5 MiB event.
return { kind = "reactor", name = "huge", handlers = { Deposited = function()
  return { { stream = "out-1", type = "Huge", data = { blob = ("x"):rep(5 * 1024 * 1024) } } } end } }
