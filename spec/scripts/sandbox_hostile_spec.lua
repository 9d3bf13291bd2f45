-- Hostile scripts against the sandbox, each in its own lua5.4 process under `timeout` and a
-- memory limit (spec/support/sandbox_hostile.lua runs one and says what happened), so that a
-- script that hangs the host or floods its memory fails its case instead of hanging the suite.
-- Every case asserts the refusal (error code and message, or the fault of its projection or
-- reactor) and that the host survived: it exited on its own, still runs a normal call, and
-- never held more than PEAK_KB of memory. More cases are one more row in CASES.
local helpers = require "helpers"

local DRIVER = helpers.root .. "/spec/support/sandbox_hostile.lua"
local TIMEOUT = 20                       -- seconds a child may run
local ULIMIT_KB = 2 * 1024 * 1024        -- its address space (not under ASan, which reserves terabytes)
local PEAK_KB = 300 * 1024               -- resident memory the host may reach (not checked under ASan)
local ASAN = package.cpath:find("build-asan", 1, true) ~= nil

local STOPPED = { "budget_exceeded", "timeout" }   -- stopped by the instruction budget or the deadline
local MEMORY = { "memory_exceeded" }

-- A 1 KiB string shared 2^20 times: megabytes in the script, a gigabyte as a tree.
local SHARED = [[local t = ("x"):rep(1024) for i = 1, 20 do t = { t, t } end]]
local HUGE_LEN = [[local t = setmetatable({}, { __len = function() return math.maxinteger end,
                                             __index = function() return "x" end })]]
local HUGE_LEN_1 = [[local t = setmetatable({}, { __len = function() return math.maxinteger - 1 end })]]
local BIG_ARGS = [[local big = {} for i = 1, 100000 do big[i] = i % 100 + 1 end]]

