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
--
-- Bounds (definition fields, with defaults): `max_outputs` events per input
-- event (100), `max_depth` reactions in a chain (10: an output of an output
-- ... of an outside event, counted in meta `reaction_depth`),
-- `max_chain_events` events one outside event may cause through every
-- reactor at every depth (1000: each output carries in meta
-- `reaction_budget` an equal share of what its cause had left), and
-- `retries`, conflicts in a row on the same batch (10). Going past one of
-- them faults the reactor, as does an output the store refuses (an empty
-- stream, an event without type, one over max_event_size, an id already
-- stored as another event).
-- @module chronicle.read.reactor
local common = require "chronicle.common"
local upcast = require "chronicle.write.upcast"
local view = require "chronicle.read.view"
local names = require "chronicle.names"
local spaces = require "chronicle.spaces"
local unit_of_work = require "chronicle.write.unit_of_work"
local repository = require "chronicle.write.repository"
local fault_util = require "chronicle.fault"

local M = {}

local fields = {
  kind = true, name = true, from = true, handlers = true, batch_size = true, description = true,
  code_hash = true, sandbox = true, max_outputs = true, max_depth = true, max_chain_events = true, retries = true,
}

--- Default bounds of a reactor (each one a definition field of the same name).
M.MAX_OUTPUTS = 100
M.MAX_DEPTH = 10
M.MAX_CHAIN_EVENTS = 1000
M.RETRIES = 10

--- The bound fields, with their defaults, in the order they are checked.
M.BOUNDS = { max_outputs = M.MAX_OUTPUTS, max_depth = M.MAX_DEPTH, max_chain_events = M.MAX_CHAIN_EVENTS,
             retries = M.RETRIES }

--- Checks a reactor definition: `name`, `handlers[Type](event, ctx)`, optional
-- `from = {category=}`, `batch_size` (default 100), and the bounds
-- `max_outputs`, `max_depth`, `max_chain_events`, `retries` (see above).
function M.define(def, level)
  level = (level or 1) + 1
  local function fail(msg) error("reactor: " .. msg, level + 1) end
  if type(def) ~= "table" then fail("definition must be a table") end
  for key in pairs(def) do
    if not fields[key] then fail(("unknown field '%s'"):format(tostring(key))) end
  end
  if def.kind ~= nil and def.kind ~= "reactor" then fail("kind must be \"reactor\"") end
  local bad_name = names.problem("reactor", def.name)
  if bad_name then fail(bad_name) end
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
  local r = { name = def.name, handlers = def.handlers, types = types, category = from.category, batch_size = batch }
  for _, key in ipairs({ "max_outputs", "max_depth", "max_chain_events", "retries" }) do
    local v = def[key]
    if v == nil then v = M.BOUNDS[key] end
    local min = key == "retries" and 0 or 1
    if math.type(v) ~= "integer" or v < min then fail(("'%s' must be an integer >= %d"):format(key, min)) end
    r[key] = v
  end
  return r
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

-- A repository for `repo`: a repository, or the name of an aggregate that
-- scripts loaded into this store define.
local function resolve(ctx, repo, fn)
  if type(repo) ~= "string" then return repo end
  local agg = ctx.store:registrations().aggregates[repo]
  if not agg then
    error(("ctx:%s: no aggregate named '%s' is loaded (pass a repository, or the name of an aggregate "
      .. "defined by a script loaded with load_scripts)"):format(fn, repo), 3)
  end
  local cache = ctx.repos
  local cached = cache[repo]
  if not cached or cached.aggregate ~= agg then
    cached = ctx.store:repository(agg)
    cache[repo] = cached
  end
  return cached
end

-- Counts `n` more outputs of the event being handled; raises past max_outputs.
local function count_outputs(ctx, n)
  local r = ctx.reactor
  if #ctx.outputs + n > r.max_outputs then
    error(("reactor %s: the reaction to one event emits more than max_outputs (%d) events")
      :format(r.name, r.max_outputs), 0)
  end
end

