-- A sandboxed reactor that tries to raise its own bounds above the host's.
return { kind = "reactor", name = "greedy", max_outputs = 1000000, handlers = { Deposited = function() end } }
