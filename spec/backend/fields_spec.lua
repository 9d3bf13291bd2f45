-- The `fields` option of read, read_all and fold: a reader that names the
-- event fields it uses gets tables holding just those (less to build per event).
local helpers = require "helpers"

local ALL = { "position", "stream", "version", "type", "time", "id", "schema", "meta", "data" }

local function keys_of(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function project(ev, fields)
  local out = {}
  for _, f in ipairs(fields) do out[f] = ev[f] end
  return out
end

describe("the fields option", function()
  after_each(helpers.cleanup)

  local store
  before_each(function()
    store = helpers.open({ durability = "nosync" })
    assert(store:append("order-1", { { type = "Placed", data = { total = 5 }, meta = { by = "ann" } },
                                     { type = "Paid", data = { total = 5 } } }))
    assert(store:append("order-2", { { type = "Placed", data = { total = 7 } } }))
  end)

  it("gives read, read_all and fold events holding exactly the named fields, with the same values", function()
    local fields = { "type", "data", "version" }
    local full, picked = {}, {}
    for ev in store:read("order-1") do full[#full + 1] = project(ev, fields) end
    for ev in store:read("order-1", { fields = fields }) do
      assert.same({ "data", "type", "version" }, keys_of(ev))
      picked[#picked + 1] = ev
    end
    assert.same(full, picked)

    local all = {}
    for ev in store:read_all({ fields = { "position", "stream" } }) do all[#all + 1] = ev end
    assert.same({ { position = 1, stream = "order-1" }, { position = 2, stream = "order-1" },
                  { position = 3, stream = "order-2" } }, all)

    local seen = store:fold({ stream = "order-1", fields = { "id" } }, {}, function(st, ev)
      assert.same({ "id" }, keys_of(ev))
      st[#st + 1] = ev.id
    end)
    local ids = {}
    for ev in store:read("order-1") do ids[#ids + 1] = ev.id end
    assert.same(ids, seen)
  end)

  it("leaves meta out when the event has none, as a full read does", function()
    local metas = {}
    for ev in store:read_all({ fields = { "meta" } }) do metas[#metas + 1] = ev.meta or false end
    assert.same({ { by = "ann" }, false, false }, metas)
  end)

  it("naming every field is the same as not naming any", function()
    local a, b = {}, {}
    for ev in store:read_all() do a[#a + 1] = ev end
    for ev in store:read_all({ fields = ALL }) do b[#b + 1] = ev end
    assert.same(a, b)
  end)

  it("works with filters: category and types select before fields pick", function()
    local got = {}
    for ev in store:read_all({ types = { "Placed" }, fields = { "stream" } }) do got[#got + 1] = ev.stream end
    assert.same({ "order-1", "order-2" }, got)
  end)

  it("spread = true on fold passes the named fields as arguments, in the order named, instead of an event", function()
    local got = store:fold({ fields = { "data", "type", "meta", "position", "type" }, spread = true }, {},
      function(acc, data, type_, meta, position, again, extra)
        acc[#acc + 1] = { data.total, type_, meta and meta.by or false, position, again, extra == nil }
      end)
    assert.same({ { 5, "Placed", "ann", 1, "Placed", true }, { 5, "Paid", false, 2, "Paid", true },
                  { 7, "Placed", false, 3, "Placed", true } }, got)
    -- the same values as the events of a full read, field by field
    local full = {}
    for ev in store:read("order-1") do full[#full + 1] = { ev.id, ev.time, ev.version, ev.stream, ev.schema } end
    local spread = store:fold({ stream = "order-1", fields = { "id", "time", "version", "stream", "schema" }, spread = true },
      {}, function(acc, ...) acc[#acc + 1] = { ... } end)
    assert.same(full, spread)
    -- a fold's results are the same with and without it
    local a = { store:fold({ stream = "order-1", fields = { "data" }, spread = true }, 0, function(n, d) return n + d.total end) }
    local b = { store:fold({ stream = "order-1", fields = { "data" } }, 0, function(n, ev) return n + ev.data.total end) }
    assert.same(b, a)
  end)

  it("refuses spread without fields, or not a boolean", function()
    assert.has_error(function() store:fold({ spread = true }, 0, function() end) end,
      "fold: option 'spread' needs 'fields' (the values to pass, in order)")
    assert.has_error(function() store:fold({ spread = 1, fields = { "type" } }, 0, function() end) end,
      "fold: option 'spread' must be a boolean, got number 1")
    assert.has_error(function()
      store:fold({ spread = true, fields = { "type", "type", "type", "type", "type", "type", "type", "type", "type", "type" } },
                 0, function() end)
    end, "fold: option 'spread' takes at most 9 fields")
  end)

  it("refuses what is not a list of field names", function()
    assert.has_error(function() store:read("order-1", { fields = "type" }) end,
      "read: option 'fields' must be a table, got string")
    assert.has_error(function() store:read_all({ fields = { "type", "colour" } }) end,
      "read_all: fields[2] must be one of position, stream, version, type, time, id, schema, meta, data")
    assert.has_error(function() store:fold({ fields = {} }, 0, function() end) end,
      "fold: option 'fields' must name at least one field")
  end)
end)

describe("store:event and store:position_of", function()
  after_each(helpers.cleanup)

  it("find an event by its id, and say nil for an id no event has", function()
    local store = helpers.open({ durability = "nosync" })
    local chronicle = require "chronicle"
    local id = chronicle.uuid()
    assert(store:append("a-1", { { type = "A" } }))
    assert(store:append("b-1", { { type = "B", id = id, data = { x = 1 } } }))
    assert.equals(2, store:position_of(id))
    local ev = store:event(id)
    assert.same({ 2, "b-1", "B", { x = 1 }, id }, { ev.position, ev.stream, ev.type, ev.data, ev.id })
    assert.is_nil(store:position_of(chronicle.uuid()))
    assert.is_nil(store:event(chronicle.uuid()))
    assert.has_error(function() store:position_of("not-a-uuid") end)
  end)
end)
