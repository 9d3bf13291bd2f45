-- A script with a syntax error on line 4.
return {
  kind = "projection",
  name = = "syntax",
  handlers = {},
}
