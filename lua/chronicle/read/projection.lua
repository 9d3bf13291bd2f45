--- Projections: read models built from the log. Each batch of events runs
-- through the handlers against a buffered view; the batch's row changes and
-- the new checkpoint commit in ONE transaction, guarded by a check that the
-- checkpoint is still the one the batch started from. So a crash never
-- applies an event twice or skips one, and two runners never both apply it.
--
-- A (re)build fills a new generation of the view's space while readers keep
-- seeing the previous one, and switches atomically when it has caught up.
-- @module chronicle.read.projection
local common = require "chronicle.common"
local upcast = require "chronicle.write.upcast"
local view = require "chronicle.read.view"
local names = require "chronicle.names"
local spaces = require "chronicle.spaces"
local fault_util = require "chronicle.fault"

local M = {}

local Projection = {}
Projection.__index = Projection
M.Projection = Projection

local fields = {
  kind = true, name = true, version = true, from = true, init = true, handlers = true,
  batch_size = true, description = true, code_hash = true, sandbox = true,
}

local function fail(msg, level) error("projection: " .. msg, (level or 2) + 1) end

local function check_from(from, level)
  if from == nil then return {} end
  if type(from) ~= "table" then fail("'from' must be a table {category=, types=, streams=}", level + 1) end
  for k in pairs(from) do
    if k ~= "category" and k ~= "types" and k ~= "streams" then
      fail(("unknown key '%s' in 'from' (allowed: category, types, streams)"):format(tostring(k)), level + 1)
    end
  end
  if from.category ~= nil and (type(from.category) ~= "string" or from.category == "" or from.category:find("-", 1, true)) then
    fail("from.category must be a stream category (a name without '-')", level + 1)
  end
  for _, key in ipairs({ "types", "streams" }) do
    local list = from[key]
    if list ~= nil then
      if type(list) ~= "table" or #list == 0 then fail(("from.%s must be a non-empty list of strings"):format(key), level + 1) end
      for i, v in ipairs(list) do
        if type(v) ~= "string" then fail(("from.%s[%d] must be a string"):format(key, i), level + 1) end
      end
    end
  end
  return from
end