--- Runs `command` on aggregate `id` inside the reactor's transaction. `repo`
-- is a repository, or the name of an aggregate loaded by `load_scripts`.
function Context:execute(repo, id, command, args, opts)
  repo = resolve(self, repo, "execute")
  opts = opts or {}
  refuse_own_ids(opts.meta, "ctx:execute")
  opts.meta = opts.meta or {}
  for k, v in pairs(self.meta) do if opts.meta[k] == nil then opts.meta[k] = v end end
  local state, events = self.uow:execute(repo, id, command, args, opts)
  if state ~= nil and type(events) == "table" then
    count_outputs(self, #events)
    for _, e in ipairs(events) do self.outputs[#self.outputs + 1] = e.meta end
    if getmetatable(repo) == repository.Repository then
      local stream = repo.aggregate:stream(id)
      if self.sources[stream] == nil then self.sources[stream] = self.event end
    end
  end
  return state, events
end

--- The state of aggregate `id` as this batch sees it (its pending events applied).
function Context:load(repo, id)
  return self.uow:load(resolve(self, repo, "load"), id)
end

local MAX_NAME = common.MAX_STREAM_NAME
local MAX_TYPE = common.MAX_TYPE_NAME

--- Appends `events` to `stream` when the batch commits (with `expected`, as
-- for `store:append`). Each event gets the reaction's correlation and
-- causation ids, and its chain depth and budget.
function Context:append(stream, events, expected)
  if type(stream) ~= "string" or #stream == 0 or #stream > MAX_NAME then
    error(("ctx:append: stream must be a string of 1 to %d bytes, got %s"):format(MAX_NAME,
      type(stream) == "string" and ("%d bytes"):format(#stream) or type(stream)), 2)
  end
  if type(events) ~= "table" then error("ctx:append: a list of events expected", 2) end
  count_outputs(self, #events)
  local out = {}
  for i, e in ipairs(events) do
    if type(e) ~= "table" then error(("ctx:append: events[%d] must be a table, got %s"):format(i, type(e)), 2) end
    if type(e.type) ~= "string" or #e.type == 0 or #e.type > MAX_TYPE then
      error(("ctx:append: events[%d].type must be a string of 1 to %d bytes"):format(i, MAX_TYPE), 2)
    end
    refuse_own_ids(type(e) == "table" and e.meta, "ctx:append: events[" .. i .. "]")
    local meta = {}
    for k, v in pairs(self.meta) do meta[k] = v end
    if type(e.meta) == "table" then for k, v in pairs(e.meta) do meta[k] = v end end
    out[i] = { type = e.type, data = e.data, meta = meta, id = e.id, schema = e.schema }
    self.outputs[#self.outputs + 1] = meta
  end
  self.appends[#self.appends + 1] = { stream = stream, events = out, expected = expected }
  self.append_sources[#self.appends] = self.event
end

local function checkpoint_key(r) return spaces.reactor_checkpoint(r.name) end

local function fault(store, r, ev, message)
  pcall(store.write, store, { puts = { { view.PROJECTIONS, spaces.reactor_status(r.name), {
    status = "faulted", fault = { position = ev and ev.position, stream = ev and ev.stream, type = ev and ev.type,
      id = ev and ev.id, error = fault_util.message(message), time = common.now() } } } } })
  r.streak = nil
end

local function meta_integer(meta, key)
  local v = type(meta) == "table" and meta[key] or nil
  if math.type(v) == "integer" and v >= 0 then return v end
  return nil
end

-- Checks the outputs of one event against the chain bounds and writes their
-- depth and share of the chain's budget into their meta.
local function stamp_chain(r, ev, outputs)
  local n = #outputs
  if n == 0 then return end
  local depth = meta_integer(ev.meta, "reaction_depth") or 0
  if depth + 1 > r.max_depth then
    error(("reactor %s: reaction chain too deep: this event is at depth %d (max_depth %d), so it may not "
      .. "be answered with more events"):format(r.name, depth, r.max_depth), 0)
  end
  local budget = math.min(meta_integer(ev.meta, "reaction_budget") or r.max_chain_events, r.max_chain_events)
  if n > budget then
    error(("reactor %s: the events caused by one outside event would pass max_chain_events (%d): this "
      .. "event may cause %d more, its reaction emits %d"):format(r.name, r.max_chain_events, budget, n), 0)
  end
  local share = (budget - n) // n
  for _, meta in ipairs(outputs) do
    meta.reaction_depth = depth + 1
    meta.reaction_budget = share
  end
end

--- Runs one batch of reactor `r` (as a member of group `g` when given: the
-- events of the partitions it holds; its outputs commit only while its
-- leases are still its own, see chronicle.group).
-- @return "idle" | "progress" | "faulted", or nil, err for a store failure
function M.run_batch(store, r, g)
  local status = store:kv_get(view.PROJECTIONS, spaces.reactor_status(r.name))
  if type(status) == "table" and status.status == "faulted" then return "faulted" end
  local key = checkpoint_key(r)
  local checkpoint, head, count_wanted, cursor
  if g then
    local cerr
    cursor, cerr = g:cursor(r.batch_size)
    if not cursor then
      if cerr then return nil, cerr end
      return "idle"
    end
    checkpoint, head, count_wanted = cursor.from, cursor.head, cursor.count
  else
    local err
    checkpoint, err = store:kv_get(view.CHECKPOINTS, key)
    if err then return nil, err end
    head = store:head()
    if (checkpoint or 0) >= head then return "idle" end
    count_wanted = r.batch_size
  end
  local uow = unit_of_work.new(store, { tolerate_rejections = true })
  local appends, append_sources, sources = {}, {}, {}
  local repos = {}
  local current, first
  local ok, n, count, last_position = pcall(store.fold, store,
    { from = (checkpoint or 0) + 1, to = head, count = count_wanted, types = r.types, category = r.category },
    0, function(seen, ev)
      if cursor and not cursor.wants(ev) then return seen + 1 end
      current = ev
      upcast.current(ev)
      first = first or ev
      local meta = ev.meta
      local ctx = setmetatable({
        event = ev, store = store, uow = uow, appends = appends, append_sources = append_sources,
        sources = sources, repos = repos, reactor = r, outputs = {},
        meta = { correlation_id = type(meta) == "table" and meta.correlation_id or ev.id, causation_id = ev.id },
      }, Context)
      local out = r.handlers[ev.type](ev, ctx)
      if type(out) == "table" then
        count_outputs(ctx, #out)
        for i, e in ipairs(out) do
          if type(e) ~= "table" or type(e.stream) ~= "string" then
            error(("reactor %s: returned event [%d] must name its stream"):format(r.name, i), 0)
          end
          ctx:append(e.stream, { e }, e.expected)
        end
      end
      count_outputs(ctx, 0)
      stamp_chain(r, ev, ctx.outputs)
      return seen + 1
    end)
  if not ok then
    fault(store, r, current, n)
    return "faulted"
  end
  if n == nil then return nil, count end
  local new_checkpoint = count < count_wanted and head or last_position
  local ops = { appends = {}, puts = {}, checks = cursor and {} or { { view.CHECKPOINTS, key, checkpoint } } }
  local wok, written = pcall(uow.add_ops, uow, ops)
  if not wok then
    fault(store, r, current, written)
    return "faulted"
  end
  -- Which input event each append entry answers.
  local by_entry = {}
  for i, a in ipairs(ops.appends) do by_entry[i] = sources[a.stream] or first end
  for i, a in ipairs(appends) do
    ops.appends[#ops.appends + 1] = a
    by_entry[#ops.appends] = append_sources[i]
  end
  if cursor then cursor.commit(ops, new_checkpoint)
  else ops.puts[#ops.puts + 1] = { view.CHECKPOINTS, key, new_checkpoint } end
  local result, werr, raised = fault_util.write(store, ops)
  if not result then
    if not store:is_open() then error(werr, 0) end
    if not raised and werr.code == "check_failed" then
      if g then g:lost() end            -- a lease was taken: its new owner reacts to these events
      return "progress"                 -- another runner reacted to this batch: start again from its checkpoint
    end
    if not raised and fault_util.environmental(werr) then return nil, werr end
    local index = not raised and math.type(werr.index) == "integer" and werr.index or nil
    if raised or not index then index = fault_util.locate(store, ops, "appends") end
    local ev = index and by_entry[index] or current
    if not raised and werr.code == "conflict" then
      -- An aggregate moved under us, or an output's `expected` does not hold:
      -- run the batch again, but not for ever.
      local streak = r.streak
      if streak and streak.checkpoint == checkpoint then streak.n = streak.n + 1
      else streak = { checkpoint = checkpoint, n = 1 }; r.streak = streak end
      if streak.n <= r.retries then return "progress" end
      fault(store, r, ev, ("%s (after %d attempts: the conflict keeps coming back)"):format(
        fault_util.message(werr), streak.n))
      return "faulted"
    end
    fault(store, r, ev, werr)
    return "faulted"
  end
  r.streak = nil
  if cursor then cursor.done() end
  require("chronicle.write.repository").place_snapshots(store, ops, result)
  uow:written(written, result)
  return "progress"
end

--- Clears a faulted reactor so it runs again from its checkpoint.
function M.reset(store, r)
  r.streak = nil
  return store:write { deletes = { { view.PROJECTIONS, spaces.reactor_status(r.name) } } }
end

return M
