-- The balance of every account, kept up to date from its events: the view
-- "balances" maps an account id ("alice") to its balance. This folder is a
-- chronicle.load_scripts folder: the bank demo requires the aggregates in it,
-- `chronicle repl DIR --scripts examples/bank/rules` and `chronicle project`
-- load all of it, and so does the C host in examples/embed.
local function id_of(ev) return (ev.stream:gsub("^account%-", "")) end

return {
  kind = "projection", name = "balances",
  from = { category = "account" },
  handlers = {
    Opened = function(view, ev) view:put(id_of(ev), 0) end,
    Deposited = function(view, ev)
      view:update(id_of(ev), function(b) return (b or 0) + ev.data.amount end)
    end,
    Withdrawn = function(view, ev)
      view:update(id_of(ev), function(b) return (b or 0) - ev.data.amount end)
    end,
  },
}
