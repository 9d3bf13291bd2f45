-- Runs the reliability specs' helper scripts (spec/support/reliability/*.lua) in child processes and
-- tells a crash (a signal, or a sanitizer report under `make check`) from an exit.
local helpers = require "helpers"

local M = {}

M.dir = helpers.root .. "/spec/support/reliability"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end
M.read = read

-- Under `make check`, the lua5.4 first on PATH is a wrapper script that sets LD_PRELOAD to
-- the ASan runtime (scripts/asan-lua.sh). A preload of ours must come after that list, so
-- with such a wrapper we run the real interpreter with both lists ourselves.
local wrapper_preload, real_lua
do
  local path = helpers.capture("command -v lua5.4")
  local f = io.open(path, "rb")
  local head = f and f:read(4096) or ""
  if f then f:close() end
  if head:sub(1, 2) == "#!" then
    local list, lua = head:match('LD_PRELOAD="([^"]*)"%s+"([^"]+)"')
    if list then wrapper_preload, real_lua = list, lua end
  end
end
M.sanitized = wrapper_preload ~= nil

-- The shell command running spec/support/reliability/SCRIPT (see M.lua).
local function command(script, args, env, preload)
  local cmd = helpers.lua_command(M.dir .. "/" .. script, table.unpack(args or {}))
  local prefix = {}
  for k, v in pairs(env or {}) do prefix[#prefix + 1] = k .. "=" .. helpers.quote(v) end
  if preload then
    if wrapper_preload then
      prefix[#prefix + 1] = "LD_PRELOAD=" .. helpers.quote(wrapper_preload .. " " .. preload)
      cmd = cmd:gsub(" lua5%.4 ", " " .. helpers.quote(real_lua) .. " ", 1)
    else
      prefix[#prefix + 1] = "LD_PRELOAD=" .. helpers.quote(preload)
    end
  end
  -- into helpers.lua_command's own `env`, so that no other program runs with the preload
  -- (the sanitizer guard drops LD_PRELOAD from the environment of the first program it is in)
  assert(cmd:sub(1, 4) == "env ", "helpers.lua_command no longer starts with env")
  if #prefix > 0 then cmd = "env " .. table.concat(prefix, " ") .. " " .. cmd:sub(5) end
  return cmd
end

--- Runs `lua5.4 spec/support/reliability/SCRIPT args...` with extra environment `env` ({NAME=value}) and,
-- when `preload` is given, that library preloaded. Returns a result table:
--   { status = "exit"|"signal", code = n, crashed = bool, stdout = s, stderr = s }
function M.lua(script, args, env, preload)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = command(script, args, env, preload)
  local _, how, code = os.execute(cmd .. " >" .. out .. " 2>" .. err .. " </dev/null")
  local r = { status = how, code = code, stdout = read(out), stderr = read(err) }
  os.remove(out)
  os.remove(err)
  r.crashed = how == "signal" or (how == "exit" and code >= 128)
    or r.stderr:find("AddressSanitizer", 1, true) ~= nil
    or r.stderr:find("LeakSanitizer", 1, true) ~= nil
    or r.stderr:find("runtime error:", 1, true) ~= nil
  return r
end

--- Starts `lua5.4 spec/support/reliability/SCRIPT args...` in the background; returns its pid (the
-- interpreter's own: `env` and the sanitizer wrapper exec it). Output goes to `log`.
function M.spawn(script, args, log)
  local pidfile = os.tmpname()
  local cmd = command(script, args)
  assert(os.execute(("%s >%s 2>&1 </dev/null & echo $! >%s"):format(cmd, helpers.quote(log), pidfile)))
  local pid = tonumber(read(pidfile):match("%d+"))
  os.remove(pidfile)
  return assert(pid, "could not start " .. script)
end

--- A one-line description of a run for failure messages.
function M.describe(r)
  return ("%s %s; stdout: %s; stderr: %s"):format(r.status, tostring(r.code), r.stdout:sub(1, 600),
                                                  r.stderr:sub(1, 1500))
end

--- Builds scripts/faultshim.c into `dir`; returns the .so path, or nil and the compiler's output.
function M.build_shim(dir)
  local so = dir .. "/faultshim.so"
  local log = dir .. "/faultshim.log"
  local ok = os.execute(("cc -shared -fPIC -O2 -o %s %s -ldl >%s 2>&1"):format(
    helpers.quote(so), helpers.quote(helpers.root .. "/scripts/faultshim.c"), helpers.quote(log)))
  if not ok then return nil, read(log) end
  return so
end

--- True when the long versions were asked for (CHRONICLE_LONG=1).
M.long = os.getenv("CHRONICLE_LONG") == "1"

return M
