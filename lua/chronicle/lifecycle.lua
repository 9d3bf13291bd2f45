--- Stream lifecycle: metadata (retention, truncation, custom keys), deletion
-- and scavenging. Metadata rows live in the key-value space `stream_metadata`
-- (one MessagePack map per stream, see docs/FORMAT.md), written with the
-- store's one write transaction (`write`), and every backend's read path
-- applies them in C (csrc/common/retention.c), inside the read's own transaction.
-- @module chronicle.lifecycle
local common = require "chronicle.common"
local options = require "chronicle.options"
local spaces = require "chronicle.spaces"

local M = {}

--- The key-value space of metadata rows (key: the stream name).
M.SPACE = spaces.STREAM_METADATA
--- The space of metadata versions (key: the stream name, value: an integer):
-- an integer compares byte for byte, so a `write` check on it is an exact
-- compare-and-set, which a check on the (map) row could not be.
M.VERSIONS = spaces.STREAM_METADATA_VERSIONS
--- The type of the system event a deletion appends to the deleted stream.
M.DELETED_TYPE = "$stream_deleted"

local SNAPSHOTS = spaces.SNAPSHOTS
local RULES = { max_count = true, max_age = true, truncate_before = true }
-- Row keys the store keeps for itself: not settable as custom metadata.
local SYSTEM = { version = true, deleted = true, deleted_before = true, custom = true }
local RETRIES = 20

local function fail(code, message, fields)
  return nil, common.error(code, message, fields)
end

