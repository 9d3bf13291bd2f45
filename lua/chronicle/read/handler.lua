--- Event handlers: side effects (a mail, a call to a service) run after
-- events are committed, at least once. Each handler keeps a durable
-- checkpoint, written after its successes; an event that keeps failing after
-- its retries goes to a dead-letter list (inspect, then retry) and the
-- handler moves on, so one bad event or one failing handler blocks nothing.
-- @module chronicle.read.handler
local common = require "chronicle.common"
local upcast = require "chronicle.write.upcast"
local view = require "chronicle.read.view"
local names = require "chronicle.names"
local spaces = require "chronicle.spaces"

local M = {}

--- The key-value space of dead letters, keyed `handler:position`.
M.DEAD_LETTERS = spaces.DEAD_LETTERS

local options = require "chronicle.options"

local on_options = {
  name = "string", retries = options.integer_at_least(0), batch_size = options.integer_at_least(1),
  category = "string",
}

--- Checks `store:on(types, fn, opts)` arguments and returns a handler.
function M.define(types, fn, opts, level)
  level = (level or 1) + 1
  if type(types) == "string" then types = { types } end
  if type(types) ~= "table" or #types == 0 then error("on: event types must be a type name or a list of them", level) end
  for i, t in ipairs(types) do
    if type(t) ~= "string" or t == "" then error(("on: types[%d] must be a non-empty string"):format(i), level) end
  end
  if type(fn) ~= "function" then error("on: handler must be a function", level) end
  opts = options.check("on", opts, on_options, level)
  local sorted = {}
  for i, t in ipairs(types) do sorted[i] = t end
  table.sort(sorted)
  -- Unnamed handlers get "on:<types>", which no given name can take (names have no ':').
  local name = opts.name
  if name ~= nil then
    local bad_name = names.problem("handler", name)
    if bad_name then error("on: option " .. bad_name, level) end
  else
    name = "on:" .. table.concat(sorted, ",")
    if #name > 100 then name = "on:" .. common.hash(table.concat(sorted, ",")) end
  end
  local retries = opts.retries or 3
  if math.type(retries) ~= "integer" or retries < 0 then error("on: option 'retries' must be an integer >= 0", level) end
  local batch = opts.batch_size or 100
  if math.type(batch) ~= "integer" or batch < 1 then error("on: option 'batch_size' must be an integer >= 1", level) end
  return { name = name, types = sorted, fn = fn, retries = retries, batch_size = batch, category = opts.category }
end

local function checkpoint_key(h) return spaces.handler_checkpoint(h.name) end
local letter_key = spaces.dead_letter

local function attempt(h, ev)
  local upcast_ok, upcast_err = pcall(upcast.current, ev)   -- no upcaster: a dead letter
  if not upcast_ok then return false, tostring(upcast_err) end
  local err
  for _ = 0, h.retries do
    local ok, e = pcall(h.fn, ev)
    if ok then return true end
    err = require("chronicle.fault").message(e)
  end
  return false, err
end

local STOP = setmetatable({}, { __tostring = function() return "lease deadline" end })

local function letter(h, ev, failure)
  return { M.DEAD_LETTERS, letter_key(h.name, ev.position), {
    handler = h.name, position = ev.position, stream = ev.stream, version = ev.version, type = ev.type,
    id = ev.id, error = failure, attempts = h.retries + 1, time = common.now(),
  } }
end

