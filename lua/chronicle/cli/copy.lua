--- chronicle copy SRC DST: a whole store into another, across backends (a
-- directory and a postgresql:// URL, either way): every event with its id,
-- time, schema and position, and every key-value space. Resumable (the events
-- DST already holds are checked to be SRC's and skipped) and verified at the end.
-- @module chronicle.cli.copy
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local progress = require "chronicle.cli.progress"
local transfer = require "chronicle.cli.transfer"

local M = {}

local BATCH_EVENTS = 1000
local BATCH_KEYS = 1000

-- Reads take `hidden = true`: the events stream metadata hides are copied too (with the
-- metadata rows), so DST hides the same ones at the same positions and versions.
local function event_at(store, position)
  for ev in store:read_all { from = position, count = 1, hidden = true } do return ev end
end

local function same_event(a, b)
  return a.position == b.position and a.id == b.id and a.stream == b.stream and a.version == b.version
    and a.type == b.type and a.time == b.time and a.schema == b.schema
    and transfer.same(a.data, b.data) and transfer.same(a.meta, b.meta)
end

-- Copies the events after DST's head; returns how many.
local function copy_events(src, dst, head, bar)
  local start = dst:head()
  if start > head then
    context.fail(("DST holds %s events, more than SRC's %s: it is not a copy of SRC"):format(
      output.count(start), output.count(head)))
  end
  if start > 0 then
    local a, b = event_at(src, start), event_at(dst, start)
    if not (a and b and same_event(a, b)) then
      context.fail(("DST is not a copy of SRC (the events at position %d differ): copy into a new store"):format(start))
    end
  end
  local entries, n, last, copied = {}, 0, nil, 0
  local function flush()
    if n == 0 then return end
    local res, err = dst:append_many(entries)
    if not res then context.fail("writing DST: " .. context.describe(err)) end
    copied = copied + n
    if res.position ~= start + copied then
      context.fail(("DST's positions moved (another process writes it?): expected %d, got %d"):format(
        start + copied, res.position))
    end
    entries, n, last = {}, 0, nil
    bar:update(start + copied)
  end
  for ev in src:read_all { from = start + 1, to = head, hidden = true } do
    local e = { type = ev.type, data = ev.data, meta = ev.meta, id = ev.id, schema = ev.schema, time = ev.time }
    if last and last.stream == ev.stream then
      last.events[#last.events + 1] = e
    else
      last = { stream = ev.stream, events = { e } }
      entries[#entries + 1] = last
    end
    n = n + 1
    if n >= BATCH_EVENTS then flush() end
  end
  flush()
  return copied
end

-- Copies every key of every space (a space is cleared in DST first); returns spaces, keys.
local function copy_spaces(src, dst)
  local spaces = assert(src:kv_spaces())
  table.sort(spaces)
  local keys = 0
  for _, space in ipairs(spaces) do
    local ops = { clears = { space }, puts = {} }
    for k, v in src:kv_scan(space) do
      ops.puts[#ops.puts + 1] = { space, k, v }
      keys = keys + 1
      if #ops.puts >= BATCH_KEYS then
        local ok, err = dst:write(ops)
        if not ok then context.fail("writing DST: " .. context.describe(err)) end
        ops = { puts = {} }
      end
    end
    if #ops.puts > 0 or ops.clears then
      local ok, err = dst:write(ops)
      if not ok then context.fail("writing DST: " .. context.describe(err)) end
    end
  end
  return spaces, keys
end

-- Compares the two stores event by event and key by key; fails on the first difference.
local function verify(src, dst, head, spaces)
  local checked = dst:verify()
  if not checked.ok then
    context.fail("DST does not verify: " .. tostring(checked.problems[1]))
  end
  if dst:head() ~= head then context.fail(("DST's head is %d, SRC's %d"):format(dst:head(), head)) end
  local position = 0
  local step = 1000
  while position < head do
    local a, b = {}, {}
    for ev in src:read_all { from = position + 1, count = step, hidden = true } do a[#a + 1] = ev end
    for ev in dst:read_all { from = position + 1, count = step, hidden = true } do b[#b + 1] = ev end
    for i, ev in ipairs(a) do
      if not (b[i] and same_event(ev, b[i])) then
        context.fail(("the copy differs at position %d"):format(ev.position))
      end
    end
    if #a == 0 then break end
    position = a[#a].position
  end
  for _, space in ipairs(spaces) do
    if src:kv_count(space) ~= dst:kv_count(space) then
      context.fail(("space '%s': %d keys in SRC, %d in DST"):format(space, src:kv_count(space), dst:kv_count(space)))
    end
    for k, v in src:kv_scan(space) do
      if not transfer.same(v, dst:kv_get(space, k)) then
        context.fail(("space '%s': key '%s' differs"):format(space, k))
      end
    end
  end
end

--- chronicle copy SRC DST
function M.copy(args)
  local src = context.open(args.src, "read")
  local dst = context.open(args.dst, "create")
  local head = src:head()
  local st = src:stats()
  if st and (st.scavenged or 0) > 0 then
    context.fail(("SRC has had %s scavenged: a copy cannot keep the positions around them (on LMDB, "
      .. "'chronicle backup' copies it as it is)"):format(output.plural(st.scavenged, "event")))
  end
  local bar = progress.new({ label = "copy", total = head, unit = "events" })
  local copied = copy_events(src, dst, head, bar)
  bar:finish()
  local spaces, keys = copy_spaces(src, dst)
  verify(src, dst, head, spaces)
  io.stdout:write(("copied %s to %s: %s events (%s new), %s keys in %s spaces; verified\n"):format(
    src.path, dst.path, output.count(head), output.count(copied), output.count(keys), output.count(#spaces)))
  src:close()
  dst:close()
end

return M
