-- chronicle.sandbox, the C module under chronicle.scripts.sandbox: its own module (no LMDB),
-- and a generic host-callback proxy whose methods, and the field its handlers are looked up
-- in, the host names when it makes a sandbox.
local csandbox = require "chronicle.sandbox"
local helpers = require "helpers"

-- The output of `lua5.4 -e code` (stderr too), with the tree's paths the specs run with.
local function lua(code)
  local p = assert(io.popen("lua5.4 -e " .. helpers.quote(code) .. " 2>&1", "r"))
  local out = p:read("a")
  p:close()
  return out
end

describe("chronicle.sandbox", function()
  it("loads without LMDB or libpq, and without chronicle.core", function()
    local out = lua([[
      local sb = require("chronicle.sandbox").new()
      assert(sb:load("return { handlers = { twice = function(ev) return ev.n * 2 end } }"))
      io.write("result ", tostring(sb:call("twice", { n = 21 })), "\n")
      io.write("core ", tostring(package.loaded["chronicle.core"] ~= nil), "\n")
      local maps = assert(io.open("/proc/self/maps")):read("a")
      io.write("lmdb ", tostring(maps:find("liblmdb", 1, true) ~= nil), "\n")
      io.write("pq ", tostring(maps:find("libpq", 1, true) ~= nil), "\n")
    ]])
    assert.matches("result 42\n", out, 1, true)
    assert.matches("core false\n", out, 1, true)
    assert.matches("lmdb false\n", out, 1, true)
    assert.matches("pq false\n", out, 1, true)
  end)

  it("is no longer part of chronicle.core", function()
    local core = require "chronicle.core"
    assert.is_nil(core.sandbox_new)
    assert.is_nil(core.SANDBOX)
    assert.is_function(csandbox.new)
    assert.equals(csandbox.LIMITS, require("chronicle.scripts.sandbox").LIMITS)
  end)
end)

describe("the host-callback proxy", function()
  -- A host object with the methods fetch (key), store (key and value) and change (key and
  -- a function the host may run on a copy of the current value), and a log of the calls.
  local function host_object()
    local rows, log, obj = {}, {}, {}
    function obj:fetch(k) log[#log + 1] = "fetch " .. k; return rows[k] end
    function obj:store(k, v) log[#log + 1] = "store " .. k; rows[k] = v; return true end
    function obj:change(k, fn) log[#log + 1] = "change " .. k; rows[k] = fn(rows[k]); return rows[k] end
    -- Not named in the proxy: the script must not reach it.
    function obj:get(k) log[#log + 1] = "get " .. k; return "leaked" end
    return obj, rows, log
  end

  local PROXY = { { "fetch", "key" }, { "store", "value" }, { "change", "function" } }

  it("has the methods the host names, each handing the host what its kind says", function()
    local sb = csandbox.new({ handlers = "on", proxy = PROXY, time_ms = 60000 })
    local desc = assert(sb:load([[
      return { on = { go = function(p, ev)
        local names = {}
        for k in pairs(p) do names[#names + 1] = k end
        table.sort(names)
        p:store("a", { n = ev.n })
        local n = p:change("a", function(v) return { n = v.n + 1 } end).n
        return { names = table.concat(names, ","), n = n, fetched = p:fetch("a").n, get = p.get == nil }
      end } }
    ]]))
    assert.same({ "go" }, desc.on)
    assert.is_nil(desc.handlers)
    local obj, rows, log = host_object()
    local out, err = sb:call("go", { n = 1 }, obj)
    assert.is_nil(err)
    assert.same({ names = "change,fetch,store", n = 2, fetched = 2, get = true }, out)
    assert.same({ n = 2 }, rows.a)
    assert.same({ "store a", "change a", "fetch a" }, log)
    sb:close()
  end)

  it("names the method in its errors, and looks handlers up only in the field named", function()
    local sb = csandbox.new({ handlers = "on", proxy = PROXY, time_ms = 60000 })
    assert(sb:load([[
      return { handlers = { h = function() return 1 end },
               on = { bad = function(p) p:store("k", function() end) end,
                      host = function(p) return p:fetch("boom") end } }
    ]]))
    local obj = host_object()
    function obj:fetch() error("disk on fire") end
    local out, err = sb:call("h", {}, obj)
    assert.is_nil(out)
    assert.equals("no_handler", err.code)
    out, err = sb:call("bad", {}, obj)
    assert.is_nil(out)
    assert.equals("script_error", err.code)
    assert.matches("view:store value: cannot store a function", err.message, 1, true)
    out, err = sb:call("host", {}, obj)
    assert.is_nil(out)
    assert.matches("view:fetch: .*disk on fire", err.message)
    sb:close()
  end)

  it("without a proxy option hands the script a table with no methods", function()
    local sb = csandbox.new({ time_ms = 60000 })
    assert(sb:load("return { handlers = { h = function(p) return next(p) == nil end } }"))
    assert.is_true(sb:call("h", {}, host_object()))
    sb:close()
  end)

  it("refuses a proxy or handlers option it cannot use", function()
    local cases = {
      { { proxy = { "get" } }, "option 'proxy' must be a list of {name, kind}" },
      { { proxy = { { "get", "both" } } }, "proxy method 'get': kind must be \"key\", \"value\" or \"function\"" },
      { { proxy = { { "get", "key" }, { "get", "value" } } }, "proxy method 'get' is named twice" },
      { { proxy = { { "", "key" } } }, "a proxy method's name must be a string of 1 to 32 bytes" },
      { { proxy = { { ("x"):rep(33), "key" } } }, "a proxy method's name must be a string of 1 to 32 bytes" },
      { { handlers = "" }, "option 'handlers' must be a string of 1 to 32 bytes" },
    }
    local many = {}
    for i = 1, 17 do many[i] = { "m" .. i, "key" } end
    cases[#cases + 1] = { { proxy = many }, "option 'proxy' may name at most 16 methods" }
    for _, case in ipairs(cases) do
      local ok, msg = pcall(csandbox.new, case[1])
      assert.is_false(ok)
      assert.matches(case[2], msg, 1, true)
    end
  end)
end)
