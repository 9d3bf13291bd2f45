-- A definition of an unknown kind.
return { kind = "widget", name = "widget" }
