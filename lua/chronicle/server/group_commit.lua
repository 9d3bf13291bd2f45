--- Group commit: appends that arrive together are committed in one transaction.
--
-- Request handlers run as cqueues coroutines in one thread. The first append
-- that finds no batch forming becomes the batch's leader: it yields once, so
-- that every request already readable joins the batch, then commits the
-- whole batch with one `append_many` (one transaction, so one sync for all
-- of them) and wakes the others. Each entry keeps its own expected-version
-- check: when one entry is refused (`err.index` names it), that entry gets
-- its error and the rest are committed again without it, so one client's
-- conflict never fails another's append. Idempotent retries work as for
-- `append_many`: an entry whose events are all stored gets its original result.
-- @module chronicle.server.group_commit
local M = {}
M.__index = M

--- A group committer for `store`.
-- @param store an open store
-- @param cq the `cqueues` module
-- @param condition the `cqueues.condition` module
-- @tparam[opt] function on_commit `on_commit(entries_committed, events_committed)` after each commit
function M.new(store, cq, condition, on_commit)
  return setmetatable({ store = store, cq = cq, pending = {}, forming = false, done = condition.new(),
                        on_commit = on_commit or function() end, commits = 0 }, M)
end

local function events_of(slots)
  local n = 0
  for _, slot in ipairs(slots) do n = n + #slot.entry.events end
  return n
end

-- Commits `slots` one entry at a time: the fallback when the batch raised
-- (bad input in some entry), so that each entry gets its own outcome.
local function commit_each(self, slots)
  for _, slot in ipairs(slots) do
    local ok, res, err = pcall(self.store.append_many, self.store, { slot.entry })
    if not ok then slot.raised = res
    elseif res then
      slot.result = res[1]
      self.commits = self.commits + 1
      self.on_commit(1, #slot.entry.events)
    else slot.err = err end
  end
end

-- Commits a batch, taking refused entries out until the rest commits.
local function commit(self, slots)
  local live = slots
  while #live > 0 do
    local entries = {}
    for i, slot in ipairs(live) do entries[i] = slot.entry end
    local ok, res, err = pcall(self.store.append_many, self.store, entries)
    if not ok then return commit_each(self, live) end
    if res then
      for i, slot in ipairs(live) do slot.result = res[i] end
      self.commits = self.commits + 1
      self.on_commit(#live, events_of(live))
      return
    end
    local i = err and math.tointeger(err.index)
    if not i or i < 1 or i > #live then      -- not about one entry (disk full, ...): it is everyone's
      for _, slot in ipairs(live) do slot.err = err end
      return
    end
    live[i].err = err
    table.remove(live, i)
  end
end

--- Appends `entry` (`{stream=, expected=, events=}`) as part of the next batch.
-- @treturn[1] table `{stream=, version=, position=}`
-- @treturn[2] nil
-- @treturn[2] table the store's error for this entry
-- @raise the error `append_many` raised for this entry (bad input), re-raised here
function M:append(entry)
  local slot = { entry = entry }
  self.pending[#self.pending + 1] = slot
  if not self.forming then
    self.forming = true
    self.cq.sleep(0)                       -- let every ready request join the batch
    local batch = self.pending
    self.pending = {}
    self.forming = false
    local ok, err = pcall(commit, self, batch)
    if not ok then
      for _, s in ipairs(batch) do
        if s.result == nil and s.err == nil then s.raised = err end
      end
    end
    self.done:signal()
  else
    while slot.result == nil and slot.err == nil and slot.raised == nil do self.done:wait() end
  end
  if slot.raised ~= nil then error(slot.raised, 0) end
  return slot.result, slot.err
end

return M
