-- The bank account aggregate: open, deposit, withdraw (refused when funds are short).
local chronicle = require "chronicle"

return chronicle.aggregate {
  name = "account",
  initial = function() return { open = false, owner = nil, balance = 0 } end,
  snapshot_every = 50,

  apply = {
    Opened = function(state, ev) state.open = true; state.owner = ev.data.owner end,
    Deposited = function(state, ev) state.balance = state.balance + ev.data.amount end,
    Withdrawn = function(state, ev) state.balance = state.balance - ev.data.amount end,
    Closed = function(state) state.closed = true end,
  },

  commands = {
    open = function(state, args)
      if state.open then return nil, "account is already open" end
      return { type = "Opened", data = { owner = args.owner } }
    end,
    deposit = function(state, args)
      if not state.open then return nil, "account is not open" end
      if state.closed then return nil, "account is closed" end
      if math.type(args.amount) ~= "integer" or args.amount <= 0 then return nil, "amount must be a positive integer" end
      return { type = "Deposited", data = { amount = args.amount } }
    end,
    withdraw = function(state, args)
      if not state.open then return nil, "account is not open" end
      if args.amount > state.balance then
        return nil, ("insufficient funds: balance %d, asked %d"):format(state.balance, args.amount)
      end
      return { type = "Withdrawn", data = { amount = args.amount } }
    end,
    close = function(state)
      if state.closed then return nil, "account is already closed" end
      return { type = "Closed" }
    end,
  },
}
