-- A sandboxed reactor: answers large deposits with an event, by returning it.
return {
  kind = "reactor", name = "large",
  handlers = {
    Deposited = function(ev)
      if ev.data.amount >= 100 then
        return { { stream = "alert-" .. ev.stream, type = "LargeDeposit", data = { amount = ev.data.amount } } }
      end
    end,
  },
}
