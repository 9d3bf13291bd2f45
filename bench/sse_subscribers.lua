-- Helper of bench/serve.lua: opens N Server-Sent Events subscriptions to
-- http://127.0.0.1:PORT/subscribe?from=FROM in one process (cqueues), and
-- for every event received prints `now - data.sent` in microseconds, until
-- each subscriber has seen COUNT events.   lua5.4 sse_subscribers.lua PORT FROM N COUNT
local http = require("chronicle.server.http").load()
local json = require "chronicle.cli.json"   -- lossless: a time in ns is beyond 2^53
local chronicle = require "chronicle"
local port, from, n, count = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local cq = http.cqueues.new()
local ready = 0
for _ = 1, n do
  cq:wrap(function()
    local req = http.request.new_from_uri(("http://127.0.0.1:%s/subscribe?from=%d"):format(port, from))
    local headers, stream = assert(req:go(30))
    assert(headers:get(":status") == "200")
    ready = ready + 1
    if ready == n then io.stdout:write("ready\n"); io.stdout:flush() end
    local seen, buffer = 0, ""
    while seen < count do
      local chunk = stream:get_next_chunk(60)
      if not chunk then break end
      buffer = buffer .. chunk
      while true do
        local block, rest = buffer:match("^(.-)\n\n(.*)$")
        if not block then break end
        buffer = rest
        local data = block:match("data: ([^\n]*)")
        if data then
          local ev = assert(json.decode(data))
          io.stdout:write(string.format("%d\n", (chronicle.now() - ev.data.sent) // 1000))
          seen = seen + 1
        end
      end
    end
    stream:shutdown()
  end)
end
assert(cq:loop())
