-- A hostile sandboxed projection: loops forever inside pcall on one event.
return {
  kind = "projection", name = "spin",
  handlers = {
    Deposited = function(view, ev)
      if ev.data.amount == 7 then while true do pcall(function() while true do end end) end end
      view:put(ev.stream, ev.data.amount)
    end,
  },
}
