--- A small W3C WebDriver client for the console specs: Debian's chromedriver
-- driving Debian's chromium headless, spoken to over HTTP with lua-http.
-- Everything it starts is bounded by `timeout` and killed by `quit`.
local cjson = require "cjson"
local helpers = require "helpers"
local http = require("chronicle.server.http").load()

local M = {}
M.__index = M

local function free_port()
  -- ask the kernel for a free port on 127.0.0.1 by binding port 0 for a moment
  local socket = require "cqueues.socket"
  local s = assert(socket.listen("127.0.0.1", 0))
  assert(s:listen())
  local _, _, port = s:localname()
  s:close()
  return port
end

--- True when chromium and chromedriver are installed.
function M.available()
  return os.execute("command -v chromedriver >/dev/null && command -v chromium >/dev/null") == true
end

local function call(self, method, path, body)
  local req = http.request.new_from_uri(self.base .. path)
  req.headers:upsert(":method", method)
  if body then
    req.headers:upsert("content-type", "application/json")
    req:set_body(cjson.encode(body))
  end
  local headers, stream = req:go(60)
  if not headers then error("webdriver: no answer to " .. method .. " " .. path .. ": " .. tostring(stream)) end
  local text = stream:get_body_as_string(60) or ""
  local ok, decoded = pcall(cjson.decode, text)
  if not ok then error("webdriver: not JSON from " .. path .. ": " .. text:sub(1, 200)) end
  if headers:get(":status") ~= "200" then
    error(("webdriver: %s %s: %s"):format(method, path, cjson.encode(decoded.value or decoded)), 2)
  end
  return decoded.value
end

--- Starts chromedriver and a headless chromium session.
function M.start()
  local port = free_port()
  local work = helpers.tmpdir()
  local pid = tonumber(helpers.capture(("setsid timeout -s KILL 300 chromedriver --port=%d > %s/driver.log 2>&1 & echo $!")
    :format(port, work)))
  local self = setmetatable({ base = "http://127.0.0.1:" .. port, pid = pid, work = work }, M)
  for _ = 1, 100 do
    local ok = pcall(call, self, "GET", "/status")
    if ok then break end
    os.execute("sleep 0.1")
  end
  local caps = { capabilities = { alwaysMatch = { browserName = "chrome", ["goog:chromeOptions"] = {
    binary = "/usr/bin/chromium",
    args = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,900", "--user-data-dir=" .. work .. "/profile" },
  } } } }
  local session = call(self, "POST", "/session", caps)
  self.session = "/session/" .. session.sessionId
  return self
end

function M:go(url) call(self, "POST", self.session .. "/url", { url = url }) end

--- The elements matching a CSS selector (possibly none).
function M:find_all(css)
  local found = call(self, "POST", self.session .. "/elements", { using = "css selector", value = css })
  local out = {}
  for i, el in ipairs(found) do out[i] = select(2, next(el)) end   -- a reference is { [W3C element key] = id }
  return out
end

function M:text(el) return call(self, "GET", self.session .. "/element/" .. el .. "/text") end
function M:click(el) call(self, "POST", self.session .. "/element/" .. el .. "/click", {}) end

--- Runs JavaScript in the page and returns its result.
-- (lua-cjson writes an empty table as {}, and WebDriver wants `args` to be a list: pass one nil-free
-- placeholder that scripts ignore when they need no arguments.)
function M:run(script, args)
  return call(self, "POST", self.session .. "/execute/sync", { script = script, args = args or { 0 } })
end

--- Waits (up to `seconds`) until `css` matches an element whose text contains `text` (any text when nil).
-- Returns the element and its text, or nil and the last texts seen.
function M:wait_for(css, text, seconds)
  local seen
  for _ = 1, (seconds or 10) * 10 do
    seen = {}
    -- The page may re-render between finding an element and reading it (a stale reference): look again.
    local ok, found = pcall(self.find_all, self, css)
    for _, el in ipairs(ok and found or {}) do
      local read, t = pcall(self.text, self, el)
      if read then
        seen[#seen + 1] = t
        if text == nil or t:find(text, 1, true) then return el, t end
      end
    end
    os.execute("sleep 0.1")
  end
  return nil, table.concat(seen, " | ")
end

--- Saves a PNG screenshot of the page to `path`.
function M:screenshot(path)
  local b64 = call(self, "GET", self.session .. "/screenshot")
  local json = require "chronicle.cli.json"
  helpers.write_file(path, assert(json.unbase64(b64)))
end

function M:quit()
  pcall(call, self, "DELETE", self.session)
  -- the process group setsid made: timeout, chromedriver and the chromium it started
  os.execute("kill -KILL -" .. self.pid .. " 2>/dev/null")
end

return M
