-- A sandboxed projection: the view "owners" maps an owner's name, lower
-- case, to the account's stream.
--
-- It has a bug, on purpose: the account aggregate accepts an "open" without
-- an owner, and then `ev.data.owner` is nil and `:lower()` fails. That fault
-- stops this projection only (its status becomes "faulted", with the event
-- and the error, and nothing of the failing batch is written); the commands,
-- the other projections and reactors, and the host itself go on. The host
-- answers the command that caused it with the fault.
return {
  kind = "projection", name = "owners",
  from = { category = "account", types = { "Opened" } },
  handlers = {
    Opened = function(view, ev)
      view:put(ev.data.owner:lower(), ev.stream)
    end,
  },
}
