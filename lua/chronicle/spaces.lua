--- The key-value spaces chronicle keeps beside the log, and the keys inside them.
-- This is the whole layout the read side and the snapshots use, so it is also the map
-- of the tables a backend holds for them (docs/BACKEND.md, "Key-value spaces"):
--
--    space            key                             value
--    projections      <projection name>               { version, hash, generation, building, status, fault, ... }
--                     reactor:<reactor name>          { status, fault }
--    checkpoints      p:<projection>#<generation>     position
--                     h:<handler name>                position
--                     r:<reactor name>                position
--    v:<name>#<gen>   the projection's own keys       its rows
--    dead_letters     <handler>:<position, 20 digits> { handler, position, stream, version, type, id, error, attempts, time }
--    snapshots        <stream>                        { version, position, time, schema, state }
--    stream_metadata  <stream>                        the stream's metadata row (lifecycle.lua, docs/FORMAT.md)
--    stream_metadata_version  <stream>                an integer, the row's version (compare-and-set)
--    groups           <kind>:<name>:m:|l:|k:|c:...     members, leases, partition checkpoints (read/group.lua)
--    subscriptions    <name>:...                      settings, cursor, leases (f:), parked events (p:)
--                                                     (read/subscription.lua)
-- @module chronicle.spaces
local M = {}

--- Projection metadata by projection name, and reactor status rows (`reactor_status`).
M.PROJECTIONS = "projections"
--- Every checkpoint: projections, handlers and reactors, each under its own key prefix.
M.CHECKPOINTS = "checkpoints"
--- Aggregate snapshots, keyed by stream.
M.SNAPSHOTS = "snapshots"
--- Events a handler gave up on, keyed by handler and position.
M.DEAD_LETTERS = "dead_letters"
--- Stream metadata rows (retention, truncation, deletion, custom keys), keyed by stream.
M.STREAM_METADATA = "stream_metadata"
--- The version of each stream's metadata row, keyed by stream.
M.STREAM_METADATA_VERSIONS = "stream_metadata_version"
--- Consumer groups: members, leases and partition checkpoints (keys: read/group.lua).
M.GROUPS = "groups"
--- Persistent subscriptions' state (keys: read/subscription.lua).
M.SUBSCRIPTIONS = "subscriptions"

--- The prefix of every handler checkpoint key in CHECKPOINTS.
M.HANDLER_PREFIX = "h:"
--- The prefix of every reactor checkpoint key in CHECKPOINTS.
M.REACTOR_PREFIX = "r:"

--- The space holding generation `gen` of projection `name`'s rows.
function M.view(name, gen)
  return "v:" .. name .. "#" .. gen
end

--- The CHECKPOINTS key of generation `gen` of projection `name`.
function M.projection_checkpoint(name, gen)
  return "p:" .. name .. "#" .. gen
end

--- The CHECKPOINTS key of handler `name`.
function M.handler_checkpoint(name)
  return M.HANDLER_PREFIX .. name
end

--- The CHECKPOINTS key of reactor `name`.
function M.reactor_checkpoint(name)
  return M.REACTOR_PREFIX .. name
end

--- The PROJECTIONS key of reactor `name`'s status row.
function M.reactor_status(name)
  return "reactor:" .. name
end

--- The DEAD_LETTERS key of handler `handler`'s letter for the event at `position`
-- (zero-padded, so that a prefix scan lists a handler's letters in log order).
function M.dead_letter(handler, position)
  return ("%s:%020d"):format(handler, position)
end

--- The DEAD_LETTERS key prefix of every letter of handler `handler`.
function M.dead_letters_of(handler)
  return handler .. ":"
end

return M