-- mode: call | view | load | projection | reactor (see the driver); codes: what RESULT may be;
-- match: a plain substring of its message; fault: a plain substring of the FAULT error.
local CASES = {
  -- Charges that overflowed, and C loops over a count the script controls.
  { item = 1, name = "table.move over the whole integer range", mode = "call", codes = STOPPED,
    body = [[table.move({}, 1, math.maxinteger, 1)]] },
  { item = 1, name = "table.move from a negative start", mode = "call", codes = STOPPED,
    body = [[table.move({}, -10, math.maxinteger - 20, 1)]] },
  { item = 1, name = "table.remove(t, 1) with __len = maxinteger", mode = "call", codes = STOPPED,
    body = HUGE_LEN .. [[ table.remove(t, 1)]] },
  { item = 1, name = "table.insert(t, 1, v) with __len = maxinteger", mode = "call", codes = STOPPED,
    body = HUGE_LEN_1 .. [[ table.insert(t, 1, "v")]] },
  { item = 1, name = "table.insert(t, v) with __len = maxinteger", mode = "call", codes = { "script_error" },
    match = "insert", body = HUGE_LEN .. [[ table.insert(t, "v")]] },
  { item = 1, name = "table.concat with __len = maxinteger", mode = "call", codes = STOPPED,
    body = HUGE_LEN .. [[ return table.concat(t)]] },
  { item = 1, name = "table.concat from mininteger to maxinteger", mode = "call", codes = STOPPED,
    body = [[return table.concat({}, "", math.mininteger, math.maxinteger)]] },
  { item = 1, name = "table.unpack from mininteger to maxinteger", mode = "call", codes = STOPPED,
    body = [[return table.unpack({}, math.mininteger, math.maxinteger)]] },
  { item = 1, name = "table.unpack with __len = maxinteger", mode = "call", codes = STOPPED,
    body = HUGE_LEN .. [[ return table.unpack(t)]] },
  { item = 1, name = "table.sort with __len = maxinteger", mode = "call", codes = STOPPED,
    body = HUGE_LEN .. [[ table.sort(t)]] },
  { item = 1, name = "a __len that never returns, inside table.insert", mode = "call", codes = STOPPED,
    body = [[local t = setmetatable({}, { __len = function() while true do end end })
             pcall(table.insert, t, 1, "v") while true do pcall(table.insert, t, 1, "v") end]] },
  { item = 1, name = "string.rep of maxinteger copies", mode = "call", codes = MEMORY,
    body = [[return ("x"):rep(math.maxinteger)]] },
  { item = 1, name = "string.rep whose separator overflows the size", mode = "call", codes = MEMORY,
    body = [[return ("x"):rep(1 << 62, ("y"):rep(10))]] },
  { item = 1, name = "select('#', ...) over 100,000 arguments, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local function f(...) local n = 0 while true do n = n + select("#", ...) end end
             return f(table.unpack(big))]] },
  { item = 1, name = "a Lua function called with 150,000 varargs, in a loop", mode = "call", codes = STOPPED,
    time_ms = 1000,                      -- the VM's own copies: the deadline ends them
    body = [[local big = {} for i = 1, 150000 do big[i] = i end local function f() end
             local function g(...) while true do f(...) end end g(table.unpack(big))]] },
  { item = 1, name = "string.char over 100,000 arguments, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local u = table.unpack while true do string.char(u(big)) end]] },
  { item = 1, name = "math.max over 100,000 arguments, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local f = math.max local function g(...) while true do f(...) end end g(table.unpack(big))]] },
  { item = 1, name = "utf8.char over 100,000 arguments, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local f = utf8.char local function g(...) while true do f(...) end end g(table.unpack(big))]] },
  { item = 1, name = "table.pack over 100,000 arguments, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local f = table.pack local function g(...) while true do f(...) end end g(table.unpack(big))]] },
  { item = 1, name = "string.byte of every byte, in a loop", mode = "call", codes = STOPPED,
    body = [[local s = ("x"):rep(200000) while true do s:byte(1, -1) end]] },
  { item = 1, name = "utf8.codepoint of every byte, in a loop", mode = "call", codes = STOPPED,
    body = [[local s = ("x"):rep(200000) while true do utf8.codepoint(s, 1, -1) end]] },
  { item = 1, name = "utf8.len of a long string, in a loop", mode = "call", codes = STOPPED,
    body = [[local s = ("x"):rep(1000000) while true do utf8.len(s) end]] },
  { item = 1, name = "string.format with the widest fields, in a loop", mode = "call", codes = STOPPED,
    body = BIG_ARGS .. [[ local fmt = ("%99d"):rep(2000) while true do fmt:format(table.unpack(big, 1, 2000)) end]] },
  { item = 1, name = "string.pack padding to a gigabyte", mode = "call", codes = MEMORY,
    body = [[return string.pack("c1073741824", "")]] },
  { item = 1, name = "table.concat with a huge separator", mode = "call", codes = MEMORY,
    body = [[local t = {} for i = 1, 100 do t[i] = "a" end return table.concat(t, ("x"):rep(1000000))]] },
  { item = 1, name = "gsub with a long replacement of each match", mode = "call", codes = { "memory_exceeded", "budget_exceeded", "timeout" },
    body = [[local s = ("x"):rep(100000) return s:gsub(".", ("%0"):rep(2000))]] },
  { item = 1, name = "a pattern that backtracks exponentially", mode = "call", codes = STOPPED,
    body = [[return (("a"):rep(40)):find(("a?"):rep(40) .. ("a"):rep(40) .. "b")]] },
  { item = 1, name = "load with a reader that never ends", mode = "call", codes = STOPPED,
    body = [[while true do load(function() return "--" end) end]] },
  { item = 1, name = "os.date of a huge format", mode = "call", codes = { "memory_exceeded", "budget_exceeded", "timeout" },
    body = [[return os.date(("%c"):rep(2000000))]] },
  { item = 1, name = "table.move in a projection handler faults only that projection", mode = "projection",
    fault = "exceeded", body = [[table.move({}, 1, math.maxinteger, 1)]] },

  -- What crosses from the script into the host.
  { item = 2, name = "a result with shared subtables", mode = "call", codes = MEMORY, match = "copying the result out",
    body = SHARED .. " return t" },
  { item = 2, name = "a result of many shared empty tables", mode = "call", codes = MEMORY, match = "copying the result out",
    body = [[local t = {} for i = 1, 30 do t = { t, t } end return t]] },
  { item = 2, name = "view:put of a value with shared subtables", mode = "view", codes = MEMORY, match = "view:put",
    body = SHARED .. " view:put('k', t)" },
  { item = 2, name = "view:put of 800 rows of 1 MiB", mode = "view", codes = { "memory_exceeded", "budget_exceeded" },
    max_row_bytes = 32 * 1024 * 1024,
    body = [[local s = ("x"):rep(1 << 20) for i = 1, 800 do view:put(i, s) end]] },
  { item = 2, name = "view:put refused, caught, and tried again", mode = "view", codes = MEMORY,
    max_row_bytes = 32 * 1024 * 1024,
    body = [[local s = ("x"):rep(1 << 20) for i = 1, 800 do pcall(view.put, view, i, s) end view:put("last", s)]] },
  { item = 2, name = "view:update returning shared subtables", mode = "view", codes = MEMORY, match = "view:update",
    body = SHARED .. " view:update('k', function() return t end)" },
  { item = 2, name = "a definition whose `from` has shared subtables", mode = "load", codes = MEMORY,
    match = "definition",
    body = SHARED .. " return { kind = 'projection', name = 'x', from = t, handlers = {} }" },
  { item = 2, name = "a projection putting shared subtables faults only that projection", mode = "projection",
    fault = "memory budget", body = SHARED .. " view:put('k', t)" },
  { item = 2, name = "a reactor emitting shared subtables faults only that reactor", mode = "reactor",
    fault = "memory budget", body = SHARED .. " return { { stream = 'out-1', type = 'Big', data = t } }" },
  { item = 2, name = "a projection putting 1 MiB rows for ever faults only that projection", mode = "projection",
    fault = "(its memory budget)", body = [[local s = ("x"):rep(1 << 20) for i = 1, 800 do view:put(i, s) end]] },

  { item = 2, name = "(not hostile) a 4 MiB result and 1,000 small rows still cross", mode = "view", codes = { "ok" },
    body = [[for i = 1, 1000 do view:put(i, { n = i, name = "row " .. i }) end return { blob = ("x"):rep(4 << 20) }]] },
  { item = 2, name = "(not hostile) a table shared a few times crosses, once per reference", mode = "call",
    codes = { "ok" }, body = [[local row = { a = 1, b = "two" } return { row, row, row, { row, row } }]] },

  { item = 2, name = "a projection putting a new 4 MiB row per event keeps the host's batch bounded",
    mode = "projection", events = 60, asan_events = 16, live = true, peak_kb = 250 * 1024, timeout = 60,
    body = [[view:put(ev.position, ("x"):rep(4 << 20))]] },

  -- What stopped the script.
  { item = 6, name = "a memory error caught with pcall, then the script's own error", mode = "call",
    codes = { "script_error" }, match = "my own message",
    body = [[pcall(string.rep, "x", 1 << 40) error("my own message")]] },
  { item = 6, name = "a table that ran out of memory, caught, then the script's own error", mode = "call",
    codes = { "script_error" }, match = "after the memory error",
    body = [[pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end) error("after the memory error")]] },
  { item = 6, name = "a memory error caught, then a normal result", mode = "call", codes = { "ok" },
    body = [[pcall(string.rep, "x", 1 << 40) return { fine = true }]] },
  { item = 6, name = "a memory error raised again", mode = "call", codes = MEMORY,
    body = [[local ok, e = pcall(string.rep, "x", 1 << 40) error(e, 0)]] },
  { item = 6, name = "a memory error not caught", mode = "call", codes = MEMORY,
    body = [[local t = {} for i = 1, 1e9 do t[i] = i end]] },
}

local function run_case(case)
  local dir = helpers.tmpdir()
  local file = dir .. "/body.lua"
  helpers.write_file(file, case.body)
  local limit = ASAN and "" or ("ulimit -v " .. ULIMIT_KB .. "; ")
  local cmd = limit .. "exec timeout -s KILL " .. (case.timeout or TIMEOUT) .. " " .. helpers.lua_command(DRIVER, case.mode, file, dir,
    tostring(ASAN and case.asan_events or case.events or 2), tostring(case.time_ms or 15000))
  local p = assert(io.popen("sh -c " .. helpers.quote(cmd) .. " 2>&1; echo EXIT $?", "r"))
  local out = p:read("a")
  p:close()
  local facts = {}
  for l in out:gmatch("[^\n]+") do
    local key, rest = l:match("^(%u+) ?(.*)$")
    if key then facts[key] = rest end
  end
  return facts, out
end

local function has(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

describe("the sandbox against hostile scripts", function()
  after_each(helpers.cleanup)

  for _, case in ipairs(CASES) do
    it("(" .. case.item .. ") " .. case.name, function()
      local facts, out = run_case(case)
      assert.equals("0", facts.EXIT, "the host did not exit normally:\n" .. out)
      assert.is_not_nil(facts.ALIVE, "the host did not survive:\n" .. out)
      if case.codes then
        local code, message = (facts.RESULT or ""):match("^(%S+) ?(.*)$")
        assert.is_true(has(case.codes, code), "got " .. tostring(code) .. ", expected one of "
          .. table.concat(case.codes, ", ") .. ":\n" .. out)
        if case.match then assert.is_truthy(message:find(case.match, 1, true), out) end
      end
      if case.live then
        assert.equals("live", (facts.FAULT or ""):match("^%S+"), out)
        local events = ASAN and case.asan_events or case.events
        assert.equals("live " .. (12 + events - 2), facts.GOOD, "the other projection:\n" .. out)
        assert.equals(tostring(events), facts.ROWS, "rows of the projection:\n" .. out)
      end
      if case.fault then
        local status, err = (facts.FAULT or ""):match("^(%S+) ?(.*)$")
        assert.equals("faulted", status, out)
        assert.is_truthy(err:find(case.fault, 1, true), out)
        assert.equals("live 12", facts.GOOD, "the other projection:\n" .. out)
        assert.is_nil(facts.RUNNER, out)
      end
      if case.max_row_bytes then
        local bytes = tonumber(facts.ROWS:match("%S+ (%d+)"))
        assert.is_true(bytes <= case.max_row_bytes, "the host's view received " .. bytes .. " bytes")
      end
      if not ASAN and facts.PEAK then
        assert.is_true(tonumber(facts.PEAK) < (case.peak_kb or PEAK_KB), "the host reached " .. facts.PEAK .. " kB:\n" .. out)
      end
    end)
  end
end)
