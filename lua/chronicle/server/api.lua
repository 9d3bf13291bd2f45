--- The HTTP API's endpoints: each takes the server and a request and returns
-- `status, json_text` (or writes a stream itself and returns nothing).
-- Requests: `{ method, path, params (from the route), query, headers, body }`.
-- Bodies and answers use the lossless JSON of the export format (docs/CLI.md).
-- The routes and their documentation are in docs/HTTP.md.
-- @module chronicle.server.api
local json = require "chronicle.cli.json"

local M = {}

local DEFAULT_COUNT, MAX_COUNT = 100, 1000

--- An answer for a refusal: `status, {"code":..,"message":..,...}`.
function M.refuse(status, code, message, details)
  local body = { code = code, message = message }
  for k, v in pairs(details or {}) do body[k] = v end
  return status, json.encode(body)
end

-- HTTP status for each error code the store returns.
local STATUS = {
  conflict = 409, duplicate_id = 409, not_found = 404, readonly = 403, locked = 503, unavailable = 503,
  disk_full = 507, map_full = 507, too_large = 413, corrupt = 500, check_failed = 409,
  stream_deleted = 410, invalid = 400,
}

--- The answer for a store error value.
function M.store_error(err)
  local details = {}
  for k, v in pairs(err) do
    if k ~= "code" and k ~= "message" and type(v) ~= "function" then details[k] = v end
  end
  return M.refuse(STATUS[err.code] or 500, err.code or "internal", err.message or tostring(err), details)
end

-- The message of a raised error, without the "file:line:" a Lua error adds.
local function raised_message(e)
  if type(e) == "table" and e.message then return e.message end
  return (tostring(e):gsub("^[^:\n]*%.lua:%d+: ", ""))
end
M.raised_message = raised_message

-- Query parameter `name` as an integer >= min, or the default; raises a refusal.
local function int_param(req, name, default, min)
  local text = req.query[name]
  if text == nil or text == "" then return default end
  local n = math.tointeger(tonumber(text))
  if not n or n < min then
    error({ refusal = { 400, "bad_request", ("query parameter '%s' must be an integer >= %d, got '%s'"):format(name, min, text) } }, 0)
  end
  return n
end
M.int_param = int_param

local function bool_param(req, name)
  local text = req.query[name]
  if text == nil or text == "" or text == "false" or text == "0" then return false end
  if text == "true" or text == "1" then return true end
  error({ refusal = { 400, "bad_request", ("query parameter '%s' must be true or false, got '%s'"):format(name, text) } }, 0)
end

local function count_param(req)
  local n = int_param(req, "count", DEFAULT_COUNT, 1)
  return n > MAX_COUNT and MAX_COUNT or n
end

