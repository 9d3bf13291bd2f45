--- The Store: the Lua face of one open store. Storage calls go straight to
-- the C handle; the aggregate, projection and handler layers add methods here.
-- @classmod Store
local options = require "chronicle.options"
local personal = require "chronicle.personal"
local spaces = require "chronicle.spaces"

local Store = {}
Store.__index = Store

local append_options = { expected = "string|integer" }

-- `sealed = true` reads events as stored: personal data still sealed in meta (what
-- `chronicle copy` copies, with the subject_keys space, so the copy stays erasable).
-- Returns the options without `sealed`, and whether it was true.
local function sealed_options(opts, fname)
  if type(opts.sealed) ~= "boolean" then error(fname .. ": option 'sealed' must be a boolean", 3) end
  local rest = {}
  for k, v in pairs(opts) do if k ~= "sealed" then rest[k] = v end end
  return rest, opts.sealed
end

--- Wraps a `chronicle.core` handle (use `chronicle.open`).
function Store.new(handle, path, opts)
  return setmetatable({ _h = handle, path = path, options = opts }, Store)
end

local function handle(self)
  local h = type(self) == "table" and rawget(self, "_h")
  if not h then error("expected a store (use store:method(...), not store.method(...))", 3) end
  return h
end

--- Appends events to one stream in one transaction.
-- @tparam string stream the stream name (1 to 200 bytes)
-- @tparam {table,...} events `{type=, data=, meta=, id=, schema=}` tables
-- @param[opt] opts `{expected=}`, or the expected value itself: `chronicle.ANY` (default),
--   `NO_STREAM`, `EXISTS` or the version of the stream's last event
-- @treturn[1] table `{version=, position=}` of the last event written
-- @treturn[2] nil
-- @treturn[2] table error: `conflict` (with `expected`, `actual`), `duplicate_id`, `readonly`, `disk_full`, ...
function Store:append(stream, events, opts)
  local expected = opts
  if type(opts) == "table" then
    options.check("append", opts, append_options, 2)
    expected = opts.expected
  end
  if personal.any(events) then return personal.append(self, handle(self), stream, events, expected) end
  return handle(self):append(stream, events, expected)
end

--- Appends to several streams in one transaction: all or nothing.
-- @tparam {table,...} batch `{stream=, events=, expected=}` entries
-- @treturn[1] table one `{stream=, version=, position=}` per entry, and `position` of the last event
-- @treturn[2] nil
-- @treturn[2] table error, with `index` naming the entry that failed
function Store:append_many(batch)
  if personal.any_in(batch) then return personal.append_many(self, handle(self), batch) end
  return handle(self):append_many(batch)
end

--- Does several things in one transaction, all or nothing.
-- @tparam table ops `appends` (a list as for `append_many`), then key-value
--   operations in this order: `checks` ({space, key, value}: the stored value
--   must equal `value`, or be absent when value is nil), `clears` (space names),
--   `deletes` ({space, key}), `puts` ({space, key, value}); `dry_run = true`
--   does everything and rolls it back.
-- @treturn[1] table as for `append_many` (`dry_run = true` when rolled back)
-- @treturn[2] nil
-- @treturn[2] table error: `conflict`, `duplicate_id`, `check_failed` (with `space`, `key`), ...
function Store:write(ops)
  if type(ops) == "table" and personal.any_in(ops.appends) then return personal.write(self, handle(self), ops) end
  return handle(self):write(ops)
end

--- The value stored under `key` in key-value space `space`, or nil.
function Store:kv_get(space, key) return handle(self):kv_get(space, key) end

--- Iterates `key, value` of a space in key order: `{prefix=, from=, to=, count=, backward=}`.
function Store:kv_scan(space, opts) return handle(self):kv_scan(space, opts) end

--- The names of the key-value spaces that hold keys (order unspecified).
function Store:kv_spaces() return handle(self):kv_spaces() end

--- The number of keys in a space (under `prefix` when given).
function Store:kv_count(space, prefix) return handle(self):kv_count(space, prefix) end

--- Iterates the events of one stream: `{from=, to=, count=, backward=, until_position=, until_time=}`
-- (`from`/`to` are stream versions).
function Store:read(stream, opts)
  local h = handle(self)
  if type(opts) == "table" and opts.sealed ~= nil then
    local rest, sealed = sealed_options(opts, "read")
    if sealed then return h:read(stream, rest) end
    opts = rest
  end
  return h:read(stream, opts, personal.revealer(self))
