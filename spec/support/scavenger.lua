-- Runs store:scavenge on the store at arg[1] in small batches (the spec kills it at random moments).
local chronicle = require "chronicle"
local store = assert(chronicle.open(arg[1]))
local res = assert(store:scavenge({ batch = tonumber(arg[2]) or 5 }))
io.write(res.removed, "\n")
store:close()
