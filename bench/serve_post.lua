-- wrk script for bench/serve.lua: POSTs WRK_EVENTS events (default 1) to a
-- stream chosen at random among 1,000, with the bearer token in WRK_TOKEN.
local token = os.getenv("WRK_TOKEN")
local n = tonumber(os.getenv("WRK_EVENTS") or "1")
local events = {}
for i = 1, n do events[i] = '{"type":"Tick","data":{"n":' .. i .. ',"note":"a small event over http"}}' end
wrk.method = "POST"
wrk.body = '{"events":[' .. table.concat(events, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function() return wrk.format(nil, "/streams/tick-" .. math.random(1000)) end
