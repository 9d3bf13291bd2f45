-- docs/BACKEND.md against the handle: the methods its "at a glance" table lists are the
-- methods the backend handle has, no more and no fewer. A row marked "LMDB only" names a method
-- that LMDB has and that another backend either lacks or refuses with `unsupported`.
local helpers = require "helpers"

-- The rows of the table under "## The methods at a glance": { names = {...}, lmdb_only = bool }.
local function documented()
  local f = assert(io.open(helpers.root .. "/docs/BACKEND.md"))
  local text = f:read("a")
  f:close()
  local section = text:match("\n## The methods at a glance\n(.-)\n## ")
  assert(section, "docs/BACKEND.md has no '## The methods at a glance' section")
  local rows = {}
  for line in section:gmatch("[^\n]+") do
    local first, rest = line:match("^| (.-) | (.*)$")
    if first and first ~= "method" and not first:find("^%-%-%-") then
      local row = { names = {}, lmdb_only = rest:find("LMDB only", 1, true) ~= nil, line = line }
      for code in first:gmatch("`([^`]+)`") do
        row.names[#row.names + 1] = assert(code:match("^([%w_]+)"), "no method name in `" .. code .. "`")
      end
      assert(#row.names > 0, "a row names no method: " .. line)
      rows[#rows + 1] = row
    end
  end
  return rows, text
end

-- The handle's public methods: its __index table's functions and its metatable's functions.
local function handle_methods(h)
  local mt = getmetatable(h)
  local out = {}
  for k, v in pairs(mt) do
    if type(v) == "function" then out[k] = true end
  end
  if type(mt.__index) == "table" then
    for k, v in pairs(mt.__index) do
      if type(v) == "function" then out[k] = true end
    end
  end
  return out
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("docs/BACKEND.md and the backend handle (" .. helpers.backend .. ")", function()
  after_each(helpers.cleanup)

  local rows, text = documented()

  it("the method table parses into rows and names", function()
    local n = 0
    for _, row in ipairs(rows) do n = n + #row.names end
    assert.is_true(#rows >= 10 and n >= 25, "parsed " .. #rows .. " rows, " .. n .. " names")
  end)

  it("every documented method exists on the handle (LMDB-only ones on LMDB; elsewhere absent or refused)", function()
    local store = helpers.open({ durability = "nosync" })
    local h = assert(rawget(store, "_h"))
    local has = handle_methods(h)
    for _, row in ipairs(rows) do
      for _, name in ipairs(row.names) do
        if row.lmdb_only and helpers.backend ~= "lmdb" then
          if has[name] then
            local res, err = h[name](h, helpers.tmpdir() .. "/target")
            assert.is_nil(res, name .. " is LMDB only but answered")
            assert.are.equal("unsupported", err and err.code, name .. " is LMDB only: it must refuse with unsupported")
          end
        else
          assert.is_true(has[name] == true, "docs/BACKEND.md lists " .. name .. " but the handle has no such method")
        end
      end
    end
  end)

  it("every public method of the handle is documented", function()
    local store = helpers.open({ durability = "nosync" })
    local has = handle_methods(assert(rawget(store, "_h")))
    local listed = {}
    for _, row in ipairs(rows) do
      for _, name in ipairs(row.names) do listed[name] = true end
    end
    local missing = {}
    for _, name in ipairs(sorted_keys(has)) do
      if not listed[name] then missing[#missing + 1] = name end
    end
    assert.are.same({}, missing, "the handle has methods docs/BACKEND.md does not list")
  end)

  it("every listed method is also described below the table", function()
    local body = text:gsub("\n## The methods at a glance\n.-\n## ", "\n## ")
    for _, row in ipairs(rows) do
      for _, name in ipairs(row.names) do
        assert.is_truthy(body:find("`" .. name, 1, true), name .. " is in the table but described nowhere else")
      end
    end
  end)
end)