local function types_param(req)
  local text = req.query.types
  if text == nil or text == "" then return nil end
  local types = {}
  for t in text:gmatch("[^,]+") do types[#types + 1] = t end
  return types
end
M.types_param = types_param

local function query_string(q)
  local keys, parts = {}, {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "=" .. tostring(q[k]):gsub("[^%w%-%._~,]", function(c) return ("%%%02X"):format(c:byte()) end)
  end
  return table.concat(parts, "&")
end

local function link(path, q)
  local text = query_string(q)
  return text == "" and path or (path .. "?" .. text)
end

--- Percent-encodes a path segment (stream names may hold any byte).
function M.escape_segment(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- A JSON array of `items` (json.encode writes an empty table as {}).
local function json_list(items)
  local out = {}
  for i, v in ipairs(items) do out[i] = json.encode(v) end
  return "[" .. table.concat(out, ",") .. "]"
end

-- `{"events":[...],"links":{...}}` from a list of encoded events.
local function events_page(encoded, links)
  return '{"events":[' .. table.concat(encoded, ",") .. '],"links":' .. json.encode(links) .. "}"
end

-- Reads `events` from iterator `it`, encoded, with the last event seen.
local function collect(it, state, closing)
  local encoded, last = {}, nil
  for ev in it, state, nil, closing do
    encoded[#encoded + 1] = json.encode_event(ev)
    last = ev
  end
  return encoded, last
end

---------------------------------------------------------------------------
-- Writing

local EXPECTED = { any = true, no_stream = true, exists = true }

-- Turns a decoded POST body into an append_many entry; raises a refusal.
local function append_entry(srv, stream, body)
  local function bad(msg) error({ refusal = { 400, "bad_request", msg } }, 0) end
  if type(body) ~= "table" or json.is_array(body) then bad("the body must be a JSON object {\"expected\":..., \"events\":[...]}") end
  for k in pairs(body) do
    if k ~= "expected" and k ~= "events" then bad("unknown field '" .. tostring(k) .. "' (allowed: expected, events)") end
  end
  local expected = body.expected
  if expected == nil then expected = "any" end
  if not (EXPECTED[expected] or math.type(expected) == "integer") then
    bad("'expected' must be \"any\", \"no_stream\", \"exists\" or an integer version")
  end
  local events = body.events
  if type(events) ~= "table" or not json.is_array(events) then bad("'events' must be a non-empty array of events") end
  if #events > srv.limits.max_events then
    error({ refusal = { 413, "too_large", ("at most %d events per request, got %d"):format(srv.limits.max_events, #events) } }, 0)
  end
  local out = {}
  for i, ev in ipairs(events) do
    if type(ev) ~= "table" or json.is_array(ev) then bad(("events[%d] must be an object"):format(i)) end
    for k in pairs(ev) do
      if k ~= "type" and k ~= "data" and k ~= "meta" and k ~= "id" then
        bad(("events[%d]: unknown field '%s' (allowed: type, data, meta, id)"):format(i, tostring(k)))
      end
    end
    if type(ev.type) ~= "string" or ev.type == "" then bad(("events[%d].type must be a non-empty string"):format(i)) end
    if ev.id ~= nil and type(ev.id) ~= "string" then bad(("events[%d].id must be a UUID string"):format(i)) end
    out[i] = { type = ev.type, data = ev.data, meta = ev.meta, id = ev.id }
  end
  return { stream = stream, expected = expected, events = out }
end

--- POST /streams/{stream}
function M.append(srv, req)
  local body, err = json.decode(req.body or "", "body")
  if body == nil then return M.refuse(400, "bad_request", "the body is not valid JSON: " .. tostring(err)) end
  local entry = append_entry(srv, req.params.stream, body)
  local ok, res, e = pcall(srv.committer.append, srv.committer, entry)
  if not ok then return M.refuse(400, "bad_request", raised_message(res)) end
  if not res then return M.store_error(e) end
  srv:wake_subscribers()
  return 201, json.encode({ stream = entry.stream, version = res.version, position = res.position,
                            replayed = res.replayed or nil })
end

---------------------------------------------------------------------------
-- Reading

--- GET /streams/{stream}?from=&count=&backward=: its info (absent when it has no events) and events
function M.read_stream(srv, req)
  local stream = req.params.stream
  local backward = bool_param(req, "backward")
  local count = count_param(req)
  local from = int_param(req, "from", nil, 0)
  local encoded, last = collect(srv.store:read(stream, { from = from, count = count, backward = backward }))
  local path = "/streams/" .. M.escape_segment(stream)
  local links = { self = link(path, req.query) }
  if last and #encoded == count and not (backward and last.version == 0) then
    links.next = link(path, { from = backward and last.version - 1 or last.version + 1, count = count,
                              backward = backward and "true" or nil })
  end
  local info = srv.store:stream_info(stream)
  local page = events_page(encoded, links)
  if not info then return 200, page end           -- a stream with no events has no info
  return 200, '{"stream":' .. json.encode(info) .. "," .. page:sub(2)
end

--- GET /events/{id}: one event by its id (the console follows correlation and causation ids with it)
function M.event(srv, req)
  local ok, ev, err = pcall(srv.store.event, srv.store, req.params.id)
  if not ok then return M.refuse(400, "bad_request", "not an event id: " .. req.params.id) end
  if not ev then
    if err then return M.store_error(err) end
    return M.refuse(404, "not_found", "no event has id " .. req.params.id)
  end
  return 200, json.encode_event(ev)
end

--- GET /all?from=&count=&category=&types=&backward=
function M.read_all(srv, req)
  local backward = bool_param(req, "backward")
  local count = count_param(req)
  local opts = { from = int_param(req, "from", nil, 0), count = count, backward = backward,
                 category = req.query.category ~= "" and req.query.category or nil, types = types_param(req) }
  local encoded, last = collect(srv.store:read_all(opts))
  local links = { self = link("/all", req.query) }
  if last and #encoded == count and not (backward and last.position <= 1) then
    local q = {}
    for k, v in pairs(req.query) do q[k] = v end
    q.from = backward and last.position - 1 or last.position + 1
    q.count = count
    links.next = link("/all", q)
  end
  return 200, events_page(encoded, links)
end

--- GET /streams?prefix=&after=&count=
function M.streams(srv, req)
  local count = count_param(req)
  local opts = { prefix = req.query.prefix ~= "" and req.query.prefix or nil,
                 after = req.query.after ~= "" and req.query.after or nil, count = count }
  local rows, last = {}, nil
  for info in srv.store:streams(opts) do
    rows[#rows + 1] = json.encode(info)
    last = info
  end
  local links = { self = link("/streams", req.query) }
  if last and #rows == count then
    local q = { after = last.stream, count = count, prefix = opts.prefix }
    links.next = link("/streams", q)
  end
  return 200, '{"streams":[' .. table.concat(rows, ",") .. '],"links":' .. json.encode(links) .. "}"
end

--- GET /stats
function M.stats(srv)
  local st = srv.store:stats()
  st.path = nil
  return 200, json.encode(st)
end

--- GET /health
function M.health(srv)
  return 200, json.encode({ status = "ok", head = srv.store:head(), writable = srv.token ~= nil })
end

--- GET /metrics (Prometheus text)
function M.metrics(srv)
  return 200, srv.metrics:text(srv.store), "text/plain; version=0.0.4"
end

---------------------------------------------------------------------------
-- The read side: views, projections, handlers, reactors, dead letters

--- GET /projections: every projection's status, with its lag
function M.projections(srv)
  local head = srv.store:head()
  local out = {}
  for name, meta in pairs(srv.store:projection_status()) do
    meta.name = name
    meta.lag = head - (meta.checkpoint or 0)
    out[#out + 1] = meta
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  local reactors = {}
  for name, row in pairs(srv.store:reactor_status()) do
    row.name, row.lag = name, head - (row.checkpoint or 0)
    reactors[#reactors + 1] = row
  end
  table.sort(reactors, function(a, b) return a.name < b.name end)
  local handlers = {}
  for name, row in pairs(srv.store:handler_status()) do
    row.name = name
    handlers[#handlers + 1] = row
  end
  table.sort(handlers, function(a, b) return a.name < b.name end)
  return 200, ('{"head":%d,"projections":%s,"reactors":%s,"handlers":%s}'):format(head, json_list(out),
    json_list(reactors), json_list(handlers))
end

local function view_of(srv, name)
  if srv.store:projection_status()[name] == nil then
    error({ refusal = { 404, "not_found", "no projection '" .. name .. "' in this store" } }, 0)
  end
  local v = srv.store:view(name)
  if not v then error({ refusal = { 404, "not_found", "no view '" .. name .. "' in this store" } }, 0) end
  return v
end

--- GET /views/{name}?prefix=&after=&count=: rows in key order
function M.view_rows(srv, req)
  local v = view_of(srv, req.params.name)
  local count = count_param(req)
  local opts = { prefix = req.query.prefix ~= "" and req.query.prefix or nil, count = count + 1 }
  if req.query.after and req.query.after ~= "" then opts.from = req.query.after end
  local rows, last = {}, nil
  for k, row in v:pairs(opts) do
    if k ~= req.query.after then
      if #rows == count then break end
      rows[#rows + 1] = '{"key":' .. json.encode(k) .. ',"value":' .. json.encode(row) .. "}"
      last = k
    end
  end
  local path = "/views/" .. M.escape_segment(req.params.name)
  local links = { self = link(path, req.query) }
  if last and #rows == count then links.next = link(path, { after = last, count = count, prefix = opts.prefix }) end
  return 200, '{"rows":[' .. table.concat(rows, ",") .. '],"links":' .. json.encode(links) .. "}"
end

--- GET /views/{name}/{key}
function M.view_row(srv, req)
  local v = view_of(srv, req.params.name)
  local row = v:get(req.params.key)
  if row == nil then return M.refuse(404, "not_found", "no row '" .. req.params.key .. "' in view '" .. req.params.name .. "'") end
  return 200, json.encode({ key = req.params.key, value = row })
end

--- GET /dead-letters?handler=
function M.dead_letters(srv, req)
  local name = req.query.handler ~= "" and req.query.handler or nil
  local rows = {}
  for _, letter in ipairs(srv.store:dead_letters(name) or {}) do rows[#rows + 1] = json.encode(letter) end
  return 200, '{"dead_letters":[' .. table.concat(rows, ",") .. "]}"
end

--- POST /dead-letters/{handler}/retry (needs the handler: serve --scripts)
function M.retry_dead_letters(srv, req)
  local name = req.params.handler
  if not srv.store:registrations().handlers[name] then
    return M.refuse(404, "not_found", "no handler '" .. name .. "' is loaded (start the server with --scripts)")
  end
  local succeeded, failing = srv.store:retry_dead_letters(name)
  return 200, json.encode({ handler = name, succeeded = succeeded, still_failing = failing })
end

--- GET /aggregates: the names of the aggregates the server loaded (serve --scripts)
function M.aggregates(srv)
  local names = {}
  for name in pairs(srv.repositories or {}) do names[#names + 1] = name end
  table.sort(names)
  return 200, '{"aggregates":' .. json_list(names) .. "}"
end

--- GET /aggregates/{name}/{id}?version=&position=: state at any point (serve --scripts)
function M.aggregate_state(srv, req)
  local repo = srv.repositories and srv.repositories[req.params.name]
  if not repo then
    return M.refuse(404, "not_found", "no aggregate '" .. req.params.name .. "' is loaded (start the server with --scripts)")
  end
  local opts = { version = int_param(req, "version", nil, 0), position = int_param(req, "position", nil, 0) }
  if opts.version and opts.position then
    return M.refuse(400, "bad_request", "give version or position, not both")
  end
  local state, version = repo:load(req.params.id, next(opts) and opts or nil)
  if state == nil then return M.store_error(version) end
  local stream = repo.aggregate:stream(req.params.id)
  return 200, json.encode({ aggregate = req.params.name, id = req.params.id, stream = stream, state = state,
                            version = version, stream_version = srv.store:stream_version(stream) })
end

return M
