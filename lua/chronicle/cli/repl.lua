--- chronicle repl: a Lua 5.4 read-eval-print loop with a store open and
-- helpers bound. Reads like the stock lua5.4 REPL (an expression prints its
-- values, an incomplete statement continues on a ">> " line, an error prints
-- and the session goes on); uses lua-readline (editing, history, completion)
-- on a terminal when it is installed, a plain prompt otherwise; prints results
-- as indented, coloured Lua tables on a terminal.
-- @module chronicle.cli.repl
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local terminal = require "chronicle.cli.terminal"
local time = require "chronicle.cli.time"

local M = {}

-- Lists the helpers return: plain arrays, printed as aligned lines or a table.
local EventList = { __chronicle_list = "events", __name = "chronicle.events" }
local StreamList = { __chronicle_list = "streams", __name = "chronicle.streams" }

local HELP = [[
helpers:
  streams([prefix])            the streams (a list of stream infos)
  show(stream[, opts])         a stream's events; opts {from=, count= (100), backward=}
  tail([n])                    the last n events of the log (10)
  state(aggregate, id[, v])    an aggregate's state (and version), as of version v
  view(name[, key])            a projection's rows (or one row)
  reload()                     reload the --scripts folder
  store, chronicle             the open store and the module
Times print as ISO 8601 UTC: event lists to the microsecond, a printed table
with the full time in a comment after the number, which stays the integer ns
(tail(1)[1].time).
Ctrl-D leaves.]]

