-- A client for the kill -9 spec: appends one event per request to
-- http://127.0.0.1:PORT/streams/worker-N, each with its own id, and writes
-- the id of every acknowledged (201) append to ACKS, until COUNT appends or
-- the server stops answering.   lua5.4 append_worker.lua PORT N COUNT ACKS TOKEN
local http = require("chronicle.server.http").load()
local chronicle = require "chronicle"
local port, n, count, acks, token = arg[1], arg[2], tonumber(arg[3]), arg[4], arg[5]
local out = assert(io.open(acks, "w"))
for i = 1, count do
  local id = chronicle.uuid()
  local req = http.request.new_from_uri(("http://127.0.0.1:%s/streams/worker-%s"):format(port, n))
  req.headers:upsert(":method", "POST")
  req.headers:upsert("authorization", "Bearer " .. token)
  req:set_body(('{"events":[{"type":"Tick","id":"%s","data":%d}]}'):format(id, i))
  local headers = req:go(5)
  if not headers then break end
  if headers:get(":status") == "201" then
    out:write(id, "\n")
    out:flush()
  end
end
out:close()