end

--- Iterates the whole log: `{from=, to=, count=, backward=, category=, types=}`.
function Store:read_all(opts)
  local h = handle(self)
  if type(opts) == "table" and opts.sealed ~= nil then
    local rest, sealed = sealed_options(opts, "read_all")
    if sealed then return h:read_all(rest) end
    opts = rest
  end
  return h:read_all(opts, personal.revealer(self))
end

--- Folds events into a state with the loop in C.
-- @param query a stream name, or a table of `read_all` options plus `stream`
-- @param state the initial state
-- @tparam function fn `fn(state, event)` returns the new state, or nil to keep it
-- @return state, count, last_position, last_version (or nil, err)
function Store:fold(query, state, fn)
  local h = handle(self)
  if type(fn) ~= "function" or (type(query) ~= "string" and type(query) ~= "table") then
    return h:fold(query, state, fn)                                     -- the backend raises, naming fold
  end
  local reveal <close> = personal.revealer(self)
  return h:fold(query, state, fn, reveal)
end

--- The global position of the event with id `id` (a UUID string), or nil when no event has it.
function Store:position_of(id) return handle(self):position_of(id) end

--- The event with id `id`, or nil when no event has it.
function Store:event(id)
  local position, err = handle(self):position_of(id)
  if not position then return nil, err end
  for ev in self:read_all({ from = position, count = 1 }) do
    if ev.position == position then return ev end
  end
  return nil
end

--- The store's clock: nanoseconds since the epoch (LMDB: this host's clock; PostgreSQL: the
-- server's, the one clock every host of the store shares). Leases and deadlines use it.
function Store:now() return handle(self):now() end

--- The global position of the newest event (0 when empty).
function Store:head() return handle(self):head() end

--- `{stream, category, version, count, first_position, last_position, created, updated, metadata,
-- metadata_version, deleted}` or nil, not_found. `metadata` is what `set_stream_metadata` set
-- (`{}` when nothing), `metadata_version` its version (-1 when never set), `deleted` is "soft"
-- (deleted, and not written since) or "hard" (a tombstone) or nil.
function Store:stream_info(stream)
  return require("chronicle.lifecycle").stream_info(self, handle(self), stream)
end

