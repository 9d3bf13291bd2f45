--- `chronicle serve`: an HTTP API in front of one open store, with live
-- subscriptions (Server-Sent Events), group commit and a web console.
--
-- One process, one thread: lua-http runs every request as a cqueues
-- coroutine. Store calls are short (reads copy a batch and let go of their
-- transaction; appends go through the group committer), so they run inline.
-- Appends from other processes are noticed by a head watcher polling the
-- store's wait descriptor (store:wait_fd) in the event loop, or the head every
-- `poll_interval` seconds where there is none; local commits wake subscribers
-- at once.
--
-- Safety: listens on 127.0.0.1 unless told otherwise; read-only unless a
-- token is configured, and then writes need `Authorization: Bearer <token>`;
-- bodies, events per request and waits are limited; every refusal is a 4xx
-- JSON `{code, message}` that leaves the store unchanged.
-- @module chronicle.server
local api = require "chronicle.server.api"
local group_commit = require "chronicle.server.group_commit"
local http_lib = require "chronicle.server.http"
local metrics = require "chronicle.server.metrics"
local static = require "chronicle.server.static"
local subscribe = require "chronicle.server.subscribe"

local M = {}

local WATCH_FALLBACK = 0.05   -- seconds the head watcher sleeps on the descriptor before looking anyway

local Server = {}
Server.__index = Server

