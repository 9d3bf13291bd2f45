--- Units of work: commands on several aggregates committed together, each
-- stream checked against the version it was loaded at, or nothing at all.
--
--   store:unit_of_work(function(uow)
--     uow:execute(accounts, "1", "withdraw", { amount = 10 })
--     uow:execute(accounts, "2", "deposit", { amount = 10 })
--   end)
-- @classmod UnitOfWork
local repository = require "chronicle.write.repository"
local options = require "chronicle.options"

local execute_options = { meta = "table", command_id = "string" }

local M = {}
local UnitOfWork = {}
UnitOfWork.__index = UnitOfWork

--- A new, empty unit. With `opts.tolerate_rejections` a rejected command
-- only returns nil, err (reactors decide what to do); otherwise it dooms the unit.
function M.new(store, opts)
  opts = opts or {}
  return setmetatable({ store = store, opts = opts, entries = {}, order = {}, rejected = nil,
                        tolerant = opts.tolerate_rejections == true }, UnitOfWork)
end
local new = M.new

-- The tracked entry for (repo, id), loading it on first use.
function UnitOfWork:entry(repo, id)
  local stream = repo.aggregate:stream(id)
  local e = self.entries[stream]
  if e then
    if e.repo.aggregate ~= repo.aggregate then
      error("unit_of_work: stream " .. stream .. " used with two different aggregates", 3)
    end
    return e
  end
  local state, version = repo:load(id)
  if state == nil and type(version) == "table" then error(version, 0) end
  e = { repo = repo, id = id, stream = stream, state = state, version = version, loaded = version, events = {} }
  self.entries[stream] = e
  self.order[#self.order + 1] = e
  return e
end

--- The current state of aggregate `id` in this unit (with its pending events applied).
function UnitOfWork:load(repo, id)
  local e = self:entry(repo, id)
  return e.state, e.version
end

--- Runs a command inside the unit; its events are written when the unit commits.
-- @return state, events (the pending events of this command)
-- @return nil, err when the command is rejected: the whole unit will then write nothing
function UnitOfWork:execute(repo, id, command, args, opts)
  if getmetatable(repo) ~= repository.Repository then
    error("unit_of_work: execute(repo, id, command, args): repo must be a repository", 2)
  end
  opts = options.check("uow:execute", opts, execute_options, 2)
  local e = self:entry(repo, id)
  local events, rejection = repository.decide(repo, id, command, args, e.state, e.version, opts)
  if events == nil then
    if not self.tolerant then self.rejected = self.rejected or rejection end
    return nil, rejection
  end
  local full, new_state = repository.prepare(repo, id, command, events, e.state, e.version, opts)
  for _, ev in ipairs(full) do e.events[#e.events + 1] = ev end
  e.state = new_state
  e.version = e.version + #full
  return new_state, full
end

--- Adds the unit's appends (and snapshot puts) to `ops`; returns the
-- entries written, in the order of their appends.
function UnitOfWork:add_ops(ops)
  ops.appends = ops.appends or {}
  ops.puts = ops.puts or {}
  local written = {}
  for _, e in ipairs(self.order) do
    if #e.events > 0 then
      repository.write_ops(e.repo, e.id, e.events, e.loaded, e.state, e.version, ops)
      written[#written + 1] = { entry = e, index = #ops.appends }
    end
  end
  return written
end

--- After `store:write(ops)` succeeded: gives the unit's events their positions.
function UnitOfWork:written(written, result)
  for _, w in ipairs(written) do repository.set_positions(w.entry.events, result[w.index].position) end
end

function UnitOfWork:commit(dry_run)
  local ops = { appends = {}, puts = {}, dry_run = dry_run or nil }
  local written = self:add_ops(ops)
  local result = { streams = {}, dry_run = dry_run or nil }
  for _, e in ipairs(self.order) do
    result.streams[e.stream] = { state = e.state, version = e.version, events = e.events }
  end
  if #written == 0 then return result end
  local res, err = self.store:write(ops)
  if not res then return nil, err end
  repository.place_snapshots(self.store, ops, res)
  self:written(written, res)
  result.position = res.position
  return result
end

local run_options = { retries = options.integer_at_least(0), dry_run = "boolean" }

--- Runs `fn(uow)` and commits everything it did in one transaction. On a
-- conflict the whole function runs again (up to `retries` times), so it must
-- do its work through `uow` only. If a command is rejected, or `fn` returns
-- `nil, err`, nothing is written.
-- @tparam Store store the store
-- @tparam function fn the work
-- @tparam[opt] table opts `retries` (default 3), `dry_run`
-- @treturn[1] table `{streams = {[stream] = {state=, version=, events=}}, position=}`
-- @treturn[2] nil
-- @treturn[2] table error (`rejected`, `conflict`, ...)
function M.run(store, fn, opts)
  if type(fn) ~= "function" then error("unit_of_work: function expected", 3) end
  opts = options.check("unit_of_work", opts, run_options, 3)
  local retries = opts.retries or 3
  local last_err
  for _ = 0, retries do
    local uow = new(store, opts)
    local ok, err = fn(uow)
    if uow.rejected then return nil, uow.rejected end
    if ok == nil and err ~= nil then return nil, err end
    local result, commit_err = uow:commit(opts.dry_run)
    if result then return result end
    if commit_err.code ~= "conflict" then return nil, commit_err end
    last_err = commit_err
  end
  return nil, last_err
end

return M
