-- A hostile sandboxed reactor: tries to reach the host and emit an event.
return {
  kind = "reactor", name = "escape",
  handlers = {
    Deposited = function(ev)
      local f = io.open("/tmp/chronicle-escape", "w")
      f:write("got out")
      return { { stream = "escaped", type = "Escaped" } }
    end,
  },
}
