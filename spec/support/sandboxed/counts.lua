-- A sandboxed projection: events per stream.
return {
  kind = "projection", name = "counts", version = 1,
  init = function(view) view:put("started", true) end,
  handlers = {
    Deposited = function(view, ev)
      view:update(ev.stream, function(n) return (n or 0) + ev.data.amount end)
    end,
  },
}
