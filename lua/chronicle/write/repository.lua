--- Repositories: load aggregates from their streams (through the C fold) and
-- run commands against them: load, decide, append with the loaded version as
-- `expected`, apply, and retry on conflict.
-- @classmod Repository
local common = require "chronicle.common"
local upcast = require "chronicle.write.upcast"
local aggregate_mod = require "chronicle.write.aggregate"
local options = require "chronicle.options"
local spaces = require "chronicle.spaces"

local M = {}
local Repository = {}
Repository.__index = Repository
M.Repository = Repository

--- The key-value space holding snapshots, keyed by stream name.
M.SNAPSHOTS = spaces.SNAPSHOTS

local NO_STREAM = "no_stream"

--- How many aggregate states a repository keeps between executes.
M.CACHE_SIZE = 10000

local repository_options = { retries = options.integer_at_least(0), cache = "boolean" }

--- A repository of `aggregate` in `store` (use `store:repository(Aggregate)`).
-- @tparam Store store the store
-- @tparam table aggregate made by `chronicle.aggregate{...}`
-- @tparam[opt] table opts `retries` (conflict retries, default the aggregate's, 3),
--   `cache` (default true: when the stream is still at the version its last
--   successful execute left, `execute` starts from that state instead of
--   replaying the stream; `result.state` is that kept state, so treat it as
--   read-only, and commands must not change the state they are given)
function M.new(store, aggregate, opts)
  if not aggregate_mod.is_aggregate(aggregate) then
    error("repository: expected an aggregate made by chronicle.aggregate{...}", 3)
  end
  opts = options.check("repository", opts, repository_options, 3)
  return setmetatable({
    store = store, aggregate = aggregate, retries = opts.retries or aggregate.retries,
    cache = opts.cache ~= false and {} or nil, cached = 0,
  }, Repository)
end

--- The upcasters in force: the global ones with the aggregate's own on top.
function Repository:upcasters()
  local global = upcast.global
  if self._upcast_generation ~= global.generation then
    self._upcast = global:overlay(self.aggregate.upcasters)
    self._upcast_generation = global.generation
  end
  return self._upcast
end

--- A fold function applying events to a state: upcast, then apply[type]
-- (made once, and again when the process-wide upcasters change).
function Repository:applier()
  local registry = self:upcasters()
  if self._applier and self._applier_for == registry then return self._applier end
  self._applier, self._unknown = self:make_applier(registry)
  self._applier_for, self._fields = registry, self:make_fields(registry)
  return self._applier
end

--- The event fields a load reads (the `fields` of fold): the aggregate's, plus
-- `type` (what the repository dispatches on), plus `stream`, `version`,
-- `position` and `schema` when upcasters are in force (an upcaster is given
-- the event with them, and its errors name them). The repository needs no other: fold returns the last version and position.
function Repository:read_fields()
  self:applier()
  return self._fields
end

function Repository:make_fields(registry)
  local out, seen = {}, {}
  local function add(name)
    if not seen[name] then seen[name] = true; out[#out + 1] = name end
  end
  for _, name in ipairs(self.aggregate.fields) do add(name) end
  add("type")
  if not registry:is_empty() then add("stream"); add("version"); add("position"); add("schema") end
  return out
end

-- The applier, and a function that returns (and forgets) the type of the first event the
-- applier met with no apply handler and no version to name it by (an event of a load that
-- did not read versions): it skips that event and those after it, and the load raises
-- (Repository:raise_unknown), so that loads need not read versions for the error message.
function Repository:make_applier(registry)
  local agg = self.aggregate
  local apply, ignore = agg.apply, agg.ignore_unknown_events
  local plain = registry:is_empty()
  local unknown
  local function applier(state, ev)
    if unknown then return nil end
    if not plain then registry:apply(ev) end
    local handler = apply[ev.type]
    if handler == nil then
      if ignore then return nil end
      if ev.version == nil then unknown = ev.type; return nil end
      error(("%s: no apply handler for event type '%s' (stream %s, version %d)")
        :format(agg.name, ev.type, ev.stream or "?", ev.version), 0)
    end
    return handler(state, ev)
  end
  return applier, function()
    local t = unknown
    unknown = nil
    return t
  end
end

-- Raises the error of a load of `stream` (from version `from`) that met an event of type
-- `type_name` with no apply handler, naming its version (read again: an error path).
function Repository:raise_unknown(stream, from, type_name)
  local version = "?"
  for ev in self.store:read(stream, { from = from, fields = { "type", "version" } }) do
    if ev.type == type_name then version = ev.version; break end
  end
  error(("%s: no apply handler for event type '%s' (stream %s, version %s)")
    :format(self.aggregate.name, type_name, stream, version), 0)
end

local function check_at(at)
  if at == nil then return nil end
  if type(at) ~= "table" then error("load: 'at' must be a table {version=} | {position=} | {time=}", 3) end
  local n = 0
  for k, v in pairs(at) do
    if k ~= "version" and k ~= "position" and k ~= "time" then
      error("load: unknown key '" .. tostring(k) .. "' in 'at' (allowed: version, position, time)", 3)
    end
    if math.type(v) ~= "integer" or v < 0 then error("load: at." .. k .. " must be an integer >= 0", 3) end
    n = n + 1
  end
  if n ~= 1 then error("load: 'at' takes exactly one of version, position, time", 3) end
  return at
end

-- Whether a snapshot describes a state no later than `at`.
local function snapshot_fits(snap, at)
  if at == nil then return true end
  if at.version then return snap.version <= at.version end
  if at.position then return snap.position ~= nil and snap.position <= at.position end
  return snap.time ~= nil and snap.time <= at.time
end

--- Loads the state of aggregate `id`, as it is now or as it was.
-- @param id the aggregate id (the stream is `name .. "-" .. id`)
-- @tparam[opt] table at `{version = n}`, `{position = p}` or `{time = ns}`: time travel
-- @return state, version (-1 when the aggregate has no events yet)
-- @return nil, err when the store fails
function Repository:load(id, at)
  return self:load_state(id, check_at(at), true)
end

-- load, with lazy snapshot writing optional (a dry run writes nothing at all).
function Repository:load_state(id, at, may_snapshot)
  local agg, store = self.aggregate, self.store
  local stream = agg:stream(id)
  local query = { stream = stream, fields = self:read_fields() }
  local state, version = nil, -1
  local snap = agg.snapshot_every and store:kv_get(M.SNAPSHOTS, stream)
  if type(snap) == "table" and snap.schema == agg.schema_version and snapshot_fits(snap, at) then
    state, version = snap.state, snap.version
    query.from = snap.version + 1
  else
    state = agg.initial()
    snap = nil
  end
  if at then
    if at.version then query.to = at.version
    elseif at.position then query.until_position = at.position
    else query.until_time = at.time end
  end
  local applier = self:applier()
  self._unknown()                      -- a load that raised left nothing for this one
  local final, count, last_position, last_version = store:fold(query, state, applier)
  local unknown = self._unknown()
  if unknown then self:raise_unknown(stream, query.from or 0, unknown) end
  if final == nil and type(count) == "table" then return nil, count end
  -- Hidden (truncated, deleted) events count as read: last_version is past them.
  if last_version > version then version = last_version end
  -- A load that replayed a whole period writes the snapshot it could have used.
  if may_snapshot and at == nil and agg.snapshot_every and count >= agg.snapshot_every
      and not store.options.readonly then
    self:write_snapshot(stream, final, version, last_position, self:time_at(last_position))
  end
  return final, version
end

--- Stores a snapshot of `state` at `version` (best effort: a failure only costs speed).
function Repository:write_snapshot(stream, state, version, position, time)
  return self.store:write { puts = { { M.SNAPSHOTS, stream, {
    version = version, position = position, time = time, schema = self.aggregate.schema_version, state = state,
  } } } }
end

-- The time of the event at `position` (nil when there is none).
function Repository:time_at(position)
  if not position then return nil end
  for ev in self.store:read_all({ from = position, count = 1 }) do return ev.time end
end

--- The snapshot stored for aggregate `id`, or nil.
function Repository:snapshot(id)
  return self.store:kv_get(M.SNAPSHOTS, self.aggregate:stream(id))
end

local execute_options = {
  meta = "table", retries = options.integer_at_least(0), dry_run = "boolean", command_id = "string",
}

-- Runs a command handler; returns events (a list, maybe empty) or nil, rejection.
function M.decide(repo, id, command, args, state, version, opts)
  local agg = repo.aggregate
  local handler = agg.commands[command]
  if handler == nil then
    error(("%s has no command '%s'"):format(agg.name, tostring(command)), 3)
  end
  local ctx = { id = id, stream = agg:stream(id), version = version, aggregate = agg.name,
                command = command, meta = opts.meta, store = repo.store }
  local ok, result, reason = pcall(handler, state, args, ctx)
  if not ok then
    if type(result) == "table" then
      result.aggregate, result.id, result.command = agg.name, id, command
      error(result, 0)
    end
    error(("%s %s: command '%s' failed: %s"):format(agg.name, tostring(id), command, tostring(result)), 0)
  end
  if result == nil or result == false then
    if reason ~= nil then
      return nil, common.error("rejected", ("%s %s: %s rejected: %s"):format(agg.name, tostring(id), command, tostring(reason)),
        { reason = reason, aggregate = agg.name, id = id, command = command })
    end
    return {}
  end
  if type(result) ~= "table" then
    error(("%s %s: command '%s' must return an event, a list of events, nothing, or nil, reason; got %s")
      :format(agg.name, tostring(id), command, type(result)), 3)
  end
  if result.type ~= nil then return { result } end
  return result
end

-- Turns a command's events into full event tables (ids, time, meta, schema)
-- and applies them to `state`; returns the events and the new state.
function M.prepare(repo, id, command, events, state, version, opts)
  local agg = repo.aggregate
  local registry = repo:upcasters()
  local stream = agg:stream(id)
  local now = common.now()
  local command_id = opts.command_id or common.uuid()
  local base = opts.meta or {}
  local applier = repo:applier()
  local out = {}
  for i, e in ipairs(events) do
    if type(e) ~= "table" or type(e.type) ~= "string" then
      error(("%s %s: command '%s' returned a bad event at [%d] (a table with a string 'type' expected)")
        :format(agg.name, tostring(id), command, i), 3)
    end
    local meta = {}
    for k, v in pairs(base) do meta[k] = v end
    if type(e.meta) == "table" then for k, v in pairs(e.meta) do meta[k] = v end end
    meta.correlation_id = meta.correlation_id or base.correlation_id or command_id
    meta.causation_id = base.causation_id or command_id
    local ev = {
      stream = stream, version = version + i, type = e.type, data = e.data, meta = meta,
      id = common.uuid(), time = now, schema = registry:current(e.type),
    }
    out[i] = ev
    local next_state = applier(state, ev)
    if next_state ~= nil then state = next_state end
  end
  return out, state
end

-- The append entry and, when the events cross a snapshot boundary, the snapshot put.
function M.write_ops(repo, id, events, version, new_state, new_version, ops)
  local agg = repo.aggregate
  local stream = agg:stream(id)
  local stored = {}
  for i, ev in ipairs(events) do
    stored[i] = { type = ev.type, data = ev.data, meta = ev.meta, id = ev.id, time = ev.time, schema = ev.schema }
  end
  ops.appends[#ops.appends + 1] = { stream = stream, events = stored, expected = version >= 0 and version or NO_STREAM }
  local every = agg.snapshot_every
  if every and (new_version + 1) // every > (version + 1) // every then
    ops.puts[#ops.puts + 1] = { M.SNAPSHOTS, stream, {
      version = new_version, time = events[#events].time, schema = agg.schema_version, state = new_state,
    } }
  end
end

--- After `store:write(ops)` committed: gives the snapshots that write put the
-- position of their last event (only known once the events are written), so
-- that loads by position or time can use them. Best effort, like every
-- snapshot: a snapshot replaced meanwhile is left alone, and one left without
-- a position is only not used for position and time loads.
function M.place_snapshots(store, ops, result)
  if not result or result.dry_run or not ops.puts then return end
  local checks, puts = {}, {}
  for _, put in ipairs(ops.puts) do
    local snap = put[1] == M.SNAPSHOTS and put[3]
    if type(snap) == "table" and snap.position == nil then
      for i, entry in ipairs(ops.appends) do
        if entry.stream == put[2] and result[i] then
          local placed = {}
          for k, v in pairs(snap) do placed[k] = v end
          placed.position = result[i].position
          checks[#checks + 1] = { M.SNAPSHOTS, put[2], snap }
          puts[#puts + 1] = { M.SNAPSHOTS, put[2], placed }
        end
      end
    end
  end
  for i = 1, #puts do
    store:write { checks = { checks[i] }, puts = { puts[i] } }
  end
end

-- Copies positions from a write result onto the events, in order.
function M.set_positions(events, last_position)
  local n = #events
  for i, ev in ipairs(events) do ev.position = last_position - (n - i) end
end

--- Runs `command` on aggregate `id`: load, decide, append, apply; retries on conflict.
-- @param id the aggregate id
-- @tparam string command a key of the aggregate's `commands`
-- @param args passed to the command as its second argument
-- @tparam[opt] table opts `meta` (copied onto every event; `correlation_id` and
--   `causation_id` are carried), `retries`, `dry_run` (do everything, then roll back), `command_id`
-- @treturn[1] table `{state=, version=, events=, position=, dry_run=}`
-- @treturn[2] nil
-- @treturn[2] table error: `rejected` (with `reason`), `conflict` after the retries, or a store failure
function Repository:execute(id, command, args, opts)
  opts = options.check("execute", opts, execute_options, 2)
  if id == nil then error("execute: aggregate id expected", 2) end
  local retries = opts.retries or self.retries
  local stream = self.aggregate:stream(id)
  local last_err
  for _ = 0, retries do
    local state, version
    local hit = self:take_cached(id)
    if hit and self.store:stream_version(stream) == hit.version then
      state, version = hit.state, hit.version         -- as current as a fresh load
    else
      state, version = self:load_state(id, nil, not opts.dry_run)
      if state == nil and type(version) == "table" then return nil, version end
    end
    local events, rejection = M.decide(self, id, command, args, state, version, opts)
    if events == nil then
      self:remember(id, state, version)
      return nil, rejection
    end
    if #events == 0 then
      self:remember(id, state, version)
      return { state = state, version = version, events = {}, position = nil }
    end
    local full, new_state = M.prepare(self, id, command, events, state, version, opts)
    local new_version = version + #full
    local ops = { appends = {}, puts = {}, dry_run = opts.dry_run or nil }
    M.write_ops(self, id, full, version, new_state, new_version, ops)
    local result, err = self.store:write(ops)
    if result then
      M.place_snapshots(self.store, ops, result)
      M.set_positions(full, result[1].position)
      if not result.dry_run then self:remember(id, new_state, new_version) end
      return { state = new_state, version = new_version, events = full, position = result.position,
               dry_run = result.dry_run }
    end
    if err.code ~= "conflict" then return nil, err end
    last_err = err
  end
  return nil, last_err
end

-- The state the last execute left for aggregate `id`, taken out of the cache
-- (applying new events changes it in place; it goes back once written).
function Repository:take_cached(id)
  local cache = self.cache
  local hit = cache and cache[id]
  if hit then
    cache[id] = nil
    self.cached = self.cached - 1
  end
  return hit
end

-- Keeps the state an execute left for the next one (see M.new's `cache`).
function Repository:remember(id, state, version)
  local cache = self.cache
  if not cache then return end
  if cache[id] == nil then
    if self.cached >= M.CACHE_SIZE then
      cache = {}
      self.cache, self.cached = cache, 0
    end
    self.cached = self.cached + 1
  end
  cache[id] = { state = state, version = version }
end

--- Forgets the states kept between executes (all, or aggregate `id`'s).
function Repository:forget(id)
  if not self.cache then return end
  if id == nil then self.cache, self.cached = {}, 0
  elseif self.cache[id] then self.cache[id], self.cached = nil, self.cached - 1 end
end

--- Iterates the aggregate's history: `for version, event, state in repo:history(id) do`.
-- `state` is the live state after the event: copy it to keep it.
function Repository:history(id)
  local agg = self.aggregate
  local state = agg.initial()
  local applier = self:applier()
  local step, scanner, _, closer = self.store:read(agg:stream(id))
  return function()
    local ev = step(scanner)
    if ev == nil then return nil end
    local next_state = applier(state, ev)
    if next_state ~= nil then state = next_state end
    return ev.version, ev, state
  end, nil, nil, closer
end

--- Replays every aggregate of this kind from its events and stores a fresh snapshot.
-- @treturn integer the number of snapshots written
function Repository:rebuild_snapshots()
  local agg = self.aggregate
  if not agg.snapshot_every then error("rebuild_snapshots: aggregate " .. agg.name .. " has no snapshot_every", 2) end
  local names = {}
  for info in self.store:streams({ prefix = agg.name .. "-" }) do names[#names + 1] = info.stream end
  local written = 0
  for _, stream in ipairs(names) do
    local applier = self:applier()
    self._unknown()
    local final, count, last_position, last_version =
      self.store:fold({ stream = stream, fields = self._fields }, agg.initial(), applier)
    local unknown = self._unknown()
    if unknown then self:raise_unknown(stream, 0, unknown) end
    if final == nil and type(count) == "table" then return nil, count end
    if count > 0 then
      local ok, err = self:write_snapshot(stream, final, last_version, last_position, self:time_at(last_position))
      if not ok then return nil, err end
      written = written + 1
    end
  end
  return written
end

return M