-- A fingerprint of the handlers' code, so changed code rebuilds the view.
local function code_hash(def)
  local parts = {}
  local names = {}
  for name in pairs(def.handlers) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local ok, dump = pcall(string.dump, def.handlers[name], true)
    parts[#parts + 1] = name .. "=" .. (ok and dump or "?")
  end
  if def.init then
    local ok, dump = pcall(string.dump, def.init, true)
    parts[#parts + 1] = "init=" .. (ok and dump or "?")
  end
  local from = def.from or {}
  parts[#parts + 1] = "from=" .. tostring(from.category) .. "|" .. table.concat(from.types or {}, ",")
    .. "|" .. table.concat(from.streams or {}, ",")
  return common.hash(table.concat(parts, "\0"))
end

--- Checks a projection definition.
-- @tparam table def `name`, `version` (default 1), `from` ({category=, types=, streams=}),
--   `init(view)` (optional), `handlers[Type](view, event)`, `batch_size` (default 1000)
-- @tparam[opt] integer level the stack level an error names (1: the caller of define)
function M.define(def, level)
  level = (level or 1) + 1
  if type(def) ~= "table" then fail("definition must be a table, got " .. type(def), level) end
  for key in pairs(def) do
    if not fields[key] then fail(("unknown field '%s'"):format(tostring(key)), level) end
  end
  if def.kind ~= nil and def.kind ~= "projection" then fail("kind must be \"projection\"", level) end
  local bad_name = names.problem("projection", def.name)
  if bad_name then fail(bad_name, level) end
  local version = def.version or 1
  if math.type(version) ~= "integer" or version < 1 then fail("'version' must be an integer >= 1", level) end
  if type(def.handlers) ~= "table" or next(def.handlers) == nil then
    fail("'handlers' is missing (a table of functions by event type)", level)
  end
  for k, fn in pairs(def.handlers) do
    if type(k) ~= "string" or type(fn) ~= "function" then
      fail(("handlers.%s must be a function"):format(tostring(k)), level)
    end
  end
  if def.init ~= nil and type(def.init) ~= "function" then fail("'init' must be a function", level) end
  local batch = def.batch_size or M.BATCH_SIZE
  if math.type(batch) ~= "integer" or batch < 1 then fail("'batch_size' must be an integer >= 1", level) end
  local from = check_from(def.from, level)
  local p = setmetatable({
    name = def.name, version = version, from = from, init = def.init, handlers = def.handlers,
    batch_size = batch, description = def.description,
    grow = def.batch_size == nil,      -- only the default batch size grows while catching up
  }, Projection)
  p.hash = def.code_hash or code_hash(p)
  -- Without explicit types, the handlers' event types filter the log in C.
  local types = from.types
  if not types then
    types = {}
    for t in pairs(def.handlers) do types[#types + 1] = t end
    table.sort(types)
    if #types > 64 then types = nil end
  end
  p.types = types
  if from.streams then
    p.streams = {}
    for _, s in ipairs(from.streams) do p.streams[s] = true end
  end
  return p
end

--- The default batch size; while a projection is far behind, its batches
-- grow up to 16 times that (unless its definition sets `batch_size`).
M.BATCH_SIZE = 1000

--- A batch also ends (and commits) after the event whose handlers brought what
-- sandboxed handlers copied into its view (`view:charge`) to this many bytes,
-- and the row cache is dropped once that much has been committed through it:
-- the host holds a bounded amount of a sandboxed projection's rows.
M.BATCH_BYTES = 32 * 1024 * 1024

local FULL = setmetatable({}, { __tostring = function() return "batch full" end })

local checkpoint_key = spaces.projection_checkpoint

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local function read_meta(store, name)
  local meta, err = store:kv_get(view.PROJECTIONS, name)
  if meta == nil and err then return nil, err end
  return meta
end

--- Registers projection `p` in `store`: the first time it creates its
-- metadata; when its version or code changed it starts a rebuild in a new
-- generation (readers keep the old one until the new one has caught up).
function M.register(store, p)
  local meta, err = read_meta(store, p.name)
  if err then return nil, err end
  if meta == nil then
    meta = { version = p.version, hash = p.hash, generation = 0, building = 1, status = "building" }
  elseif meta.version ~= p.version or meta.hash ~= p.hash then
    local gen = math.max(meta.generation or 0, meta.building or 0) + 1
    meta.version, meta.hash, meta.building, meta.status, meta.fault = p.version, p.hash, gen, "rebuilding", nil
  else
    return meta
  end
  local ok, werr = store:write { puts = { { view.PROJECTIONS, p.name, meta } } }
  if not ok then return nil, werr end
  return meta
end

--- Starts a rebuild of projection `p` from the first event, whatever its state.
function M.reset(store, p)
  local meta, err = read_meta(store, p.name)
  if err then return nil, err end
  meta = meta or { generation = 0 }
  local gen = math.max(meta.generation or 0, meta.building or 0) + 1
  meta.version, meta.hash, meta.building, meta.status, meta.fault = p.version, p.hash, gen, "rebuilding", nil
  local ok, werr = store:write { puts = { { view.PROJECTIONS, p.name, meta } } }
  if not ok then return nil, werr end
  return meta
end

--- How long the previous generation of a rebuilt view is kept after the
-- switch, so that readers in the middle of a scan finish on it.
M.GRACE_SECONDS = 60

-- Switches readers to the generation just built; the old rows are removed
-- by a batch at least GRACE_SECONDS later (meta.garbage), so a reader that
-- looked up the old generation before the switch still finds all its rows.
local function swap(store, p, meta, checkpoint)
  local old = meta.generation
  local new_meta = copy(meta)
  new_meta.generation, new_meta.building, new_meta.status = meta.building, nil, "live"
  new_meta.garbage = old and old > 0 and old or nil
  new_meta.garbage_after = common.now() + M.GRACE_SECONDS * 1000000000
  return store:write {
    checks = { { view.CHECKPOINTS, checkpoint_key(p.name, meta.building), checkpoint } },
    puts = { { view.PROJECTIONS, p.name, new_meta } },
  }
end

local function collect_garbage(store, p, meta)
  if not meta.garbage or (meta.garbage_after or 0) > common.now() then return true end
  local new_meta = copy(meta)
  new_meta.garbage, new_meta.garbage_after = nil, nil
  return store:write {
    clears = { view.space(p.name, meta.garbage) },
    deletes = { { view.CHECKPOINTS, checkpoint_key(p.name, meta.garbage) } },
    puts = { { view.PROJECTIONS, p.name, new_meta } },
  }
end

local function fault(store, p, meta, ev, message)
  local new_meta = copy(meta)
  new_meta.status = "faulted"
  new_meta.fault = {
    position = ev and ev.position, stream = ev and ev.stream, version = ev and ev.version,
    type = ev and ev.type, id = ev and ev.id, error = fault_util.message(message), time = common.now(),
  }
  pcall(store.write, store, { puts = { { view.PROJECTIONS, p.name, new_meta } } })
  return new_meta.fault
end

--- Runs one batch of projection `p`. `state` (per runner) keeps its row cache.
-- @return "idle" (caught up), "progress", "faulted", "skipped" (another
--   definition owns the view), or nil, err for a store failure
function M.run_batch(store, p, state)
  local meta, err = read_meta(store, p.name)
  if err then return nil, err end
  if meta == nil then
    meta, err = M.register(store, p)
    if not meta then return nil, err end
  end
  if meta.version ~= p.version or meta.hash ~= p.hash then return "skipped" end
  if meta.status == "faulted" then return "faulted" end
  if meta.garbage then
    local ok, gerr = collect_garbage(store, p, meta)
    if not ok then return nil, gerr end
  end
  local gen = meta.building or meta.generation
  local space = view.space(p.name, gen)
  local ck_key = checkpoint_key(p.name, gen)
  local checkpoint, cerr = store:kv_get(view.CHECKPOINTS, ck_key)
  if cerr then return nil, cerr end
  local head = store:head()
  -- The row cache holds what this runner wrote; if anyone else has moved the
  -- checkpoint since, the rows may have changed under it.
  if state.space ~= space or state.checkpoint ~= checkpoint then
    state.space, state.cache = space, view.cache()
  end
  if (checkpoint or 0) >= head then
    if meta.building then
      local ok, serr = swap(store, p, meta, checkpoint)
      if not ok and serr.code ~= "check_failed" then return nil, serr end
      return "progress"
    end
    return "idle"
  end

  local v = view.buffered(store, space, state.cache)
  local from = (checkpoint or 0) + 1
  local handlers, streams = p.handlers, p.streams
  -- While far behind, default batches grow (up to 16x), so a rebuild commits
  -- (and, with durability "full", syncs) less often; live updates stay small.
  local batch = p.grow and state.batch or p.batch_size
  local current, done
  local ok, n, count, last_position = pcall(function()
    if checkpoint == nil and p.init then p.init(v) end
    return store:fold({ from = from, to = head, count = batch, category = p.from.category, types = p.types },
      0, function(seen, ev)
        if streams and not streams[ev.stream] then return seen + 1 end
        local h = handlers[ev.type]
        if h then
          current = ev
          v.current = ev
          h(v, upcast.current(ev))
          if v.bytes >= M.BATCH_BYTES then
            done = ev.position
            error(FULL, 0)
          end
        end
        return seen + 1
      end)
  end)
  if not ok and n == FULL then          -- commit up to `done`, go on in the next batch
    ok, n, count, last_position = true, 0, batch, done
  end
  if not ok then
    state.cache = view.cache()          -- rows may have been changed in place
    fault(store, p, meta, current, n)
    return "faulted"
  end
  if n == nil then return nil, count end  -- the store failed to read
  -- A short batch read everything up to `head`.
  local new_checkpoint = count < batch and head or last_position
  state.batch = count < batch and p.batch_size or math.min(batch * 2, p.batch_size * 16)
  local ops = v:ops({
    checks = { { view.CHECKPOINTS, ck_key, checkpoint } },
  })
  ops.puts[#ops.puts + 1] = { view.CHECKPOINTS, ck_key, new_checkpoint }
  local wrote, werr, raised = fault_util.write(store, ops)
  if not wrote then
    state.cache = view.cache()
    if not store:is_open() then error(werr, 0) end
    if not raised and werr.code == "check_failed" then return "progress" end   -- another runner moved on: start again
    if not raised and fault_util.environmental(werr) then return nil, werr end
    -- The store refused a row: fault this projection with the event that wrote it.
    local index = fault_util.locate(store, ops, "puts")
    local key = index and ops.puts[index][2]
    fault(store, p, meta, key and v.writers[key] or current, werr)
    return "faulted"
  end
  v:committed(state.max_cache or 100000)
  state.cache_bytes = (state.cache_bytes or 0) + v.bytes
  if state.cache_bytes >= M.BATCH_BYTES then state.cache, state.cache_bytes = view.cache(), 0 end
  state.checkpoint = new_checkpoint
  return "progress"
end

--- Runs projection `p` until it has caught up (or faulted).
function M.catch_up(store, p, state)
  state = state or {}
  local batches = 0
  while true do
    local status, err = M.run_batch(store, p, state)
    if status ~= "progress" then return status, err, batches end
    batches = batches + 1
  end
end

return M
