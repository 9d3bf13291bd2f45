-- A hostile sandboxed reactor: returns an event for the empty stream.
return { kind = "reactor", name = "empty_stream", handlers = { Deposited = function() return { { stream = "", type = "X" } } end } }
