--- The runner: keeps a store's projections, handlers and reactors caught
-- up, batch by batch, sleeping in `store:wait` until new events arrive
-- (from this process or another).
--
-- Nothing a projection, handler or reactor does makes the runner raise: a
-- failure faults that one (or sends its event to the dead letters, for a
-- handler) and the others go on. What stopped is in the report that
-- `run_once` and `run` return as their second value (see `Runner:report`).
-- @classmod Runner
local projection = require "chronicle.read.projection"
local handler = require "chronicle.read.handler"
local reactor = require "chronicle.read.reactor"
local view = require "chronicle.read.view"
local spaces = require "chronicle.spaces"
local fault_util = require "chronicle.fault"
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
      local ok, status, err = pcall(run_one)
      if not ok then
        -- A closed store is the caller's doing: say so where it happened.
        if not store:is_open() then error(status, 0) end
        status, err = nil, status
      end
      if status == nil then
        self.errors[#self.errors + 1] = { kind = kind, name = name, error = err,
                                          message = fault_util.message(err) }
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

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

--- What is wrong now with what is registered on the runner's store:
-- `faulted`, a list (by kind, then name) of `{kind = "projection" | "reactor",
-- name, error, position, stream, type, id}`; `skipped`, the names of
-- projections whose view another definition owns; `dead_letters`, handler
-- name -> number of its dead letters (only handlers that have some);
-- `errors`, the store failures of the last `run_once` (`{kind, name, error,
-- message}`: tried again next pass); and `ok`, true when all of these are empty.
function Runner:report()
  local store = self.store
  local reg = store:registrations()
  local out = { faulted = {}, skipped = {}, dead_letters = {}, errors = self.errors }
  for _, name in ipairs(sorted_keys(reg.projections)) do
    local p = reg.projections[name].def
    local meta = store:kv_get(view.PROJECTIONS, name)
    if type(meta) == "table" then
      if meta.version ~= p.version or meta.hash ~= p.hash then
        out.skipped[#out.skipped + 1] = name
      elseif meta.status == "faulted" then
        local f = meta.fault or {}
        out.faulted[#out.faulted + 1] = { kind = "projection", name = name, error = f.error, position = f.position,
                                          stream = f.stream, type = f.type, id = f.id }
      end
    end
  end
  for _, name in ipairs(sorted_keys(reg.reactors)) do
    local row = store:kv_get(view.PROJECTIONS, spaces.reactor_status(name))
    if type(row) == "table" and row.status == "faulted" then
      local f = row.fault or {}
      out.faulted[#out.faulted + 1] = { kind = "reactor", name = name, error = f.error, position = f.position,
                                        stream = f.stream, type = f.type, id = f.id }
    end
  end
  for _, name in ipairs(sorted_keys(reg.handlers)) do
    local n = store:kv_count(handler.DEAD_LETTERS, spaces.dead_letters_of(name))
    if n > 0 then out.dead_letters[name] = n end
  end
  out.ok = #out.faulted == 0 and #out.skipped == 0 and next(out.dead_letters) == nil and #out.errors == 0
  return out
end

--- Catches everything up once, then returns.
-- @return the number of batches run, and the report (see `Runner:report`)
local function catch_up(self)
  self.errors = {}
  local total = 0
  repeat
    local n = self:pass()
    total = total + n
  until n == 0
  return total
end

function Runner:run_once()
  return catch_up(self), self:report()
end

--- Runs until `stop()` is called (from a handler), or `opts.until_idle` and
-- nothing is left to do, or `opts.max_seconds` pass.
-- @return "idle" | "timeout" | "stopped", and the report (see `Runner:report`)
function Runner:run(opts)
  opts = options.check("runner:run", opts, run_options, 2)
  local store = self.store
  local deadline = opts.max_seconds and os.time() + opts.max_seconds
  self.stopped = false
  while not self.stopped do
    local head = store:head()
    local n = catch_up(self)
    if opts.until_idle and n == 0 and store:head() == head then return "idle", self:report() end
    if deadline and os.time() >= deadline then return "timeout", self:report() end
    if self.stopped then break end
    if store:head() == head then store:wait(head, self.wait) end
  end
  return "stopped", self:report()
end

--- Asks a running `run` to return after its current pass.
function Runner:stop()
  self.stopped = true
end

return M
