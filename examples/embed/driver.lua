--- The Lua half of the embedding example: examples/embed/host.c runs it.
--
-- The C host owns the process: its input and output, its signals, its Lua
-- state and when everything shuts down. This file owns what is easier in
-- Lua: JSON (lua-cjson), the store, the rules and the answers. The host calls
-- the four functions below, each through lua_pcall with a message handler:
--
--   start(config)        once: opens the store and loads the rules folders
--   handle(line, n)      once per input line: returns the answer, a JSON text
--   error_answer(msg, n) when handle raised: returns the answer for that line
--   close()              once, at the end: closes the store
--
-- A command is one JSON object per line; `req` (any value) is echoed in its
-- answer. Every answer is one line: {"req":..., "ok":true, ...} or
-- {"req":..., "ok":false, "error":{"code":..., "message":...}}.
--
--   {"op":"execute", "aggregate":"account", "id":"alice", "command":"deposit", "args":{"amount":5}}
--       -> version, position, events (their types), state, and the faults that
--          running the projections and reactors afterwards produced
--   {"op":"view", "name":"balances" [, "key":"alice" | "prefix":"a"] [, "count":N]}
--       -> rows [{key, value}] and the view's status
--   {"op":"load", "aggregate":"account", "id":"alice" [, "version":N]}  -> state, version
--   {"op":"read", "stream":"alert-account-alice" [, "from":N] [, "count":N]}  -> events
--   {"op":"status"}  -> head, projections, reactors, script_errors
--   {"op":"reload"}  -> what changed in the rules folders (added, changed, removed, errors)
--
-- What a rule does wrong does not stop the host: a command that is refused
-- is an error answer ("rejected", with the reason); a projection or reactor
-- that faults is reported in the answer of the command that made it fault
-- (and in "status") while everything else goes on; a command function that
-- raises is caught by the host in C, which answers with error_answer.
local chronicle = require "chronicle"
local cjson = require "cjson"

local M = {}

-- Our own cjson instance, so that its settings change nothing for other users of cjson.
local json = cjson.new()
json.decode_invalid_numbers(false)   -- NaN, Infinity, 0x10: not JSON, refused
json.decode_max_depth(64)
json.encode_sparse_array(true)       -- a state like {[1]=a, [9]=b} becomes an object, not an error

local store, rules, sandboxed, runner
local repositories = {}   -- aggregate name -> repository (it caches states between commands)
local known_faults = {}   -- "projection:name" -> the fault text already reported
local current_req         -- the `req` of the line being handled, for error_answer

-- lua-cjson decodes every number as a float (100 becomes 100.0) and JSON null
-- as cjson.null. The rules expect integers (`math.type(amount) == "integer"`)
-- and cannot store a light userdata, so: integral numbers become integers and
-- null becomes nil.
local function from_json(v)
  if v == cjson.null then return nil end
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = from_json(x) end
  end
  return v
end

-- JSON text of `v`. lua-cjson 2.1 writes "/" as "\/"; every "/" is escaped, so
-- each "\/" is one, and "/" reads the same and is easier on the eye.
local function encode(v)
  return (json.encode(v):gsub("\\/", "/"))
end

-- The answer's text: `req` and `ok` first (easier to read), then the other fields.
local function answer(fields, err)
  local head = '{"req":' .. encode(current_req == nil and cjson.null or current_req)
  if err then
    return head .. ',"ok":false,"error":' .. encode(err) .. "}"
  end
  local rest = encode(fields or {})
  return head .. ',"ok":true' .. (rest == "{}" and "}" or "," .. rest:sub(2))
end

local function bad_request(message)
  return nil, { code = "bad_request", message = message }
end

-- An error value of the store (or a rejection) as JSON: code, message, reason.
local function error_fields(err)
  if type(err) ~= "table" then return { code = "error", message = tostring(err) } end
  return { code = err.code or "error", message = err.message or tostring(err), reason = err.reason }
end

local function repository(name)
  if type(name) ~= "string" then return bad_request("'aggregate' must be a string") end
  if not rules.aggregates[name] then return bad_request("no aggregate named '" .. name .. "' in the rules") end
  local repo = repositories[name]
  if not repo or repo.aggregate ~= rules.aggregates[name] then   -- new, or reloaded
    repo = rules:repository(name)
    repositories[name] = repo
  end
  return repo
