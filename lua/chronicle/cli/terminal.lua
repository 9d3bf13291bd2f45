--- What the chronicle command knows about its terminal: whether a stream is
-- one (lua-term's isatty, else the shell's `test -t`), colours and width.
-- @module chronicle.cli.terminal
local M = {}

local has_term, term = pcall(require, "term")
if not has_term or type(term.isatty) ~= "function" then term = nil end

local fds = { [io.stdin] = 0, [io.stdout] = 1, [io.stderr] = 2 }
local cache = {}

--- True when `file` (io.stdin, io.stdout or io.stderr) is a terminal.
function M.isatty(file)
  if cache[file] == nil then
    if term then
      cache[file] = term.isatty(file) == true
    else
      local fd = fds[file]
      cache[file] = fd ~= nil and os.execute("test -t " .. fd) == true
    end
  end
  return cache[file]
end

--- True when output to `file` should be coloured: a terminal, no NO_COLOR, TERM not dumb.
function M.colour(file)
  local no = os.getenv("NO_COLOR")
  if no ~= nil and no ~= "" then return false end
  if os.getenv("TERM") == "dumb" then return false end
  return M.isatty(file)
end

local width
--- Columns of the terminal (COLUMNS, else `tput cols`, else 80).
function M.width()
  if not width then
    width = tonumber(os.getenv("COLUMNS") or "")
    if not width then
      local p = io.popen("tput cols 2>/dev/null")
      width = p and tonumber(p:read("l") or "")
      if p then p:close() end
    end
    if not width or width < 20 then width = 80 end
  end
  return width
end

-- ANSI SGR codes by role: the palette of every coloured output.
local sgr = {
  dim = "2", bold = "1", key = "36", string = "32", number = "35", boolean = "33",
  type = "1;33", stream = "36", position = "2", error = "31", ok = "32", nothing = "2",
}

--- A function `paint(role, text)` that colours when `enabled`, else returns text unchanged.
function M.painter(enabled)
  if not enabled then return function(_, text) return text end end
  return function(role, text)
    local code = sgr[role]
    if not code or text == "" then return text end
    return "\27[" .. code .. "m" .. text .. "\27[0m"
  end
end

return M
