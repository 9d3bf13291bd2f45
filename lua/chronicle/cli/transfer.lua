--- export and import: a store's events as JSON Lines (one event per line,
-- chronicle.cli.json's lossless encoding) and back, ids and times kept, so
-- that importing the same lines again writes nothing.
-- @module chronicle.cli.transfer
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local json = require "chronicle.cli.json"
local output = require "chronicle.cli.output"
local progress = require "chronicle.cli.progress"
local terminal = require "chronicle.cli.terminal"

local M = {}

local BATCH_EVENTS = 1000
local BATCH_BYTES = 4 * 1024 * 1024

--- chronicle export DIR [--from P] [--to P] [--output FILE]
function M.export(args)
  local store = context.open(args.dir, "read")
  local head = store:head()
  local from, to = args.from or 1, math.min(args.to or head, head)
  local out = io.stdout
  if args.output then
    local f, err = io.open(args.output, "wb")
    if not f then context.fail("cannot write " .. args.output .. ": " .. tostring(err)) end
    out = f
  end
  out:setvbuf("full", 1 << 16)
  -- Events written to the terminal itself would be torn by the bar.
  local bar = progress.new({ label = "export", total = math.max(to - from + 1, 0), unit = "events",
                             enabled = args.output ~= nil or not terminal.isatty(io.stdout) })
  local n = 0
  if to >= from then
    for ev in store:read_all({ from = from, to = to }) do
      out:write(json.encode_event(ev), "\n")
      n = n + 1
      if n % 512 == 0 then bar:update(n) end
    end
  end
  bar:finish()
  local ok, err = out:flush()
  if not ok then context.fail("writing the export failed: " .. tostring(err)) end
  if args.output then
    out:close()
    io.stdout:write(string.format("exported %s (positions %d to %d) to %s\n", output.plural(n, "event"), from,
                                  n > 0 and to or from - 1, args.output))
  end
  store:close()
end

-- Two values are the same when they would export the same: integer vs float, -0.0 vs 0.0
-- and every key count; NaN equals NaN.
local function same(a, b)
  if a == b then
    if math.type(a) == "float" then return math.type(b) == "float" and (a ~= 0 or 1 / a == 1 / b) end
    return math.type(a) == math.type(b)
  end
  local ta = type(a)
  if ta ~= type(b) then return false end
  if ta == "number" then return a ~= a and b ~= b and math.type(b) == "float" end
  if ta ~= "table" then return false end
  for k, v in pairs(a) do
    local w = rawget(b, k)
    if w == nil or not same(v, w) then return false end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false end
  end
  return true
end

M.same = same

-- What makes two events the same for a repeated import: everything but their place.
local function same_event(stored, stream, ev)
  return stored.stream == stream and stored.type == ev.type and (ev.time == nil or stored.time == ev.time)
    and stored.schema == (ev.schema or 1) and same(stored.meta, ev.meta) and same(stored.data, ev.data)
end

local function stored_at(store, position)
  for ev in store:read_all({ from = position, count = 1 }) do return ev end
end

local function taken(item, position)
  return string.format("line %d: event id %s is already stored at position %d as a different event",
                       item.line, tostring(item.event.id), position)
end

-- Appends a batch in one transaction, consecutive events of a stream as one entry.
-- Returns the counts written and already present, or nil and the store's error.
local function append_batch(store, batch)
  local entries, last = {}, nil
  for _, item in ipairs(batch) do
    if last and last.stream == item.stream then
      last.events[#last.events + 1] = item.event
    else
      last = { stream = item.stream, events = { item.event }, expected = chronicle.ANY }
      entries[#entries + 1] = last
    end
  end
  local head = store:head()
  local res, err = store:append_many(entries)
  if not res then return nil, err end
  local written, present = 0, 0
  for i, entry in ipairs(entries) do
    local n = #entry.events
    if res[i].position > head then written = written + n else present = present + n end
  end
  return written, present
end

-- Writes one batch; returns the counts written and already present. An entry whose ids
-- are all stored is skipped by the store itself; when that fails (some ids new, or the same
-- event stored with its maps encoded in another order), the events the store already holds
-- are found near the position the store names and compared, and the rest is appended.
local function write_batch(store, batch, depth)
  local written, present = append_batch(store, batch)
  if written then return written, present end
  local err = present
  if err.code ~= "duplicate_id" then
    context.fail(string.format("line %d: %s", batch[1].line, context.describe(err)))
  end
  if err.position and (depth or 0) < 4 then
    local stored = {}
    for ev in store:read_all({ from = err.position, count = 2 * #batch + 64 }) do stored[ev.id] = ev end
    local rest, known = {}, 0
    for _, item in ipairs(batch) do
      local ev = item.event.id and stored[item.event.id]
      if ev then
        if not same_event(ev, item.stream, item.event) then context.fail(taken(item, ev.position)) end
        known = known + 1
      else
        rest[#rest + 1] = item
      end
    end
    if known > 0 then
      if #rest == 0 then return 0, known end
      local w, p = write_batch(store, rest, (depth or 0) + 1)
      return w, p + known
    end
  end
  -- One by one: an event whose id is taken counts as present when it is the same event.
  written, present = 0, 0
  for _, item in ipairs(batch) do
    local before = store:head()
    local r, e = store:append(item.stream, { item.event })
    if r then
      if r.position > before then written = written + 1 else present = present + 1 end
    elseif e.code == "duplicate_id" and e.position then
      local ev = stored_at(store, e.position)
      if not ev or not same_event(ev, item.stream, item.event) then
        context.fail(taken(item, e.position))
      end
      present = present + 1
    else
      context.fail(string.format("line %d: %s", item.line, context.describe(e)))
    end
  end
  return written, present
end

--- chronicle import DIR FILE  (FILE "-" reads standard input)
function M.import(args)
  local input, size
  if args.file == "-" then
    input = io.stdin
  else
    local err
    input, err = io.open(args.file, "rb")
    if not input then context.fail("cannot read " .. args.file .. ": " .. tostring(err)) end
    size = input:seek("end")
    input:seek("set", 0)
  end
  local store = context.open(args.dir, "create")
  local bar = progress.new({ label = "import", total = size, unit = "events", items = true })
  local batch, bytes, consumed = {}, 0, 0
  local lineno, read, written, present = 0, 0, 0, 0
  local function flush()
    if #batch == 0 then return end
    local w, p = write_batch(store, batch)
    written, present = written + w, present + p
    batch, bytes = {}, 0
    bar:update(consumed, read)
  end
  for line in input:lines("L") do
    lineno = lineno + 1
    consumed = consumed + #line
    line = line:gsub("\r?\n$", "")
    if line:find("%S") then
      local rec, err = json.decode_event(line)
      if not rec then
        flush()
        context.fail(string.format("line %d: %s (%s written before it)", lineno, err, output.count(written)))
      end
      rec.line = lineno
      batch[#batch + 1] = rec
      read = read + 1
      bytes = bytes + #line
      if #batch >= BATCH_EVENTS or bytes >= BATCH_BYTES then flush() end
    end
  end
  flush()
  bar:finish()
  if input ~= io.stdin then input:close() end
  io.stdout:write(string.format("imported %s: %s read, %s written, %s already in the store\n",
                                args.file == "-" and "standard input" or args.file, output.plural(read, "event"),
                                output.count(written), output.count(present)))
  store:close()
end

return M
