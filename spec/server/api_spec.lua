-- chronicle serve: the HTTP API, as another program sees it (a real server
-- process on a loopback port, requests with curl).
local chronicle = require "chronicle"
local helpers = require "helpers"
local support = require "server.support"

local TOKEN = "a-token-for-the-specs"

describe("chronicle serve", function()
  local srv, dir
  before_each(function()
    dir = helpers.new_target(helpers.tmpdir() .. "/store")
    srv = support.start(dir, { token = TOKEN })
  end)
  after_each(function()
    support.stop_all(true)
    helpers.cleanup()
  end)

  it("appends with an expected version and answers 201 with the version and position", function()
    local status, _, body = support.append(srv, "order-1", { { type = "Placed", data = { total = 5 } } }, "no_stream")
    assert.equals(201, status)
    assert.same({ stream = "order-1", version = 0, position = 1 }, body)
    status, _, body = support.append(srv, "order-1", { { type = "Paid" }, { type = "Shipped" } }, 0)
    assert.equals(201, status)
    assert.same({ stream = "order-1", version = 2, position = 3 }, body)
  end)

  it("answers a conflict with 409, the code, expected and actual, and writes nothing", function()
    support.append(srv, "order-1", { { type = "Placed" } }, "no_stream")
    local status, _, body = support.append(srv, "order-1", { { type = "Placed" } }, "no_stream")
    assert.equals(409, status)
    assert.equals("conflict", body.code)
    assert.equals("no_stream", body.expected)
    assert.equals(0, body.actual)
    status, _, body = support.append(srv, "order-1", { { type = "Paid" } }, 7)
    assert.equals(409, status)
    assert.same({ 7, 0 }, { body.expected, body.actual })
    local _, _, page = support.request(srv, "/streams/order-1")
    assert.equals(1, #page.events)
  end)

  it("returns the original result for an idempotent retry with the same ids", function()
    local id = chronicle.uuid()
    local events = { { type = "Placed", id = id, data = { total = 5 } } }
    local _, _, first = support.append(srv, "order-1", events, "no_stream")
    local status, _, again = support.append(srv, "order-1", events, "no_stream")
    assert.equals(201, status)
    assert.same({ first.stream, first.version, first.position, true }, { again.stream, again.version, again.position, again.replayed })
    local _, _, stats = support.request(srv, "/stats")
    assert.equals(1, stats.events)
  end)

  it("keeps every value as it was: integers, floats, binary strings, nested tables", function()
    local data = { n = 9007199254740993, f = 1.0, half = 0.5, bin = "\0\255x", list = { 1, 2, { a = "b" } } }
    support.append(srv, "value-1", { { type = "V", data = data, meta = { who = "spec" } } })
    local store = helpers.open({ readonly = true }, dir)
    local ev
    for e in store:read("value-1") do ev = e end
    assert.same(data, ev.data)
    assert.equals("float", math.type(ev.data.f))
    assert.equals("integer", math.type(ev.data.n))
    local _, text = support.request(srv, "/streams/value-1")
    assert.truthy(text:find('"n":{"$int":"9007199254740993"}', 1, true))
    assert.truthy(text:find('"f":{"$float":"1.0"}', 1, true))
  end)

  it("reads a stream forward and backward, the log by category and type, with paging links", function()
    for i = 1, 5 do support.append(srv, "cart-" .. (i % 2), { { type = i % 2 == 0 and "Added" or "Removed", data = i } }) end
    local _, _, page = support.request(srv, "/streams/cart-1?count=2")
    assert.same({ 0, 1 }, { page.events[1].version, page.events[2].version })
    assert.equals("cart-1", page.stream.stream)
    assert.equals("/streams/cart-1?count=2&from=2", page.links.next)
    local _, _, rest = support.request(srv, page.links.next)
    assert.same({ 2 }, { rest.events[1].version })
    assert.is_nil(rest.links.next)
    local _, _, back = support.request(srv, "/streams/cart-1?backward=true")
    assert.same({ 2, 1, 0 }, { back.events[1].version, back.events[2].version, back.events[3].version })
    local _, _, added = support.request(srv, "/all?types=Added")
    assert.same({ 2, 4 }, { added.events[1].data, added.events[2].data })
    local _, _, cat = support.request(srv, "/all?category=cart&from=4&count=10")
    assert.same({ 4, 5 }, { cat.events[1].position, cat.events[2].position })
    local _, _, streams = support.request(srv, "/streams?prefix=cart-")
    assert.same({ "cart-0", "cart-1" }, { streams.streams[1].stream, streams.streams[2].stream })
    local status, _, missing = support.request(srv, "/streams/nothing-here")
    assert.equals(200, status)
    assert.same({}, missing.events)
    assert.is_nil(missing.stream)
  end)

  it("refuses bad requests with a 4xx JSON error and leaves the store unchanged", function()
    local cases = {
      { "/streams/x-1", { method = "POST", body = "{not json" }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[]}' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[{"data":1}]}' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[{"type":"A"}],"expected":"maybe"}' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[{"type":"A","colour":1}]}' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '[1,2]' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[{"type":"A","id":"not-a-uuid"}]}' }, 400, "bad_request" },
      { "/streams/x-1", { method = "POST", body = '{"events":[{"type":"A"}]}', token = "wrong-token" }, 401, "unauthorized" },
      { "/streams/x-1", { method = "POST", body = ('{"events":[{"type":"A","data":"%s"}]}'):format(("x"):rep(2 * 1024 * 1024)) }, 413, "too_large" },
      { "/all?count=ten", {}, 400, "bad_request" },
      { "/all?backward=perhaps", {}, 400, "bad_request" },
      { "/nowhere", {}, 404, "not_found" },
      { "/console/../../etc/passwd", {}, 404, "not_found" },
      { "/console/%2e%2e%2fREADME.md", {}, 404, "not_found" },
      { "/health", { method = "DELETE" }, 405, "method_not_allowed" },
    }
    for _, c in ipairs(cases) do
      local opts = c[2]
      if opts.method == "POST" and opts.token == nil then opts.token = TOKEN end
      local status, text, body = support.request(srv, c[1], opts)
      assert.equals(c[3], status, c[1] .. " " .. tostring(opts.body):sub(1, 60) .. ": " .. text:sub(1, 200))
      assert.equals(c[4], body and body.code, text:sub(1, 200))
      assert.is_string(body.message)
    end
    local _, _, stats = support.request(srv, "/stats")
    assert.equals(0, stats.events)
    assert.is_true(support.alive(srv))
  end)

  it("is read-only without a token: writes get 403, reads work", function()
    local ro_dir = helpers.new_target(helpers.tmpdir() .. "/ro")
    helpers.open(nil, ro_dir):close()
    local ro = support.start(ro_dir, { token = nil })
    local status, _, body = support.append(ro, "a-1", { { type = "A" } }, nil, "anything")
    assert.equals(403, status)
    assert.equals("readonly", body.code)
    status, _, body = support.request(ro, "/health")
    assert.equals(200, status)
    assert.same({ status = "ok", head = 0, writable = false }, body)
  end)

  it("serves Prometheus metrics that count appends, commits and requests", function()
    support.append(srv, "m-1", { { type = "A" }, { type = "B" } })
    support.request(srv, "/streams/m-1")
    local status, text = support.request(srv, "/metrics")
    assert.equals(200, status)
    assert.truthy(text:find("\nchronicle_events_appended_total 2\n", 1, true))
    assert.truthy(text:find("\nchronicle_appends_total 1\n", 1, true))
    assert.truthy(text:find('chronicle_http_requests_total{route="append",code="201"} 1', 1, true))
    assert.truthy(text:find('chronicle_http_request_duration_seconds_count{route="stream"} 1', 1, true))
    assert.truthy(text:find("\nchronicle_head 2\n", 1, true))
  end)

  it("shows views and the read side's status", function()
    local store = helpers.open(nil, dir)
    assert(store:projection({
      name = "totals", version = 1,
      handlers = { Placed = function(view, ev) view:put(ev.stream, { total = ev.data.total }) end },
    }))
    support.append(srv, "order-1", { { type = "Placed", data = { total = 5 } } })
    support.append(srv, "order-2", { { type = "Placed", data = { total = 7 } } })
    assert(store:run_projections())
    local _, _, rows = support.request(srv, "/views/totals")
    assert.same({ { key = "order-1", value = { total = 5 } }, { key = "order-2", value = { total = 7 } } }, rows.rows)
    local _, _, row = support.request(srv, "/views/totals/order-2")
    assert.same({ key = "order-2", value = { total = 7 } }, row)
    local status, _, body = support.request(srv, "/views/totals/order-9")
    assert.same({ 404, "not_found" }, { status, body.code })
    status, _, body = support.request(srv, "/views/nope")
    assert.same({ 404, "not_found" }, { status, body.code })
    local _, _, status_body = support.request(srv, "/projections")
    assert.equals(2, status_body.head)
    assert.equals("totals", status_body.projections[1].name)
    assert.equals(0, status_body.projections[1].lag)
  end)

  it("stops cleanly on SIGTERM and leaves the store closed and consistent", function()
    support.append(srv, "s-1", { { type = "A" } })
    assert.is_true(support.stop(srv, "TERM"))
    local store = helpers.open(nil, dir)
    assert.equals(1, store:head())
    assert.is_true(store:verify().ok)
  end)
end)
