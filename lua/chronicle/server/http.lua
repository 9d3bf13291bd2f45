--- lua-http and cqueues, as the server loads them.
-- Debian ships lua-http (pure Lua) for Lua 5.1 to 5.3 only, and some of its
-- pure-Lua dependencies (lua-fifo) for 5.1 and 5.2 only; all of it runs
-- unchanged on 5.4. So when `require "http.server"` fails, the folders Debian
-- installs them in are added to the end of package.path, newest first.
-- @module chronicle.server.http
local M = {}

local function add_debian_paths()
  for _, v in ipairs({ "5.3", "5.2", "5.1" }) do
    local dir = "/usr/share/lua/" .. v
    if not package.path:find(dir, 1, true) then
      package.path = package.path .. ";" .. dir .. "/?.lua;" .. dir .. "/?/init.lua"
    end
  end
end

--- Loads lua-http's modules; raises with what to install when they are missing.
-- @treturn table `{ server =, headers =, request =, util =, cqueues =, condition = }`
function M.load()
  local ok = pcall(require, "http.server")
  if not ok then add_debian_paths() end
  local ok2, err = pcall(require, "http.server")
  if not ok2 then
    error("chronicle serve needs lua-http and lua-cqueues (Debian: apt-get install lua-http lua-cqueues): "
          .. tostring(err):gsub("\n.*", ""), 0)
  end
  return {
    server = require "http.server",
    headers = require "http.headers",
    request = require "http.request",
    util = require "http.util",
    cqueues = require "cqueues",
    condition = require "cqueues.condition",
  }
end

return M
