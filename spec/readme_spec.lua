-- README.md as a new user follows it: every ```lua snippet runs as it is, twice in a row in the
-- same folder (a snippet starts from a fresh store, so the second run prints what the first did);
-- the ways it gives to make `require "chronicle"` work do; and its CLI session, run on what the
-- bank demo leaves, prints what the README shows (times, ids and sizes aside).
local helpers = require "helpers"
local session = require "support.readme_session"

local q = helpers.quote

local function readme()
  local f = assert(io.open(helpers.root .. "/README.md"))
  local text = f:read("a")
  f:close()
  return text
end

local function snippets()
  local out = {}
  for code in readme():gmatch("```lua\n(.-)```") do out[#out + 1] = code end
  return out
end

-- Runs `cmd` in sh; returns its output (stdout and stderr) and exit status.
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("exit=(%d+)\n$"))
  return out:gsub("exit=%d+\n$", ""), status
end

-- The environment that makes a child lua5.4 load this build (the ASan one under make check).
local function tree_env()
  return helpers.lua_command("x"):match("^(env .-) lua5%.4 ")
end

describe("the README", function()
  after_each(helpers.cleanup)
  local list = snippets()

  it("has Lua snippets to run", function()
    assert.is_true(#list >= 8)
  end)

  for i, code in ipairs(list) do
    local first = code:match("[^\n]*")
    it(("snippet %d (%s) runs without an error, twice in the same folder, printing the same"):format(i, first),
      function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/snippet.lua", code)
        local cmd = "cd " .. q(dir) .. " && " .. helpers.lua_command("snippet.lua")
        local out1, status1 = sh(cmd)
        assert.equals(0, status1, "first run:\n" .. out1)
        local out2, status2 = sh(cmd)
        assert.equals(0, status2, "second run:\n" .. out2)
        assert.equals(out1, out2, "the second run printed something else")
      end)
  end

  describe("the ways to make require \"chronicle\" work", function()
    local probe = 'local c = require "chronicle"; local s = assert(c.open(arg[1])); '
      .. 'assert(s:append("a-1", { { type = "T" } })); print(package.searchpath("chronicle.core", package.cpath), s:head())'

    it("from the clone: eval \"$(make -s env)\" in any folder", function()
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/probe.lua", probe)
      local out, status = sh(("cd %s && eval \"$(make -s -C %s env)\" && cd %s && lua5.4 probe.lua store && command -v chronicle")
        :format(q(helpers.root), q(helpers.root), q(dir)))
      assert.equals(0, status, out)
      assert.equals(helpers.root .. "/build/chronicle/core.so\t1\n" .. helpers.root .. "/bin/chronicle\n", out)
    end)

    it("make install (into a DESTDIR), with nothing from the tree on the path", function()
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/probe.lua", probe)
      local dest, prefix = dir .. "/root", "/usr/local"
      local out, status = sh(("make -s -C %s install DESTDIR=%s PREFIX=%s > /dev/null"):format(q(helpers.root), q(dest), prefix))
      assert.equals(0, status, out)
      local share, lib = dest .. prefix .. "/share/lua/5.4", dest .. prefix .. "/lib/lua/5.4"
      out, status = sh(("cd %s && env LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 probe.lua store"):format(q(dir),
        q(share .. "/?.lua;" .. share .. "/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua"),
        q(lib .. "/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so")))
      assert.equals(0, status, out)
      assert.equals(lib .. "/chronicle/core.so\t1\n", out)
      assert.is_true(helpers.exists(dest .. prefix .. "/bin/chronicle"))
    end)

    it("the README shows these three ways right under \"Install and run\"", function()
      local text = readme()
      local install = text:match("\n## Install and run\n(.-)\n## ")
      assert.truthy(install, "no Install and run section")
      assert.matches("luarocks %-%-lua%-version=5%.4 make %-%-deps%-mode=none", install)
      assert.matches("make install", install, 1, true)
      assert.matches('eval "$(make -s env)"', install, 1, true)
      assert.matches("LUA_PATH_5_4=", install, 1, true)
    end)
  end)

  describe("the CLI session", function()
    it("prints what the README shows, on the store the bank demo leaves", function()
      local block, steps = session.find(readme())
      assert.truthy(block, "no CLI session (a ``` block starting with \"$ chronicle\") in the README")
      assert.is_true(#steps >= 10)
      local work = helpers.tmpdir()
      local env = tree_env()
      -- what `make demo` does: the bank example, from the repository's root folder, into data/bank
      local out, status = sh(("cd %s && ln -s %s examples && %s lua5.4 examples/bank/main.lua")
        :format(q(work), q(helpers.root .. "/examples"), env))
      assert.equals(0, status, out)
      assert.matches("store in data/bank", out, 1, true)
      local transcript, statuses = session.run(steps, work, helpers.root, env)
      for i, step in ipairs(steps) do
        assert.equals(0, statuses[i], "$ " .. step.command .. "\n" .. transcript)
      end
      assert.equals(session.mask(block), session.mask(transcript))
    end)
  end)
end)
