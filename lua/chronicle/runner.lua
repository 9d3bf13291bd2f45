--- The runner: keeps a store's projections, handlers and reactors caught
-- up, batch by batch, sleeping in `store:wait` until new events arrive
-- (from this process or another).
-- @classmod Runner
local projection = require "chronicle.projection"
local handler = require "chronicle.handler"
local reactor = require "chronicle.reactor"
local options = require "chronicle.options"

local M = {}
local Runner = {}
Runner.__index = Runner

--- A runner over everything registered on `store` (now and later).
-- @tparam[opt] table opts `wait` (seconds per sleep, default 1)
local new_options = { wait = options.number_at_least(0) }
local run_options = { until_idle = "boolean", max_seconds = options.number_at_least(0) }

function M.new(store, opts)
  opts = options.check("runner", opts, new_options, 3)
  return setmetatable({ store = store, wait = opts.wait or 1, stopped = false, errors = {} }, Runner)
end

-- One pass: every subscriber runs batches until idle. Returns the number of
-- batches that made progress.
function Runner:pass()
  local store = self.store
  local reg = store:registrations()
  local work = 0
  local function drain(kind, name, run_one)
    while true do
      local status, err = run_one()
      if status == nil then
        self.errors[#self.errors + 1] = { kind = kind, name = name, error = err }
        return
      end
      if status ~= "progress" then return end
      work = work + 1
    end
  end
  for name, entry in pairs(reg.projections) do
    drain("projection", name, function() return projection.run_batch(store, entry.def, entry.state) end)
  end
  for name, h in pairs(reg.handlers) do
    drain("handler", name, function() return handler.run_batch(store, h) end)
  end
  for name, r in pairs(reg.reactors) do
    drain("reactor", name, function() return reactor.run_batch(store, r) end)
  end
  return work
end

--- Catches everything up once, then returns.
-- @return the number of batches run
function Runner:run_once()
  local total = 0
  repeat
    local n = self:pass()
    total = total + n
  until n == 0
  return total
end

--- Runs until `stop()` is called (from a handler), or `opts.until_idle` and
-- nothing is left to do, or `opts.max_seconds` pass.
function Runner:run(opts)
  opts = options.check("runner:run", opts, run_options, 2)
  local store = self.store
  local deadline = opts.max_seconds and os.time() + opts.max_seconds
  self.stopped = false
  while not self.stopped do
    local head = store:head()
    local n = self:run_once()
    if opts.until_idle and n == 0 and store:head() == head then return "idle" end
    if deadline and os.time() >= deadline then return "timeout" end
    if self.stopped then break end
    if store:head() == head then store:wait(head, self.wait) end
  end
  return "stopped"
end

--- Asks a running `run` to return after its current pass.
function Runner:stop()
  self.stopped = true
end

return M
