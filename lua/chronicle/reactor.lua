--- Reactors and process managers: handlers that answer events with new
-- events or commands instead of doing I/O. What a batch of events produces
-- is appended in the same transaction as the reactor's checkpoint (guarded
-- by a check that the checkpoint did not move), so each reaction happens
-- exactly once, across crashes and across competing processes.
--
-- A handler is `handlers[Type](event, ctx)`. It may call
-- `ctx:execute(repo, id, command, args)` (a command on an aggregate; a
-- rejection returns nil, err and the handler decides what follows) and
-- `ctx:append(stream, events [, expected])`, or return a list of events
-- that each name their `stream`. Outputs carry the event's correlation id,
-- and its id as their causation id; a handler may not set those two meta
-- keys itself (the reactor faults with an error saying so).
-- @module chronicle.reactor
local core = require "chronicle.core"
local view = require "chronicle.view"
local unit_of_work = require "chronicle.unit_of_work"

local M = {}

local fields = {
  kind = true, name = true, from = true, handlers = true, batch_size = true, description = true,
  code_hash = true, sandbox = true,
}

--- Checks a reactor definition: `name`, `handlers[Type](event, ctx)`, optional
-- `from = {category=}`, `batch_size` (default 100).
function M.define(def, level)
  level = (level or 1) + 1
  local function fail(msg) error("reactor: " .. msg, level + 1) end
  if type(def) ~= "table" then fail("definition must be a table") end
  for key in pairs(def) do
    if not fields[key] then fail(("unknown field '%s'"):format(tostring(key))) end
  end
  if def.kind ~= nil and def.kind ~= "reactor" then fail("kind must be \"reactor\"") end
  if type(def.name) ~= "string" or not def.name:match("^[%w_.:]+$") or #def.name > 48 then
    fail("'name' must be 1 to 48 letters, digits, '_', '.' or ':'")
  end
  if type(def.handlers) ~= "table" or next(def.handlers) == nil then fail("'handlers' is missing") end
  local types = {}
  for t, fn in pairs(def.handlers) do
    if type(t) ~= "string" or type(fn) ~= "function" then fail(("handlers.%s must be a function"):format(tostring(t))) end
    types[#types + 1] = t
  end
  table.sort(types)
  local from = def.from or {}
  if type(from) ~= "table" then fail("'from' must be a table {category=}") end
  local batch = def.batch_size or 100
  if math.type(batch) ~= "integer" or batch < 1 then fail("'batch_size' must be an integer >= 1") end
  return { name = def.name, handlers = def.handlers, types = types, category = from.category, batch_size = batch }
end

local Context = {}
Context.__index = Context

-- The reactor sets an output's correlation and causation ids from its input event.
local function refuse_own_ids(meta, where)
  if type(meta) ~= "table" then return end
  for _, k in ipairs({ "correlation_id", "causation_id" }) do
    if meta[k] ~= nil then
      error(("%s: meta.%s is set by the reactor from the event it reacts to; a handler may not set it")
        :format(where, k), 3)
    end
  end
end

function Context:execute(repo, id, command, args, opts)
  opts = opts or {}
  refuse_own_ids(opts.meta, "ctx:execute")
  opts.meta = opts.meta or {}
  for k, v in pairs(self.meta) do if opts.meta[k] == nil then opts.meta[k] = v end end
  return self.uow:execute(repo, id, command, args, opts)
end

--- The state of aggregate `id` as this batch sees it (its pending events applied).
function Context:load(repo, id)
  return self.uow:load(repo, id)
end

function Context:append(stream, events, expected)
  if type(stream) ~= "string" then error("ctx:append: stream name expected", 2) end
  if type(events) ~= "table" then error("ctx:append: a list of events expected", 2) end
  local out = {}
  for i, e in ipairs(events) do
    refuse_own_ids(type(e) == "table" and e.meta, "ctx:append: events[" .. i .. "]")
    local meta = {}
    for k, v in pairs(self.meta) do meta[k] = v end
    if type(e.meta) == "table" then for k, v in pairs(e.meta) do meta[k] = v end end
    out[i] = { type = e.type, data = e.data, meta = meta, id = e.id, schema = e.schema }
  end
  self.appends[#self.appends + 1] = { stream = stream, events = out, expected = expected }
end

local function checkpoint_key(r) return "r:" .. r.name end

local function fault(store, r, ev, message)
  store:write { puts = { { view.PROJECTIONS, "reactor:" .. r.name, {
    status = "faulted", fault = { position = ev and ev.position, stream = ev and ev.stream, type = ev and ev.type,
      id = ev and ev.id, error = message, time = core.now() } } } } }
end

--- Runs one batch of reactor `r`.
-- @return "idle" | "progress" | "faulted", or nil, err for a store failure
function M.run_batch(store, r)
  local status = store:kv_get(view.PROJECTIONS, "reactor:" .. r.name)
  if type(status) == "table" and status.status == "faulted" then return "faulted" end
  local key = checkpoint_key(r)
  local checkpoint, err = store:kv_get(view.CHECKPOINTS, key)
  if err then return nil, err end
  local head = store:head()
  if (checkpoint or 0) >= head then return "idle" end
  local uow = unit_of_work.new(store, { tolerate_rejections = true })
  local appends = {}
  local current
  local ok, n, count, last_position = pcall(store.fold, store,
    { from = (checkpoint or 0) + 1, to = head, count = r.batch_size, types = r.types, category = r.category },
    0, function(seen, ev)
      current = ev
      local meta = ev.meta
      local ctx = setmetatable({
        event = ev, store = store, uow = uow, appends = appends,
        meta = { correlation_id = type(meta) == "table" and meta.correlation_id or ev.id, causation_id = ev.id },
      }, Context)
      local out = r.handlers[ev.type](ev, ctx)
      if type(out) == "table" then
        for i, e in ipairs(out) do
          if type(e) ~= "table" or type(e.stream) ~= "string" then
            error(("reactor %s: returned event [%d] must name its stream"):format(r.name, i), 0)
          end
          ctx:append(e.stream, { e }, e.expected)
        end
      end
      return seen + 1
    end)
  if not ok then
    fault(store, r, current, type(n) == "table" and tostring(n.message or n) or tostring(n))
    return "faulted"
  end
  if n == nil then return nil, count end
  local new_checkpoint = count < r.batch_size and head or last_position
  local ops = { appends = {}, puts = {}, checks = { { view.CHECKPOINTS, key, checkpoint } } }
  local written = uow:add_ops(ops)
  for _, a in ipairs(appends) do ops.appends[#ops.appends + 1] = a end
  ops.puts[#ops.puts + 1] = { view.CHECKPOINTS, key, new_checkpoint }
  local result, werr = store:write(ops)
  if not result then
    -- Someone else reacted, or an aggregate moved under us: run the batch again.
    if werr.code == "check_failed" or werr.code == "conflict" then return "progress" end
    return nil, werr
  end
  uow:written(written, result)
  return "progress"
end

--- Clears a faulted reactor so it runs again from its checkpoint.
function M.reset(store, r)
  return store:write { deletes = { { view.PROJECTIONS, "reactor:" .. r.name } } }
end

return M
