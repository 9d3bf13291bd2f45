--- Shared helpers for the chronicle specs.
-- Every spec works on real stores in fresh temporary directories. A spec file
-- calls `after_each(helpers.cleanup)`; `helpers.open` and `helpers.tmpdir`
-- register what they create so that cleanup closes every store and removes
-- every directory, whether the test passed or failed.
local chronicle = require "chronicle"
local luassert = require "luassert"

local helpers = {}

local dirs, stores = {}, {}

--- Quotes a string for /bin/sh.
function helpers.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command and returns its standard output (trailing newline removed).
function helpers.capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return (out:gsub("\n$", ""))
end

--- The repository root (busted runs from it).
helpers.root = helpers.capture("pwd")

--- A new, empty temporary directory, removed by `helpers.cleanup`.
function helpers.tmpdir()
  local dir = helpers.capture("mktemp -d /tmp/chronicle-spec.XXXXXX")
  assert(dir ~= "" and dir:match("^/tmp/chronicle%-spec%."), "mktemp -d failed")
  dirs[#dirs + 1] = dir
  return dir
end

--- True when `path` exists (file or directory).
function helpers.exists(path)
  return os.execute("test -e " .. helpers.quote(path)) == true
end

--- Lists the names in a directory, sorted.
function helpers.ls(dir)
  local names = {}
  for name in helpers.capture("ls -A " .. helpers.quote(dir)):gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

--- Writes `content` to the file at `path`.
function helpers.write_file(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
end

--- The content of the file at `path`, or "" when it is missing or cannot be read
-- (a /proc file of a process that exits while it is read).
function helpers.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s or ""
end

--- True while process `pid` exists and is not a zombie (a killed child nobody reaped).
function helpers.alive(pid)
  local state = helpers.slurp("/proc/" .. pid .. "/stat"):match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- Registers a store so that `helpers.cleanup` closes it.
function helpers.track(store)
  stores[#stores + 1] = store
  return store
end

--- The backend `helpers.open` gives: "lmdb" (default) or "postgres"
-- (CHRONICLE_SPEC_BACKEND=postgres, with CHRONICLE_PG_URL naming a server).
helpers.backend = os.getenv("CHRONICLE_SPEC_BACKEND") or "lmdb"

local schemas = {}
local schema_seq = 0
math.randomseed(os.time() + math.floor(os.clock() * 1e6))

--- The PostgreSQL server the specs use (`make test` starts one and sets CHRONICLE_PG_URL).
function helpers.pg_url()
  local url = os.getenv("CHRONICLE_PG_URL")
  if not url or url == "" then
    error("CHRONICLE_PG_URL is not set: run PostgreSQL specs through `make test SPECS=...`, " ..
          "which starts a throwaway cluster (scripts/pg_cluster.sh)", 2)
  end
  return url
end

--- A URL for a fresh store on the spec server: a new schema, dropped by `helpers.cleanup`.
function helpers.pg_target(name)
  schema_seq = schema_seq + 1
  local schema = name or string.format("spec_%d_%06d_%d", os.time() % 100000, math.random(0, 999999), schema_seq)
  schemas[#schemas + 1] = schema
  local url = helpers.pg_url()
  return url .. (url:find("?", 1, true) and "&" or "?") .. "schema=" .. schema, schema
end

--- Runs one SQL statement on the spec server with psql; returns its output and whether it succeeded.
function helpers.psql(sql)
  local p = assert(io.popen("timeout 30 psql -qAtX " .. helpers.quote(helpers.pg_url()) .. " -c " ..
                            helpers.quote(sql) .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return (out:gsub("\n$", "")), ok == true
end

--- Opens a store (in a new temporary directory unless `dir` is given; on a fresh
-- PostgreSQL schema instead when helpers.backend is "postgres"); fails the test if it cannot.
-- @return store, dir (the directory or URL, to open the same store again)
function helpers.open(opts, dir)
  if not dir and helpers.backend == "postgres" then
    opts = opts and helpers.shallow_copy(opts)
    if opts then opts.map_size = nil end
    dir = helpers.pg_target()
  end
  dir = dir or (helpers.tmpdir() .. "/store")
  local store, err = chronicle.open(dir, opts)
  assert(store, "chronicle.open failed: " .. tostring(err))
  return helpers.track(store), dir
end

--- Closes every store and removes every directory made since the last cleanup.
function helpers.cleanup()
  for i = #stores, 1, -1 do
    pcall(stores[i].close, stores[i])
    stores[i] = nil
  end
  for i = #dirs, 1, -1 do
    os.execute("rm -rf " .. helpers.quote(dirs[i]))
    dirs[i] = nil
  end
  if #schemas > 0 then
    local drops = {}
    for i = #schemas, 1, -1 do
      drops[#drops + 1] = "DROP SCHEMA IF EXISTS " .. schemas[i] .. " CASCADE;"
      schemas[i] = nil
    end
    helpers.psql(table.concat(drops, " "))
  end
end

--- Where a new store of the backend under test goes: `dir` on LMDB, a fresh schema's URL
-- on PostgreSQL (for specs whose child processes open the store by its target).
function helpers.new_target(dir)
  if helpers.backend == "postgres" then return (helpers.pg_target()) end
  return dir
end

--- A copy of a table's first level.
function helpers.shallow_copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

--- Collects what a generic-for iterator yields into a list (closing it properly).
-- `helpers.collect(store:read("s"))`
function helpers.collect(...)
  local out = {}
  for item in ... do out[#out + 1] = item end
  return out
end

--- Picks one field out of every element of a list.
function helpers.pluck(list, field)
  local out = {}
  for i, v in ipairs(list) do out[i] = v[field] end
  return out
end

--- Appends `n` events of `type` to `stream` (data = {i = 1..n}); fails the test on error.
-- @return the append result
function helpers.fill(store, stream, n, type)
  local events = {}
  for i = 1, n do events[i] = { type = type or "Happened", data = { i = i } } end
  local res, err = store:append(stream, events)
  assert(res, "append failed: " .. tostring(err))
  return res
end

--- A deterministic, valid UUID string (version 7 layout) for explicit event ids.
function helpers.uuid(n, prefix)
  return string.format("%08x-0000-7000-8000-%012x", prefix or 0, n)
end

--- What must not change after a refused or failed call.
function helpers.snapshot(store)
  local stats = store:stats()
  return { head = store:head(), events = stats.events, streams = stats.streams }
end

--- Calls fn(...) expecting it to raise; returns the error message (as a string).
function helpers.raises(fn, ...)
  local ok, err = pcall(fn, ...)
  luassert.is_false(ok, "expected an error, but the call succeeded")
  return tostring(err)
end

--- Makes the relative entries of a package.path/cpath string absolute.
local function absolute_paths(paths)
  local out = {}
  for entry in paths:gmatch("[^;]+") do
    if entry:sub(1, 2) == "./" then entry = helpers.root .. entry:sub(2)
    elseif entry:sub(1, 1) ~= "/" then entry = helpers.root .. "/" .. entry end
    out[#out + 1] = entry
  end
  return table.concat(out, ";")
end

--- A shell command running `lua5.4` (from PATH) with this process's package.path
-- and package.cpath, so a child loads the same chronicle build as the spec.
function helpers.lua_command(script, ...)
  local parts = { "env", "LUA_PATH_5_4=" .. helpers.quote(absolute_paths(package.path)),
                  "LUA_CPATH_5_4=" .. helpers.quote(absolute_paths(package.cpath)),
                  "lua5.4", helpers.quote(script) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = helpers.quote(a) end
  return table.concat(parts, " ")
end

--- Checks an append result: `version` and `position` of the last event written.
function helpers.result(res, version, position)
  luassert.is_table(res, "append returned no result table")
  luassert.are.equal(version, res.version, "version of the append result")
  luassert.are.equal(position, res.position, "position of the append result")
  luassert.are.equal("integer", math.type(res.version))
  luassert.are.equal("integer", math.type(res.position))
end

--- Deep comparison that, unlike assert.same, tells integers from floats,
-- -0.0 from 0.0 and accepts NaN == NaN. Returns true, or false and a path.
function helpers.identical(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
    if a ~= a then return b ~= b, path .. ": NaN vs " .. tostring(b) end
    if a == 0 and math.type(a) == "float" and 1 / a ~= 1 / b then return false, path .. ": signed zero differs" end
    return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  if type(a) ~= "table" then return a == b, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
  for k, v in pairs(a) do
    local ok, where = helpers.identical(v, rawget(b, k), path .. "[" .. tostring(k) .. "]")
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false, path .. "[" .. tostring(k) .. "]: unexpected key" end
  end
  return true
end

--- The value of a #define in a C header of the core (documented limits live there).
function helpers.c_define(header, name)
  local f = assert(io.open(helpers.root .. "/csrc/" .. header, "r"))
  local text = f:read("a")
  f:close()
  local v = text:match("#define%s+" .. name .. "%s+(%d+)")
  return assert(tonumber(v), name .. " not found in csrc/" .. header)
end

helpers.chronicle = chronicle

return helpers
