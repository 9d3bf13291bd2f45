-- The sandbox: an untrusted script in its own Lua state, with a memory budget
-- and, per call, an instruction budget and a wall-clock deadline. The host and
-- the script share nothing but values, copied both ways.
local sandbox = require "chronicle.scripts.sandbox"
local core = require "chronicle.core"

local LIMITS = sandbox.LIMITS
local CHUNK = "@rules/test.lua"

-- Stops are tested against the instruction budget with a deadline far away,
-- so that a slow run (valgrind) stops for the same reason; the deadline tests
-- set their own. A hang would never end, so time bounds here are generous.
local FAR = 120000

-- A sandbox with `source` loaded (the test fails if it does not load).
local function loaded(source, opts)
  opts = opts or {}
  opts.name = opts.name or "rules/test.lua"
  opts.time_ms = opts.time_ms or FAR
  local sb = sandbox.new(opts)
  local desc, err = sb:load(source, CHUNK)
  assert(desc, err and err.message)
  return sb, desc
end

-- A script with a handler `h` whose body is `body`, next to a plain handler `double`.
local function with_handler(body, opts)
  return loaded("return { kind = 'reactor', name = 'test', handlers = {\n"
    .. "  h = function(ev)\n" .. body .. "\n  end,\n"
    .. "  double = function(ev) return { n = ev.n * 2 } end,\n} }", opts)
end

-- After an attempt, the same sandbox still runs a normal handler correctly.
local function still_works(sb)
  local out, err = sb:call("double", { n = 21 })
  assert.is_nil(err)
  assert.same({ n = 42 }, out)
end

-- Runs `h` and returns the error; asserts that it failed with `code`.
local function fails(sb, code, event)
  local out, err = sb:call("h", event or {})
  assert.is_nil(out)
  assert.is_table(err, "the call should have failed with " .. code)
  assert.equals(code, err.code, err.message)
  return err
end

-- Milliseconds fn takes.
local function ms(fn)
  local t = core.now()
  fn()
  return (core.now() - t) / 1e6
end

-- The host side of a projection's view: rows in a plain table.
local function memory_view()
  local rows, view = {}, {}
  function view:get(k) return rows[k] end
  function view:put(k, v) rows[k] = v end
  function view:update(k, fn)
    local v = fn(rows[k])
    rows[k] = v
    return v
  end
  function view:delete(k) rows[k] = nil end
  return view, rows
end

describe("sandbox.new", function()
  it("makes a sandbox with the default budgets: 16 MiB, 10,000,000 instructions and 1 s per call", function()
    assert.equals(16 * 1024 * 1024, LIMITS.memory)
    assert.equals(10000000, LIMITS.instructions)
    assert.equals(1000, LIMITS.time_ms)
    local sb = sandbox.new()
    local stats = sb:stats()
    assert.equals(LIMITS.memory, stats.memory_limit)
    assert.is_true(stats.memory > 0 and stats.memory < 64 * 1024, "a fresh state holds " .. stats.memory .. " bytes")
    assert.matches("chronicle sandbox %(sandbox%)", tostring(sb))
    sb:close()
  end)

  it("checks its options", function()
    assert.has_error(function() sandbox.new({ memroy = 1 }) end,
      "sandbox.new: unknown option 'memroy' (allowed: instructions, memory, name, time_ms)")
    assert.has_error(function() sandbox.new({ memory = 1024 }) end)
    assert.has_error(function() sandbox.new({ instructions = 1.5 }) end)
    assert.has_error(function() sandbox.new({ time_ms = 0 }) end)
    assert.has_error(function() sandbox.new({ name = 42 }) end,
      "sandbox.new: option 'name' must be a string, got number")
    assert.has_error(function() sandbox.new("big") end)
  end)

  it("can be closed twice, and is unusable after", function()
    local sb = with_handler("return 1")
    sb:close()
    sb:close()
    assert.matches("closed", tostring(sb))
    assert.has_error(function() sb:call("h", {}) end, "attempt to use a closed sandbox")
    assert.has_error(function() sb:load("return {}") end, "attempt to use a closed sandbox")
  end)

  it("closes at the end of a <close> scope", function()
    local kept
    do
      local sb <close> = with_handler("return 1")
      kept = sb
    end
    assert.has_error(function() kept:stats() end, "attempt to use a closed sandbox")
  end)
end)

