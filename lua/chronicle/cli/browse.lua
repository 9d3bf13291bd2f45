--- The subcommands that look at a store: stats, streams, show and tail
-- (with --follow, which waits for other processes' appends).
-- @module chronicle.cli.browse
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local terminal = require "chronicle.cli.terminal"
local time = require "chronicle.cli.time"

local M = {}

local function first_and_last(store)
  local first, last
  for ev in store:read_all({ count = 1 }) do first = ev end
  for ev in store:read_all({ count = 1, backward = true }) do last = ev end
  return first, last
end

--- chronicle stats DIR [--json]
function M.stats(args)
  local store = context.open(args.dir, "read")
  local s = store:stats()
  local first, last = first_and_last(store)
  local out = context.output(args)
  if out.json then
    io.stdout:write(output.json_object({
      { "path", s.path }, { "store_id", s.store_id }, { "format", s.format }, { "events", s.events },
      { "streams", s.streams }, { "head", s.head }, { "first_time", first and time.iso(first.time) },
      { "last_time", last and time.iso(last.time) }, { "file_size", s.file_size }, { "used_bytes", s.used_bytes },
      { "map_size", s.map_size }, { "page_size", s.page_size }, { "scavenged", s.scavenged },
      { "reclaimable", s.reclaimable },
    }), "\n")
  else
    local paint = terminal.painter(out.colour)
    output.report({
      { "path", s.path },
      { "store id", s.store_id },
      { "format", tostring(s.format) },
      { "events", output.count(s.events) },
      { "streams", output.count(s.streams) },
      { "head", output.count(s.head) },
      { "first event", first and time.iso(first.time, 3) or "-" },
      { "last event", last and time.iso(last.time, 3) or "-" },
      { "file size", output.bytes(s.file_size) },
      { "used", output.bytes(s.used_bytes) },
      { "map size", s.map_size and output.bytes(s.map_size) or "- (LMDB only)" },
      { "page size", tostring(s.page_size) },
      { "reclaimable", output.count(s.reclaimable or 0) .. " hidden events (chronicle scavenge removes them)" },
      { "scavenged", output.count(s.scavenged or 0) .. " events" },
    }, io.stdout, paint)
  end
  store:close()
end

--- chronicle streams DIR [--prefix P] [--after S] [--count N] [--json]
function M.streams(args)
  local store = context.open(args.dir, "read")
  local out = context.output(args)
  local rows = {}
  for info in store:streams({ prefix = args.prefix, after = args.after, count = args.count }) do
    if out.json then
      io.stdout:write(output.json_object(output.stream_fields(info)), "\n")
    else
      rows[#rows + 1] = {
        output.quote(info.stream):sub(2, -2), tostring(info.version), output.count(info.count),
        tostring(info.first_position), tostring(info.last_position), time.iso(info.updated, 3),
      }
    end
  end
  if not out.json then
    if #rows == 0 then
      io.stdout:write("no streams\n")
    else
      output.table({ "stream", "version", "events", "first", "last", "updated" }, rows,
                   { [2] = true, [3] = true, [4] = true, [5] = true }, io.stdout, terminal.painter(out.colour))
    end
  end
  store:close()
end

--- chronicle show DIR STREAM [--from N] [--count N] [--backward] [--json]
function M.show(args)
  local store = context.open(args.dir, "read")
  local info = store:stream_info(args.stream)
  if not info then context.fail("stream '" .. args.stream .. "' does not exist") end
  local out = context.output(args)
  local printer = output.event_printer({ json = out.json, colour = out.colour, meta = args.meta })
  for ev in store:read(args.stream, { from = args.from, count = args.count, backward = args.backward or nil }) do
    printer:add(ev)
  end
  printer:flush()
  store:close()
end

--- chronicle tail DIR [-n N] [--category C] [--type T]... [--follow] [--json]
function M.tail(args)
  local store = context.open(args.dir, "read")
  local out = context.output(args)
  local types = args.type and #args.type > 0 and args.type or nil
  local filter = { category = args.category, types = types }
  local recent = {}
  local head = store:head()
  if args.n > 0 then
    for ev in store:read_all({ backward = true, count = args.n, category = filter.category, types = types,
                               from = head }) do
      recent[#recent + 1] = ev
    end
  end
  -- The lines already there set the column widths; followed events then print as they land.
  local printer = output.event_printer({ json = out.json, colour = out.colour, flush_each = args.follow,
                                         meta = args.meta })
  for i = #recent, 1, -1 do printer:add(recent[i]) end
  printer:flush()
  if not args.follow then
    store:close()
    return
  end

  local seen, limit = 0, args.max_events
  local wait = context.follower(store, args.timeout)
  local last = head
  while not (limit and seen >= limit) do
    local new_head = wait(last)
    if new_head == nil then break end
    if new_head then
      for ev in store:read_all({ from = last + 1, to = new_head, category = filter.category, types = types }) do
        printer:add(ev)
        seen = seen + 1
        if limit and seen >= limit then break end
      end
      last = new_head
    end
  end
  printer:flush()
  store:close()
end

return M
