--- GET /subscribe: Server-Sent Events, catch-up from `from` and then live.
--
-- Each event is one SSE message: `id:` is its global position (so a client
-- that reconnects with `Last-Event-ID` resumes after it) and `data:` the
-- event in the export format's JSON. Events are read a batch at a time with
-- no read transaction held between batches; each write must finish within
-- the write timeout, so a client that stops reading is cut off instead of
-- making the server buffer for it. While caught up, the subscriber sleeps
-- until the server's head watcher (or a local commit) says the log moved.
-- @module chronicle.server.subscribe
local api = require "chronicle.server.api"
local json = require "chronicle.cli.json"

local M = {}

local BATCH = 100

--- Serves one subscription on `stream` (lua-http) for request `req`.
function M.serve(srv, req, stream)
  local from = api.int_param(req, "from", 1, 0)
  local last_id = req.headers:get("last-event-id")
  if last_id and last_id ~= "" then
    local n = math.tointeger(tonumber(last_id))
    if not n or n < 0 then
      return api.refuse(400, "bad_request", "Last-Event-ID must be an event position, got '" .. last_id .. "'")
    end
    from = n + 1
  end
  local category = req.query.category ~= "" and req.query.category or nil
  local types = api.types_param(req)
  -- Check the filters before the stream starts (read_all raises on bad ones).
  local ok, err = pcall(function() for _ in srv.store:read_all({ from = from, count = 1, category = category, types = types }) do end end)
  if not ok then return api.refuse(400, "bad_request", api.raised_message(err)) end

  local headers = srv.http.headers.new()
  headers:append(":status", "200")
  headers:append("content-type", "text/event-stream")
  headers:append("cache-control", "no-cache")
  if not stream:write_headers(headers, false, srv.limits.write_timeout) then return end
  srv.metrics.subscribers = srv.metrics.subscribers + 1
  local cq, monotime = srv.http.cqueues, srv.http.cqueues.monotime
  local last_write = monotime()
  local function send(text)
    local sent = stream:write_chunk(text, false, srv.limits.write_timeout)
    last_write = monotime()
    return sent
  end
  local alive = send("retry: 1000\n\n")
  while alive and not srv.stopping do
    local chunk, n = {}, 0
    local head = srv.store:head()     -- before the read: what it does not find up to here is filtered out
    for ev in srv.store:read_all({ from = from, count = BATCH, category = category, types = types }) do
      n = n + 1
      chunk[n] = ("id: %d\ndata: %s\n\n"):format(ev.position, json.encode_event(ev))
      from = ev.position + 1
    end
    if n > 0 then
      alive = send(table.concat(chunk))
    else
      if head >= from then
        from = head + 1
      else
        srv:wait_for_append(srv.limits.heartbeat)
        if srv.store:head() < from and monotime() - last_write >= srv.limits.heartbeat then
          alive = send(": heartbeat\n\n")
        end
      end
    end
    if n == BATCH then cq.sleep(0) end   -- let other requests run during a long catch-up
  end
  srv.metrics.subscribers = srv.metrics.subscribers - 1
  stream:shutdown()
end

return M
