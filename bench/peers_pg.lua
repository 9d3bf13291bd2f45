-- bench/peers_pg.lua: the peers' own chronicle workload (../shared/peers/lua/p0_chronicle.lua,
-- W1-W4 exactly as the other peers run them) with its store on PostgreSQL instead of a
-- directory: chronicle.open is pointed at PG_URL (a fresh schema) before the script runs, and
-- its lines are printed as P0-chronicle-pg. bench/peers_pg.sh runs it beside Emmett on the same
-- server.
local chronicle = require "chronicle"

local url = assert(os.getenv("PG_URL"), "PG_URL must name the PostgreSQL server to use")
local peers = os.getenv("PEERS_DIR") or "../shared/peers"
local schema = string.format("peers_%d_%d", os.time() % 100000, math.random(0, 99999))
local target = url .. (url:find("?", 1, true) and "&" or "?") .. "schema=" .. schema

local open = chronicle.open
chronicle.open = function(_, opts) return open(target, opts) end   -- the script's directory is not used
local print_line = print
print = function(line, ...)                                          -- luacheck: ignore
  return print_line((tostring(line):gsub("^P0%-chronicle%-[%w]+", "P0-chronicle-pg")), ...)
end

local ok, err = pcall(dofile, peers .. "/lua/p0_chronicle.lua")
os.execute(string.format("psql -qAtX '%s' -c 'DROP SCHEMA IF EXISTS %s CASCADE' >/dev/null 2>&1", url, schema))
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
