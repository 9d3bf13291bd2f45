-- Runs one hostile script against the sandbox, in its own process (spec/scripts/sandbox_hostile_spec.lua
-- starts it under `timeout` and a memory limit), and prints what happened, one fact a line:
--   RESULT <code> <message>      the call or load (code "ok" when it succeeded)
--   FAULT <status> <error>       store modes: the hostile projection's or reactor's status
--   GOOD <status> <value>        store modes: a well-behaved projection next to it
--   ROWS <n> <bytes>             view mode: rows the host's view received, and their bytes
--   ALIVE                        the host still runs a normal call on the same sandbox
--   PEAK <kB>                    the host process's peak resident memory
-- usage: lua5.4 sandbox_hostile.lua MODE BODY_FILE [DIR [EVENTS [TIME_MS]]]
-- TIME_MS (default 15000) is the deadline per call: far enough that a slow run (ASan, a loaded
-- machine) stops for the same reason as a fast one, unless the case is about the deadline.
--   call        BODY is handler h(ev) of a reactor script, called once
--   view        BODY is handler h(view, ev), called once with a host view in a plain table
--   load        BODY is the whole script
--   projection  BODY is the Deposited handler (view, ev) of a sandboxed projection script in DIR
--   reactor     BODY is the Deposited handler (ev) of a sandboxed reactor script in DIR
local mode, body_file, dir = arg[1], arg[2], arg[3]
local events = tonumber(arg[4]) or 2        -- store modes: Deposited events of 5 and 7, then 1s
local time_ms = math.tointeger(tonumber(arg[5])) or 15000
local f = assert(io.open(body_file, "rb"))
local body = f:read("a")
f:close()

local function line(...)
  local parts = { ... }
  for i, p in ipairs(parts) do parts[i] = tostring(p):gsub("\n", " ") end
  io.write(table.concat(parts, " "), "\n")
  io.flush()
end

local function peak()
  local s = io.open("/proc/self/status")
  if not s then return end
  local text = s:read("a")
  s:close()
  line("PEAK", text:match("VmHWM:%s*(%d+)") or "?")
end

local function result(out, err)
  if err then line("RESULT", err.code, err.message) else line("RESULT", "ok", type(out)) end
end

if mode == "call" or mode == "view" or mode == "load" then
  local sandbox = require "chronicle.scripts.sandbox"
  local sb = sandbox.new({ name = "hostile.lua", time_ms = time_ms })
  local source
  if mode == "load" then
    source = body
  else
    source = "return { kind = 'reactor', name = 'hostile', handlers = {\n"
      .. "  h = function(" .. (mode == "view" and "view, " or "") .. "ev)\n" .. body .. "\n  end,\n"
      .. "  ok = function(ev) return { n = ev.n * 2 } end,\n} }"
  end
  local desc, lerr = sb:load(source, "@hostile.lua")
  if mode == "load" then
    result(desc, lerr)
    sb:close()
    sb = sandbox.new({ name = "again.lua" })
    assert(sb:load("return { handlers = { ok = function(ev) return { n = ev.n * 2 } end } }"))
  else
    assert(desc, lerr and lerr.message)
    local rows, bytes, n = {}, 0, 0
    local view = {}
    function view:get(k) return rows[k] end
    function view:put(k, v)
      n = n + 1
      if type(v) == "string" then bytes = bytes + #v end
      rows[k] = v
    end
    function view:update(k, fn)
      n = n + 1
      rows[k] = fn(rows[k])
      return rows[k]
    end
    function view:delete(k) rows[k] = nil end
    result(sb:call("h", { n = 1 }, mode == "view" and view or nil))
    if mode == "view" then line("ROWS", n, bytes) end
    rows = nil
  end
  local out = sb:call("ok", { n = 21 })
  if type(out) == "table" and out.n == 42 then line("ALIVE") end
  sb:close()
  peak()
  return
end

-- Store modes: the hostile script next to a well-behaved projection, both sandboxed.
local chronicle = require "chronicle"
local function write(name, text)
  local out = assert(io.open(dir .. "/scripts/" .. name, "wb"))
  out:write(text)
  out:close()
end
os.execute("mkdir -p '" .. dir .. "/scripts'")
if mode == "projection" then
  write("hostile.lua", "return { kind = 'projection', name = 'hostile', handlers = {\n"
    .. "  Deposited = function(view, ev)\n" .. body .. "\n  end } }")
else
  write("hostile.lua", "return { kind = 'reactor', name = 'hostile', handlers = {\n"
    .. "  Deposited = function(ev)\n" .. body .. "\n  end } }")
end
write("good.lua", [[
return { kind = "projection", name = "good", handlers = {
  Deposited = function(view, ev) view:put("total", (view:get("total") or 0) + ev.data.amount) end,
} }]])
local store = assert(chronicle.open(dir .. "/store", { durability = "nosync" }))   -- syncs are not the point
for i = 1, events do
  assert(store:append("account-1", { { type = "Deposited", data = { amount = i == 1 and 5 or i == 2 and 7 or 1 } } }))
end
local scripts = chronicle.load_scripts(store, dir .. "/scripts", { sandbox = true, limits = { time_ms = time_ms } })
for path, e in pairs(scripts.errors) do line("LOADERROR", path, e) end
local runner = chronicle.runner(store)
local ok, err = pcall(runner.run_once, runner)
if not ok then line("RUNNER", err) end
local status = mode == "projection" and store:projection_status() or store:reactor_status()
local h = status.hostile or {}
line("FAULT", h.status, h.fault and h.fault.error)
if mode == "projection" and h.status == "live" then line("ROWS", store:view("hostile"):count()) end
local good = store:projection_status().good or {}
line("GOOD", good.status, store:view("good"):get("total"))
store:close()
line("ALIVE")
peak()
