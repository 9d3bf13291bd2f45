-- Subprocess: opens the store in arg[1] and prints projection arg[2]'s rows
-- ("key<TAB>row" lines in key order, as common.dump), then "count N".
local chronicle = require "chronicle"
local common = require "support.projections.common"
local store = assert(chronicle.open(arg[1]))
local view = store:view(arg[2])
local dump = common.dump(view)
if dump ~= "" then io.write(dump, "\n") end
io.write("count ", view:count(), "\n")
store:close()
