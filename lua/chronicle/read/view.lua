--- Read models: a projection's rows, kept in a key-value space of the store.
-- Two faces: `View` for readers (any process, any time), and the buffered
-- view handed to projection handlers, whose writes are collected and
-- committed with the projection's checkpoint in one transaction.
-- @module chronicle.read.view
local options = require "chronicle.options"
local spaces = require "chronicle.spaces"

local M = {}

--- The key-value space holding projection metadata (chronicle.spaces).
M.PROJECTIONS = spaces.PROJECTIONS
--- The key-value space holding every checkpoint (chronicle.spaces).
M.CHECKPOINTS = spaces.CHECKPOINTS

--- The space holding generation `gen` of projection `name`'s rows.
M.space = spaces.view

--- The longest key of a row, in bytes (the store's limit on keys).
M.MAX_KEY = 400

local function check_key(k, fn, level)
  local t = type(k)
  if t == "number" and math.type(k) == "integer" then return tostring(k) end
  if t ~= "string" or k == "" then
    error(("view:%s: key must be a non-empty string (or an integer), got %s"):format(fn, t), level + 1)
  end
  if #k > M.MAX_KEY then
    error(("view:%s: key is %d bytes, over the limit of %d"):format(fn, #k, M.MAX_KEY), level + 1)
  end
  return k
end
M.check_key = check_key

---------------------------------------------------------------------------
-- Readers

local View = {}
View.__index = View

--- The read face of projection `name` (use `store:view(name)`).
function M.reader(store, name)
  return setmetatable({ store = store, name = name }, View)
end

-- The space readers see now: the last generation that finished building.
function View:space()
  local meta = self.store:kv_get(M.PROJECTIONS, self.name)
  if type(meta) ~= "table" or not meta.generation or meta.generation == 0 then return nil, meta end
  return M.space(self.name, meta.generation), meta
end

--- The row stored under `key`, or nil.
function View:get(key)
  key = check_key(key, "get", 2)
  local space = self:space()
  if not space then return nil end
  return self.store:kv_get(space, key)
end

--- Iterates `key, row` in key order: `{prefix=, from=, to=, count=, backward=}`.
function View:pairs(opts)
  local space = self:space()
  if not space then return function() return nil end end
  return self.store:kv_scan(space, opts)
end

--- The number of rows (under `prefix` when given).
function View:count(prefix)
  local space = self:space()
  if not space then return 0 end
  return self.store:kv_count(space, prefix)
end

--- The projection's status row: version, generation, status, fault, ...
function View:status()
  local _, meta = self:space()
  return meta
end

---------------------------------------------------------------------------
-- The buffered view handlers write to

local DELETED = setmetatable({}, { __tostring = function() return "<deleted>" end })

local Buffered = {}
Buffered.__index = Buffered

--- A view over `space` whose writes stay in memory until `ops()`.
-- `cache` (optional) keeps rows across batches for a runner that owns the space.
function M.buffered(store, space, cache)
  return setmetatable({ store = store, space_name = space, pending = {}, writers = {},
                        cache = cache or M.cache(), bytes = 0 }, Buffered)
end

--- Counts `n` bytes against this buffered view: what a sandboxed handler
-- copied into it (`bytes`, which a projection's batch stops at).
function Buffered:charge(n)
  self.bytes = self.bytes + n
end

--- An empty row cache: `rows` by key and their count `n`.
function M.cache()
  return { rows = {}, n = 0 }
end

local function remember(cache, key, v)
  if cache.rows[key] == nil then cache.n = cache.n + 1 end
  cache.rows[key] = v
end

function Buffered:get(key)
  key = check_key(key, "get", 2)
  local v = self.pending[key]
  if v == nil then v = self.cache.rows[key] end
  if v == nil then
    local err
    v, err = self.store:kv_get(self.space_name, key)
    if v == nil and err then error(err, 0) end
    remember(self.cache, key, v == nil and DELETED or v)
  end
  if v == DELETED then return nil end
  return v
end

function Buffered:put(key, value)
  key = check_key(key, "put", 2)
  if value == nil then error("view:put: value is nil (use view:delete to remove a row)", 2) end
  self.pending[key] = value
  self.writers[key] = self.current
end

function Buffered:delete(key)
  key = check_key(key, "delete", 2)
  self.pending[key] = DELETED
  self.writers[key] = self.current
end

--- `fn(row)` returns the new row; returning nil keeps the row it was given
-- (changed in place), and a missing row stays missing.
function Buffered:update(key, fn)
  key = check_key(key, "update", 2)
  local current = self:get(key)
  local new = fn(current)
  if new == nil then new = current end
  if new ~= nil then
    self.pending[key] = new
    self.writers[key] = self.current
  end
  return new
end

local buffered_pairs_options = {
  prefix = "string", from = "string|integer", to = "string|integer", count = options.integer_at_least(0),
  backward = "boolean",
}

local function in_range(k, opts)
  if opts.prefix and k:sub(1, #opts.prefix) ~= opts.prefix then return false end
  if opts.from and k < opts.from then return false end
  if opts.to and k > opts.to then return false end
  return true
end

--- Iterates `key, row` in key order, the rows written in this batch
-- included: `{prefix=, from=, to=, count=, backward=}`.
function Buffered:pairs(opts)
  opts = options.check("view:pairs", opts, buffered_pairs_options, 2)
  local rows = {}
  for k, v in self.store:kv_scan(self.space_name, { prefix = opts.prefix, from = opts.from, to = opts.to }) do
    rows[k] = v
  end
  for k, v in pairs(self.pending) do
    if in_range(k, opts) then rows[k] = v ~= DELETED and v or nil end
  end
  local keys = {}
  for k in pairs(rows) do keys[#keys + 1] = k end
  table.sort(keys, opts.backward and function(a, b) return a > b end or nil)
  local i, limit = 0, opts.count or #keys
  return function()
    i = i + 1
    if i > limit or keys[i] == nil then return nil end
    return keys[i], rows[keys[i]]
  end
end

--- The number of rows, the rows written in this batch included.
function Buffered:count(prefix)
  local n = 0
  for _ in self:pairs({ prefix = prefix }) do n = n + 1 end
  return n
end

--- The write ops for everything buffered, and the cache updated to match.
function Buffered:ops(ops)
  ops = ops or {}
  ops.puts = ops.puts or {}
  ops.deletes = ops.deletes or {}
  local space = self.space_name
  for k, v in pairs(self.pending) do
    if v == DELETED then ops.deletes[#ops.deletes + 1] = { space, k }
    else ops.puts[#ops.puts + 1] = { space, k, v } end
  end
  return ops
end

--- After a successful commit: the cache now holds what was written
-- (and is emptied when it grows past `max_cache` rows).
function Buffered:committed(max_cache)
  local cache = self.cache
  for k, v in pairs(self.pending) do remember(cache, k, v) end
  if cache.n > max_cache then cache.rows, cache.n = {}, 0 end
  self.pending, self.writers = {}, {}
end

M.DELETED = DELETED
return M
