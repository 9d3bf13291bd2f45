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

-- A misuse error raised by the store (a field it refuses), as the input line it came from:
-- "append_many[2]: events[3].id must be ..." becomes "line 57: id must be ...".
local function refused_line(entries, batch, raised)
  local message = tostring(type(raised) == "table" and (raised.message or raised) or raised)
  message = message:gsub("^[^\n]-%.lua:%d+: ", "")
  local entry, event, rest = message:match("^append_many%[(%d+)%]: events%[(%d+)%]%.?(.*)$")
  if entry then
    local item = entries[tonumber(entry)].items[tonumber(event)]
    if item then return string.format("line %d: %s", item.line, rest:gsub("^ ", "the event ")) end
  end
  entry, rest = message:match("^append_many%[(%d+)%]: (.*)$")
  local e = entry and entries[tonumber(entry)]
  if e then return string.format("line %d: %s", e.items[1].line, rest) end
  return string.format("line %d: %s", batch[1].line, message)
end

--- Two values are the same when they would export the same: integer vs float, -0.0 vs 0.0
-- and every key count; NaN equals NaN. (chronicle copy compares what it copied with it.)
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

-- Appends a batch in one transaction, consecutive events of a stream as one entry.
-- Returns the counts written and skipped (entries the store found already stored:
-- idempotent replays, told by the store itself, so another import running at the same
-- time cannot make them count as written), or nil and the store's error.
local function append_batch(store, batch)
  local entries, last = {}, nil
  for _, item in ipairs(batch) do
    if last and last.stream == item.stream then
      last.events[#last.events + 1] = item.event
      last.items[#last.items + 1] = item
    else
      last = { stream = item.stream, events = { item.event }, items = { item }, expected = chronicle.ANY }
      entries[#entries + 1] = last
    end
  end
  local appends = {}
  for i, entry in ipairs(entries) do
    appends[i] = { stream = entry.stream, events = entry.events, expected = entry.expected }
  end
  local ok, res, err = pcall(store.append_many, store, appends)
  if not ok then context.fail(refused_line(entries, batch, res)) end
  if not res then return nil, err end
  local written, skipped = 0, 0
  for i, entry in ipairs(entries) do
    local n = #entry.events
    if res[i].replayed then skipped = skipped + n else written = written + n end
  end
  return written, skipped
end

-- Writes one batch; returns the counts written and skipped. A batch the store refuses
-- because some of its ids are stored (or stored out of this order) is split in halves
-- until each part is new events or a replay; a single event refused is a real error.
local function write_batch(store, batch)
  local written, skipped = append_batch(store, batch)
  if written then return written, skipped end
  local err = skipped
  if #batch == 1 or (err.code ~= "duplicate_id" and err.code ~= "conflict") then
    context.fail(string.format("line %d: %s", batch[1].line, context.describe(err)))
  end
  local half = #batch // 2
  local first, second = {}, {}
  for i, item in ipairs(batch) do
    if i <= half then first[#first + 1] = item else second[#second + 1] = item end
  end
  local w1, s1 = write_batch(store, first)
  local w2, s2 = write_batch(store, second)
  return w1 + w2, s1 + s2
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
