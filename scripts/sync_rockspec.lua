-- `make rockspec`: rewrites the generated parts of rockspec/chronicle-scm-1.rockspec from the
-- tree (every csrc/**/*.c but csrc/postgres/, csrc/crypto/ and csrc/sandbox/ as a source of chronicle.core,
-- csrc/postgres/*.c and csrc/common/*.c for chronicle.postgres, csrc/common/*.c for chronicle.common,
-- csrc/crypto/*.c and csrc/common/*.c for chronicle.crypto, csrc/sandbox/*.c and csrc/common/*.c for
-- chronicle.sandbox, every lua/chronicle/**/*.lua as a module, every file of
-- the web console as an installed file),
-- between the "-- begin: make rockspec" and "-- end: make rockspec" lines.
local ROCKSPEC = arg[1] or "rockspec/chronicle-scm-1.rockspec"

local function files(cmd)
  local out = {}
  local p = assert(io.popen(cmd))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function module_name(file)
  return (file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))
end

-- The PostgreSQL module's own folder, and the shared sources it compiles in (as the Makefile's PG_SRC).
local PG_DIR = "csrc/postgres/"
local COMMON_DIR = "csrc/common/"
-- chronicle.crypto (libsodium) and chronicle.sandbox likewise.
local CRYPTO_DIR = "csrc/crypto/"
local SANDBOX_DIR = "csrc/sandbox/"

local sources, pgsources, commonsources, cryptosources, sandboxsources = {}, {}, {}, {}, {}
for _, f in ipairs(files("find csrc -name '*.c' -not -path '*/.*' | LC_ALL=C sort")) do
  if f:sub(1, #PG_DIR) == PG_DIR then pgsources[#pgsources + 1] = ('        "%s",'):format(f)
  elseif f:sub(1, #CRYPTO_DIR) == CRYPTO_DIR then cryptosources[#cryptosources + 1] = ('        "%s",'):format(f)
  elseif f:sub(1, #SANDBOX_DIR) == SANDBOX_DIR then sandboxsources[#sandboxsources + 1] = ('        "%s",'):format(f)
  else sources[#sources + 1] = ('        "%s",'):format(f) end
end
for _, f in ipairs(files("find " .. COMMON_DIR .. " -name '*.c' -not -path '*/.*' | LC_ALL=C sort")) do
  pgsources[#pgsources + 1] = ('        "%s",'):format(f)
  commonsources[#commonsources + 1] = ('        "%s",'):format(f)
  cryptosources[#cryptosources + 1] = ('        "%s",'):format(f)
  sandboxsources[#sandboxsources + 1] = ('        "%s",'):format(f)
end

local modules = {}
for _, f in ipairs(files("find lua/chronicle -name '*.lua' -not -path '*/.*' | LC_ALL=C sort")) do
  modules[#modules + 1] = { module_name(f), f }
end
table.sort(modules, function(a, b) return a[1] < b[1] end)
for i, m in ipairs(modules) do modules[i] = ('    ["%s"] = "%s",'):format(m[1], m[2]) end

-- The web console's files, installed beside chronicle/server/*.lua (LuaRocks keeps a
-- non-Lua file's name and puts it in the folder its key names).
local web = {}
for _, f in ipairs(files("find lua/chronicle/server/web -type f -not -path '*/.*' | LC_ALL=C sort")) do
  local name = f:match("([^/]+)$"):gsub("[^%w]", "_")
  web[#web + 1] = ('      ["chronicle.server.web.%s"] = "%s",'):format(name, f)
end

local f = assert(io.open(ROCKSPEC, "r"))
local text = f:read("a")
f:close()

local blocks = { sources = sources, pgsources = pgsources, commonsources = commonsources, cryptosources = cryptosources,
                 sandboxsources = sandboxsources, modules = modules, web = web }
local count = 0
text = text:gsub("(\n[ \t]*%-%- begin: make rockspec (%a+)\n).-([ \t]*%-%- end: make rockspec %a+\n)",
  function(head, which, tail)
    local lines = assert(blocks[which], "unknown generated block " .. which)
    count = count + 1
    return head .. table.concat(lines, "\n") .. (#lines > 0 and "\n" or "") .. tail
  end)
assert(count == 7, ROCKSPEC .. ": expected the seven generated blocks (sources, pgsources, commonsources, " ..
       "cryptosources, sandboxsources, modules, web), found " .. count)

f = assert(io.open(ROCKSPEC, "w"))
f:write(text)
f:close()
print(("%s: %d C sources, %d for chronicle.postgres, %d for chronicle.common, %d for chronicle.sandbox, %d Lua modules, %d web files"):format(
  ROCKSPEC, #sources, #pgsources, #commonsources, #sandboxsources, #modules, #web))
