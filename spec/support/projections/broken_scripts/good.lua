-- A projection that loads fine next to broken scripts.
return {
  kind = "projection",
  name = "good",
  handlers = { Ping = function(view, ev) view:put(ev.position, ev.data) end },
}
