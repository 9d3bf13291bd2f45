-- The "wide" projection: one row per Item event, keyed by its position.
return {
  name = "wide",
  handlers = { Item = function(view, ev) view:put(("%06d"):format(ev.position), { i = ev.data.i }) end },
}