-- One batch as a member of the handler's group `g` (see chronicle.group): only
-- the events of the partitions it holds, stopping before its leases run out;
-- the checkpoints commit only while the leases are still this member's.
local function run_group_batch(store, h, g)
  local cursor, cerr = g:cursor(h.batch_size)
  if not cursor then
    if cerr then return nil, cerr end
    return "idle"
  end
  local letters = {}
  local deadline, done = g:deadline(), nil
  -- The clock is read after every event while events take a millisecond or more,
  -- and after every 2, 4, ... 32 while they are quicker (a no-op handler does not
  -- pay a clock reading per event). The fold's state counts down to the next reading.
  local stride, last = 1, common.now()
  local function look(ev)
    local now = common.now()
    if now >= deadline or (now >= g.next_look and g:changed(now)) then
      done = ev.position
      error(STOP, 0)
    end
    if now - last < 1000000 * stride then stride = math.min(stride * 2, 32) else stride = 1 end
    last = now
    return stride
  end
  local fn
  if cursor.every then
    -- every event of the batch is this member's (it holds every partition, all at `from`)
    fn = function(left, ev)
      local good, failure = attempt(h, ev)
      if not good then letters[#letters + 1] = letter(h, ev, failure) end
      left = left - 1
      if left == 0 then left = look(ev) end
      return left
    end
  else
    local wants = cursor.wants
    fn = function(left, ev)
      if wants(ev) then
        local good, failure = attempt(h, ev)
        if not good then letters[#letters + 1] = letter(h, ev, failure) end
        left = left - 1
        if left == 0 then left = look(ev) end
      end
      return left
    end
  end
  local ok, n, count, last_position = pcall(store.fold, store,
    { from = cursor.from + 1, to = cursor.head, count = cursor.count, types = h.types, category = h.category },
    1, fn)
  if not ok then
    if n ~= STOP then error(n, 0) end
    n, count, last_position = 0, cursor.count, done
  end
  if n == nil then return nil, count end
  local upto = count < cursor.count and cursor.head or last_position
  local ops = { puts = letters }
  cursor.commit(ops, upto)
  local wrote, werr = store:write(ops)
  if not wrote then
    if werr.code ~= "check_failed" then return nil, werr end
    g:lost()                      -- a lease was taken: the next owner handles these events again
  else
    cursor.done()
  end
  return "progress"
end

--- Delivers one batch of events to handler `h` (as a member of group `g`
-- when given).
-- @return "idle" | "progress", or nil, err for a store failure
function M.run_batch(store, h, g)
  if g then return run_group_batch(store, h, g) end
  local key = checkpoint_key(h)
  local checkpoint, err = store:kv_get(view.CHECKPOINTS, key)
  if err then return nil, err end
  local head = store:head()
  if (checkpoint or 0) >= head then return "idle" end
  local letters = {}
  local n, count, last_position = store:fold(
    { from = (checkpoint or 0) + 1, to = head, count = h.batch_size, types = h.types, category = h.category },
    0, function(seen, ev)
      local ok, failure = attempt(h, ev)
      if not ok then letters[#letters + 1] = letter(h, ev, failure) end
      return seen + 1
    end)
  if n == nil then return nil, count end
  local new_checkpoint = count < h.batch_size and head or last_position
  letters[#letters + 1] = { view.CHECKPOINTS, key, new_checkpoint }
  local ok, werr = store:write { checks = { { view.CHECKPOINTS, key, checkpoint } }, puts = letters }
  if not ok and werr.code ~= "check_failed" then return nil, werr end
  return "progress"
end

--- The dead letters of handler `name` (all handlers when nil), oldest first.
function M.dead_letters(store, name)
  local out = {}
  for _, row in store:kv_scan(M.DEAD_LETTERS, name and { prefix = spaces.dead_letters_of(name) } or nil) do out[#out + 1] = row end
  return out
end

--- Runs handler `h` again on each of its dead letters; the ones that succeed are removed.
-- @return the number that succeeded, the number still failing
function M.retry_dead_letters(store, h)
  local fixed, failing = 0, 0
  for _, row in ipairs(M.dead_letters(store, h.name)) do
    local ev
    for e in store:read_all({ from = row.position, count = 1 }) do ev = e end
    local ok, failure = false, "the event is no longer in the log"
    if ev then ok, failure = attempt(h, ev) end
    local key = letter_key(h.name, row.position)
    if ok then
      store:write { deletes = { { M.DEAD_LETTERS, key } } }
      fixed = fixed + 1
    else
      row.error, row.attempts, row.time = failure, (row.attempts or 0) + h.retries + 1, common.now()
      store:write { puts = { { M.DEAD_LETTERS, key, row } } }
      failing = failing + 1
    end
  end
  return fixed, failing
end

return M
