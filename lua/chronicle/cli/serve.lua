--- serve: the HTTP API, live subscriptions and web console of one store
-- (chronicle.server), until interrupted.
-- @module chronicle.cli.serve
local context = require "chronicle.cli.context"
local projections = require "chronicle.cli.projections"

local M = {}

-- "host:port", "port" or ":port" -> host, port
local function parse_listen(text)
  local host, port = text:match("^%[(.*)%]:(%d+)$")
  if not host then host, port = text:match("^(.*):(%d+)$") end
  if not host then port = text:match("^(%d+)$") end
  port = math.tointeger(tonumber(port))
  if not port or port > 65535 then context.fail("--listen must be HOST:PORT or PORT, got '" .. text .. "'", 2) end
  if host == nil or host == "" then host = "127.0.0.1" end
  return host, port
end

local function read_token(path)
  local f, err = io.open(path, "rb")
  if not f then context.fail("cannot read the token file: " .. tostring(err)) end
  local token = f:read("a"):gsub("%s+$", ""):gsub("^%s+", "")
  f:close()
  if #token < 8 then context.fail("the token in " .. path .. " must be at least 8 characters") end
  return token
end

function M.serve(args)
  local server = require "chronicle.server"
  local host, port = parse_listen(args.listen or "127.0.0.1:8080")
  local token = args.token_file and read_token(args.token_file) or nil
  -- Scripts register their projections in the store, so they need it writable.
  local store = context.open(args.dir, (token or args.scripts) and "create" or "read")
  local repositories
  if args.scripts then
    projections.require_scripts("serve --scripts")
    local scripts = projections.load(store, args.scripts)
    repositories = {}
    for name in pairs(scripts.aggregates or {}) do repositories[name] = scripts:repository(name) end
  end
  local limits = { heartbeat = args.heartbeat ~= nil and args.heartbeat > 0 and args.heartbeat or nil }
  local srv = server.new(store, { host = host, port = port, token = token, repositories = repositories,
                                  limits = limits })
  local bound_host, bound_port = srv:start()
  io.stdout:write(("chronicle serve: listening on http://%s:%d (%s)\n"):format(
    bound_host:find(":") and ("[" .. bound_host .. "]") or bound_host, bound_port,
    token and "writes need the token" or "read-only"))
  io.stdout:flush()
  srv:run({ signals = true })
  store:close()
end

return M