describe("sb:load", function()
  it("returns a plain description: scalar fields, `from`, and the sorted handler names", function()
    local sb, desc = loaded([[
      local helper = function() end
      return {
        kind = "projection", name = "balances", version = 3, live = true,
        from = { category = "account", types = { "Deposited", "Withdrawn" } },
        options = { ignored = true },   -- tables other than `from` are not described
        init = function(view) end,
        handlers = { Withdrawn = helper, Deposited = helper, Closed = helper },
      }
    ]])
    assert.same({
      kind = "projection", name = "balances", version = 3, live = true,
      from = { category = "account", types = { "Deposited", "Withdrawn" } },
      handlers = { "Closed", "Deposited", "Withdrawn" },
    }, desc)
    sb:close()
  end)

  it("reports a syntax error with the chunk name and line", function()
    local sb = sandbox.new({ name = "rules/bad.lua" })
    local desc, err = sb:load("return {\n  handlers = { x = function( end }\n}", "@rules/bad.lua")
    assert.is_nil(desc)
    assert.equals("syntax_error", err.code)
    assert.equals("rules/bad.lua", err.script)
    assert.matches("rules/bad.lua:2:", err.message)
  end)

  it("reports a runtime error with the line, and names the chunk after the script by default", function()
    local sb = sandbox.new({ name = "rules/boom.lua" })
    local _, err = sb:load("local x = nil\nreturn x.y")
    assert.equals("script_error", err.code)
    assert.matches("^rules/boom.lua: load: rules/boom.lua:2: attempt to index a nil value", err.message)
  end)

  it("wants a definition table back", function()
    local sb = sandbox.new()
    local _, err = sb:load("return 42")
    assert.equals("bad_definition", err.code)
    assert.matches("must return a definition table, got number", err.message)
    _, err = sb:load("return { handlers = 'all' }")
    assert.equals("bad_definition", err.code)
    _, err = sb:load("return { from = { f = function() end } }")
    assert.equals("bad_definition", err.code)
    assert.matches("cannot store a function", err.message)
  end)

  it("refuses bytecode", function()
    local sb = sandbox.new()
    local desc, err = sb:load(string.dump(function() return { handlers = {} } end))
    assert.is_nil(desc)
    assert.equals("syntax_error", err.code)
    assert.matches("binary chunk", err.message)
  end)

  it("stops a script that loops while loading", function()
    local sb = sandbox.new({ instructions = 100000 })
    local _, err = sb:load("while true do end")
    assert.equals("budget_exceeded", err.code)
    assert.truthy(sb:load("return { handlers = {} }"))
  end)
end)