local function check_stream(fname, stream, level)
  if type(stream) ~= "string" or #stream == 0 or #stream > 200 then
    error(("%s: stream must be a string of 1 to 200 bytes, got %s"):format(fname, type(stream) == "string"
      and ("%d bytes"):format(#stream) or type(stream)), level + 1)
  end
end

--- The metadata a user sees, from a stored row: the rules and the custom keys.
function M.view(row)
  if type(row) ~= "table" then return {} end
  local out = {}
  for k in pairs(RULES) do out[k] = row[k] end
  if type(row.custom) == "table" then
    for k, v in pairs(row.custom) do out[k] = v end
  end
  return out
end

-- Is the stream (of `count` events) deleted according to its row: "hard", "soft" or nil.
local function deleted_state(row, count)
  if type(row) ~= "table" then return nil end
  if row.deleted == "hard" then return "hard" end
  if row.deleted == "soft" and type(row.deleted_before) == "number" and row.deleted_before >= count then
    return "soft"
  end
  return nil
end

local function read_row(store, stream)
  local row, err = store:kv_get(M.SPACE, stream)
  if err then return nil, nil, err end
  local version, verr = store:kv_get(M.VERSIONS, stream)
  if verr then return nil, nil, verr end
  return row, version
end

-- Adds `metadata`, `metadata_version` (-1: none) and `deleted` to a stream info table.
local function add_metadata(info, row)
  info.metadata = M.view(row)
  info.metadata_version = type(row) == "table" and row.version or -1
  info.deleted = deleted_state(row, info.count)
  return info
end

--- stream_info plus `metadata`, `metadata_version` and `deleted`.
function M.stream_info(store, h, stream)
  local info, err = h:stream_info(stream)
  if not info then return nil, err end
  local row, rerr = store:kv_get(M.SPACE, stream)
  if rerr then return nil, rerr end
  return add_metadata(info, row)
end

--- streams(opts) with the same tables as stream_info (no lookups when no stream has metadata).
function M.streams(store, h, opts)
  local step, state, init, closer = h:streams(opts)
  local any = store:kv_count(M.SPACE) > 0
  return function(s, c)
    local info = step(s, c)
    if info == nil then return nil end
    local row = any and store:kv_get(M.SPACE, info.stream) or nil
    return add_metadata(info, row)
  end, state, init, closer
end

-- Checks the metadata table given to set_stream_metadata; raises on misuse.
local function check_metadata(meta, level)
  if type(meta) ~= "table" then
    error("set_stream_metadata: metadata must be a table, got " .. type(meta), level + 1)
  end
  for k, v in pairs(meta) do
    if type(k) ~= "string" then
      error("set_stream_metadata: metadata keys must be strings, got " .. type(k), level + 1)
    end
    if RULES[k] then
      if math.type(v) ~= "integer" or v < 0 then
        error(("set_stream_metadata: %s must be an integer >= 0%s, got %s"):format(k,
          k == "max_age" and " (seconds)" or "", type(v) == "number" and tostring(v) or type(v)), level + 1)
      end
    elseif SYSTEM[k] then
      error(("set_stream_metadata: '%s' is kept by the store and cannot be set"):format(k), level + 1)
    end
  end
end

-- expected for metadata: nil/"any", "no_stream" (no metadata yet) or an integer >= -1.
local function check_expected(fname, expected, level)
  if expected == nil or expected == "any" or expected == "no_stream" or expected == "exists" then return end
  if math.type(expected) == "integer" and expected >= -1 then return end
  error(("%s: expected must be chronicle.ANY, NO_STREAM, EXISTS or a version >= -1, got %s"):format(fname,
    type(expected) == "number" and tostring(expected) or type(expected)), level + 1)
end

local function expected_holds(expected, actual)
  if expected == nil or expected == "any" then return true end
  if expected == "no_stream" then return actual == -1 end
  if expected == "exists" then return actual >= 0 end
  return expected == actual
end

local function conflict(what, stream, expected, actual)
  local fields = { stream = stream, expected = expected }
  if actual >= 0 then fields.actual = actual end
  return fail("conflict", ("%s of stream '%s' is at version %d, expected %s"):format(what, stream, actual,
    tostring(expected)), fields)
end

-- Writes row (and the bumped metadata version) with a compare-and-set on the
-- version read; returns the write's result, or nil, err ("retry" when the
-- metadata changed meanwhile).
local function put_row(store, stream, old_version, row, extra)
  local new_version = (old_version or -1) + 1
  row.version = new_version
  local ops = {
    appends = extra and extra.appends or nil,
    checks = { { M.VERSIONS, stream, old_version } },
    puts = { { M.SPACE, stream, row }, { M.VERSIONS, stream, new_version } },
  }
  local hides = row.max_count or row.max_age or (row.truncate_before or 0) > 0 or row.deleted
  -- A snapshot may hold the effect of events the rule now hides.
  if hides then ops.deletes = { { SNAPSHOTS, stream } } end
  local res, err = store:write(ops)
  if not res and err.code == "check_failed" then return nil, "retry" end
  if not res then return nil, err end
  return res, new_version
end

--- store:set_stream_metadata(stream, metadata, {expected=}) -> {version=} | nil, err
function M.set_metadata(store, stream, meta, opts, level)
  level = (level or 2) + 1
  check_stream("set_stream_metadata", stream, level)
  check_metadata(meta, level)
  opts = options.check("set_stream_metadata", opts, { expected = "string|integer" }, level)
  check_expected("set_stream_metadata", opts.expected, level)
  for _ = 1, RETRIES do
    local old, version, err = read_row(store, stream)
    if err then return nil, err end
    local actual = version or -1
    if not expected_holds(opts.expected, actual) then
      return conflict("the metadata", stream, opts.expected, actual)
    end
    local count = math.max(store:stream_version(stream), -1) + 1
    if old and old.deleted == "hard" then
      return fail("stream_deleted", ("stream '%s' is deleted"):format(stream), { stream = stream })
    end
    if meta.truncate_before and meta.truncate_before > count then
      return fail("out_of_range", ("set_stream_metadata: truncate_before %d is beyond stream '%s', whose next " ..
        "version is %d"):format(meta.truncate_before, stream, count),
        { stream = stream, truncate_before = meta.truncate_before, next_version = count })
    end
    local row = { custom = {} }
    for k, v in pairs(meta) do
      if RULES[k] then row[k] = v else row.custom[k] = v end
    end
    if next(row.custom) == nil then row.custom = nil end
    if old then row.deleted, row.deleted_before = old.deleted, old.deleted_before end
    local res, new_version = put_row(store, stream, version, row)
    if res then return { version = new_version } end
    if new_version ~= "retry" then return nil, new_version end
  end
  return fail("busy", "set_stream_metadata: the metadata of stream '" .. stream .. "' kept changing")
end

--- store:truncate_stream(stream, before, {expected=}): keeps the other
-- metadata and sets truncate_before.
function M.truncate(store, stream, before, opts, level)
  level = (level or 2) + 1
  check_stream("truncate_stream", stream, level)
  if math.type(before) ~= "integer" or before < 0 then
    error("truncate_stream: before must be an integer >= 0, got " .. (type(before) == "number" and
      tostring(before) or type(before)), level)
  end
  opts = options.check("truncate_stream", opts, { expected = "string|integer" }, level)
  for _ = 1, RETRIES do
    local row, version, err = read_row(store, stream)
    if err then return nil, err end
    local meta = M.view(row)
    meta.truncate_before = before
    local res, serr = M.set_metadata(store, stream, meta, { expected = opts.expected or (version or -1) }, level)
    if res or opts.expected ~= nil or serr.code ~= "conflict" then return res, serr end
  end
  return fail("busy", "truncate_stream: the metadata of stream '" .. stream .. "' kept changing")
end

-- The append's expected check on the stream's version, as append does it.
local function stream_expected_holds(expected, version)
  if expected == nil or expected == "any" then return true end
  if expected == "no_stream" then return version == -1 end
  if expected == "exists" then return version >= 0 end
  return expected == version
end

--- store:delete_stream(stream, {expected=, hard=false}) -> {version=, position=} | nil, err
-- Appends a `$stream_deleted` event to the stream (so projections and
-- handlers reading the log learn of it) and, in the same transaction, marks
-- every version up to it hidden; a hard delete also leaves a tombstone.
function M.delete(store, stream, opts, level)
  level = (level or 2) + 1
  check_stream("delete_stream", stream, level)
  opts = options.check("delete_stream", opts, { expected = "string|integer", hard = "boolean" }, level)
  if opts.expected ~= nil and not (opts.expected == "any" or opts.expected == "exists" or opts.expected == "no_stream"
      or (math.type(opts.expected) == "integer" and opts.expected >= 0)) then
    error("delete_stream: expected must be chronicle.ANY, EXISTS or a version >= 0, got " ..
      (type(opts.expected) == "number" and tostring(opts.expected) or type(opts.expected)), level)
  end
  local hard = opts.hard == true
  for _ = 1, RETRIES do
    local h = rawget(store, "_h")
    local info, err = h:stream_info(stream)
    if not info then return nil, err end
    local row, mversion, rerr = read_row(store, stream)
    if rerr then return nil, rerr end
    local state = deleted_state(row, info.count)
    if state == "hard" then
      return fail("stream_deleted", ("stream '%s' is already deleted"):format(stream), { stream = stream })
    end
    if state == "soft" and not hard then
      return fail("not_found", ("stream '%s' is deleted"):format(stream), { stream = stream, deleted = "soft" })
    end
    if not stream_expected_holds(opts.expected, info.version) then
      local fields = { stream = stream, expected = opts.expected, actual = info.version }
      return fail("conflict", ("stream '%s' is at version %d, expected %s"):format(stream, info.version,
        tostring(opts.expected)), fields)
    end
    local new = {}
    if type(row) == "table" then for k, v in pairs(row) do new[k] = v end end
    new.deleted = hard and "hard" or "soft"
    new.deleted_before = info.version + 2            -- the tombstone event is hidden too
    local appends = { { stream = stream, expected = info.version, events = {
      { type = M.DELETED_TYPE, data = { stream = stream, hard = hard, version = info.version } } } } }
    local res, perr = put_row(store, stream, mversion, new, { appends = appends })
    if res then return { version = res[1].version, position = res[1].position, hard = hard } end
    if perr ~= "retry" then
      if perr.code ~= "conflict" or math.type(opts.expected) == "integer" then return nil, perr end
    end
  end
  return fail("busy", "delete_stream: stream '" .. stream .. "' kept changing")
end

--- store:scavenge({progress=, batch=}) -> {removed=, streams=, batches=} | nil, err
-- Removes what metadata and deletions hide, one bounded write transaction
-- per batch; every batch commits on its own, so a scavenge that is killed
-- loses nothing and the next one finishes the work.
function M.scavenge(store, h, opts, level)
  level = (level or 2) + 1
  opts = options.check("scavenge", opts, { progress = "function", batch = options.integer_at_least(1),
                                           dry_run = "boolean" }, level)
  local batch = opts.batch or 1000
  local names = {}
  for stream in store:kv_scan(M.SPACE) do names[#names + 1] = stream end
  local out = { removed = 0, streams = 0, batches = 0, reclaimable = 0 }
  for i, stream in ipairs(names) do
    local touched, from = false, 0
    repeat
      local removed, next_version = h:scavenge_stream(stream, batch, opts.dry_run == true, from)
      if removed == nil then return nil, next_version end
      out.batches = out.batches + 1
      out.removed = out.removed + removed
      if removed > 0 then touched = true end
      if opts.progress then opts.progress(out.removed, i, #names) end
      from = next_version
    until not from
    if touched then out.streams = out.streams + 1 end
  end
  if opts.dry_run then out.reclaimable, out.removed = out.removed, 0 end
  return out
end

return M
