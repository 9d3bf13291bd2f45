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
local spaces = require "chronicle.spaces"

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

-- Kinds in the order the status table lists them.
local kind_order = { projection = 1, reactor = 2, handler = 3 }

--- Every projection, reactor and handler of `store`, read from the store
-- alone (its projections, checkpoints and dead-letters spaces), plus those
-- registered in this process that have not stored anything yet.
-- @return a list of `{kind, name, position, lag, status, fault, dead}` in kind and name order
function M.subscribers(store)
  local head = store:head()
  local list, by = {}, {}
  local function entry(kind, name)
    local key = kind .. "\0" .. name
    local e = by[key]
    if not e then
      e = { kind = kind, name = name, position = 0, status = "live", dead = 0 }
      by[key], list[#list + 1] = e, e
    end
    return e
  end
  for name, meta in store:kv_scan(spaces.PROJECTIONS) do
    local reactor_name = name:match("^reactor:(.+)$")
    if reactor_name then
      local e = entry("reactor", reactor_name)
      e.status, e.fault = meta.status or "faulted", meta.fault
    elseif type(meta) == "table" then
      local e = entry("projection", name)
      local gen = meta.building or meta.generation
      e.position = store:kv_get(spaces.CHECKPOINTS, spaces.projection_checkpoint(name, tostring(gen))) or 0
      e.status, e.fault = tostring(meta.status or "?"), meta.fault
    end
  end
  for key, position in store:kv_scan(spaces.CHECKPOINTS, { prefix = spaces.HANDLER_PREFIX }) do entry("handler", key:sub(#spaces.HANDLER_PREFIX + 1)).position = position end
  for key, position in store:kv_scan(spaces.CHECKPOINTS, { prefix = spaces.REACTOR_PREFIX }) do entry("reactor", key:sub(#spaces.REACTOR_PREFIX + 1)).position = position end
  for key, row in store:kv_scan(spaces.DEAD_LETTERS) do
    local name = type(row) == "table" and row.handler or key:match("^(.*):%d+$")
    local e = entry("handler", name)
    e.dead = e.dead + 1
  end
  local reg = type(store.registrations) == "function" and store:registrations() or {}
  for kind, names in pairs({ projection = reg.projections, reactor = reg.reactors, handler = reg.handlers }) do
    for name in pairs(names or {}) do entry(kind, name) end
  end
  for _, e in ipairs(list) do
    if e.kind == "handler" and e.dead > 0 then e.status = "dead letters" end
    e.lag = math.max(0, head - e.position)
  end
  table.sort(list, function(a, b)
    if a.kind ~= b.kind then return kind_order[a.kind] < kind_order[b.kind] end
    return a.name < b.name
  end)
  return list
end

--- The problems in a subscriber list: faults and dead letters, one text each.
function M.problems(list, dir)
  local out = {}
  for _, e in ipairs(list) do
    if e.status == "faulted" then out[#out + 1] = e.kind .. " " .. e.name .. " is faulted" end
    if e.dead > 0 then
      out[#out + 1] = string.format("handler %s has %s (see chronicle dead-letters %s)", e.name,
        output.plural(e.dead, "dead letter"), dir)
    end
  end
  return out
end

--- The live members of the consumer groups of `list`'s subscribers: a list
-- of `{kind, name, member, host, pid, partitions, of, lag}`.
function M.members(store, list)
  local ok, group = pcall(require, "chronicle.read.group")
  if not ok then return {} end
  local out = {}
  for _, e in ipairs(list) do
    local st = group.status(store, e.kind, e.name)
    for _, m in ipairs(st and st.members or {}) do
      if m.alive then
        out[#out + 1] = { kind = e.kind, name = e.name, member = m.member, host = m.host, pid = m.pid,
                          partitions = #m.partitions, of = st.partitions, lag = m.lag }
      end
    end
  end
  return out
end

--- The persistent subscriptions of `store`: a list of their states (see chronicle.read.subscription.status).
function M.subscriptions(store)
  local ok, subscription = pcall(require, "chronicle.read.subscription")
  if not ok then return {} end
  local out = {}
  for _, name in ipairs(subscription.names(store)) do out[#out + 1] = subscription.status(store, name) end
  return out
end

local function print_status(store, paint)
  local rows, list = {}, M.subscribers(store)
  for _, e in ipairs(list) do
    local text = e.status
    if e.fault then text = text .. " at position " .. tostring(e.fault.position) .. ": " .. tostring(e.fault.error) end
    rows[#rows + 1] = { e.kind, e.name, output.count(e.position), output.count(e.lag), output.count(e.dead), text }
  end
  if #rows > 0 then
    output.table({ "kind", "name", "position", "lag", "dead", "status" }, rows, { [3] = true, [4] = true, [5] = true },
                 io.stdout, paint)
  end
  -- The runners serving them now (members of their groups), with their shares.
  local members = {}
  for _, m in ipairs(M.members(store, list)) do
    members[#members + 1] = { m.kind, m.name, m.member, tostring(m.host) .. ":" .. tostring(m.pid),
                              ("%d/%d"):format(m.partitions, m.of), m.lag and output.count(m.lag) or "-" }
  end
  if #members > 0 then
    io.stdout:write("\n")
    output.table({ "kind", "name", "member", "process", "share", "lag" }, members, { [5] = true, [6] = true },
                 io.stdout, paint)
  end
  local subs = {}
  for _, st in ipairs(M.subscriptions(store)) do
    local consumers = 0
    for _ in pairs(st.consumers) do consumers = consumers + 1 end
    subs[#subs + 1] = { st.name, output.count(st.position), output.count(st.lag), output.count(st.leased),
                        output.count(st.waiting), output.count(st.parked), output.count(consumers) }
  end
  if #subs > 0 then
    io.stdout:write("\n")
    output.table({ "subscription", "position", "lag", "leased", "waiting", "parked", "consumers" }, subs,
                 { [2] = true, [3] = true, [4] = true, [5] = true, [6] = true, [7] = true }, io.stdout, paint)
  end
  return list
end

--- Fails (exit status 1) when a projection or reactor is faulted or a handler has dead letters.
local function fail_on_problems(list, dir)
  local problems = M.problems(list, dir)
  if #problems > 0 then context.fail(table.concat(problems, "; ")) end
end

--- chronicle project DIR [FOLDER] [--follow]
function M.project(args)
  M.require_scripts("chronicle project")
  local store = context.open(args.dir, args.folder and "write" or "read")
  local paint = terminal.painter(terminal.colour(io.stdout))
  if not args.folder then
    fail_on_problems(print_status(store, paint), args.dir)
    store:close()
    return
  end
  M.load(store, args.folder)
  local runner = chronicle.runner(store)
  local status = progress.status("projecting...")
  local head = store:head()
  run_until_idle(runner)
  status:finish()
  io.stdout:write(string.format("caught up to position %d\n", head))
  local list = print_status(store, paint)
  io.stdout:flush()
  if args.follow then
    -- A fault that happens while following is said at once (on standard error), once.
    local said = {}
    for _, p in ipairs(M.problems(list, args.dir)) do said[p:gsub(" has %d+ dead letters?", "")] = true end
    local wait = context.follower(store, args.timeout)
    while true do
      local new_head = wait(head)
      if new_head == nil then break end
      if new_head then
        head = new_head
        run_until_idle(runner)
        io.stdout:write(string.format("caught up to position %d\n", head))
        io.stdout:flush()
        for _, p in ipairs(M.problems(M.subscribers(store), args.dir)) do
          local what = p:gsub(" has %d+ dead letters?", "")
          if not said[what] then
            said[what] = true
            io.stderr:write("chronicle project: ", p, "\n")
            io.stderr:flush()
          end
        end
      end
    end
    list = M.subscribers(store)
  end
  fail_on_problems(list, args.dir)
  store:close()
end

-- Runs the batches of one projection with a progress bar, when the projection
-- layer lets us (else the runner catches everything up).
local function rebuild_batches(store, name)
  local ok, projection = pcall(require, "chronicle.read.projection")
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
  for _, e in ipairs(print_status(store, terminal.painter(terminal.colour(io.stdout)))) do
    if e.kind == "projection" and e.name == args.name and e.status == "faulted" then
      context.fail("projection " .. e.name .. " is faulted")
    end
  end
  store:close()
end

return M
