-- A projection definition without handlers.
return {
  kind = "projection",
  name = "no_handlers",
}
