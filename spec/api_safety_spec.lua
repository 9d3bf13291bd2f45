-- The public API under hostile use: progress callbacks that close or write to
-- the store, failed map growth, huge maps re-appended in another key order,
-- waits that could never end, paths with NUL bytes. Every case that could
-- crash or hang runs in a child process under `timeout`.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- Runs `body` (Lua source; arg[1] is a fresh store directory) in a child
-- lua5.4 under `timeout`; returns its exit code and output (stdout and stderr).
local function child(body, seconds, prefix)
  local dir = helpers.tmpdir()
  local script = dir .. "/child.lua"
  helpers.write_file(script, "local chronicle = require 'chronicle'\n" .. body)
  local cmd = (prefix or "") .. "timeout -s KILL " .. (seconds or 60) .. " " ..
              helpers.lua_command(script, dir .. "/store") .. " 2>&1; echo \"rc=$?\""
  local out = helpers.capture(cmd)
  local rc = tonumber(out:match("rc=(%d+)$"))
  return rc, out
end

describe("the public API under hostile use", function()
  after_each(helpers.cleanup)

  describe("re-appending a huge map in another key order", function()
    it("compares in n log n, not n^2 (a 60,000-key map finishes well within the bound)", function()
      local rc, out = child([[
        local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
        local n = 60000
        local a, b = {}, {}
        for i = 1, n do a["key" .. i] = i end
        for i = n, 1, -1 do b["key" .. i] = i end
        b.nested, a.nested = { y = 1, x = 2.5 }, { x = 2.5, y = 1 }
        local id = "00000000-0000-7000-8000-000000000001"
        local first = assert(s:append("big-1", { { type = "T", id = id, data = a } }))
        local again, err = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(again, tostring(err))
        assert(again.position == first.position and s:head() == 1, "a replay writes nothing")
        b.key777 = 777.0                   -- a float is not the integer 777
        local _, err2 = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(err2 and err2.code == "duplicate_id", tostring(err2))
        b.key777, b.key778 = 777, nil       -- one key fewer
        local _, err3 = s:append("big-1", { { type = "T", id = id, data = b } })
        assert(err3 and err3.code == "duplicate_id", tostring(err3))
        print("ok")
      ]], 20)
      assert.are.equal(0, rc, out)
      assert.matches("ok", out)
    end)
  end)

  describe("progress callbacks of verify and backup", function()
    local fill = [[
      local s = assert(chronicle.open(arg[1], { durability = "nosync" }))
      for i = 1, 30 do
        local events = {}
        for j = 1, 1000 do events[j] = { type = "T", data = { i = i, j = j, pad = ("x"):rep(100) } } end
        assert(s:append("s-" .. i, events))
      end
    ]]
    for _, op in ipairs({ "verify", "backup" }) do
      local call = op == "verify" and "s:verify{ progress = cb }" or "s:backup(arg[1] .. '-copy', { progress = cb })"
      it(op .. ": closing the store from the callback raises a clear error, no crash", function()
        local rc, out = child(fill .. [[
          local cb = function() s:close() end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok, "closing from the callback must raise")
          print("ERR " .. tostring(err))
          assert(s:is_open() and s:head() == 30000 and s:verify().ok)
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ERR [^\n]*cannot close the store while its " .. op .. " runs", out)
        assert.matches("ok\nrc=0$", out)
      end)

      it(op .. ": writing from the callback raises; reading is allowed", function()
        local rc, out = child(fill .. [[
          local reads = 0
          local cb = function() reads = reads + 1; assert(s:head() == 30000); s:append("x-1", { { type = "X" } }) end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok, "writing from the callback must raise")
          print("ERR " .. tostring(err))
          assert(reads == 1 and s:head() == 30000, "nothing was written")
          assert(s:append("x-1", { { type = "X" } }), "the store takes writes again afterwards")
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ERR [^\n]*append: cannot write to the store while its " .. op .. " runs", out)
        assert.matches("ok\nrc=0$", out)
      end)

      it(op .. ": the callback's own error reaches the caller", function()
        local rc, out = child(fill .. [[
          local cb = function() error({ mine = true }) end
          local ok, err = pcall(function() return ]] .. call .. [[ end)
          assert(not ok and type(err) == "table" and err.mine, "the callback's error value is raised as is")
          if arg[1] then
            local f = io.open(arg[1] .. "-copy/data.mdb")
            assert(f == nil, "a stopped backup leaves no copy")
          end
          assert(s:is_open() and s:verify().ok)
          print("ok")
        ]], 60)
        assert.are.equal(0, rc, out)
        assert.matches("ok\nrc=0$", out)
      end)
    end
  end)
end)
