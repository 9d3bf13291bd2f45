-- The balance of every account, as a projection (a read model) kept up to date by a runner:
-- `chronicle project data/bank examples/bank/rules` after `make demo`.
local function add(view, ev, amount)
  view:update(ev.stream, function(balance) return (balance or 0) + amount end)
end

return {
  kind = "projection", name = "balances", version = 1,
  from = { category = "account" },
  handlers = {
    Opened = function(view, ev) add(view, ev, 0) end,
    Deposited = function(view, ev) add(view, ev, ev.data.amount) end,
    Withdrawn = function(view, ev) add(view, ev, -ev.data.amount) end,
  },
}
