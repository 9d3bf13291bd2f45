-- A hostile sandboxed reactor: returns an event without a type.
return { kind = "reactor", name = "no_type", handlers = { Deposited = function() return { { stream = "out-1", data = {} } } end } }
