-- A projection script: the balance of every account.
return {
  kind = "projection",
  name = "balances",
  version = 1,
  from = { category = "account" },
  handlers = {
    Opened = function(view, ev) view:put(ev.stream:match("%-(.+)$"), { owner = ev.data.owner, balance = 0 }) end,
    Deposited = function(view, ev)
      view:update(ev.stream:match("%-(.+)$"), function(row) row.balance = row.balance + ev.data.amount end)
    end,
  },
}
