--- Starting `chronicle serve` as a real process on a free loopback port, and
-- talking to it with curl. Every server is killed by `stop_all`, also when a
-- test fails; each is also started under `timeout`, so none outlives the run.
local helpers = require "helpers"
local json = require "chronicle.cli.json"

local M = {}

local running = {}

local function lua_env()
  local root = helpers.root
  local path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;;"
  local cpath = (os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") or (root .. "/build/?.so;;"))
  return ("LUA_PATH=%s LUA_PATH_5_4=%s LUA_CPATH=%s LUA_CPATH_5_4=%s"):format(
    helpers.quote(path), helpers.quote(path), helpers.quote(cpath), helpers.quote(cpath))
end
M.lua_env = lua_env

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Starts a server on `dir`; returns `{ url, port, pid, log, token }`.
-- opts: `token` (a string: writes allowed with it), `args` (more command-line words), `life` (seconds, 120)
function M.start(dir, opts)
  opts = opts or {}
  local work = helpers.tmpdir()
  local log, token_file = work .. "/server.log", work .. "/token"
  local args = { "serve", helpers.quote(dir), "--listen", "127.0.0.1:0" }
  if opts.token then
    helpers.write_file(token_file, opts.token .. "\n")
    args[#args + 1] = "--token-file " .. helpers.quote(token_file)
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = helpers.quote(a) end
  -- setsid: the server and the `timeout` that bounds it get a process group of their own, so
  -- that stop_all can kill both (SIGKILL to `timeout` alone leaves the server running, orphaned).
  local cmd = ("%s setsid timeout -s KILL %d lua5.4 %s/bin/chronicle %s > %s 2>&1 & echo $!"):format(
    lua_env(), opts.life or 120, helpers.quote(helpers.root), table.concat(args, " "), helpers.quote(log))
  local pid = tonumber(helpers.capture(cmd))
  local srv = { pid = pid, log = log, token = opts.token }
  running[#running + 1] = srv
  for _ = 1, 200 do                      -- up to 10 s for the server to say where it listens
    local text = read_file(log) or ""
    local port = text:match("listening on http://127%.0%.0%.1:(%d+)")
    if port then
      srv.port, srv.url = tonumber(port), "http://127.0.0.1:" .. port
      return srv
    end
    if not M.alive(srv) then error("the server exited at start: " .. text) end
    os.execute("sleep 0.05")
  end
  error("the server did not start listening within 10 s: " .. (read_file(log) or ""))
end

function M.alive(srv)
  return os.execute("kill -0 " .. srv.pid .. " 2>/dev/null") == true
end

--- Kills every server started since the last call (SIGKILL when `hard`).
function M.stop_all(hard)
  for i = #running, 1, -1 do
    local srv = running[i]
    os.execute(("kill -%s -%d 2>/dev/null"):format(hard and "KILL" or "TERM", srv.pid))   -- the group
    running[i] = nil
  end
end

--- Stops one server with SIGTERM (or `signal`) and waits (up to 10 s) until it is gone.
function M.stop(srv, signal)
  signal = signal or "TERM"
  -- `timeout` passes TERM (and INT, HUP) on to the server; it cannot pass KILL on, so that one
  -- goes to the whole process group
  local target = signal == "KILL" and ("-" .. srv.pid) or tostring(srv.pid)
  os.execute(("kill -%s %s 2>/dev/null"):format(signal, target))
  for _ = 1, 200 do
    if not M.alive(srv) then return true end
    os.execute("sleep 0.05")
  end
  return false
end

--- One request with curl. Returns status, body text, and the decoded body
-- (nil when it is not JSON). opts: `method`, `body`, `token`, `headers`, `max_time`.
function M.request(srv, path, opts)
  opts = opts or {}
  local work = helpers.tmpdir()
  local out = work .. "/body"
  local parts = { "curl -sS -o", helpers.quote(out), "-w '%{http_code}'", "--max-time", tostring(opts.max_time or 30) }
  if opts.method then parts[#parts + 1] = "-X " .. opts.method end
  if opts.body then
    helpers.write_file(work .. "/req", opts.body)
    parts[#parts + 1] = "--data-binary @" .. helpers.quote(work .. "/req")
    parts[#parts + 1] = "-H 'content-type: application/json'"
  end
  if opts.token then parts[#parts + 1] = "-H " .. helpers.quote("Authorization: Bearer " .. opts.token) end
  for _, h in ipairs(opts.headers or {}) do parts[#parts + 1] = "-H " .. helpers.quote(h) end
  parts[#parts + 1] = helpers.quote(srv.url .. path)
  parts[#parts + 1] = "2>" .. helpers.quote(work .. "/err")
  local status = tonumber(helpers.capture(table.concat(parts, " ")))
  local body = read_file(out) or ""
  if status == 0 then body = "curl failed: " .. (read_file(work .. "/err") or "") end
  return status, body, (json.decode(body))
end

--- Appends through the server: POST /streams/{stream}.
function M.append(srv, stream, events, expected, token)
  local body = json.encode({ expected = expected, events = events })
  return M.request(srv, "/streams/" .. stream, { method = "POST", body = body, token = token or srv.token })
end

return M
