-- Scripts loaded at runtime (trusted, not sandboxed): every *.lua of a folder
-- returns an aggregate, projection, handler or reactor definition; reload()
-- picks up added, changed and removed files.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- These specs are about the read side, not durability: stores skip fsync to stay fast.
local FAST = { durability = "nosync" }

local FIXTURES = helpers.root .. "/spec/support/projections/scripts"
local BROKEN = helpers.root .. "/spec/support/projections/broken_scripts"

-- A projection script counting Ping events (calls are tallied in a global the spec reads).
local function counter_script(name, extra)
  return ([[
-- %s
return {
  kind = "projection",
  name = %q,
  handlers = {
    Ping = function(view, ev)
      local calls = _G.chronicle_scripts_spec_calls
      calls[%q] = (calls[%q] or 0) + 1
      view:update("n", function(n) return (n or 0) + %d end)
    end,
  },
}
]]):format(extra or "a counter", name, name, name, extra and 10 or 1)
end

local function by_name(list)
  local out = {}
  for _, item in ipairs(list) do out[item.name or item.file] = item end
  return out
end

local function names(list)
  local out = {}
  for _, item in ipairs(list) do out[#out + 1] = item.name end
  table.sort(out)
  return out
end

local function idle(store)
  assert.equals("idle", chronicle.runner(store, { wait = 0.05 }):run({ until_idle = true }))
end

describe("chronicle.load_scripts", function()
  before_each(function()
    _G.chronicle_scripts_spec_outbox = {}
    _G.chronicle_scripts_spec_calls = {}
  end)
  after_each(function()
    _G.chronicle_scripts_spec_outbox = nil
    _G.chronicle_scripts_spec_calls = nil
    helpers.cleanup()
  end)

  it("loads a folder holding an aggregate, a projection, a handler and a reactor, which then work together", function()
    local store = helpers.open(FAST)
    local scripts = chronicle.load_scripts(store, FIXTURES)
    assert.same({}, scripts.errors)
    local added = by_name(scripts.last_report.added)
    assert.equals("aggregate", added.account.kind)
    assert.equals("projection", added.balances.kind)
    assert.equals("reactor", added.greeter.kind)
    assert.equals("handler", added.mailer.kind)
    assert.equals(FIXTURES .. "/balances.lua", added.balances.file)
    local reg = store:registrations()
    assert.is_table(reg.projections.balances)
    assert.is_table(reg.reactors.greeter)
    assert.is_table(reg.handlers.mailer)

    local accounts = scripts:repository("account")
    assert(accounts:execute("ann", "open", { owner = "Ann" }))
    assert(accounts:execute("ann", "deposit", { amount = 30 }))
    assert(accounts:execute("ben", "open", { owner = "Ben" }))
    idle(store)

    assert.same({ owner = "Ann", balance = 30 }, store:view("balances"):get("ann"))
    assert.same({ owner = "Ben", balance = 0 }, store:view("balances"):get("ben"))
    assert.same({ "WelcomeSent" }, helpers.pluck(helpers.collect(store:read("welcome-ann")), "type"))
    local outbox = _G.chronicle_scripts_spec_outbox
    table.sort(outbox)
    assert.same({ "Welcome, Ann", "Welcome, Ben" }, outbox)
  end)

  it("refuses an unknown aggregate name in repository()", function()
    local store = helpers.open(FAST)
    local scripts = chronicle.load_scripts(store, FIXTURES)
    assert.matches("no aggregate named 'nope'", helpers.raises(scripts.repository, scripts, "nope"), nil, true)
  end)

  describe("with broken scripts", function()
    local store, scripts, errors
    before_each(function()
      store = helpers.open(FAST)
      scripts = chronicle.load_scripts(store, BROKEN)
      errors = {}
      for _, e in ipairs(scripts.errors) do errors[e.file:match("[^/]+$")] = e end
    end)

    it("still loads the good ones", function()
      assert.same({ "good" }, names(scripts.last_report.added))
      assert.is_table(store:registrations().projections.good)
      helpers.fill(store, "p-1", 2, "Ping")
      assert(store:run_projections())
      assert.equals(2, store:view("good"):count())
    end)

    it("reports a syntax error with its file and line", function()
      local e = errors["syntax.lua"]
      assert.is_table(e, "no error for syntax.lua")
      assert.equals(BROKEN .. "/syntax.lua", e.file)
      assert.equals(4, e.line)
      assert.matches("syntax.lua:4:", e.message, nil, true)
    end)

    it("reports a script that raises while it runs with its file and line", function()
      local e = errors["raises.lua"]
      assert.is_table(e, "no error for raises.lua")
      assert.equals(BROKEN .. "/raises.lua", e.file)
      assert.equals(3, e.line)
      assert.matches("raises.lua:3:", e.message, nil, true)
    end)

    it("reports a bad definition with its file and what is wrong", function()
      local e = errors["no_handlers.lua"]
      assert.is_table(e, "no error for no_handlers.lua")
      assert.equals(BROKEN .. "/no_handlers.lua", e.file)
      assert.matches("no_handlers.lua", e.message, nil, true)
      assert.matches("'handlers' is missing", e.message, nil, true)

      e = errors["widget.lua"]
      assert.is_table(e, "no error for widget.lua")
      assert.matches("widget.lua", e.message, nil, true)
      assert.matches("'kind' must be", e.message, nil, true)

      e = errors["number.lua"]
      assert.is_table(e, "no error for number.lua")
      assert.matches("number.lua", e.message, nil, true)
      assert.matches("must return a definition table", e.message, nil, true)
    end)

    it("reports each broken file exactly once", function()
      local files = {}
      for _, e in ipairs(scripts.errors) do files[#files + 1] = e.file:match("[^/]+$") end
      table.sort(files)
      assert.same({ "no_handlers.lua", "number.lua", "raises.lua", "syntax.lua", "widget.lua" }, files)
    end)
  end)

  describe("reload()", function()
    local store, dir, scripts

    before_each(function()
      dir = helpers.tmpdir() .. "/scripts"
      os.execute("mkdir " .. helpers.quote(dir))
      helpers.write_file(dir .. "/a.lua", counter_script("a"))
      helpers.write_file(dir .. "/b.lua", counter_script("b"))
      store = helpers.open(FAST)
      scripts = chronicle.load_scripts(store, dir)
      assert.same({}, scripts.errors)
      helpers.fill(store, "p-1", 5, "Ping")
      idle(store)
    end)

    it("reports nothing and rebuilds nothing when no file changed", function()
      local before = store:projection_status()
      local report = scripts:reload()
      assert.same({ added = {}, changed = {}, removed = {}, errors = {} }, report)
      idle(store)
      local after = store:projection_status()
      assert.equals(before.a.generation, after.a.generation)
      assert.equals(before.b.generation, after.b.generation)
      assert.equals(5, _G.chronicle_scripts_spec_calls.a)
    end)

    it("picks up an added file", function()
      helpers.write_file(dir .. "/c.lua", counter_script("c"))
      local report = scripts:reload()
      assert.same({ "c" }, names(report.added))
      assert.equals("projection", report.added[1].kind)
      assert.same({}, report.changed)
      assert.same({}, report.removed)
      idle(store)
      assert.equals(5, store:view("c"):get("n"))
    end)

    it("rebuilds a changed projection into a new generation, while the unchanged one keeps its checkpoint", function()
      local before = store:projection_status()
      helpers.write_file(dir .. "/a.lua", counter_script("a", "a counter counting tens"))
      local report = scripts:reload()
      assert.same({ "a" }, names(report.changed))
      assert.same({}, report.added)
      assert.same({}, report.removed)
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)

      local after = store:projection_status()
      assert.is_true(after.a.generation > before.a.generation, "a was rebuilt")
      assert.equals(60, store:view("a"):get("n"), "a holds the new code's rows over all 6 events")
      assert.equals(5 + 6, _G.chronicle_scripts_spec_calls.a, "a handled every event again")

      assert.equals(before.b.generation, after.b.generation, "b was not rebuilt")
      assert.equals(6, _G.chronicle_scripts_spec_calls.b, "b handled only the new event")
      assert.equals(6, store:view("b"):get("n"))
      assert.equals(store:head(), after.b.checkpoint)
    end)

    it("unregisters a removed projection and leaves its view readable", function()
      os.remove(dir .. "/b.lua")
      local report = scripts:reload()
      assert.same({ "b" }, names(report.removed))
      assert.equals(dir .. "/b.lua", report.removed[1].file)
      assert.is_nil(store:registrations().projections.b)
      assert.is_table(store:registrations().projections.a)
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)
      assert.equals(5, _G.chronicle_scripts_spec_calls.b, "b no longer runs")
      assert.equals(5, store:view("b"):get("n"))
      assert.equals(6, store:view("a"):get("n"))
    end)

    it("keeps the version that worked when a file breaks, and reports the error", function()
      helpers.write_file(dir .. "/a.lua", "return {\n  kind = 'projection',\n  name = 'a'\n  handlers = {},\n}\n")
      local report = scripts:reload()
      assert.equals(1, #report.errors)
      assert.equals(dir .. "/a.lua", report.errors[1].file)
      assert.equals(4, report.errors[1].line)
      assert.same(report.errors, scripts.errors)
      assert.is_table(store:registrations().projections.a, "a is still registered")
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)
      assert.equals(6, store:view("a"):get("n"))
    end)

    it("keeps the version that worked when a file's definition turns bad, and reports it with its file", function()
      helpers.write_file(dir .. "/a.lua", "return { kind = 'projection', name = 'a', handlers = {} }\n")
      local report = scripts:reload()
      assert.equals(1, #report.errors)
      assert.equals(dir .. "/a.lua", report.errors[1].file)
      assert.matches("'handlers' is missing", report.errors[1].message, nil, true)
      assert.same({}, report.removed)
      assert.is_table(store:registrations().projections.a, "a is still registered")
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)
      assert.equals(6, store:view("a"):get("n"), "the working version of a still runs")
    end)

    it("keeps every checkpoint when the same folder is loaded again after a restart", function()
      local before = store:projection_status()
      local path = store.path
      store:close()
      local again = helpers.open(FAST, path)
      local reloaded = chronicle.load_scripts(again, dir)
      assert.same({}, reloaded.errors)
      helpers.fill(again, "p-1", 1, "Ping")
      idle(again)
      local after = again:projection_status()
      assert.equals(before.a.generation, after.a.generation)
      assert.equals(before.b.generation, after.b.generation)
      assert.equals(6, _G.chronicle_scripts_spec_calls.a, "only the new event was handled")
      assert.equals(6, again:view("a"):get("n"))
    end)

    it("keeps a changed reactor's checkpoint: it does not react to old events again", function()
      local reactor = [[
return {
  kind = "reactor", name = "echo",
  handlers = { Ping = function(ev) return { { stream = "echo-1", type = "Echoed", data = { tag = %q } } } end },
}
]]
      helpers.write_file(dir .. "/echo.lua", reactor:format("v1"))
      assert.same({ "echo" }, names(scripts:reload().added))
      idle(store)
      assert.equals(5, #helpers.collect(store:read("echo-1")))
      helpers.write_file(dir .. "/echo.lua", reactor:format("v2"))
      assert.same({ "echo" }, names(scripts:reload().changed))
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)
      local tags = helpers.pluck(helpers.pluck(helpers.collect(store:read("echo-1")), "data"), "tag")
      assert.same({ "v1", "v1", "v1", "v1", "v1", "v2" }, tags)
    end)
  end)

  describe("names", function()
    local dir
    before_each(function()
      dir = helpers.tmpdir() .. "/rules"
      os.execute("mkdir " .. helpers.quote(dir))
    end)

    local function reactor_script(name)
      return ("return {\n  kind = 'reactor',\n  name = %q,\n  handlers = { Ping = function() end },\n}\n"):format(name)
    end

    it("follow one rule for every kind: '-' and '.' are fine, ':' and '#' are not, and the error names the user's file and line", function()
      helpers.write_file(dir .. "/reserve.lua", reactor_script("reserve-stock"))
      helpers.write_file(dir .. "/mailer.lua", "return {\n  kind = 'handler', name = 'my-mailer', types = { 'Ping' },\n  handle = function() end,\n}\n")
      helpers.write_file(dir .. "/agg.lua", "return { kind = 'aggregate', name = 'shop.product', initial = {}, apply = {}, commands = { a = function() end } }\n")
      helpers.write_file(dir .. "/colon.lua", reactor_script("reactor:welcome"))
      helpers.write_file(dir .. "/hash.lua", "-- a projection\nreturn {\n  kind = 'projection',\n  name = 'p:x#1',\n  handlers = { Ping = function() end },\n}\n")
      local store = helpers.open(FAST)
      local scripts = chronicle.load_scripts(store, dir)
      local added = by_name(scripts.last_report.added)
      assert.equals("reactor", added["reserve-stock"].kind)
      assert.equals("handler", added["my-mailer"].kind)
      assert.equals("aggregate", added["shop.product"].kind)
      local errors = {}
      for _, e in ipairs(scripts.errors) do errors[e.file:match("[^/]+$")] = e end
      assert.same({ "colon.lua", "hash.lua" }, (function() local t = {} for k in pairs(errors) do t[#t + 1] = k end table.sort(t) return t end)())
      assert.equals(3, errors["colon.lua"].line)
      assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/colon%.lua:3: reactor: 'name' must be a letter", errors["colon.lua"].message)
      assert.equals(4, errors["hash.lua"].line)
      assert.is_nil(errors["hash.lua"].message:find("scripts.lua", 1, true), errors["hash.lua"].message)
    end)

    it("are refused with ':' for every kind through the API too", function()
      local store = helpers.open(FAST)
      assert.matches("'name' must be", helpers.raises(store.projection, store, { name = "reactor:w", handlers = { A = print } }), nil, true)
      assert.matches("'name' must be", helpers.raises(store.reactor, store, { name = "a:b", handlers = { A = print } }), nil, true)
      assert.matches("'name' must be", helpers.raises(store.on, store, "A", print, { name = "h:x" }), nil, true)
      assert.matches("'name' must be", helpers.raises(chronicle.aggregate, { name = "a:b", commands = { c = print } }), nil, true)
      assert.matches("'name' must be", helpers.raises(store.reactor, store, { name = ("r"):rep(49), handlers = { A = print } }), nil, true)
    end)

    it("are unique across kinds on a store", function()
      local store = helpers.open(FAST)
      store:reactor { name = "welcome", handlers = { A = print } }
      assert.matches("already used by a reactor", helpers.raises(store.projection, store, { name = "welcome", handlers = { A = print } }), nil, true)
      assert.matches("already used by a reactor", helpers.raises(store.on, store, "A", print, { name = "welcome" }), nil, true)
      store:on("A", print, { name = "mailer" })
      assert.matches("already used by a handler", helpers.raises(store.reactor, store, { name = "mailer", handlers = { A = print } }), nil, true)
      store:reactor { name = "welcome", handlers = { B = print } }   -- the same kind replaces its own
    end)

    it("defined twice by two files is an error naming both, and the first file's definition keeps running", function()
      helpers.write_file(dir .. "/a.lua", counter_script("shared"))
      helpers.write_file(dir .. "/b.lua", counter_script("shared", "a forgery counting tens"))
      helpers.write_file(dir .. "/c.lua", reactor_script("shared"))
      local store = helpers.open(FAST)
      local scripts = chronicle.load_scripts(store, dir)
      assert.same({ "shared" }, names(scripts.last_report.added))
      assert.equals(dir .. "/a.lua", scripts.last_report.added[1].file)
      assert.equals(2, #scripts.errors)
      for i, file in ipairs({ "b.lua", "c.lua" }) do
        local e = scripts.errors[i]
        assert.equals(dir .. "/" .. file, e.file)
        assert.matches(dir .. "/" .. file, e.message, nil, true)
        assert.matches("already defined by " .. dir .. "/a.lua", e.message, nil, true)
      end
      assert.is_nil(store:registrations().reactors.shared)
      helpers.fill(store, "p-1", 2, "Ping")
      idle(store)
      assert.equals(2, store:view("shared"):get("n"), "the view holds the first file's rows, not the forgery's")
    end)

    it("stay registered when one of two files defining them is deleted, and reload() is consistent", function()
      helpers.write_file(dir .. "/a.lua", counter_script("shared"))
      helpers.write_file(dir .. "/b.lua", counter_script("shared"))
      local store = helpers.open(FAST)
      local scripts = chronicle.load_scripts(store, dir)
      assert.equals(1, #scripts.errors)
      os.remove(dir .. "/b.lua")
      local report = scripts:reload()
      assert.same({}, report.errors)
      assert.same({}, report.removed, "b.lua never defined anything")
      assert.is_table(store:registrations().projections.shared)
      helpers.fill(store, "p-1", 2, "Ping")
      idle(store)
      assert.equals(2, store:view("shared"):get("n"), "the view still updates")

      -- Now the other way round: the registered file goes, the other one takes the name in the same reload.
      helpers.write_file(dir .. "/b.lua", counter_script("shared"))
      assert.equals(1, #scripts:reload().errors)
      os.remove(dir .. "/a.lua")
      report = scripts:reload()
      assert.same({}, report.errors)
      assert.same({ "shared" }, names(report.removed))
      assert.same({ "shared" }, names(report.added))
      assert.equals(dir .. "/b.lua", report.added[1].file)
      assert.is_table(store:registrations().projections.shared)
      helpers.fill(store, "p-1", 1, "Ping")
      idle(store)
      assert.equals(3, store:view("shared"):get("n"))
    end)
  end)

  it("refuses scripts.repository(name) called with a dot, saying so", function()
    local store = helpers.open(FAST)
    local scripts = chronicle.load_scripts(store, FIXTURES)
    local err = helpers.raises(scripts.repository, "account")
    assert.matches("call it with a colon", err, nil, true)
    assert.is_nil(err:find("attempt to index", 1, true))
  end)

  it("refuses unknown options", function()
    local store = helpers.open(FAST)
    assert.matches("unknown option 'sandboxed'",
      helpers.raises(chronicle.load_scripts, store, FIXTURES, { sandboxed = true }), nil, true)
  end)

  it("reports a folder that does not exist", function()
    local store = helpers.open(FAST)
    local scripts = chronicle.load_scripts(store, helpers.tmpdir() .. "/missing")
    assert.equals(1, #scripts.errors)
  end)
end)

describe("store:projection(path)", function()
  after_each(helpers.cleanup)

  it("registers the projection a script file returns", function()
    local store = helpers.open(FAST)
    local p = assert(store:projection(FIXTURES .. "/balances.lua"))
    assert.equals("balances", p.name)
    assert(store:append("account-x", { { type = "Opened", data = { owner = "X" } },
                                       { type = "Deposited", data = { amount = 7 } } }))
    assert(store:run_projections())
    assert.same({ owner = "X", balance = 7 }, store:view("balances"):get("x"))
  end)
end)