--- The helper functions bound in the REPL (also usable from Lua).
-- @tparam Store store
-- @tparam[opt] table scripts what chronicle.load_scripts returned
function M.helpers(store, scripts)
  local h = {}

  function h.streams(prefix)
    local list = {}
    for info in store:streams({ prefix = prefix }) do list[#list + 1] = info end
    return setmetatable(list, StreamList)
  end

  function h.show(stream, opts)
    if type(stream) ~= "string" then error("show: stream name expected", 2) end
    opts = opts or {}
    local query = { from = opts.from, count = opts.count or 100, backward = opts.backward }
    local list = {}
    for ev in store:read(stream, query) do list[#list + 1] = ev end
    return setmetatable(list, EventList)
  end

  function h.tail(n)
    n = n or 10
    local recent = {}
    for ev in store:read_all({ backward = true, count = n }) do recent[#recent + 1] = ev end
    local list = {}
    for i = #recent, 1, -1 do list[#list + 1] = recent[i] end
    return setmetatable(list, EventList)
  end

  function h.state(aggregate, id, version)
    local agg = aggregate
    if type(aggregate) == "string" then
      agg = scripts and type(scripts.aggregates) == "table" and scripts.aggregates[aggregate]
      if not agg then error("state: no aggregate named '" .. aggregate .. "' (load one with --scripts)", 2) end
    end
    local state, v = store:repository(agg):load(id, version and { version = version } or nil)
    if state == nil and type(v) == "table" then error(context.describe(v), 2) end
    return state, v
  end

  function h.view(name, key)
    if type(store.view) ~= "function" then error("view: projections are not available in this build", 2) end
    local v, err = store:view(name)
    if not v then error(context.describe(err), 2) end
    if key ~= nil then return v:get(key) end
    local rows = {}
    for k, row in v:pairs() do rows[k] = row end
    return rows
  end

  function h.reload()
    if not scripts then error("reload: no scripts folder (start with --scripts FOLDER)", 2) end
    return scripts:reload()
  end

  function h.help()
    print(HELP)
  end

  return h
end

-- ---- printing ----

local function render_events(list, paint)
  if #list == 0 then return paint("nothing", "no events") end
  local lines = {}
  local sink = { write = function(_, ...) for _, s in ipairs({ ... }) do lines[#lines + 1] = s end end,
                 flush = function() end }
  local printer = output.event_printer({ out = sink, colour = paint("key", "x") ~= "x", time_digits = 6 })
  for _, ev in ipairs(list) do printer:add(ev) end
  printer:flush()
  return (table.concat(lines):gsub("\n$", ""))
end

local function render_streams(list, paint)
  if #list == 0 then return paint("nothing", "no streams") end
  local rows = {}
  for _, info in ipairs(list) do
    rows[#rows + 1] = { output.quote(info.stream):sub(2, -2), tostring(info.version), output.count(info.count),
                        tostring(info.first_position), tostring(info.last_position), time.iso(info.updated, 6) }
  end
  local lines = {}
  local sink = { write = function(_, ...) for _, s in ipairs({ ... }) do lines[#lines + 1] = s end end }
  output.table({ "stream", "version", "events", "first", "last", "updated" }, rows,
               { [2] = true, [3] = true, [4] = true, [5] = true }, sink, paint)
  return (table.concat(lines):gsub("\n$", ""))
end

--- Text of one result value.
function M.render(v, paint, width)
  local mt = getmetatable(v)
  if mt == EventList then return render_events(v, paint) end
  if mt == StreamList then return render_streams(v, paint) end
  return output.pretty(v, paint, width, { times = true })
end

-- ---- reading lines ----

local function plain_reader(input, out)
  return {
    read = function(_, prompt)
      out:write(prompt)
      out:flush()
      local line = input:read("l")
      return line
    end,
    close = function() end,
  }
end

-- Completes names: globals and helpers, fields after ".", methods after ":".
local function completer(env)
  local function keys_of(t, methods_only, into, seen)
    seen = seen or {}
    if type(t) ~= "table" or seen[t] then return into end
    seen[t] = true
    for k, v in pairs(t) do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") and (not methods_only or type(v) == "function") then
        into[k] = true
      end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" and type(mt.__index) == "table" then keys_of(mt.__index, methods_only, into, seen) end
    return into
  end
  return function(text, from, to)
    local word = text:sub(from, to)
    local path, sep, partial = word:match("^(.-)([%.:]?)([%w_]*)$")
    if not path then return {} end
    local target = env
    if sep ~= "" then
      for name in path:gmatch("[^%.:]+") do
        local ok, v = pcall(function() return target[name] end)
        if not ok or v == nil then return {} end
        target = v
      end
      if type(target) == "string" then target = string end
    end
    local names = keys_of(target, sep == ":", {})
    if sep == "" then keys_of(_G, false, names) end
    local matches = {}
    for name in pairs(names) do
      if name:sub(1, #partial) == partial then matches[#matches + 1] = path .. sep .. name end
    end
    table.sort(matches)
    return matches
  end
end

local function readline_reader(env)
  local ok, readline = pcall(require, "readline")
  if not ok or type(readline.readline) ~= "function" then return nil end
  local home = os.getenv("HOME")
  local histfile = os.getenv("CHRONICLE_HISTORY") or (home and home .. "/.chronicle_history") or ""
  pcall(readline.set_options, { histfile = histfile, keeplines = 1000, completion = true })
  if readline.set_readline_name then pcall(readline.set_readline_name, "chronicle") end
  if readline.set_complete_function then
    local complete = completer(env)
    local no_space = readline.set_completion_append_character
    pcall(readline.set_complete_function, function(text, from, to)
      -- readline resets the appended character before each completion: a method name wants none.
      if no_space then pcall(no_space, "") end
      return complete(text, from, to)
    end)
  end
  return {
    read = function(_, prompt) return readline.readline(prompt) end,
    close = function() if histfile ~= "" then pcall(readline.save_history) end end,
  }
end

-- ---- the loop ----

local function is_incomplete(err)
  return type(err) == "string" and err:sub(-5) == "<eof>"
end

local function is_interrupt(err)
  return type(err) == "string" and err:find("interrupted!$") ~= nil
end

--- Runs the loop until end of input.
-- @tparam table opts `store`, `env` (the environment of the chunks), `input`, `out`,
--   `err` (files), `interactive` (use readline and the banner), `colour`, `width`, `banner`
function M.loop(opts)
  local out, errout = opts.out or io.stdout, opts.err or io.stderr
  local env = opts.env
  local paint = terminal.painter(opts.colour)
  local epaint = terminal.painter(opts.colour and terminal.colour(errout))
  local reader = opts.interactive and readline_reader(env) or plain_reader(opts.input or io.stdin, out)
  opts.close_reader = function() reader:close() end
  if opts.banner then out:write(opts.banner, "\n") end

  local function report_error(msg)
    if type(msg) == "table" and msg.message then msg = msg.message end
    out:flush()
    errout:write(epaint("error", tostring(msg)), "\n")
    errout:flush()
  end

  local function print_results(results)
    if results.n == 0 then return end
    local parts = {}
    for i = 1, results.n do parts[i] = M.render(results[i], paint, opts.width or 80) end
    out:write(table.concat(parts, "\t"), "\n")
    out:flush()
    env._ = results[1]
  end

  -- Reads one statement (several lines while it is incomplete) and compiles it.
  local function read_chunk()
    local line = reader:read("> ")
    if line == nil then return nil end
    local chunk = load("return " .. line, "=stdin", "t", env)
    if chunk then return chunk end
    local buffer = line
    while true do
      local err
      chunk, err = load(buffer, "=stdin", "t", env)
      if chunk then return chunk end
      if not is_incomplete(err) then return false, err end
      local more = reader:read(">> ")
      if more == nil then return false, err end
      buffer = buffer .. "\n" .. more
    end
  end

  local finished = false
  while not finished do
    local ok, err = pcall(function()
      local chunk, cerr = read_chunk()
      if chunk == nil then finished = true return end
      if not chunk then report_error(cerr) return end
      local results = table.pack(xpcall(chunk, function(m)
        if type(m) ~= "string" and not (type(m) == "table" and m.message) then
          local mt = getmetatable(m)
          m = mt and mt.__tostring and tostring(m) or ("(error object is a " .. type(m) .. " value)")
        end
        return m
      end))
      if not results[1] then report_error(results[2]) return end
      table.remove(results, 1)
      results.n = results.n - 1
      print_results(results)
    end)
    if not ok then
      if is_interrupt(err) then out:write("\n") else report_error(err) end
    end
  end
  if opts.interactive then out:write("\n") end
  reader:close()
end

--- The environment chunks run in: the helpers, `store`, `chronicle`, then the globals.
function M.environment(store, scripts, on_exit)
  local env = M.helpers(store, scripts)
  env.store, env.chronicle, env.scripts = store, chronicle, scripts
  -- os.exit leaves through the history file and a clean store close.
  env.os = setmetatable({ exit = function(code, close)
    if on_exit then on_exit() end
    os.exit(code, close)
  end }, { __index = os })
  return setmetatable(env, { __index = _G })
end

--- chronicle repl DIR [--scripts FOLDER] [--readonly]
function M.run(args)
  local store = context.open(args.dir, args.readonly and "read" or "create")
  local scripts
  if args.scripts then
    local projections = require "chronicle.cli.projections"
    projections.require_scripts("--scripts")
    local ok, s, err = pcall(chronicle.load_scripts, store, args.scripts)
    if not ok or not s then context.fail("loading scripts from " .. args.scripts .. ": " .. context.describe(ok and err or s)) end
    scripts = s
    for _, e in ipairs(type(s.errors) == "table" and s.errors or {}) do
      io.stderr:write("script error: ", context.describe(e), "\n")
    end
  end
  local interactive = terminal.isatty(io.stdin) and terminal.isatty(io.stdout)
  local loop_opts = {}
  local env = M.environment(store, scripts, function()
    if loop_opts.close_reader then loop_opts.close_reader() end
    store:close()
  end)
  local banner
  if interactive then
    local s = store:stats()
    banner = string.format("%s REPL: store %s (%s events in %s streams%s)\n%s", chronicle._VERSION, args.dir,
                           output.count(s.events), output.count(s.streams), args.readonly and ", read-only" or "",
                           "helpers: streams() show(stream) tail(n) state(aggregate, id, version) view(name) help()")
  end
  loop_opts.env, loop_opts.interactive, loop_opts.colour = env, interactive, terminal.colour(io.stdout)
  loop_opts.width, loop_opts.banner = interactive and terminal.width() or 80, banner
  M.loop(loop_opts)
  store:close()
end

return M
