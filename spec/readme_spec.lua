-- Every ```lua snippet in README.md runs as it is, in a fresh process and an empty folder.
local helpers = require "helpers"

local function snippets()
  local f = assert(io.open("README.md"))
  local text = f:read("a")
  f:close()
  local out = {}
  for code in text:gmatch("```lua\n(.-)```") do out[#out + 1] = code end
  return out
end

local root = io.popen("pwd"):read("l")

describe("the README", function()
  local list = snippets()

  it("has Lua snippets to run", function()
    assert.is_true(#list >= 8)
  end)

  for i, code in ipairs(list) do
    local first = code:match("[^\n]*")
    it(("snippet %d (%s) runs without an error"):format(i, first), function()
      local dir = helpers.tmpdir()
      finally(function() helpers.cleanup(dir) end)
      local file = dir .. "/snippet.lua"
      local f = assert(io.open(file, "w"))
      f:write(code)
      f:close()
      local cmd = ("cd %s && LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s/build/?.so;;' lua5.4 snippet.lua 2>&1; echo \"exit=$?\"")
        :format(dir, root, root, root)
      local p = io.popen(cmd)
      local output = p:read("a")
      p:close()
      assert.matches("exit=0\n$", output, 1, false, output)
    end)
  end
end)