end

-- The faults of projections and reactors that were not reported yet.
local function new_faults()
  local out = {}
  local function look(kind, statuses)
    for name, s in pairs(statuses) do
      local key = kind .. ":" .. name
      local text = s.status == "faulted" and s.fault and
        ("%s at %s: %s"):format(tostring(s.fault.type), tostring(s.fault.position), tostring(s.fault.error)) or nil
      if text and known_faults[key] ~= text then
        out[#out + 1] = { kind = kind, name = name, position = s.fault.position, event = s.fault.type,
                          error = s.fault.error }
      end
      known_faults[key] = text
    end
  end
  look("projection", store:projection_status())
  look("reactor", store:reactor_status())
  table.sort(out, function(a, b) return a.kind .. a.name < b.kind .. b.name end)
  return out
end

-- Runs the projections and reactors until they have caught up (or faulted),
-- in this thread, between two commands.
local function catch_up()
  local before = #runner.errors
  runner:run_once()
  local faults = new_faults()
  for i = before + 1, #runner.errors do     -- a store failure (disk full, ...), not a rule's fault
    local e = runner.errors[i]
    faults[#faults + 1] = { kind = e.kind, name = e.name, error = tostring(e.error) }
  end
  return faults
end

local function script_errors()
  local out = {}
  for _, folder in ipairs({ rules, sandboxed }) do
    for _, e in ipairs(folder and folder.errors or {}) do
      out[#out + 1] = { file = e.file, line = e.line, message = e.message }
    end
  end
  return out
end

-- An optional integer field of a request: nil, or the value, or a bad_request error.
local function integer_field(req, name, min)
  local v = req[name]
  if v ~= nil and (math.type(v) ~= "integer" or v < min) then
    return nil, ("'%s' must be an integer >= %d"):format(name, min)
  end
  return v
end

local ops = {}

function ops.execute(req)
  local repo, err = repository(req.aggregate)
  if not repo then return nil, err end
  if type(req.id) ~= "string" or req.id == "" then return bad_request("'id' must be a non-empty string") end
  if type(req.command) ~= "string" or not repo.aggregate.commands[req.command] then
    return bad_request(("%s has no command '%s'"):format(req.aggregate, tostring(req.command)))
  end
  if req.args ~= nil and type(req.args) ~= "table" then return bad_request("'args' must be an object") end
  -- A command function that raises (a bug in a rule) is not caught here: the
  -- error goes up to the host's lua_pcall, and nothing was written.
  local res, rejection = repo:execute(req.id, req.command, req.args or {})
  if not res then return nil, error_fields(rejection) end
  local types = {}
  for i, ev in ipairs(res.events) do types[i] = ev.type end
  local faults = catch_up()
  return { version = res.version, position = res.position, events = types, state = res.state,
           faults = #faults > 0 and faults or nil }
end

function ops.view(req)
  if type(req.name) ~= "string" then return bad_request("'name' must be a string") end
  local view = store:view(req.name)          -- nil, not_found when the store has no such projection
  local status = view and view:status()
  if type(status) ~= "table" then
    return nil, { code = "not_found", message = "no view named '" .. req.name .. "'" }
  end
  local count, cerr = integer_field(req, "count", 1)
  if cerr then return bad_request(cerr) end
  if req.prefix ~= nil and type(req.prefix) ~= "string" then return bad_request("'prefix' must be a string") end
  local rows = {}
  if req.key ~= nil then
    if type(req.key) ~= "string" then return bad_request("'key' must be a string") end
    rows[1] = { key = req.key, value = view:get(req.key) }
  else
    for k, row in view:pairs({ prefix = req.prefix, count = count or 100 }) do rows[#rows + 1] = { key = k, value = row } end
  end
  return { rows = rows, status = status.status }
end

function ops.load(req)
  local repo, err = repository(req.aggregate)
  if not repo then return nil, err end
  if type(req.id) ~= "string" then return bad_request("'id' must be a string") end
  local version, verr = integer_field(req, "version", 0)
  if verr then return bad_request(verr) end
  local at = version and { version = version } or nil
  local state, version = repo:load(req.id, at)
  if state == nil then return nil, error_fields(version) end
  return { state = state, version = version }
end

function ops.read(req)
  if type(req.stream) ~= "string" or req.stream == "" then return bad_request("'stream' must be a non-empty string") end
  local from, ferr = integer_field(req, "from", 0)
  local count, cerr = integer_field(req, "count", 1)
  if ferr or cerr then return bad_request(ferr or cerr) end
  local events = {}
  for ev in store:read(req.stream, { from = from, count = count or 100 }) do
    events[#events + 1] = { position = ev.position, version = ev.version, type = ev.type, data = ev.data }
  end
  return { events = events }
end

function ops.status()
  local projections, reactors = {}, {}
  for name, s in pairs(store:projection_status()) do
    projections[name] = { status = s.status, checkpoint = s.checkpoint, fault = s.fault and s.fault.error }
  end
  for name, s in pairs(store:reactor_status()) do
    reactors[name] = { status = s.status, checkpoint = s.checkpoint, fault = s.fault and s.fault.error }
  end
  return { head = store:head(), projections = projections, reactors = reactors, script_errors = script_errors() }
end

function ops.reload()
  local out = {}
  for key, folder in pairs({ rules = rules, sandboxed = sandboxed }) do
    local report = folder:reload()
    local changes = {}
    for _, what in ipairs({ "added", "changed", "removed" }) do
      for _, e in ipairs(report[what]) do changes[#changes + 1] = what .. " " .. e.kind .. " " .. e.name end
    end
    out[key] = changes
  end
  out.script_errors = script_errors()
  local faults = catch_up()
  out.faults = #faults > 0 and faults or nil
  return out
end

--- Opens the store and loads the rules; returns a line for the host's log.
-- @tparam table config `store`, `rules` (a trusted folder: aggregates, and
--   any projections, handlers and reactors), optional `sandboxed` (a folder of
--   projections and reactors run in sandboxes) and `limits` (their budgets)
function M.start(config)
  local err
  store, err = chronicle.open(config.store)
  if not store then error(err, 0) end
  -- Aggregates must be trusted code (their commands run in this state); rule
  -- scripts from elsewhere load sandboxed, with the budgets the host chose.
  rules = chronicle.load_scripts(store, config.rules)
  if config.sandboxed then
    sandboxed = chronicle.load_scripts(store, config.sandboxed, { sandbox = true, limits = config.limits })
  end
  runner = chronicle.runner(store)
  local faults = catch_up()   -- the events already in the store, and faults from before
  local log = { ("store %s at position %d; rules from %s%s"):format(config.store, store:head(), config.rules,
    sandboxed and (" and, sandboxed, from " .. config.sandboxed) or "") }
  for _, e in ipairs(script_errors()) do log[#log + 1] = "rule not loaded: " .. e.message end
  for _, f in ipairs(faults) do log[#log + 1] = ("faulted: %s %s: %s"):format(f.kind, f.name, f.error) end
  return table.concat(log, "\n  ")
end

--- Answers one input line (`n` counts lines from 1).
function M.handle(line, n)
  current_req = nil
  local ok, req = pcall(json.decode, line)
  if not ok then
    return answer(nil, { code = "bad_request", message = ("line %d is not JSON: %s"):format(n, tostring(req)) })
  end
  if type(req) ~= "table" or req[1] ~= nil then   -- a number, a string, an array
    return answer(nil, { code = "bad_request", message = ("line %d: a JSON object expected"):format(n) })
  end
  req = from_json(req)
  current_req = req.req
  local op = ops[req.op]
  if type(req.op) ~= "string" or not op then
    return answer(nil, { code = "bad_request",
      message = ("line %d: unknown op '%s' (execute, view, load, read, status, reload)"):format(n, tostring(req.op)) })
  end
  local fields, err = op(req)
  return answer(fields, err)
end

--- The answer to line `n` when the host could not handle it: `text` is
-- "code: message" (the host logged the traceback). The host uses the codes
-- "script_error" (handle raised) and "bad_request" (a line too long).
function M.error_answer(text, n)
  local code, message = tostring(text):match("^([%w_]+): (.*)$")
  return answer(nil, { code = code or "script_error", message = ("line %d: %s"):format(n, message or tostring(text)) })
end

--- Closes the store (and with it every transaction and the LMDB environment).
function M.close()
  if not store then return "no store was open" end
  local head = store:head()
  store:close()
  store = nil
  return ("store closed at position %d"):format(head)
end

return M