--- The limits a server starts with (each can be given in `opts.limits`).
M.DEFAULT_LIMITS = {
  max_body = 1024 * 1024,   -- bytes of one request body
  max_events = 1000,        -- events in one append request
  write_timeout = 5,        -- seconds one write to a client may take before it is cut off
  idle_timeout = 30,        -- seconds a connection may sit between requests
  heartbeat = 15,           -- seconds between SSE heartbeats while nothing happens
  poll_interval = 0.02,     -- seconds between looks at the head where the store has no wait descriptor
  max_connections = 1024,
}

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(text)
  local q = {}
  for pair in (text or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = percent_decode((k:gsub("%+", " "))), percent_decode((v:gsub("%+", " ")))
    q[k] = v
  end
  return q
end

-- Routes: method, path pattern (on the raw path; captures are percent-decoded
-- into the named params), endpoint, and whether it writes.
local ROUTES = {
  { "GET", "^/health$", "health", api.health },
  { "GET", "^/metrics$", "metrics", api.metrics },
  { "GET", "^/stats$", "stats", api.stats },
  { "GET", "^/all$", "all", api.read_all },
  { "GET", "^/streams$", "streams", api.streams },
  { "GET", "^/streams/(.+)$", "stream", api.read_stream, params = { "stream" } },
  { "POST", "^/streams/(.+)$", "append", api.append, params = { "stream" }, writes = true },
  { "GET", "^/events/([^/]+)$", "event", api.event, params = { "id" } },
  { "GET", "^/subscribe$", "subscribe", subscribe.serve },
  { "GET", "^/projections$", "projections", api.projections },
  { "GET", "^/views/([^/]+)$", "view", api.view_rows, params = { "name" } },
  { "GET", "^/views/([^/]+)/(.+)$", "view_row", api.view_row, params = { "name", "key" } },
  { "GET", "^/dead%-letters$", "dead_letters", api.dead_letters },
  { "POST", "^/dead%-letters/([^/]+)/retry$", "retry", api.retry_dead_letters, params = { "handler" }, writes = true },
  { "GET", "^/aggregates$", "aggregates", api.aggregates },
  { "GET", "^/aggregates/([^/]+)/(.+)$", "aggregate", api.aggregate_state, params = { "name", "id" } },
  { "GET", "^/$", "console", static.index },
  { "GET", "^/console/([%w_%-]+%.%a+)$", "console", static.file, params = { "file" } },
}

local function route_of(method, path)
  local known_path = false
  for _, r in ipairs(ROUTES) do
    local caps = { path:match(r[2]) }
    if caps[1] ~= nil then
      known_path = true
      if r[1] == method then
        local params = {}
        for i, name in ipairs(r.params or {}) do params[name] = percent_decode(caps[i]) end
        return r, params
      end
    end
  end
  return nil, known_path
end

-- Constant-time comparison of two strings (the token check).
local function same_secret(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end

--- A server for `store`.
-- @param store an open store
-- @tparam[opt] table opts `host` ("127.0.0.1"), `port` (0: any free one), `token` (a string: writes
--   need it; nil: read-only), `repositories` (name -> repository, for `/aggregates`), `limits`
function M.new(store, opts)
  opts = opts or {}
  local limits = {}
  for k, v in pairs(M.DEFAULT_LIMITS) do limits[k] = v end
  for k, v in pairs(opts.limits or {}) do
    if M.DEFAULT_LIMITS[k] == nil then error("server: unknown limit '" .. tostring(k) .. "'", 2) end
    if type(v) ~= "number" or v <= 0 then error("server: limit '" .. k .. "' must be a number > 0", 2) end
    limits[k] = v
  end
  if opts.token ~= nil and (type(opts.token) ~= "string" or #opts.token < 8) then
    error("server: the token must be a string of at least 8 characters", 2)
  end
  local self = setmetatable({ store = store, host = opts.host or "127.0.0.1", port = opts.port or 0,
                              token = opts.token, repositories = opts.repositories, limits = limits,
                              metrics = metrics.new(), http = http_lib.load() }, Server)
  self.moved = self.http.condition.new()
  self.committer = group_commit.new(store, self.http.cqueues, self.http.condition, function(entries, events)
    self.metrics:commit(entries, events)
  end)
  return self
end

--- Wakes every subscriber waiting for the log to move.
function Server:wake_subscribers() self.moved:signal() end

--- Waits until the log may have moved, or `timeout` seconds.
function Server:wait_for_append(timeout) self.moved:wait(timeout) end

-- Reads a request body of at most limits.max_body bytes.
-- Reads and drops what is left of a request body (up to DISCARD_BYTES), so that the stream
-- ends cleanly: lua-http's shutdown of a stream whose body was left unread can spin on a
-- connection the client closed. True when the body ended within the limit.
local DISCARD_BYTES = 8 * 1024 * 1024
local function discard_body(self, stream)
  local total = 0
  while total <= DISCARD_BYTES do
    local chunk = stream:get_next_chunk(self.limits.idle_timeout)
    if chunk == nil then return true end
    total = total + #chunk
  end
  return false
end

local function read_body(self, stream, headers)
  local max = self.limits.max_body
  local declared = tonumber(headers:get("content-length") or "")
  if declared and declared > max then return nil, 413 end
  local parts, total = {}, 0
  while true do
    local chunk, err = stream:get_next_chunk(self.limits.idle_timeout)
    if chunk == nil then
      if err then return nil, 400 end
      break
    end
    total = total + #chunk
    if total > max then return nil, 413 end
    parts[#parts + 1] = chunk
  end
  return table.concat(parts)
end

local function respond(self, stream, status, body, ctype, close)
  local h = self.http.headers.new()
  h:append(":status", tostring(status))
  h:append("content-type", ctype or "application/json")
  h:append("content-length", tostring(#body))
  h:append("cache-control", "no-store")
  if close then h:append("connection", "close") end
  if stream:write_headers(h, false, self.limits.write_timeout) then
    stream:write_chunk(body, true, self.limits.write_timeout)
  end
end

-- Answers one request. Never raises: a failure is a JSON error answer.
local function handle(self, stream)
  local t0 = self.http.cqueues.monotime()
  local headers = stream:get_headers(self.limits.idle_timeout)
  if not headers then return end
  local method, raw = headers:get(":method"), headers:get(":path") or "/"
  local path, query_text = raw:match("^([^?#]*)%??([^#]*)")
  local route, params = route_of(method, path)
  local name = route and route[3] or "unknown"
  local status, body, ctype
  if not route then
    if params then status, body = api.refuse(405, "method_not_allowed", method .. " is not allowed on " .. path)
    else status, body = api.refuse(404, "not_found", "no such endpoint: " .. path) end
  elseif route.writes and not self.token then
    status, body = api.refuse(403, "readonly", "this server is read-only: start it with --token-file to accept writes")
  elseif route.writes and not same_secret(headers:get("authorization") or "", "Bearer " .. self.token) then
    status, body = api.refuse(401, "unauthorized", "writes need the header 'Authorization: Bearer <token>'")
  else
    local req = { method = method, path = path, params = params, query = parse_query(query_text), headers = headers }
    local ok, err = true, nil
    if method == "POST" then
      req.body, err = read_body(self, stream, headers)
      if not req.body then
        ok = false
        if err == 413 then status, body = api.refuse(413, "too_large", ("the body is over %d bytes"):format(self.limits.max_body))
        else status, body = api.refuse(400, "bad_request", "the body could not be read") end
      end
    end
    if ok then
      local good, s, b, c = pcall(route[4], self, req, stream)
      if good then
        status, body, ctype = s, b, c
      elseif type(s) == "table" and s.refusal then
        status, body = api.refuse(s.refusal[1], s.refusal[2], s.refusal[3])
      elseif type(s) == "table" and s.code then
        status, body = api.store_error(s)
      else
        io.stderr:write("chronicle serve: ", method, " ", path, ": ", tostring(s), "\n")
        status, body = api.refuse(500, "internal", api.raised_message(s))
      end
    end
  end
  -- A request refused before its body was read (or read to its end) has the rest dropped;
  -- one too large even for that gets its connection closed after the answer.
  local close = false
  if method == "POST" and status and status >= 400 and stream.state ~= "half closed (remote)"
     and stream.state ~= "closed" then
    close = not discard_body(self, stream)
  end
  if status then respond(self, stream, status, body, ctype, close) end
  self.metrics:request(name, status or 200, self.http.cqueues.monotime() - t0)
end

--- Binds the listening socket. Returns the host and the port (useful with port 0).
function Server:start()
  local h = self.http
  self.listener = assert(h.server.listen({
    host = self.host, port = self.port, reuseaddr = true,
    max_concurrent = self.limits.max_connections,
    connection_setup_timeout = self.limits.idle_timeout,
    intra_stream_timeout = self.limits.idle_timeout,
    onstream = function(_, stream) handle(self, stream) end,
    onerror = function(_, context, op, err)
      -- A client that went away or sent garbage: its connection ends, the server goes on.
      if os.getenv("CHRONICLE_SERVE_DEBUG") then
        io.stderr:write("chronicle serve: ", tostring(op), " on ", tostring(context), ": ", tostring(err), "\n")
      end
    end,
  }))
  local ok, err = self.listener:listen()
  if not ok then error("serve: cannot listen on " .. self.host .. ":" .. tostring(self.port) .. ": " .. tostring(err), 0) end
  local _, host, port = self.listener:localname()
  self.bound_host, self.bound_port = host, port
  return host, port
end

-- Wakes subscribers when appends of other processes move the head: on the store's
-- wait descriptor (inotify on LMDB, the LISTEN socket on PostgreSQL), looking again
-- 1, 2, 4 ... ms after a wake (a wake can come just before the commit is visible), and
-- every `poll_interval` seconds where the store has no descriptor.
local function watch_head(self)
  local cq = self.http.cqueues
  local store = self.store
  local last = store:head()
  local soon = nil                       -- seconds until the next look after a wake
  while not self.stopping do
    local fd = store:wait_fd()
    if soon then cq.sleep(soon)
    elseif fd then cq.poll({ pollfd = fd, events = "r" }, WATCH_FALLBACK)
    else cq.sleep(self.limits.poll_interval) end
    local head = store:wait(last, 0)     -- drains the descriptor
    if head then
      last, soon = head, nil
      self.moved:signal()
    elseif fd then
      soon = soon and soon * 2 or 0.001
      if soon > WATCH_FALLBACK then soon = nil end
    end
  end
end

--- Serves until `stop()` (or SIGINT/SIGTERM when `opts.signals`).
function Server:run(opts)
  if not self.listener then self:start() end
  local cq = self.listener.cq
  cq:wrap(watch_head, self)
  if opts and opts.signals then
    local signal = require "cqueues.signal"
    signal.block(signal.SIGINT, signal.SIGTERM)
    local listener = signal.listen(signal.SIGINT, signal.SIGTERM)
    cq:wrap(function()
      listener:wait()
      self:stop()
    end)
  end
  -- Step the controller ourselves: once stopped, keep-alive connections and
  -- subscriptions still open are left behind instead of waited for.
  while not self.stopping do
    local ok, err = cq:step(0.25)
    if not ok and not self.stopping then error("serve: " .. tostring(err), 0) end
  end
end

--- Stops serving: closes the listening socket and ends subscriptions.
function Server:stop()
  self.stopping = true
  self.moved:signal()
  if self.listener then self.listener:close() end
end

M.Server = Server
return M