--- Sets a stream's metadata, replacing what it had: `max_count` (only the newest n events stay
-- visible), `max_age` (seconds: older events are hidden), `truncate_before` (a version: events
-- below it are hidden), and any custom keys. Hidden events disappear from every read at once;
-- `scavenge` removes them for good.
-- @tparam string stream the stream
-- @tparam table metadata the new metadata
-- @tparam[opt] table opts `expected`: the metadata's version (-1 or `NO_STREAM`: none set yet)
-- @treturn[1] table `{version=}` the metadata's new version
-- @treturn[2] nil
-- @treturn[2] table error: `conflict` (`expected`, `actual`), `out_of_range` (truncate_before past the
--   stream's next version), `stream_deleted`
function Store:set_stream_metadata(stream, metadata, opts)
  handle(self)
  return require("chronicle.lifecycle").set_metadata(self, stream, metadata, opts, 2)
end

--- Hides a stream's events below version `before` (keeps its other metadata).
function Store:truncate_stream(stream, before, opts)
  handle(self)
  return require("chronicle.lifecycle").truncate(self, stream, before, opts, 2)
end

--- Deletes a stream: `{expected=, hard=false}`. Appends the system event `$stream_deleted` to it
-- (read_all, category and type reads deliver it, so read models can drop the stream's rows) and
-- hides every event up to it. A soft delete lets the stream be written again, its versions going
-- on; a hard delete leaves a tombstone: appends get `stream_deleted`, and so do its reads.
-- @treturn[1] table `{version=, position=, hard=}` of the `$stream_deleted` event
-- @treturn[2] nil
-- @treturn[2] table error: `not_found`, `conflict`, `stream_deleted`
function Store:delete_stream(stream, opts)
  handle(self)
  return require("chronicle.lifecycle").delete(self, stream, opts, 2)
end

--- Removes the events that metadata and deletions hide (records, index and id entries), one
-- bounded write transaction per batch: `{batch=1000, progress=fn(removed, stream_index, streams),
-- dry_run=}` (a dry run counts them: `reclaimable`).
-- @treturn table `{removed=, streams=, batches=, reclaimable=}`
function Store:scavenge(opts)
  return require("chronicle.lifecycle").scavenge(self, handle(self), opts, 2)
end

--- The version of the stream's last event (-1 when it has none): cheaper than stream_info.
function Store:stream_version(stream) return handle(self):stream_version(stream) end

--- Iterates stream infos in name order: `{prefix=, after=, count=}`.
function Store:streams(opts) return require("chronicle.lifecycle").streams(self, handle(self), opts) end

--- `{events, streams, head, bytes, file_size, used_bytes, map_size, page_size, format, store_id, path}`.
-- Also `scavenged` (events scavenging removed, ever) and `reclaimable` (events that metadata and
-- deletions hide, which the next `scavenge` removes).
function Store:stats()
  local h = handle(self)
  local st, err = h:stats()
  if not st then return nil, err end
  local n, serr = h:scavenged()
  if not n then return nil, serr end
  st.scavenged = n
  st.reclaimable = 0
  if self:kv_count(require("chronicle.lifecycle").SPACE) > 0 then
    local dry, derr = self:scavenge({ dry_run = true })
    if not dry then return nil, derr end
    st.reclaimable = dry.reclaimable
  end
  return st
end

--- Checks every record's checksum and that the indexes agree with the log.
-- `opts`: `max_problems` (default 100), `progress(events_done, events_total)`
-- (called now and then inside the check's read transaction, and last with done == total: on
-- LMDB it may read the store, on PostgreSQL it may not use it; writing to it or closing it
-- raises, and an error it raises stops the check, leaves nothing open and is raised by `verify`).
function Store:verify(opts) return handle(self):verify(opts) end

--- Blocks until the log holds an event after position `after` (another
-- process's appends included), or `timeout` seconds pass.
-- @treturn integer|false the new head, or false on timeout
function Store:wait(after, timeout) return handle(self):wait(after, timeout) end

--- A file descriptor that becomes readable when the log may have moved, for an
-- event loop to poll instead of blocking in `wait` (chronicle serve does);
-- `store:wait(after, 0)` then drains it and says whether the head passed `after`.
-- A wake may come a little before the append is visible: check again soon.
-- The descriptor may change (a PostgreSQL connection made again): ask after every wake.
-- @treturn integer|nil the descriptor, or nil where there is none (then poll `head`)
function Store:wait_fd() return handle(self):wait_fd() end

--- Writes a consistent, compacted copy of the store into directory `dest`
-- (on LMDB a compacted copy under one read transaction, while other processes may keep
-- writing; a PostgreSQL store returns nil, err(unsupported): use pg_dump).
-- `opts.progress(bytes_done, bytes_total)` is called now and then; it may read the store;
-- writing to it or closing it raises, and an error it raises stops the backup (no copy is
-- left) and is raised by `backup`.
function Store:backup(dest, opts) return handle(self):backup(dest, opts) end

--- Closes the store; later calls raise. Closing twice is harmless.
function Store:close()
  local h = rawget(self, "_h")
  personal.close(self)
  if h then h:close() end
end

--- Erases the personal data of `subject`: destroys its key, so every read from now on
-- returns its events with `personal = nil` and `erased = true` (types, data, meta, times and
-- `subject` stay). The key's bytes leave the files at the next compaction (`backup`; see
-- README "Personal data and erasure").
-- @treturn[1] table `{subject=, forgotten= (ns), already= (true when forgotten before)}`
-- @treturn[2] nil
-- @treturn[2] table error: `not_found` (no event carries that subject's personal data), ...
function Store:forget(subject) return personal.forget(self, subject) end

--- The subjects whose personal data the store holds: iterator of `subject, {forgotten=}`
-- (`forgotten`: when it was forgotten, ns; nil while its data can be read). `opts` as `kv_scan`.
function Store:subjects(opts) return personal.subjects(self, opts) end

function Store:is_open()
  local h = rawget(self, "_h")
  return h ~= nil and h:is_open()
end

--- A repository of an aggregate in this store: `load`, `execute`, `history`, ...
-- @tparam Aggregate aggregate made by `chronicle.aggregate`
-- @tparam[opt] table opts `retries`
function Store:repository(aggregate, opts)
  return require("chronicle.write.repository").new(self, aggregate, opts)
end

--- Runs `fn(uow)`; the commands it runs through `uow:execute(repo, id, command, args)`
-- commit together or not at all. See chronicle.unit_of_work.
function Store:unit_of_work(fn, opts)
  return require("chronicle.write.unit_of_work").run(self, fn, opts)
end

-- ------------------------------------------------------------------------
-- Projections, handlers and reactors (the read side)

--- What is registered on this store object: projections, handlers, reactors,
-- and the aggregates that scripts loaded into it define (by name).
function Store:registrations()
  local reg = rawget(self, "_registrations")
  if not reg then
    reg = { projections = {}, handlers = {}, reactors = {}, aggregates = {} }
    rawset(self, "_registrations", reg)
  end
  return reg
end

--- Registers a projection (a definition table, or the path of a script that
-- returns one). A changed `version` or handler code rebuilds its view.
-- @return the projection, or nil, err
function Store:projection(def)
  if type(def) == "string" then
    return require("chronicle.scripts").load_file(self, def)
  end
  local projection = require "chronicle.read.projection"
  local p = projection.define(def, 2)
  require("chronicle.names").claim(self, "projection", p.name, 2)
  local meta, err = projection.register(self, p)
  if not meta then return nil, err end
  self:registrations().projections[p.name] = { def = p, state = {} }
  return p
end

--- Forgets a registered projection, handler, reactor or script aggregate (its data stays).
function Store:unregister(name)
  local reg = self:registrations()
  reg.projections[name], reg.handlers[name], reg.reactors[name], reg.aggregates[name] = nil, nil, nil, nil
end

--- Catches every registered projection up to the head.
-- @return a table name -> status ("idle", "faulted", "skipped"), or nil, err
function Store:run_projections()
  local projection = require "chronicle.read.projection"
  local out = {}
  for name, entry in pairs(self:registrations().projections) do
    local status, err = projection.catch_up(self, entry.def, entry.state)
    if status == nil then return nil, err end
    out[name] = status
  end
  return out
end

--- The read face of projection `name`: `get(k)`, `pairs(opts)`, `count()`, `status()`.
-- A projection that was never registered in this store (by any process) is
-- not an empty view: it returns nil, err with `code = "not_found"`. A
-- registered projection whose first build has not finished reads as empty.
-- @return the view, or nil, err
function Store:view(name)
  if type(name) ~= "string" then error("view: projection name expected", 2) end
  local view = require "chronicle.read.view"
  local meta, err = self:kv_get(view.PROJECTIONS, name)
  if err then return nil, err end
  if meta == nil or name:find("^reactor:") then
    return nil, require("chronicle.common").error("not_found", "no projection '" .. name .. "' in this store", { projection = name })
  end
  return view.reader(self, name)
end

--- The status of every projection in the store (registered here or not):
-- name -> {version, generation, building, status, fault, checkpoint, group (the runners
-- serving it: one builds the view at a time, the others stand by)}.
function Store:projection_status()
  local view = require "chronicle.read.view"
  local out = {}
  for name, meta in self:kv_scan(view.PROJECTIONS) do
    if not name:find("^reactor:") then
      local gen = meta.building or meta.generation
      meta.checkpoint = self:kv_get(view.CHECKPOINTS, spaces.projection_checkpoint(name, tostring(gen))) or 0
      meta.head = self:head()
      meta.group = require("chronicle.read.group").status(self, "projection", name)
      out[name] = meta
    end
  end
  return out
end

--- The status of every reactor registered here: name -> {status ("live" or
-- "faulted"), fault ({position, stream, type, id, error, time}), checkpoint, head, lag,
-- group (its consumer group: members, their partitions, share and lag; see chronicle.read.group.status)}.
function Store:reactor_status()
  local view = require "chronicle.read.view"
  local out = {}
  local head = self:head()
  for name in pairs(self:registrations().reactors) do
    local row = self:kv_get(view.PROJECTIONS, spaces.reactor_status(name)) or { status = "live" }
    row.checkpoint = self:kv_get(view.CHECKPOINTS, spaces.reactor_checkpoint(name)) or 0
    row.head, row.lag = head, head - row.checkpoint
    row.group = require("chronicle.read.group").status(self, "reactor", name)
    out[name] = row
  end
  return out
end

--- The status of every handler registered here, and of every other handler
-- the store holds a checkpoint of: name -> {status ("live",
-- or "dead_letters" when it has some), dead_letters (their number),
-- checkpoint (the lowest of its partitions'), head, lag, registered, group (as for reactor_status)}.
function Store:handler_status()
  local view = require "chronicle.read.view"
  local handler = require "chronicle.read.handler"
  local out = {}
  local head = self:head()
  local function add(name)
    if out[name] then return end
    local checkpoint = self:kv_get(view.CHECKPOINTS, spaces.handler_checkpoint(name)) or 0
    local letters = self:kv_count(handler.DEAD_LETTERS, spaces.dead_letters_of(name))
    out[name] = { status = letters > 0 and "dead_letters" or "live", dead_letters = letters,
                  checkpoint = checkpoint, head = head, lag = head - checkpoint,
                  registered = self:registrations().handlers[name] ~= nil,
                  group = require("chronicle.read.group").status(self, "handler", name) }
  end
  for name in pairs(self:registrations().handlers) do add(name) end
  -- Dead letters are written with a checkpoint, so the checkpoints name every handler that has any.
  for key in self:kv_scan(view.CHECKPOINTS, { prefix = spaces.HANDLER_PREFIX }) do add(key:sub(#spaces.HANDLER_PREFIX + 1)) end
  return out
end

--- Clears a faulted reactor so it runs again from its checkpoint.
function Store:reset_reactor(name)
  local r = self:registrations().reactors[name]
  if not r then error("reset_reactor: no reactor '" .. tostring(name) .. "' is registered", 2) end
  return require("chronicle.read.reactor").reset(self, r)
end

--- Rebuilds projection `name` from the first event (in a new generation;
-- readers keep the current view until the rebuild has caught up).
function Store:reset_projection(name)
  local entry = self:registrations().projections[name]
  if not entry then error("reset_projection: no projection '" .. tostring(name) .. "' is registered", 2) end
  entry.state = {}
  return require("chronicle.read.projection").reset(self, entry.def)
end

--- Registers an event handler: `fn(event)` runs after commit, at least once,
-- for events of `types` (`opts`: name, retries, batch_size, category).
function Store:on(types, fn, opts)
  local h = require("chronicle.read.handler").define(types, fn, opts, 2)
  require("chronicle.names").claim(self, "handler", h.name, 2)
  self:registrations().handlers[h.name] = h
  return h
end

--- Registers a reactor (see chronicle.reactor): its outputs commit with its checkpoint.
function Store:reactor(def)
  local r = require("chronicle.read.reactor").define(def, 2)
  require("chronicle.names").claim(self, "reactor", r.name, 2)
  self:registrations().reactors[r.name] = r
  return r
end

--- Dead letters of handler `name` (or of all handlers).
function Store:dead_letters(name)
  return require("chronicle.read.handler").dead_letters(self, name)
end

--- Runs registered handler `name` again on its dead letters.
-- @return succeeded, still_failing
function Store:retry_dead_letters(name)
  local h = self:registrations().handlers[name]
  if not h then error("retry_dead_letters: no handler '" .. tostring(name) .. "' is registered", 2) end
  return require("chronicle.read.handler").retry_dead_letters(self, h)
end

--- A consumer of persistent subscription `name` (created with `opts` the
-- first time): `take`, `ack`, `nack`, `parked`, `replay_parked`, `status`.
-- See chronicle.read.subscription. @return the consumer, or nil, err
function Store:subscription(name, opts)
  return require("chronicle.read.subscription").open(self, name, opts, 2)
end

--- The state of persistent subscription `name` (see chronicle.read.subscription.status),
-- or of every subscription in the store (name -> state) when `name` is nil.
function Store:subscription_status(name)
  local subscription = require "chronicle.read.subscription"
  if name ~= nil then
    if type(name) ~= "string" then error("subscription_status: name must be a string", 2) end
    return subscription.status(self, name)
  end
  local out = {}
  for _, n in ipairs(subscription.names(self)) do out[n] = subscription.status(self, n) end
  return out
end

--- Deletes persistent subscription `name` with all its state (position, leases, parked events).
function Store:delete_subscription(name)
  if type(name) ~= "string" then error("delete_subscription: name must be a string", 2) end
  return require("chronicle.read.subscription").delete(self, name)
end

--- The consumer groups of handler, reactor or projection `name` (`kind`:
-- "handler", "reactor", "projection"): members, their partitions, share and
-- lag (see chronicle.read.group.status), or nil when no runner served it as a group.
function Store:group_status(kind, name)
  if kind ~= "handler" and kind ~= "reactor" and kind ~= "projection" then
    error("group_status: kind must be \"handler\", \"reactor\" or \"projection\", got " .. tostring(kind), 2)
  end
  if type(name) ~= "string" then error("group_status: name must be a string", 2) end
  return require("chronicle.read.group").status(self, kind, name)
end

Store.__close = Store.close
Store.__gc = Store.close

function Store:__tostring() return tostring(rawget(self, "_h")) end

return Store
