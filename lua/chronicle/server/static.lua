--- The web console's files: served from the `web` folder beside this module,
-- by name only (no sub-folders, no `..`), so nothing outside it is reachable.
-- @module chronicle.server.static
local api = require "chronicle.server.api"

local M = {}

local TYPES = {
  html = "text/html; charset=utf-8", css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8", svg = "image/svg+xml", png = "image/png",
}

--- The folder holding the console's files (found next to this module).
function M.folder()
  local here = package.searchpath("chronicle.server.static", package.path)
  return here and here:gsub("static%.lua$", "web") or nil
end

local cache = {}

local function serve(name)
  local ext = name:match("%.(%a+)$")
  if not TYPES[ext] or not name:match("^[%w_%-]+%.%a+$") then
    return api.refuse(404, "not_found", "no such file: " .. name)
  end
  local body = cache[name]
  if not body then
    local dir = M.folder()
    local f = dir and io.open(dir .. "/" .. name, "rb")
    if not f then return api.refuse(404, "not_found", "no such file: " .. name) end
    body = f:read("a")
    f:close()
    cache[name] = body
  end
  return 200, body, TYPES[ext]
end

--- GET /: the console's page.
function M.index() return serve("index.html") end

--- GET /console/{file}
function M.file(_, req) return serve(req.params.file) end

return M
