--- project and rebuild: run the projections and handlers of a scripts folder
-- up to the head of the log (or keep following it), and rebuild one
-- projection. Needs the scripts layer (chronicle.load_scripts,
-- chronicle.runner, store:reset_projection); a build without it says so.
-- @module chronicle.cli.projections
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local progress = require "chronicle.cli.progress"
local terminal = require "chronicle.cli.terminal"

local M = {}

--- Fails unless this build has the scripts layer.
function M.require_scripts(what)
  if type(chronicle.load_scripts) ~= "function" or type(chronicle.runner) ~= "function" then
    context.fail(what .. " is not available in this build (chronicle.load_scripts and chronicle.runner are missing)")
  end
end

--- Loads the scripts in `folder` into `store`; a script that does not load fails the command.
function M.load(store, folder)
  local ok, scripts, err = pcall(chronicle.load_scripts, store, folder)
  if not ok then context.fail("loading scripts from " .. folder .. ": " .. context.describe(scripts)) end
  if not scripts then context.fail("loading scripts from " .. folder .. ": " .. context.describe(err)) end
  local errors = type(scripts) == "table" and scripts.errors or {}
  if #errors > 0 then
    for i = 2, #errors do io.stderr:write("script error: ", context.describe(errors[i]), "\n") end
    context.fail("script error: " .. context.describe(errors[1]))
  end
  return scripts
end

local function run_until_idle(runner)
  local ok, result, err = pcall(runner.run, runner, { until_idle = true })
  if not ok then context.fail(context.describe(result)) end
  if result == nil and err ~= nil then context.fail(context.describe(err)) end
  local problems = type(runner.errors) == "table" and runner.errors or {}
  if #problems > 0 then
    local first = problems[1]
    for i = 2, #problems do
      io.stderr:write(string.format("%s %s: %s\n", tostring(problems[i].kind), tostring(problems[i].name),
                                    context.describe(problems[i].error)))
    end
    context.fail(string.format("%s %s: %s", tostring(first.kind), tostring(first.name), context.describe(first.error)))
  end
  return result
end

local function status_rows(store)
  if type(store.projection_status) ~= "function" then return {} end
  local rows, names = {}, {}
  local status = store:projection_status()
  for name in pairs(status) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local s = status[name]
    local text = tostring(s.status or "?")
    if s.fault then text = text .. " at position " .. tostring(s.fault.position) .. ": " .. tostring(s.fault.error) end
    rows[#rows + 1] = { name, output.count(s.checkpoint or 0), text }
  end
  return rows, status
end

local function print_status(store, paint)
  local rows, status = status_rows(store)
  if #rows > 0 then output.table({ "projection", "position", "status" }, rows, { [2] = true }, io.stdout, paint) end
  for name, s in pairs(status or {}) do
    if s.status == "faulted" then context.fail("projection " .. name .. " is faulted") end
  end
end

--- chronicle project DIR FOLDER [--follow]
function M.project(args)
  M.require_scripts("chronicle project")
  local store = context.open(args.dir, "write")
  M.load(store, args.folder)
  local runner = chronicle.runner(store)
  local paint = terminal.painter(terminal.colour(io.stdout))
  local status = progress.status("projecting...")
  local head = store:head()
  run_until_idle(runner)
  status:finish()
  io.stdout:write(string.format("caught up to position %d\n", head))
  print_status(store, paint)
  io.stdout:flush()
  if args.follow then
    local wait = context.follower(store, args.timeout)
    while true do
      local new_head = wait(head)
      if new_head == nil then break end
      if new_head then
        head = new_head
        run_until_idle(runner)
        io.stdout:write(string.format("caught up to position %d\n", head))
        io.stdout:flush()
      end
    end
  end
  store:close()
end

-- Runs the batches of one projection with a progress bar, when the projection
-- layer lets us (else the runner catches everything up).
local function rebuild_batches(store, name)
  local ok, projection = pcall(require, "chronicle.projection")
  local reg = type(store.registrations) == "function" and store:registrations()
  local entry = reg and reg.projections and reg.projections[name]
  if not (ok and type(projection.run_batch) == "function" and entry and store.projection_status) then return false end
  local bar = progress.new({ label = "rebuild " .. name, total = store:head(), unit = "events" })
  while true do
    local status, err = projection.run_batch(store, entry.def, entry.state)
    if status == nil then bar:finish(); context.fail(context.describe(err)) end
    local st = store:projection_status()[name]
    bar:update(st and st.checkpoint or 0)
    if status ~= "progress" then break end
  end
  bar:finish()
  return true
end

--- chronicle rebuild DIR NAME --scripts FOLDER
function M.rebuild(args)
  M.require_scripts("chronicle rebuild")
  local store = context.open(args.dir, "write")
  if type(store.reset_projection) ~= "function" then
    context.fail("chronicle rebuild is not available in this build (store:reset_projection is missing)")
  end
  M.load(store, args.scripts)
  local reg = type(store.registrations) == "function" and store:registrations()
  if reg and reg.projections and not reg.projections[args.name] then
    context.fail("no projection '" .. args.name .. "' in " .. args.scripts)
  end
  local ok, done, err = pcall(store.reset_projection, store, args.name)
  if not ok then context.fail(context.describe(done)) end
  if done == nil and err ~= nil then context.fail(context.describe(err)) end
  local head = store:head()
  if not rebuild_batches(store, args.name) then
    local status = progress.status("rebuilding " .. args.name .. "...")
    run_until_idle(chronicle.runner(store))
    status:finish()
  end
  local rows = ""
  if type(store.view) == "function" then
    local vok, view = pcall(store.view, store, args.name)
    if vok and type(view) == "table" and type(view.count) == "function" then
      local cok, n = pcall(view.count, view)
      if cok and math.type(n) == "integer" then rows = string.format(", %s rows", output.count(n)) end
    end
  end
  io.stdout:write(string.format("rebuilt %s up to position %d%s\n", args.name, head, rows))
  print_status(store, terminal.painter(terminal.colour(io.stdout)))
  store:close()
end

return M
