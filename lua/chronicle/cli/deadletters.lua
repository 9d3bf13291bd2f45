--- dead-letters: the events handlers still failed on after their retries,
-- listed, shown, retried (with the handlers' code from a scripts folder) or
-- discarded. Dead letters live in the store's `dead_letters` space under
-- `HANDLER:POSITION` (the position zero-padded to 20 digits); the ID a
-- person types is HANDLER:POSITION without the padding.
-- @module chronicle.cli.deadletters
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local terminal = require "chronicle.cli.terminal"
local spaces = require "chronicle.spaces"
local time = require "chronicle.cli.time"

local M = {}

local SPACE = spaces.DEAD_LETTERS

local key_of = spaces.dead_letter

--- The ID a person types for a dead letter row.
function M.id(row) return tostring(row.handler) .. ":" .. tostring(row.position) end

-- HANDLER:POSITION -> handler, position; fails on anything else.
local function parse_id(text)
  local handler, position = tostring(text or ""):match("^(.+):(%d+)$")
  position = math.tointeger(tonumber(position))
  if not handler or not position then
    context.fail("a dead letter's ID is HANDLER:POSITION (as 'list' prints it), got '" .. tostring(text) .. "'", 2)
  end
  return handler, position
end

local function rows_of(store, handler)
  local out = {}
  for _, row in store:kv_scan(SPACE, handler and { prefix = handler .. ":" } or nil) do out[#out + 1] = row end
  return out
end

local function fields(row)
  return {
    { "id", M.id(row) }, { "handler", row.handler }, { "position", row.position }, { "stream", row.stream },
    { "version", row.version }, { "type", row.type }, { "event_id", row.id }, { "attempts", row.attempts },
    { "time", row.time and time.iso(row.time) }, { "error", row.error },
  }
end

local function list(store, args)
  local rows = rows_of(store, args.handler or args.target)
  if args.json then
    for _, row in ipairs(rows) do io.stdout:write(output.json_object(fields(row)), "\n") end
    return
  end
  if #rows == 0 then
    io.stdout:write("no dead letters", (args.handler or args.target) and (" for " .. (args.handler or args.target)) or "",
                    "\n")
    return
  end
  local cells = {}
  for _, row in ipairs(rows) do
    cells[#cells + 1] = { M.id(row), tostring(row.stream) .. "@" .. tostring(row.version), tostring(row.type),
      output.count(row.attempts or 0), row.time and time.iso(row.time, 3) or "", tostring(row.error) }
  end
  output.table({ "id", "event", "type", "attempts", "last failed", "error" }, cells, { [4] = true }, io.stdout,
               terminal.painter(terminal.colour(io.stdout)))
end

local function show(store, args)
  local handler, position = parse_id(args.target)
  local row = store:kv_get(SPACE, key_of(handler, position))
  if row == nil then context.fail("no dead letter " .. handler .. ":" .. position) end
  if args.json then
    io.stdout:write(output.json_object(fields(row)), "\n")
    return
  end
  local report = {}
  for _, f in ipairs(fields(row)) do
    if f[2] ~= nil then report[#report + 1] = { f[1], tostring(f[2]) } end
  end
  local paint = terminal.painter(terminal.colour(io.stdout))
  output.report(report, io.stdout, paint)
  local printer = output.event_printer({ colour = terminal.colour(io.stdout), meta = true, buffer = 0 })
  local found = false
  for ev in store:read_all({ from = row.position, count = 1 }) do
    if ev.position == row.position then
      printer:add(ev)
      found = true
    end
  end
  printer:flush()
  if not found then io.stdout:write("the event at position ", tostring(row.position), " is no longer in the log\n") end
end

local function retry(store, args)
  if not args.scripts then
    context.fail("retry runs the handlers' code again: give the folder that defines them with --scripts FOLDER", 2)
  end
  local projections = require "chronicle.cli.projections"
  projections.require_scripts("chronicle dead-letters retry")
  projections.load(store, args.scripts)
  local handlers = store:registrations().handlers
  local names, seen = {}, {}
  for _, row in ipairs(rows_of(store, args.target)) do
    if not seen[row.handler] then seen[row.handler] = true; names[#names + 1] = row.handler end
  end
  if args.target and not handlers[args.target] then
    context.fail("no handler '" .. args.target .. "' in " .. args.scripts)
  end
  if #names == 0 then
    io.stdout:write("no dead letters", args.target and (" for " .. args.target) or "", "\n")
    return
  end
  for _, name in ipairs(names) do
    if not handlers[name] then context.fail("no handler '" .. name .. "' in " .. args.scripts) end
  end
  local still = 0
  for _, name in ipairs(names) do
    local fixed, failing = store:retry_dead_letters(name)
    io.stdout:write(string.format("%s: %s handled, %s still failing\n", name, output.count(fixed),
                                  output.count(failing)))
    still = still + failing
  end
  if still > 0 then context.fail(output.plural(still, "dead letter") .. " still failing") end
end

local function discard(store, args)
  local deletes = {}
  if args.all then
    for _, row in ipairs(rows_of(store, args.target)) do deletes[#deletes + 1] = { SPACE, key_of(row.handler, row.position) } end
  else
    if not args.target then context.fail("discard needs a dead letter's ID (or --all)", 2) end
    local handler, position = parse_id(args.target)
    local key = key_of(handler, position)
    if store:kv_get(SPACE, key) == nil then context.fail("no dead letter " .. handler .. ":" .. position) end
    deletes[1] = { SPACE, key }
  end
  if #deletes > 0 then
    local ok, err = store:write { deletes = deletes }
    if not ok then context.fail(context.describe(err)) end
  end
  io.stdout:write("discarded ", output.plural(#deletes, "dead letter"), "\n")
end

--- chronicle dead-letters DIR [list|show ID|retry [NAME]|discard ID|discard [NAME] --all]
function M.run(args)
  local action = args.action or "list"
  if (action == "show") and not args.target then context.fail("show needs a dead letter's ID", 2) end
  if args.all and action ~= "discard" then context.fail("--all goes with discard", 2) end
  local writes = action == "retry" or action == "discard"
  local store = context.open(args.dir, writes and "write" or "read")
  if action == "list" then list(store, args)
  elseif action == "show" then show(store, args)
  elseif action == "retry" then retry(store, args)
  else discard(store, args) end
  store:close()
end

return M
