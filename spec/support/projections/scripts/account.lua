-- An aggregate script: bank accounts that open and take deposits.
return {
  kind = "aggregate",
  name = "account",
  initial = function() return { open = false, balance = 0 } end,
  apply = {
    Opened = function(state, ev) state.open, state.owner = true, ev.data.owner end,
    Deposited = function(state, ev) state.balance = state.balance + ev.data.amount end,
  },
  commands = {
    open = function(state, args)
      if state.open then return nil, "already open" end
      return { type = "Opened", data = { owner = args.owner } }
    end,
    deposit = function(state, args)
      if not state.open then return nil, "account is not open" end
      return { type = "Deposited", data = { amount = args.amount } }
    end,
  },
}
