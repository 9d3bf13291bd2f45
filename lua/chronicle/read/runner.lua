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
local group = require "chronicle.read.group"
local common = require "chronicle.common"

local M = {}
local Runner = {}
Runner.__index = Runner

local function positive(v)
  if type(v) == "number" and v > 0 and v < math.huge then return true end
  return false, "a number > 0"
end
local new_options = { wait = options.number_at_least(0), lease = positive, groups = "boolean",
  partitions = function(v)
    if math.type(v) == "integer" and v >= 1 and v <= group.MAX_PARTITIONS then return true end
    return false, "an integer from 1 to " .. group.MAX_PARTITIONS
  end }
local run_options = { until_idle = "boolean", max_seconds = options.number_at_least(0) }

--- A runner over everything registered on `store` (now and later).
--
-- Runners (in this process or others, on this host or others sharing the
-- store) serving the same handler, reactor or projection form its group and
-- share its work (see chronicle.group).
-- @tparam Store store the store
-- @tparam[opt] table opts `wait` (seconds per sleep, default 1), `lease`
--   (seconds a member's leases last without renewal, default 5; > 0),
--   `partitions` (of a new handler's or reactor's group, default 16; every
--   member must give the same), `groups` (false: no group, this runner does
--   all the work of what it serves, as if alone)
function M.new(store, opts)
  opts = options.check("runner", opts, new_options, 3)
  return setmetatable({ store = store, wait = opts.wait or 1, stopped = false, errors = {},
                        lease = opts.lease or group.LEASE, partitions = opts.partitions or group.PARTITIONS,
                        use_groups = opts.groups ~= false, groups = {} }, Runner)
end

-- This runner's membership of the group of `kind` `name`, or nil without groups.
-- `def` (a handler's or reactor's) gives the events it handles, which the deal weighs.
function Runner:group(kind, name, def)
  if not self.use_groups then return nil end
  local key = kind .. ":" .. name
  local g = self.groups[key]
  if not g then
    g = group.new(self.store, kind, name, { lease = self.lease,
                                           partitions = kind == "projection" and 1 or self.partitions,
                                           filter = def and { types = def.types, category = def.category } })
    self.groups[key] = g
  end
  return g
end

-- Beats group `g` when due; true when this member holds some of its work.
local function hold(g)
  if not g then return true end
  local ok, err = g:tick()
  if not ok then return nil, err end
  return g.owned_count > 0
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
    local g = self:group("projection", name)
    drain("projection", name, function()
      local held, err = hold(g)
      if held == nil then return nil, err end
      if not held then return "idle" end
      return projection.run_batch(store, entry.def, entry.state)
    end)
  end
  for name, h in pairs(reg.handlers) do
    local g = self:group("handler", name, h)
    drain("handler", name, function()
      local held, err = hold(g)
      if held == nil then return nil, err end
      if not held then return "idle" end
      return handler.run_batch(store, h, g)
    end)
  end
  for name, r in pairs(reg.reactors) do
    local g = self:group("reactor", name, r)
    drain("reactor", name, function()
      local held, err = hold(g)
      if held == nil then return nil, err end
      if not held then return "idle" end
      return reactor.run_batch(store, r, g)
    end)
  end
  return work
end

-- The groups this runner serves now (of what is registered), by key.
function Runner:served()
  local reg, out = self.store:registrations(), {}
  for kind, list in pairs({ projection = reg.projections, handler = reg.handlers, reactor = reg.reactors }) do
    for name in pairs(list) do
      local g = self.groups[kind .. ":" .. name]
      if g then out[#out + 1] = g end
    end
  end
  return out
end

-- True while some partition of a served group waits for a member to take it
-- (a member died and its lease has not expired yet, or a rebalance is under way).
function Runner:unsettled()
  for _, g in ipairs(self:served()) do
    if not g.settled then return true end
  end
  return false
end

-- Seconds until the next beat some served group is due.
function Runner:until_beat()
  local soonest
  for _, g in ipairs(self:served()) do
    if soonest == nil or g.next_beat < soonest then soonest = g.next_beat end
  end
  if not soonest then return math.huge end
  return math.max(0, (soonest - common.now()) / 1e9)
end

--- Leaves every group this runner is a member of (its leases are released
-- at once instead of expiring). `run` does it when it returns.
function Runner:leave()
  if not self.store:is_open() then return end
  for key, g in pairs(self.groups) do
    pcall(g.leave, g)
    self.groups[key] = nil
  end
end

--- The groups this runner is a member of: a list of `chronicle.read.group.status`
-- tables (members, their partitions, share and lag).
function Runner:group_status()
  local out = {}
  for _, g in ipairs(self:served()) do
    out[#out + 1] = group.status(self.store, g.kind, g.name)
  end
  table.sort(out, function(a, b) return a.kind .. ":" .. a.name < b.kind .. ":" .. b.name end)
  return out
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
  local function finish(status)
    local report = self:report()
    self:leave()
    return status, report
  end
  while not self.stopped do
    local head = store:head()
    local n = catch_up(self)
    local unsettled = self:unsettled()
    if opts.until_idle and n == 0 and store:head() == head and not unsettled then return finish("idle") end
    if deadline and os.time() >= deadline then return finish("timeout") end
    if self.stopped then break end
    -- Sleep until something is appended, or the next lease renewal is due.
    local nap = math.min(self.wait, self:until_beat())
    if unsettled then nap = math.min(nap, self.lease / 10) end
    if store:head() == head then store:wait(head, nap) end
  end
  return finish("stopped")
end

--- Asks a running `run` to return after its current pass.
function Runner:stop()
  self.stopped = true
end

return M
