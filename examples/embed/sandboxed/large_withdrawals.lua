-- A sandboxed reactor: every withdrawal of 100 or more raises an alert, an
-- event on the stream "alert-<account stream>". In the sandbox a reactor
-- cannot reach the store: it acts only by returning events that name their
-- stream, and the host appends them with the reactor's checkpoint.
return {
  kind = "reactor", name = "large_withdrawals",
  from = { category = "account" },
  handlers = {
    Withdrawn = function(ev)
      if ev.data.amount < 100 then return nil end
      return { { stream = "alert-" .. ev.stream, type = "LargeWithdrawal",
                 data = { account = ev.stream, amount = ev.data.amount } } }
    end,
  },
}