describe("a projection-style script", function()
  local source = [[
    return {
      kind = "projection", name = "balances",
      init = function(view) view:put("opened", 0) end,
      handlers = {
        Deposited = function(view, ev)
          view:update(ev.stream, function(balance) return (balance or 0) + ev.data.amount end)
        end,
        Closed = function(view, ev)
          local balance = view:get(ev.stream)
          view:delete(ev.stream)
          view:put("closed:" .. ev.stream, { balance = balance, at = ev.position })
          return balance
        end,
        Inspect = function(view, ev)
          local names = {}
          for k, v in pairs(view) do names[#names + 1] = k .. ":" .. type(v) end
          table.sort(names)
          return { names = names, mt = getmetatable(view) == nil, ev_mt = getmetatable(ev) == nil }
        end,
        Keep = function(view, ev) KEPT = view end,
        UseKept = function(view, ev) return KEPT:get("x") end,
        Fail = function(view, ev)
          local ok, err = pcall(view.put, view, "k", "v")
          return { ok = ok, err = err }
        end,
      },
    }
  ]]

  it("reads and writes the host's view through the proxy", function()
    local sb = loaded(source)
    local view, rows = memory_view()
    assert.is_nil(sb:call_field("init", nil, view))
    assert.equals(0, rows.opened)
    assert.is_nil(sb:call("Deposited", { stream = "acct-1", data = { amount = 5 } }, view))
    assert.is_nil(sb:call("Deposited", { stream = "acct-1", data = { amount = 7 } }, view))
    assert.equals(12, rows["acct-1"])
    assert.equals(12, sb:call("Closed", { stream = "acct-1", position = 9 }, view))
    assert.is_nil(rows["acct-1"])
    assert.same({ balance = 12, at = 9 }, rows["closed:acct-1"])
    sb:close()
  end)

  it("copies values both ways: neither side holds the other's tables", function()
    local sb = loaded([[
      return { handlers = {
        Store = function(ev) SAVED = ev; return ev.data end,
        Read = function(ev) return SAVED.data end,
      } }
    ]])
    local ev = { data = { list = { 1, 2.5, "x" }, flag = false } }
    local out = sb:call("Store", ev)
    assert.same(ev.data, out)
    assert.are_not.equal(ev.data, out)
    ev.data.list[1] = "changed in the host"
    out.flag = "changed in the host"
    assert.same({ list = { 1, 2.5, "x" }, flag = false }, sb:call("Read", {}))
    assert.equals("float", math.type(sb:call("Read", {}).list[2]))
    sb:close()
  end)

  it("gives the proxy nothing but its four methods, and no metatables", function()
    local sb = loaded(source)
    local out = sb:call("Inspect", {}, memory_view())
    assert.same({ names = { "delete:function", "get:function", "put:function", "update:function" },
                  mt = true, ev_mt = true }, out)
    sb:close()
  end)

  it("refuses a proxy kept from an earlier call", function()
    local sb = loaded(source)
    assert.is_nil(sb:call("Keep", {}, memory_view()))
    local _, err = sb:call("UseKept", {}, memory_view())
    assert.equals("script_error", err.code)
    assert.matches("this view belongs to a call that has ended", err.message)
    sb:close()
  end)

  it("raises the host view's errors inside the script, where pcall can catch them", function()
    local sb = loaded(source)
    local view = memory_view()
    function view.put() error({ code = "readonly", message = "the view is read-only" }) end
    local out = sb:call("Fail", {}, view)
    assert.is_false(out.ok)
    assert.matches("view:put: .*table", out.err)
    function view.put() error("disk on fire") end
    out = sb:call("Fail", {}, view)
    assert.matches("view:put: .*disk on fire", out.err)
    sb:close()
  end)

  it("lets update functions nest, and ends runaway nesting with an error", function()
    local sb = loaded([[
      return { handlers = { Nest = function(view, ev)
        local function go(n)
          if n == 0 then return 0 end
          return view:update("k" .. n, function(v) return go(n - 1) + 1 end)
        end
        return go(ev.n)
      end } }
    ]])
    local view, rows = memory_view()
    assert.equals(10, sb:call("Nest", { n = 10 }, view))
    assert.equals(10, rows.k10)
    assert.equals(1, rows.k1)
    local _, err = sb:call("Nest", { n = 100000 }, view)
    assert.equals("script_error", err.code)          -- a C stack overflow, deep down
    assert.matches("view:update: ", err.message)
    assert.equals(3, sb:call("Nest", { n = 3 }, view))
    sb:close()
  end)

  it("hands the host an update function that works only while that update runs", function()
    local sb = loaded([[
      return { handlers = { Twice = function(view, ev)
        view:update("a", function(v) return (v or 0) + 1 end)
        local ok, err = pcall(view.put, view, "b", 2)
        return err
      end } }
    ]])
    local view, rows = memory_view()
    local kept
    function view:update(k, fn)
      kept = fn
      rows[k] = fn(rows[k])
      return rows[k]
    end
    function view:put() return kept(41) end
    assert.matches("works only while its update runs", sb:call("Twice", {}, view))
    assert.equals(1, rows.a)
    assert.has_error(function() kept(1) end)
    sb:close()
  end)

  it("refuses to copy what cannot be stored, in either direction", function()
    local sb = loaded([[
      return { handlers = {
        PutFunction = function(view, ev) view:put("k", function() end) end,
        GetFunction = function(view, ev) return view:get("k") end,
      } }
    ]])
    local view = memory_view()
    local _, err = sb:call("PutFunction", {}, view)
    assert.matches("view:put value: cannot store a function", err.message)
    function view:get() return print end
    _, err = sb:call("GetFunction", {}, view)
    assert.matches("view:get result: cannot store a function", err.message)
    sb:close()
  end)

  it("cannot be called or closed again from inside its own call", function()
    local sb = loaded(source)
    local view = memory_view()
    function view.put() sb:call("Inspect", {}, view) end
    local out = sb:call("Fail", {}, view)
    assert.matches("is busy", out.err)
    function view.put() sb:close() end
    out = sb:call("Fail", {}, view)
    assert.matches("cannot be closed during its own call", out.err)
    assert.is_table(sb:call("Inspect", {}, view).names)
    sb:close()
  end)
end)

describe("what crosses to the host", function()
  it("sb:copied() is what the last call copied out, counted per copy", function()
    local sb = with_handler([[
      if ev.n == 1 then return ("x"):rep(1000) end
      if ev.n == 2 then local row = ("y"):rep(1000) return { row, row, row } end
      return nil]])
    assert.equals(("x"):rep(1000), sb:call("h", { n = 1 }))
    local one = sb:copied()
    assert.is_true(one >= 1000 and one < 1100, "a 1000-byte string counted " .. one)
    assert.same({ ("y"):rep(1000), ("y"):rep(1000), ("y"):rep(1000) }, sb:call("h", { n = 2 }))
    assert.is_true(sb:copied() >= 3000, "a string referenced three times is copied three times")
    assert.is_nil(sb:call("h", { n = 3 }))
    assert.is_true(sb:copied() < 100)
    local view = memory_view()
    local vsb = loaded([[return { handlers = { h = function(view, ev) view:put("k", ("z"):rep(5000)) end } }]])
    vsb:call("h", {}, view)
    assert.is_true(vsb:copied() >= 5000, "a view row counts too")
    sb:close()
    vsb:close()
  end)

  it("refuses a result over the memory budget, counted in the host, and then works again", function()
    -- One table referenced 60,000 times: 1 MB in the script, 60,000 tables in the host.
    local sb = with_handler([[local e, t = {}, {} for i = 1, 60000 do t[i] = e end return t]], { memory = 4 << 20 })
    local err = fails(sb, "memory_exceeded")
    assert.matches("copying the result out: result%[%d+%]: too large", err.message)
    assert.matches("at most 4194304 bytes", err.message)
    still_works(sb)
    sb:close()
  end)
end)

describe("a reactor-style script", function()
  local source = [[
    return {
      kind = "reactor", name = "transfers",
      handlers = {
        TransferRequested = function(ev)
          local d = ev.data
          return {
            { stream = "account-" .. d.from, type = "Debited", data = { amount = d.amount, transfer = ev.id } },
            { stream = "account-" .. d.to, type = "Credited", data = { amount = d.amount, transfer = ev.id } },
          }
        end,
        Broken = function(ev)
          local t = nil
          return t.field
        end,
        Function = function(ev) return { f = print or function() end } end,
      },
    }
  ]]

  it("returns events for the host to append", function()
    local sb = loaded(source)
    local out = sb:call("TransferRequested", { id = "t-1", data = { from = "a", to = "b", amount = 10 } })
    assert.same({
      { stream = "account-a", type = "Debited", data = { amount = 10, transfer = "t-1" } },
      { stream = "account-b", type = "Credited", data = { amount = 10, transfer = "t-1" } },
    }, out)
    sb:close()
  end)

  it("reports a failing handler with the script, the handler, the event and the line", function()
    local sb = loaded(source)
    local _, err = sb:call("Broken", { type = "Broken", stream = "s-1", position = 17 })
    assert.equals("script_error", err.code)
    assert.equals("rules/test.lua", err.script)
    assert.equals("Broken", err.handler)
    assert.matches("handler 'Broken'", err.message)
    assert.matches("type=Broken, stream=s%-1, position=17", err.message)
    assert.matches("rules/test.lua:13: attempt to index a nil value %(local 't'%)$", err.message)
    assert.is_true(core.is_error(err))
    sb:close()
  end)

  it("reports a missing handler, and a result that cannot be copied out", function()
    local sb = loaded(source)
    local _, err = sb:call("Nope", {})
    assert.equals("no_handler", err.code)
    _, err = sb:call("Function", {})
    assert.equals("script_error", err.code)
    assert.matches("result.f: cannot store a function", err.message)
    assert.has_error(function() sb:call("TransferRequested", { f = print }) end)
    sb:close()
  end)
end)

describe("escape attempts", function()
  it("find no io, os.execute, require, package, debug, dofile, loadfile, string.dump, collectgarbage", function()
    local sb = with_handler([[
      local names = {}
      for k in pairs(_G) do names[#names + 1] = k end
      table.sort(names)
      local os_names = {}
      for k in pairs(os) do os_names[#os_names + 1] = k end
      table.sort(os_names)
      return { globals = names, os = os_names, dump = string.dump, absent = io == nil and require == nil
        and package == nil and debug == nil and dofile == nil and loadfile == nil and collectgarbage == nil
        and os.execute == nil and os.getenv == nil and os.exit == nil and os.remove == nil and print == nil
        and coroutine == nil }
    ]])
    local out = sb:call("h", {})
    assert.same({ "_G", "_VERSION", "assert", "error", "getmetatable", "ipairs", "load", "math", "next", "os",
                  "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset", "select", "setmetatable", "string",
                  "table", "tonumber", "tostring", "type", "utf8", "xpcall" }, out.globals)
    assert.same({ "clock", "date", "time" }, out.os)
    assert.is_nil(out.dump)
    assert.is_true(out.absent)
    still_works(sb)
  end)

  it("cannot load bytecode, even when the host hands it in as event data", function()
    local sb = with_handler([[
      local f, err = load(ev.chunk)
      local g, err2 = load(ev.chunk, "x", "b")
      return { loaded = f ~= nil or g ~= nil, err = err, err2 = err2 }
    ]])
    local out = sb:call("h", { chunk = string.dump(function() return os.execute end) })
    assert.is_false(out.loaded)
    assert.matches("attempt to load a binary chunk", out.err)
    assert.matches("attempt to load a binary chunk", out.err2)
    still_works(sb)
  end)

  it("load text, with the script's own globals as the default environment", function()
    local sb = with_handler([[
      VALUE = 41
      return load("return VALUE + 1")()
    ]])
    assert.equals(42, sb:call("h", {}))
  end)

  it("changing the string metatable affects neither another sandbox nor the host", function()
    local a = with_handler([[
      getmetatable("").__index = { upper = function() return "hijacked" end }
      return ("x"):upper()
    ]])
    local b = with_handler([[ return ("x"):upper() ]])
    assert.equals("hijacked", a:call("h", {}))
    assert.equals("X", b:call("h", {}))
    assert.equals("X", ("x"):upper())
    assert.equals(string, getmetatable("").__index)
    still_works(a)
  end)

  it("reach no host value through globals, upvalues or metatables", function()
    _G.chronicle_secret = "host only"
    local sb = with_handler([[
      local found = {}
      local function look(name, v) if v ~= nil then found[#found + 1] = name end end
      look("chronicle", _G.chronicle)
      look("chronicle_secret", rawget(_G, "chronicle_secret"))
      look("require", rawget(_G, "require"))
      look("getfenv", rawget(_G, "getfenv"))
      look("setfenv", rawget(_G, "setfenv"))
      look("event metatable", getmetatable(ev))
      look("data metatable", getmetatable(ev.data))
      look("_G metatable", getmetatable(_G))
      look("string.__index is not string", getmetatable("").__index ~= string or nil)
      look("_ENV is not _G", _ENV ~= _G or nil)
      return found
    ]])
    local out = sb:call("h", { data = setmetatable({ x = 1 }, { __index = _G }) })
    _G.chronicle_secret = nil
    assert.same({}, out)
    still_works(sb)
  end)

  it("setmetatable(_G, nil) and rawset change only the script's own state", function()
    local sb = with_handler([[
      setmetatable(_G, nil)
      rawset(_G, "string", nil)
      rawset(_G, "x", 1)
      return type(string)
    ]])
    assert.equals("nil", sb:call("h", {}))
    assert.equals("table", type(string))
    assert.is_nil(rawget(_G, "x"))
    still_works(sb)
  end)

  describe("budgets", function()
    it("stop an endless loop", function()
      local sb = with_handler("local n = 0\nwhile true do n = n + 1 end")
      local err = fails(sb, "budget_exceeded", { type = "Spin", position = 3 })
      assert.matches("^rules/test.lua: handler 'h' %(event type=Spin, position=3%): "
        .. "instruction budget of 10000000 exceeded at rules/test.lua:4$", err.message)
      still_works(sb)
    end)

    it("stop an endless loop inside pcall", function()
      local sb = with_handler("pcall(function() while true do end end) return 'escaped'")
      fails(sb, "budget_exceeded")
      still_works(sb)
    end)

    it("stop a loop of pcalls", function()
      local sb = with_handler("while true do pcall(function() while true do end end) end")
      fails(sb, "budget_exceeded")
      still_works(sb)
    end)

    it("stop a loop inside an xpcall message handler", function()
      local sb = with_handler([[
        while true do
          xpcall(function() error("x") end, function() while true do end end)
        end
      ]])
      fails(sb, "budget_exceeded")
      still_works(sb)
    end)

    it("stop loops where the script cannot yield: comparators, callbacks, metamethods, __close", function()
      for _, body in ipairs({
        "table.sort({ 3, 2, 1 }, function(a, b) while true do end end)",
        "while true do pcall(table.sort, { 3, 2, 1 }, function() while true do end end) end",
        "return ('x'):gsub('.', function() while true do end end)",
        "return tostring(setmetatable({}, { __tostring = function() while true do end end }))",
        "return load(function() while true do end end)",
        "local x <close> = setmetatable({}, { __close = function() while true do end end })",
      }) do
        local sb = with_handler(body)
        fails(sb, "budget_exceeded")
        still_works(sb)
      end
    end)

    it("stop a call at its wall-clock deadline", function()
      local sb = with_handler("while true do end", { time_ms = 50, instructions = 1 << 50 })
      local err
      local took = ms(function() err = fails(sb, "timeout") end)
      assert.matches("deadline of 50 ms exceeded", err.message)
      assert.is_true(took < 10000, "stopped after " .. took .. " ms")
      still_works(sb)
    end)

    it("stop C work the count hook cannot see, at the deadline", function()
      local sb = with_handler([[
        local s = string.rep("x", 2000000)
        while true do local t = s .. s; t = s:upper() end
      ]], { time_ms = 100, instructions = 1 << 50 })
      local took = ms(function() fails(sb, "timeout") end)
      assert.is_true(took < 10000, "stopped after " .. took .. " ms")
      still_works(sb)
    end)

    it("count the instructions of each call on its own", function()
      local sb = with_handler("for i = 1, 600000 do end", { instructions = 1000000 })
      for _ = 1, 3 do assert.is_nil(select(2, sb:call("h", {}))) end
      assert.is_true(sb:stats().instructions >= 600000)
    end)
  end)

  describe("pattern functions", function()
    it("stop a pathological match", function()
      -- (it is the instruction budget that stops it, not time: the spec file's timeout guards a hang)
      local sb = with_handler([[ return string.rep("a", 30000):find(("a*"):rep(20) .. "b") ]])
      fails(sb, "budget_exceeded")
      still_works(sb)
    end)

    it("count their steps against the instruction budget, even inside pcall and gmatch", function()
      for _, body in ipairs({
        [[ while true do pcall(string.match, ("a"):rep(5000), ("a-"):rep(10) .. "b") end ]],
        [[ for w in ("a"):rep(3000):gmatch(("a*"):rep(10) .. "b") do end ]],
        [[ return ("x"):rep(100000):gsub("(x*)y", "%1") ]],
        [[ return ("("):rep(100000):find("%b()") ]],
      }) do
        local sb = with_handler(body)
        fails(sb, "budget_exceeded")
        still_works(sb)
      end
    end)

    it("refuse patterns longer than LIMITS.max_pattern bytes (plain find has no cap)", function()
      local sb = with_handler([[
        local long = ("a"):rep(ev.n + 1)
        local ok, err = pcall(string.match, long, long)
        return { ok = ok, err = err, plain = long:find(long, 1, true) }
      ]])
      local out = sb:call("h", { n = LIMITS.max_pattern })
      assert.is_false(out.ok)
      assert.matches("pattern too long", out.err)
      assert.equals(1, out.plain)
    end)

    it("match exactly as the standard library does", function()
      -- Runs in the host and in the sandbox; both must give the same results and errors.
      local probe = [==[
        local cases = {
          { "hello world", "o" }, { "hello world", "l+" }, { "hello world", "^h" }, { "hello", "^e" },
          { "hello", "o$" }, { "hello$", "o$$" }, { "hello", "(h)(e)" }, { "hello", "()ll()" },
          { "  trim me  ", "^%s*(.-)%s*$" }, { "k=v; k2=v2", "(%w+)=(%w+)" }, { "THE (quick) fox", "%((%a+)%)" },
          { "f(a(b)c)d", "%b()" }, { "THE (quick) fox", "%f[%a]%a+" }, { "abcabc", "(abc)%1" },
          { "aaa", "a-b" }, { "aaab", "a-b" }, { "[x]", "[]]" }, { "a-b", "[a%-]+" }, { "x^y", "[%^x]+" },
          { "abc", "[^a]+" }, { "2024-01-15", "(%d+)-(%d+)-(%d+)" }, { "", ".*" }, { "abc", "" },
          { "abc", "x*" }, { "a.b", "%." }, { "a+b", "a+b" }, { "h\195\169llo", "[\128-\255]+" },
          { "a\0b", "%z" }, { "a\0b", "[%z]" }, { "a\0b", "\0" }, { "one two  three", "%S+" },
          { "CamelCaseWord", "%u%l*" }, { "0x1F, 0xab", "0x(%x+)" }, { "a,b,,c", "([^,]*)" },
          { "abc", "a?b?c?d?" }, { "aaa", "a?a?a?a" }, { "((a)(b))", "%((%b())%)" },
          { "xyz", "[x-z]+" }, { "x-z", "[x%-z]+" }, { "a]b", "[]a]+" }, { "tab\there", "%c" },
          { "Hi!", "%p" }, { "Hi!", "%P+" }, { "abc", "()" }, { "hello", "(l)(l)" },
          { "abc", "(" }, { "abc", "%" }, { "abc", "[a" }, { "abc", "%b" }, { "abc", "%ba" },
          { "abc", "%f" }, { "abc", "%fa" }, { "abc", "(()" }, { "abc", "%1" }, { "abc", ")" },
          { "abc", "(a)%2" }, { "abc", "[%" }, { "abc", "(a%1)" }, { "aa", "()%1" },
        }
        local out = {}
        local function record(...)
          local r = table.pack(...)
          if r[1] == false and type(r[2]) == "string" then r[2] = r[2]:gsub("^[^:]*:%d+: ", "") end
          out[#out + 1] = r
        end
        local function count(s, p)
          local n = 0
          for a, b in s:gmatch(p) do n = n + 1; if n > 50 then break end; record(a, b) end
          return n
        end
        for _, c in ipairs(cases) do
          local s, p = c[1], c[2]
          record(pcall(string.find, s, p))
          record(pcall(string.find, s, p, 2))
          record(pcall(string.find, s, p, -2))
          record(pcall(string.find, s, p, 1, true))
          record(pcall(string.match, s, p))
          record(pcall(string.match, s, p, 3))
          record(pcall(count, s, p))
          record(pcall(string.gsub, s, p, "<%0>"))
          record(pcall(string.gsub, s, p, "[%1]"))
          record(pcall(string.gsub, s, p, "%%", 2))
          record(pcall(string.gsub, s, p, function(a) return a and #tostring(a) % 2 == 0 and "E" or nil end))
          record(pcall(string.gsub, s, p, { a = "A", h = false, l = 7 }))
        end
        record(pcall(string.gsub, "abc", "b", "%"))
        record(pcall(string.gsub, "abc", "b", "%x"))
        record(pcall(string.gsub, "abc", "b", {}, 0))
        record(pcall(string.gsub, "abc", "b", function() return {} end))
        record(pcall(string.gsub, "hello", "", "-"))
        record(pcall(string.gsub, "hello world", "^h", "H"))
        record(pcall(string.gmatch("hello", "^h")))
        record(pcall(string.gmatch("hello", "l", 4)))
        record(pcall(string.gmatch("hello", "l", 10)))
        record(pcall(string.find, "hello", "l", 10))
        record(pcall(string.find, "hello", "", 6))
        record(pcall(string.find, "hello", "", 7))
        return out
      ]==]
      local expected = assert(load(probe))()
      local sb = with_handler(probe)
      local got, err = sb:call("h", {})
      assert.is_nil(err)
      assert.equals(#expected, #got)
      for i = 1, #expected do assert.same(expected[i], got[i], "result " .. i) end
    end)
  end)

  describe("memory", function()
    it("string.rep cannot build gigabytes; repeating nothing costs nothing", function()
      local sb = with_handler([[ return #string.rep(ev.s, ev.n) ]])
      fails(sb, "memory_exceeded", { s = "x", n = 1 << 31 })
      fails(sb, "memory_exceeded", { s = "xy", n = 1 << 62 })
      assert.equals(0, sb:call("h", { s = "", n = 1 << 62 }))
      still_works(sb)
    end)

    it("a table-growth bomb ends at the memory budget", function()
      local sb = with_handler("local t = {} while true do t[#t + 1] = { #t } end", { memory = 4 << 20 })
      local err = fails(sb, "memory_exceeded")
      assert.matches("memory budget of 4194304 bytes exceeded", err.message)
      assert.is_true(sb:stats().memory <= 4 << 20)
      still_works(sb)
    end)

    it("a script that keeps what it grabbed hurts only itself", function()
      local greedy = with_handler("HOARD = HOARD or {} while true do HOARD[#HOARD + 1] = ('x'):rep(1000) .. #HOARD end",
                                  { memory = 1 << 20 })
      fails(greedy, "memory_exceeded")
      local _, err = greedy:call("double", { n = 1 })
      assert.is_true(err == nil or err.code == "memory_exceeded")
      local other = with_handler("return 1", { memory = 1 << 20 })
      still_works(other)
    end)

    it("setmetatable refuses __gc, and a __gc added later never runs", function()
      local sb = with_handler([[
        setmetatable({}, { __gc = function() while true do end end })
      ]])
      local err = fails(sb, "script_error")
      assert.matches("__gc is not allowed", err.message)
      local later = loaded([[
        return { handlers = {
          arm = function()
            for i = 1, 1000 do
              local mt = {}
              setmetatable({}, mt)
              mt.__gc = function() FINALISED = true; while true do end end
            end
          end,
          churn = function()
            for i = 1, 20000 do local t = { i, tostring(i) } end
            return FINALISED == nil
          end,
        } }
      ]])
      assert.is_nil(select(2, later:call("arm", {})))
      for _ = 1, 5 do assert.is_true(later:call("churn", {})) end
      local took = ms(function() later:close() end)
      assert.is_true(took < 10000, "closing took " .. took .. " ms")
    end)
  end)

  describe("errors", function()
    it("a huge error message is cut to LIMITS.max_message bytes", function()
      local sb = with_handler("error(string.rep('x', 1000000))")
      local err = fails(sb, "script_error")
      assert.is_true(#err.message < LIMITS.max_message + 200, #err.message .. " bytes")
      assert.matches("%(1000018 bytes in all%)$", err.message)
      still_works(sb)
    end)

    it("error objects are described without running their metamethods", function()
      local sb = with_handler([[
        error(setmetatable({ message = "plain text" }, { __tostring = function() while true do end end }))
      ]])
      local err = fails(sb, "script_error")
      assert.matches("plain text$", err.message)
      sb = with_handler("error(setmetatable({}, { __index = function() while true do end end }))")
      err = fails(sb, "script_error")
      assert.matches("error object is a table value", err.message)
      still_works(sb)
    end)
  end)

  describe("table functions", function()
    it("pay for the elements they touch, so C metamethods cannot make them loop forever", function()
      for _, body in ipairs({
        "local t = setmetatable({}, { __index = table.concat }) return table.concat(t, '', 1, 1 << 50)",
        "local t = setmetatable({}, { __len = function() return 1 << 50 end, __index = rawequal, __newindex = rawequal }) table.remove(t, 1)",
        "local t = setmetatable({}, { __len = function() return 1 << 50 end, __index = rawequal, __newindex = rawequal }) table.insert(t, 1, 1)",
        "table.move({}, 1, 1 << 60, 2)",
        "return table.unpack({}, 1, 1e7)",
        "local t = setmetatable({}, { __len = function() return 1 << 30 end, __index = rawequal }) table.sort(t, rawequal)",
      }) do
        local sb = with_handler(body)
        fails(sb, "budget_exceeded")
        still_works(sb)
      end
    end)

    it("still work as usual", function()
      local sb = with_handler([[
        local t = { 5, 3, 4 }
        table.insert(t, 1)
        table.insert(t, 1, 9)
        local removed = table.remove(t, 2)
        table.sort(t)
        local sorted_mt = setmetatable({ 3, 1, 2 }, {})
        table.sort(sorted_mt, function(a, b) return a > b end)
        return { t = t, removed = removed, joined = table.concat(t, ","), moved = table.move({ 1, 2, 3 }, 1, 3, 2),
                 unpacked = { table.unpack({ 1, 2, 3 }, 2) }, desc = { table.unpack(sorted_mt) } }
      ]])
      assert.same({ t = { 1, 3, 4, 9 }, removed = 5, joined = "1,3,4,9", moved = { 1, 1, 2, 3 },
                    unpacked = { 2, 3 }, desc = { 3, 2, 1 } }, sb:call("h", {}))
    end)
  end)
end)
