-- A script that fails while it runs, on line 3.
local config = nil
return { kind = "projection", name = config.name, handlers = {} }
