--- Progress of long work (export, import, ...): a bar with the rate and the
-- time left, redrawn at most ten times a second on standard error, and only
-- when standard error is a terminal; elsewhere every call does nothing.
-- @module chronicle.cli.progress
local common = require "chronicle.common"
local terminal = require "chronicle.cli.terminal"
local output = require "chronicle.cli.output"

local M = {}

local Bar = {}
Bar.__index = Bar

local function now() return common.now() / 1e9 end

--- A progress bar.
-- @tparam table opts `label`, `total` (the amount at 100%, or nil when unknown),
--   `unit` (e.g. "events"), `items` (true when `update` also gives a count of items that
--   differs from the measure of progress, such as events read while the bar follows bytes),
--   `out` (default io.stderr), `force` (draw even off a terminal), `enabled` (false: never draw)
-- @return an object with `update(done[, items])`, `finish()`
function M.new(opts)
  local out = opts.out or io.stderr
  if opts.enabled == false or (not opts.force and not terminal.isatty(out)) then
    return { update = function() end, finish = function() end, active = false }
  end
  return setmetatable({
    out = out, label = opts.label or "", total = opts.total, unit = opts.unit or "",
    started = now(), last_draw = 0, done = 0, items = opts.items and 0 or nil, active = true,
  }, Bar)
end

function Bar:line(t)
  local elapsed = math.max(t - self.started, 1e-9)
  local count = self.items or self.done
  local counted = string.format("%s %s  %s %s/s", output.count(count), self.unit,
                                output.count(math.floor(count / elapsed)), self.unit)
  if self.total and self.total > 0 then
    local frac = math.min(self.done / self.total, 1)
    local rate = self.done / elapsed
    local left = rate > 0 and (self.total - self.done) / rate or nil
    local right = string.format("%3d%%  %s  %s left", math.floor(frac * 100), counted,
                                left and output.duration(left) or "?")
    local bar_width = math.max(terminal.width() - #self.label - #right - 6, 10)
    local filled = math.floor(frac * bar_width)
    return string.format("%s [%s%s] %s", self.label, string.rep("=", filled), string.rep(" ", bar_width - filled), right)
  end
  return string.format("%s  %s  %s", self.label, counted, output.duration(elapsed))
end

--- Records `done` (and the count of items, for a bar made with `items`) and redraws when it is time.
function Bar:update(done, items)
  self.done = done
  if items then self.items = items end
  local t = now()
  if t - self.last_draw < 0.1 then return end
  self.last_draw = t
  local text = self:line(t)
  local width = terminal.width()
  if #text >= width then text = text:sub(1, width - 1) end
  self.out:write("\r", text, "\27[K")
  self.out:flush()
end

--- Clears the bar from the terminal.
function Bar:finish()
  self.out:write("\r\27[K")
  self.out:flush()
end

--- A one-line status for work without measurable progress ("verifying..."):
-- shown on a terminal until `finish()`.
function M.status(text, out)
  out = out or io.stderr
  if not terminal.isatty(out) then return { finish = function() end } end
  out:write(text, "\27[K")
  out:flush()
  return { finish = function() out:write("\r\27[K"); out:flush() end }
end

return M
