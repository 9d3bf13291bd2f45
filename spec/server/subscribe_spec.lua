-- chronicle serve: /subscribe (Server-Sent Events), catch-up then live, with
-- appends from another process, resumption, filters and heartbeats.
local helpers = require "helpers"
local json = require "chronicle.cli.json"
local support = require "server.support"

-- Starts `curl -N` on path in the background; returns the file it writes to.
local function subscribe(srv, path, headers, seconds)
  local out = helpers.tmpdir() .. "/sse"
  local h = {}
  for _, x in ipairs(headers or {}) do h[#h + 1] = "-H " .. helpers.quote(x) end
  os.execute(("curl -s -N --max-time %d %s %s > %s 2>/dev/null &"):format(seconds or 20, table.concat(h, " "),
    helpers.quote(srv.url .. path), helpers.quote(out)))
  return out
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The SSE messages in `text`: a list of { id = n, event = decoded data }.
local function messages(text)
  local out = {}
  for block in text:gmatch("(.-)\n\n") do
    local id, data = block:match("id: (%d+)\ndata: ([^\n]*)")
    if id then out[#out + 1] = { id = tonumber(id), event = assert(json.decode(data)) } end
  end
  return out
end

-- Waits (up to `seconds`) until `file` holds `n` messages; returns them.
local function wait_for(file, n, seconds)
  local got
  for _ = 1, (seconds or 10) * 20 do
    got = messages(read(file))
    if #got >= n then return got end
    os.execute("sleep 0.05")
  end
  return got
end

describe("chronicle serve /subscribe", function()
  local srv, dir, store
  before_each(function()
    dir = helpers.new_target(helpers.tmpdir() .. "/store")
    store = helpers.open(nil, dir)
    srv = support.start(dir, { args = { "--heartbeat", "0.5" } })
  end)
  after_each(function()
    support.stop_all(true)
    helpers.cleanup()
  end)

  it("catches up from `from`, then delivers appends made by another process live", function()
    for i = 1, 3 do assert(store:append("order-" .. i, { { type = "Placed", data = i } })) end
    local file = subscribe(srv, "/subscribe?from=2")
    local got = wait_for(file, 2)
    assert.same({ 2, 3 }, { got[1].id, got[2].id })
    assert.same({ "order-2", 2 }, { got[1].event.stream, got[1].event.data })
    assert(store:append("order-9", { { type = "Placed", data = 9 } }))     -- this spec is the other process
    got = wait_for(file, 3, 5)
    assert.equals(3, #got)
    assert.same({ 4, "order-9", 9 }, { got[3].id, got[3].event.stream, got[3].event.data })
  end)

  it("resumes after Last-Event-ID", function()
    for i = 1, 5 do assert(store:append("a-" .. i, { { type = "T", data = i } })) end
    local file = subscribe(srv, "/subscribe", { "Last-Event-ID: 3" })
    local got = wait_for(file, 2)
    assert.same({ 4, 5 }, { got[1].id, got[2].id })
  end)

  it("filters by category and types, before and after catching up", function()
    assert(store:append("order-1", { { type = "Placed" }, { type = "Paid" } }))
    assert(store:append("user-1", { { type = "Placed" } }))
    local file = subscribe(srv, "/subscribe?category=order&types=Paid,Shipped")
    local got = wait_for(file, 1)
    assert.same({ 2, "Paid" }, { got[1].id, got[1].event.type })
    assert(store:append("user-2", { { type = "Paid" } }))
    assert(store:append("order-1", { { type = "Shipped" } }))
    got = wait_for(file, 2, 5)
    assert.equals(2, #got)
    assert.same({ 5, "Shipped" }, { got[2].id, got[2].event.type })
  end)

  it("sends heartbeats while nothing happens", function()
    local file = subscribe(srv, "/subscribe")
    local text
    for _ = 1, 60 do
      text = read(file)
      if text:find(": heartbeat", 1, true) then break end
      os.execute("sleep 0.05")
    end
    assert.truthy(text:find(": heartbeat\n\n", 1, true))
  end)

  it("refuses a bad Last-Event-ID or filter with 400", function()
    local status, _, body = support.request(srv, "/subscribe", { headers = { "Last-Event-ID: yesterday" } })
    assert.same({ 400, "bad_request" }, { status, body.code })
    status, _, body = support.request(srv, "/subscribe?category=a-b")
    assert.same({ 400, "bad_request" }, { status, body.code })
  end)
end)
