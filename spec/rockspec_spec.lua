-- The rockspec is how users install chronicle: it must list every source file, build with
-- LuaRocks' builtin backend, and give a module that works with nothing from this tree on the path.

local function repo_root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/[^/]*$") or "."
  local p = assert(io.popen("cd '" .. dir .. "' && pwd"))
  local abs = p:read("l")
  p:close()
  return abs
end

local ROOT = repo_root()
local ROCKSPEC = "rockspec/chronicle-scm-1.rockspec"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its output and whether it exited 0.
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

local function files_under(dir, pattern)
  local out = run("cd " .. quote(ROOT) .. " && find " .. dir .. " -type f -name '" .. pattern ..
                  "' -not -path '*/.*' | LC_ALL=C sort")
  local files = {}
  for line in out:gmatch("[^\n]+") do files[#files + 1] = line end
  return files
end

local function load_rockspec()
  local env = {}
  local chunk = assert(loadfile(ROOT .. "/" .. ROCKSPEC, "t", env))
  chunk()
  return env
end

local function module_name_of(file)
  local name = file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
  return name
end

describe("the rockspec", function()
  local spec = load_rockspec()
  local modules = spec.build and spec.build.modules or {}

  it("declares the package, the Lua version and the builtin build", function()
    assert.equal("chronicle", spec.package)
    assert.equal("scm-1", spec.version)
    assert.same({ "lua >= 5.4, < 5.5", "lua-cjson", "argparse" }, spec.dependencies)
    assert.same({ chronicle = "bin/chronicle" }, spec.build.install.bin)
    assert.equal("builtin", spec.build.type)
    for _, dep in ipairs({ "LMDB", "MSGPACK", "XXHASH" }) do
      assert.is_table(spec.external_dependencies[dep], "external dependency " .. dep)
    end
  end)

  it("lists every lua/chronicle/*.lua file as its module", function()
    local files = files_under("lua/chronicle", "*.lua")
    assert.is_true(#files >= 2, "no Lua files found under lua/chronicle")
    local missing = {}
    for _, file in ipairs(files) do
      local name = module_name_of(file)
      if modules[name] ~= file then
        missing[#missing + 1] = ('["%s"] = "%s"'):format(name, file)
      end
    end
    assert(#missing == 0, ROCKSPEC .. " does not install these Lua files (run `make rockspec`, or add to build.modules):\n  " ..
           table.concat(missing, ",\n  "))
  end)

  it("installs every file of the web console", function()
    local listed = {}
    for _, file in pairs(spec.build.install.lua or {}) do listed[file] = true end
    local missing = {}
    for _, file in ipairs(files_under("lua/chronicle/server/web", "*")) do
      if not listed[file] then missing[#missing + 1] = file end
    end
    assert(#missing == 0, ROCKSPEC .. " does not install these console files (run `make rockspec`):\n  " ..
           table.concat(missing, ",\n  "))
  end)

  it("builds chronicle.core from every csrc/**/*.c file outside csrc/postgres/, csrc/crypto/ and csrc/sandbox/", function()
    local listed = {}
    for _, src in ipairs(modules["chronicle.core"].sources) do listed[src] = true end
    local missing = {}
    for _, file in ipairs(files_under("csrc", "*.c")) do
      if not listed[file] and not file:find("^csrc/postgres/") and not file:find("^csrc/crypto/")
         and not file:find("^csrc/sandbox/") then
        missing[#missing + 1] = '"' .. file .. '"'
      end
    end
    assert(#missing == 0, ROCKSPEC .. " does not compile these C files (run `make rockspec`, or add " ..
           "to build.modules[\"chronicle.core\"].sources):\n  " .. table.concat(missing, ",\n  "))
  end)

  it("builds chronicle.postgres from every csrc/postgres/*.c file, and chronicle.core from none", function()
    assert.is_table(modules["chronicle.postgres"], "no chronicle.postgres module")
    local listed = {}
    for _, src in ipairs(modules["chronicle.postgres"].sources) do listed[src] = true end
    local missing = {}
    for _, file in ipairs(files_under("csrc/postgres", "*.c")) do
      if not listed[file] then missing[#missing + 1] = '"' .. file .. '"' end
    end
    assert(#missing == 0, ROCKSPEC .. " does not compile these C files into chronicle.postgres (run `make rockspec`):\n  " ..
           table.concat(missing, ",\n  "))
    for _, src in ipairs(modules["chronicle.core"].sources) do
      assert.is_nil(src:find("^csrc/postgres/"), src .. " is compiled into chronicle.core, which must not need libpq")
    end
  end)

  it("builds chronicle.crypto from every csrc/crypto/*.c file, and chronicle.core from none (no libsodium)", function()
    assert.is_table(modules["chronicle.crypto"], "no chronicle.crypto module")
    local listed = {}
    for _, src in ipairs(modules["chronicle.crypto"].sources) do listed[src] = true end
    for _, file in ipairs(files_under("csrc/crypto", "*.c")) do
      assert.is_true(listed[file] == true, file .. " is not compiled into chronicle.crypto (run `make rockspec`)")
    end
    for _, src in ipairs(modules["chronicle.core"].sources) do
      assert.is_nil(src:find("^csrc/crypto/"), src .. " is compiled into chronicle.core, which must not need libsodium")
    end
  end)

  it("builds chronicle.sandbox from every csrc/sandbox/*.c file, and chronicle.core from none", function()
    assert.is_table(modules["chronicle.sandbox"], "no chronicle.sandbox module")
    local listed = {}
    for _, src in ipairs(modules["chronicle.sandbox"].sources) do listed[src] = true end
    for _, file in ipairs(files_under("csrc/sandbox", "*.c")) do
      assert.is_true(listed[file] == true, file .. " is not compiled into chronicle.sandbox (run `make rockspec`)")
    end
    for _, src in ipairs(modules["chronicle.sandbox"].sources) do
      assert.is_nil(src:find("^csrc/lmdb/"), src .. " is compiled into chronicle.sandbox, which must not need LMDB")
    end
    for _, src in ipairs(modules["chronicle.core"].sources) do
      assert.is_nil(src:find("^csrc/sandbox/"), src .. " is compiled into chronicle.core: the sandbox is its own module")
    end
  end)

  it("names no file that does not exist", function()
    local gone = {}
    local function check(file)
      local f = io.open(ROOT .. "/" .. file, "r")
      if f then f:close() else gone[#gone + 1] = file end
    end
    for name, m in pairs(modules) do
      if type(m) == "string" then check(m)
      elseif name == "chronicle.core" or name == "chronicle.postgres" or name == "chronicle.common"
             or name == "chronicle.crypto" or name == "chronicle.sandbox" then
        for _, src in ipairs(m.sources) do check(src) end
      end
    end
    for _, file in pairs(spec.build.install and spec.build.install.bin or {}) do check(file) end
    for _, file in pairs(spec.build.install and spec.build.install.lua or {}) do check(file) end
    table.sort(gone)
    assert(#gone == 0, ROCKSPEC .. " names missing files: " .. table.concat(gone, ", "))
  end)
end)

describe("luarocks make with the rockspec", function()
  local tmp

  setup(function()
    local out, ok = run("mktemp -d")
    assert(ok, out)
    tmp = out:match("[^\n]+")
  end)

  teardown(function()
    if tmp then run("rm -rf " .. quote(tmp)) end
  end)

  it("installs a chronicle that opens a store, appends and reads back", function()
    -- luarocks writes objects next to the sources: build in a copy, not in the work tree.
    local src, tree = tmp .. "/src", tmp .. "/tree"
    local out, ok = run(("mkdir -p %s && tar -C %s --exclude=./.git --exclude='./build*' --exclude=./bench " ..
                         "--exclude=./spec --exclude=./fuzz -cf - . | tar -C %s -xf -")
                        :format(quote(src), quote(ROOT), quote(src)))
    assert(ok, "copying the tree failed:\n" .. out)

    -- luarocks finds Lua's headers from the lua5.4 on PATH: keep out the wrapper `make check`
    -- puts in this tree, and the sanitizer runtime, so it sees the system's Lua as a user would.
    local path = {}
    for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
      if dir:sub(1, #ROOT + 1) ~= ROOT .. "/" then path[#path + 1] = dir end
    end
    out, ok = run(("cd %s && env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS PATH=%s " ..
                   "luarocks --lua-version=5.4 make --deps-mode=none --tree %s %s")
                  :format(quote(src), quote(table.concat(path, ":")), quote(tree), ROCKSPEC))
    assert(ok, "luarocks make failed:\n" .. out)

    local script = tmp .. "/use.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
      local chronicle = require "chronicle"
      print("module", package.searchpath("chronicle", package.path))
      print("core", package.searchpath("chronicle.core", package.cpath))
      print("common", package.searchpath("chronicle.common", package.cpath))
      print("postgres", package.searchpath("chronicle.postgres", package.cpath), type(require("chronicle.postgres").open))
      local sb = require("chronicle.scripts.sandbox").new()
      assert(sb:load("return { handlers = { twice = function(ev) return ev.n * 2 end } }"))
      print("sandbox", package.searchpath("chronicle.sandbox", package.cpath), sb:call("twice", { n = 21 }))
      sb:close()
      local store = assert(chronicle.open(arg[1]))
      local r = assert(store:append("greeting-1", { { type = "Said", data = { text = "hello", n = 42 } } },
                                    { expected = chronicle.NO_STREAM }))
      print("appended", r.version, r.position)
      print("console", require("chronicle.server.static").folder())
      for ev in store:read("greeting-1") do
        print("read", ev.stream, ev.version, ev.position, ev.type, ev.data.text, math.type(ev.data.n), ev.data.n)
      end
      store:close()
    ]])
    f:close()

    -- Only the install tree and Debian's own Lua directories: never ./lua, ./build or /usr/local.
    local lua_path = ("%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;" ..
                      "/usr/share/lua/5.4/?/init.lua"):format(tree, tree)
    local lua_cpath = ("%s/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/lib/lua/5.4/?.so")
                      :format(tree)
    out, ok = run(("cd %s && env -u LUA_INIT -u LUA_INIT_5_4 LUA_PATH=%s LUA_PATH_5_4=%s LUA_CPATH=%s " ..
                   "LUA_CPATH_5_4=%s lua5.4 %s %s")
                  :format(quote(tmp), quote(lua_path), quote(lua_path), quote(lua_cpath), quote(lua_cpath),
                          quote(script), quote(tmp .. "/store")))
    assert(ok, "the installed module failed:\n" .. out)

    assert.matches("module\t" .. tree:gsub("%p", "%%%0") .. "/share/lua/5.4/chronicle/init.lua\n", out, 1)
    assert.matches("core\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/chronicle/core.so\n", out, 1)
    assert.matches("common\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/chronicle/common.so\n", out, 1)
    assert.matches("postgres\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/chronicle/postgres.so\tfunction\n", out, 1)
    assert.matches("sandbox\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5.4/chronicle/sandbox.so\t42\n", out, 1)
    assert.matches("appended\t0\t1\n", out, 1, true)
    assert.matches("console\t" .. tree:gsub("%p", "%%%0") .. "/share/lua/5.4/chronicle/server/web\n", out, 1)
    local page = io.open(tree .. "/share/lua/5.4/chronicle/server/web/index.html")
    assert.is_truthy(page, "the console's index.html is not installed")
    page:close()
    assert.matches("read\tgreeting%-1\t0\t1\tSaid\thello\tinteger\t42\n", out, 1)

    -- Each module exports its luaopen_* and nothing else (csrc/common/export.h): LuaRocks'
    -- builtin build passes no -fvisibility=hidden, so this holds only if the headers hide.
    local libdir = tree .. "/lib/lua/5.4/chronicle"
    for _, name in ipairs({ "core", "common", "postgres", "crypto", "sandbox" }) do
      local so = libdir .. "/" .. name .. ".so"
      out, ok = run("nm -D --defined-only " .. quote(so))
      assert(ok, "nm -D " .. so .. " failed:\n" .. out)
      local exported = {}
      for symbol in out:gmatch("%x+ %a ([%w_]+)") do exported[#exported + 1] = symbol end
      table.sort(exported)
      assert.same({ "luaopen_chronicle_" .. name }, exported)
    end
  end)
end)
