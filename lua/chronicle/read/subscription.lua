--- Persistent subscriptions: competing consumers with acknowledgement.
--
-- Any number of consumers, in any processes (on any hosts sharing a
-- PostgreSQL store), take events from one named subscription. Each event
-- taken is leased to one consumer until it is acked, nacked, or its
-- `ack_timeout` passes (by the store's clock); then it is given to someone
-- again. An event delivered `1 + max_retries` times without an ack is
-- parked: set aside with its last error, until `replay_parked` puts it back.
--
-- The state lives in the `subscriptions` key-value space, so it is durable
-- and survives kills of every consumer: `<name>:s` the settings, `<name>:c`
-- the position up to which events were brought into the subscription,
-- `<name>:f:<position>` an event in the subscription (leased or waiting to be
-- delivered, with its delivery count), `<name>:p:<position>` a parked event.
-- Every change is one write that checks the rows it read are unchanged, so
-- two consumers never both take one event and an ack that lost its lease
-- changes nothing.
--
-- Ordering: with `strategy = "round_robin"` (the default) there is no
-- ordering promise: new events are handed out in log order, but consumers
-- work concurrently and retries and timeouts redeliver events after later
-- ones. With `strategy = "pinned"` each stream is delivered in order, one
-- event at a time: an event is not handed out while an earlier event of its
-- stream is still in the subscription (leased or waiting for a retry); a
-- parked event no longer holds its stream back, and a replayed one comes
-- after the events of its stream that went on meanwhile.
-- @module chronicle.read.subscription
local core = require "chronicle.common"
local options = require "chronicle.options"
local names = require "chronicle.names"
local spaces = require "chronicle.spaces"

local M = {}

--- The key-value space of subscriptions' state.
M.SPACE = spaces.SUBSCRIPTIONS
M.ACK_TIMEOUT = 30
M.MAX_RETRIES = 10
M.MAX_IN_FLIGHT = 100
M.MAX_TAKE = 10000

local NS = 1000000000

local function positive(v)
  if type(v) == "number" and v > 0 and v < math.huge then return true end
  return false, "a number > 0"
end

local function types_spec(v)
  if type(v) == "string" and #v > 0 then return true end
  if type(v) == "table" and #v >= 1 and #v <= 64 then
    for i = 1, #v do if type(v[i]) ~= "string" or v[i] == "" then return false, "a type name or a list of 1 to 64" end end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if n == #v then return true end
  end
  return false, "a type name or a list of 1 to 64"
end

local open_options = {
  category = function(v)
    if type(v) == "string" and #v > 0 and not v:find("-", 1, true) then return true end
    return false, "a category (a non-empty string without '-')"
  end,
  types = types_spec,
  from = options.integer_at_least(1),
  ack_timeout = positive,
  max_retries = options.integer_at_least(0),
  max_in_flight = function(v)
    if math.type(v) == "integer" and v >= 1 and v <= 100000 then return true end
    return false, "an integer from 1 to 100000"
  end,
  strategy = options.one_of("round_robin", "pinned"),
}
local take_options = { wait = options.number_at_least(0) }
local ACTIONS = { retry = true, park = true, skip = true }

local function fkey(name, position) return ("%s:f:%020d"):format(name, position) end
local function pkey(name, position) return ("%s:p:%020d"):format(name, position) end

-- An event in the subscription, as a string (checks compare exact bytes):
-- "<attempts> <deadline> <consumer>\n<stream>\n<last error>".
local function entry_row(e)
  return ("%d %d %s\n%s\n%s"):format(e.attempts, e.deadline, e.consumer, e.stream, e.error or "")
end
local function parse_entry(raw, position)
  local attempts, deadline, consumer, stream, err = raw:match("^(%d+) (%-?%d+) (%S+)\n([^\n]*)\n(.*)$")
  if not attempts then return nil end
  return { position = position, raw = raw, attempts = math.tointeger(tonumber(attempts)),
           deadline = math.tointeger(tonumber(deadline)), consumer = consumer, stream = stream,
           error = err ~= "" and err or nil }
end

-- A parked event: "<attempts> <time>\n<stream>\n<type>\n<id>\n<error>".
local function parked_row(p)
  return ("%d %d\n%s\n%s\n%s\n%s"):format(p.attempts, p.time, p.stream, p.type or "", p.id or "", p.error or "")
end
local function parse_parked(raw, position)
  local attempts, time, stream, typ, id, err = raw:match("^(%d+) (%-?%d+)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$")
  if not attempts then return nil end
  return { position = position, attempts = math.tointeger(tonumber(attempts)), time = math.tointeger(tonumber(time)),
           stream = stream, type = typ ~= "" and typ or nil, id = id ~= "" and id or nil,
           error = err ~= "" and err or nil }
end

local function sorted_types(t)
  if t == nil then return nil end
  if type(t) == "string" then return { t } end
  local out = {}
  for i, v in ipairs(t) do out[i] = v end
  table.sort(out)
  return out
end

local function same(a, b)
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
  end
  return a == b
end

local Subscription = {}
Subscription.__index = Subscription
M.Subscription = Subscription

local SETTINGS = { "category", "types", "from", "ack_timeout", "max_retries", "max_in_flight", "strategy" }

--- `store:subscription(name, opts)`: a consumer of subscription `name`,
-- creating the subscription with `opts` the first time. Its settings are
-- fixed then; opening it again with a different value of one returns
-- nil, err(`subscription_mismatch`, `option`). Options: `category`, `types`,
-- `from` (the first position, default 1), `ack_timeout` (seconds, default
-- 30), `max_retries` (default 10), `max_in_flight` (events leased or waiting
-- for a retry, default 100), `strategy` ("round_robin" or "pinned").
-- @return the consumer, or nil, err
function M.open(store, name, opts, level)
  level = (level or 1) + 1
  local bad = names.problem("subscription", name)
  if bad then error("subscription: " .. bad, level) end
  opts = options.check("subscription", opts, open_options, level)
  local wanted = {
    category = opts.category, types = sorted_types(opts.types), from = opts.from or 1,
    ack_timeout = opts.ack_timeout or M.ACK_TIMEOUT, max_retries = opts.max_retries or M.MAX_RETRIES,
    max_in_flight = opts.max_in_flight or M.MAX_IN_FLIGHT, strategy = opts.strategy or "round_robin",
  }
  local skey = name .. ":s"
  local settings, err = store:kv_get(M.SPACE, skey)
  if err then return nil, err end
  if settings == nil then
    local ok, werr = store:write { checks = { { M.SPACE, skey, nil } }, puts = { { M.SPACE, skey, wanted } } }
    if not ok and werr.code ~= "check_failed" then return nil, werr end
    settings, err = store:kv_get(M.SPACE, skey)
    if err then return nil, err end
  end
  if type(settings) ~= "table" then
    return nil, core.error("corrupt", "subscription '" .. name .. "': its settings row is not a table",
                           { subscription = name })
  end
  for _, k in ipairs(SETTINGS) do
    local given = k == "types" and wanted.types or opts[k]
    if given ~= nil and not same(given, settings[k]) then
      return nil, core.error("subscription_mismatch",
        ("subscription '%s' exists with %s = %s; it was asked for %s (settings are fixed when a subscription is "
         .. "created: delete_subscription and create it again to change them)")
          :format(name, k, tostring(type(settings[k]) == "table" and table.concat(settings[k], ",") or settings[k]),
                  tostring(type(given) == "table" and table.concat(given, ",") or given)),
        { subscription = name, option = k })
    end
  end
  return setmetatable({
    store = store, name = name, settings = settings, consumer = (core.uuid():gsub("-", "")):sub(-16),
    leased = {}, ack_ns = math.floor(settings.ack_timeout * NS),
  }, Subscription)
end

local function entries(self)
  local list = {}
  local prefix = self.name .. ":f:"
  for key, raw in self.store:kv_scan(M.SPACE, { prefix = prefix }) do
    local position = math.tointeger(tonumber(key:sub(#prefix + 1)))
    local e = position and type(raw) == "string" and parse_entry(raw, position)
    if e then list[#list + 1] = e end
  end
  return list
end

local function read_event(store, position)
  for ev in store:read_all({ from = position, count = 1 }) do
    if ev.position == position then return ev end
  end
  return nil
end

local function park_ops(self, ops, e, ev, err)
  ops.deletes[#ops.deletes + 1] = { M.SPACE, fkey(self.name, e.position) }
  ops.puts[#ops.puts + 1] = { M.SPACE, pkey(self.name, e.position), parked_row {
    attempts = e.attempts, time = core.now(), stream = e.stream, type = ev and ev.type, id = ev and ev.id,
    error = err } }
end

-- One try at taking up to `n`: returns the events, or nil, "race" when
-- another consumer changed the rows first, or nil, err; and the store
-- time of the earliest lease deadline (to know when to look again).
local function take_once(self, n)
  local store, s, name = self.store, self.settings, self.name
  local now, err = store:now()
  if not now then return nil, err end
  local ckey = name .. ":c"
  local cursor_raw
  cursor_raw, err = store:kv_get(M.SPACE, ckey)
  if err then return nil, err end
  local cursor = math.tointeger(cursor_raw) or (s.from - 1)
  local head = store:head()
  local list = entries(self)
  local ops = { checks = {}, puts = {}, deletes = {} }
  local fetched = {}
  local room = math.min(s.max_in_flight - #list, n)
  if room > 0 and cursor < head then
    local got, last = 0, cursor
    for ev in store:read_all({ from = cursor + 1, to = head, count = room, category = s.category, types = s.types }) do
      got, last = got + 1, ev.position
      fetched[ev.position] = ev
      list[#list + 1] = { position = ev.position, attempts = 0, deadline = 0, consumer = "-", stream = ev.stream,
                          new = true }
    end
    local new_cursor = got < room and head or last
    ops.checks[#ops.checks + 1] = { M.SPACE, ckey, cursor_raw }
    ops.puts[#ops.puts + 1] = { M.SPACE, ckey, new_cursor }
  end
  table.sort(list, function(a, b) return a.position < b.position end)
  local first_of_stream = {}
  if s.strategy == "pinned" then
    for _, e in ipairs(list) do
      if first_of_stream[e.stream] == nil then first_of_stream[e.stream] = e.position end
    end
  end
  local taken, soonest = {}, nil
  for _, e in ipairs(list) do
    if #taken >= n then break end
    local free = e.consumer == "-" or e.deadline <= now
    if free and (s.strategy ~= "pinned" or first_of_stream[e.stream] == e.position) then
      if e.raw then ops.checks[#ops.checks + 1] = { M.SPACE, fkey(name, e.position), e.raw } end
      if e.attempts >= 1 + s.max_retries then
        -- delivered as often as it may be: park it
        local ev = fetched[e.position] or read_event(store, e.position)
        park_ops(self, ops, e, ev, e.error or ("not acknowledged within ack_timeout (%s s)"):format(s.ack_timeout))
        e.handled = true
      else
        e.handled = true
        local value = entry_row { attempts = e.attempts + 1, deadline = now + self.ack_ns, consumer = self.consumer,
                                  stream = e.stream, error = e.error }
        ops.puts[#ops.puts + 1] = { M.SPACE, fkey(name, e.position), value }
        taken[#taken + 1] = { position = e.position, raw = value, attempt = e.attempts + 1 }
      end
    elseif not free and (soonest == nil or e.deadline < soonest) then
      soonest = e.deadline
    end
  end
  -- events brought in and not handed out (held back by their stream) wait in the subscription
  for _, e in ipairs(list) do
    if e.new and not e.handled then ops.puts[#ops.puts + 1] = { M.SPACE, fkey(name, e.position), entry_row(e) } end
  end
  if #ops.checks == 0 and #ops.puts == 0 and #ops.deletes == 0 then return {}, soonest, now end
  local ok, werr = store:write(ops)
  if not ok then
    if werr.code == "check_failed" then return nil, "race" end
    return nil, werr
  end
  local out = {}
  for _, t in ipairs(taken) do
    local ev = fetched[t.position] or read_event(store, t.position)
    if ev then
      ev.attempt = t.attempt
      self.leased[t.position] = t.raw
      out[#out + 1] = ev
    else
      -- no longer in the log (a store copied without it): nothing to deliver
      store:write { checks = { { M.SPACE, fkey(name, t.position), t.raw } }, deletes = { { M.SPACE, fkey(name, t.position) } } }
    end
  end
  return out, soonest, now
end

local function iterate(list)
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

--- Takes up to `n` events, each leased to this consumer until it is acked or
-- nacked or `ack_timeout` passes. `opts.wait`: seconds to wait for one when
-- there is none now (default 0). Returns an iterator (`for ev in sub:take(10)`)
-- and the list; each event carries `attempt` (1 on its first delivery). A
-- store failure is raised with the error table.
function Subscription:take(n, opts)
  if math.type(n) ~= "integer" or n < 1 or n > M.MAX_TAKE then
    error(("take: n must be an integer from 1 to %d, got %s"):format(M.MAX_TAKE, tostring(n)), 2)
  end
  opts = options.check("take", opts, take_options, 2)
  local store = self.store
  local deadline = core.now() + math.floor((opts.wait or 0) * NS)
  local races = 0
  while true do
    local head = store:head()
    local got, soonest, now = take_once(self, n)
    if got == nil and soonest == "race" then
      races = races + 1
      if races > 1000 then got = {} end
    elseif got == nil then
      error(soonest, 2)
    end
    if got and (#got > 0 or core.now() >= deadline) then return iterate(got), got end
    if got then
      -- nothing for us now: sleep until an append, a lease runs out, or the wait is over
      local nap = (deadline - core.now()) / NS
      if soonest and now then nap = math.min(nap, math.max(0.001, (soonest - now) / NS)) end
      nap = math.min(nap, 0.25)
      if nap > 0 then store:wait(head, nap) end
    end
  end
end

local function leased_raw(self, ev, fname)
  if type(ev) ~= "table" or math.type(ev.position) ~= "integer" then
    error(fname .. ": an event taken from this subscription expected, got " .. type(ev), 3)
  end
  local raw = self.leased[ev.position]
  if not raw then
    return nil, core.error("not_leased", ("%s: the event at position %d is not leased to this consumer"):format(
      fname, ev.position), { position = ev.position, subscription = self.name })
  end
  return raw
end

local function lost(self, ev, fname)
  self.leased[ev.position] = nil
  return nil, core.error("not_leased", ("%s: the lease of the event at position %d ran out and it was given to "
    .. "another consumer (or parked)"):format(fname, ev.position), { position = ev.position, subscription = self.name })
end

local function commit(self, ev, fname, ops)
  local ok, err = self.store:write(ops)
  if not ok then
    if err.code == "check_failed" then return lost(self, ev, fname) end
    return nil, err
  end
  self.leased[ev.position] = nil
  return true
end

--- Acknowledges `ev`: it is done and leaves the subscription.
-- @return true, or nil, err(`not_leased`) when it is not leased to this
--   consumer (nothing changes), or nil, err for a store failure
function Subscription:ack(ev)
  local raw, err = leased_raw(self, ev, "ack")
  if not raw then return nil, err end
  local key = fkey(self.name, ev.position)
  return commit(self, ev, "ack", { checks = { { M.SPACE, key, raw } }, deletes = { { M.SPACE, key } } })
end

--- Acknowledges every event of `list` (events taken from this subscription,
-- at most `MAX_TAKE`) in one write: those still leased to this consumer are
-- done and leave the subscription; the others are refused and unchanged.
-- An event given twice is acked once.
-- @return the number acked and the list of refusals (`not_leased` errors,
--   each with its `position`, in the order of `list`; empty when none), or
--   nil, err for a store failure (then nothing was acked)
function Subscription:ack_many(list)
  if type(list) ~= "table" then
    error("ack_many: a list of events taken from this subscription expected, got " .. type(list), 2)
  end
  if #list > M.MAX_TAKE then error(("ack_many: at most %d events at a time, got %d"):format(M.MAX_TAKE, #list), 2) end
  local pending, refused, seen = {}, {}, {}
  for i = 1, #list do
    local ev = list[i]
    if type(ev) ~= "table" or math.type(ev.position) ~= "integer" then
      error(("ack_many: [%d] must be an event taken from this subscription, got %s"):format(i, type(ev)), 2)
    end
    if not seen[ev.position] then
      seen[ev.position] = true
      local raw, err = leased_raw(self, ev, "ack")
      if raw then pending[#pending + 1] = { ev = ev, raw = raw, key = fkey(self.name, ev.position) }
      else refused[#refused + 1] = err end
    end
  end
  local lost_ones = {}
  while #pending > 0 do
    local ops = { checks = {}, deletes = {} }
    for i, p in ipairs(pending) do
      ops.checks[i] = { M.SPACE, p.key, p.raw }
      ops.deletes[i] = { M.SPACE, p.key }
    end
    local ok, err = self.store:write(ops)
    if ok then
      for _, p in ipairs(pending) do self.leased[p.ev.position] = nil end
      break
    end
    if err.code ~= "check_failed" then return nil, err end
    -- Some leases ran out and were given away: find which (the one the check named
    -- at least, so this ends), and ack the rest.
    local still = {}
    for _, p in ipairs(pending) do
      local now_raw, gerr = nil, nil
      if p.key ~= err.key then now_raw, gerr = self.store:kv_get(M.SPACE, p.key) end
      if gerr then return nil, gerr end
      if p.key ~= err.key and now_raw == p.raw then still[#still + 1] = p
      else lost_ones[p.ev.position] = select(2, lost(self, p.ev, "ack")) end
    end
    pending = still
  end
  if next(lost_ones) then
    -- refusals in the order of `list`
    local by_position = {}
    for _, e in ipairs(refused) do by_position[e.position] = e end
    for position, e in pairs(lost_ones) do by_position[position] = e end
    refused = {}
    local done = {}
    for i = 1, #list do
      local e = by_position[list[i].position]
      if e and not done[e] then done[e] = true; refused[#refused + 1] = e end
    end
  end
  return #pending, refused
end

--- Gives `ev` back: `"retry"` (delivered again, to any consumer; parked once
-- delivered 1 + max_retries times), `"park"` (set aside until replay_parked),
-- `"skip"` (dropped, as an ack would). `reason` (a string) is kept as its
-- last error. @return true, or nil, err as for ack
function Subscription:nack(ev, action, reason)
  if not ACTIONS[action] then
    error(("nack: action must be \"retry\", \"park\" or \"skip\", got %s"):format(
      type(action) == "string" and ("%q"):format(action) or type(action)), 2)
  end
  if reason ~= nil and type(reason) ~= "string" then error("nack: reason must be a string, got " .. type(reason), 2) end
  local raw, err = leased_raw(self, ev, "nack")
  if not raw then return nil, err end
  local e = parse_entry(raw, ev.position)
  local key = fkey(self.name, ev.position)
  local ops = { checks = { { M.SPACE, key, raw } }, puts = {}, deletes = {} }
  reason = reason and reason:sub(1, 2000)
  if action == "skip" then
    ops.deletes[1] = { M.SPACE, key }
  elseif action == "park" or e.attempts >= 1 + self.settings.max_retries then
    park_ops(self, ops, e, ev, reason or (action == "park" and "parked by nack" or "retried max_retries times"))
  else
    ops.puts[1] = { M.SPACE, key, entry_row { attempts = e.attempts, deadline = 0, consumer = "-", stream = e.stream,
                                              error = reason } }
  end
  return commit(self, ev, "nack", ops)
end

local function parked_list(self)
  local out = {}
  local prefix = self.name .. ":p:"
  for key, raw in self.store:kv_scan(M.SPACE, { prefix = prefix }) do
    local position = math.tointeger(tonumber(key:sub(#prefix + 1)))
    local p = position and type(raw) == "string" and parse_parked(raw, position)
    if p then p.raw = raw; out[#out + 1] = p end
  end
  return out
end

--- Iterates the parked events, oldest position first: `{position, stream,
-- type, id, attempts, error, time}`.
function Subscription:parked()
  local list = parked_list(self)
  for _, p in ipairs(list) do p.raw = nil end
  return iterate(list), list
end

--- Puts every parked event back into the subscription (delivered again, with
-- a fresh count of deliveries). @return the number put back, or nil, err
function Subscription:replay_parked()
  local n = 0
  for _ = 1, 100 do
    local list = parked_list(self)
    if #list == 0 then return n end
    local ops = { checks = {}, puts = {}, deletes = {} }
    for i = 1, math.min(#list, 1000) do
      local p = list[i]
      local k = pkey(self.name, p.position)
      ops.checks[#ops.checks + 1] = { M.SPACE, k, p.raw }
      ops.deletes[#ops.deletes + 1] = { M.SPACE, k }
      ops.puts[#ops.puts + 1] = { M.SPACE, fkey(self.name, p.position),
        entry_row { attempts = 0, deadline = 0, consumer = "-", stream = p.stream, error = p.error } }
    end
    local ok, err = self.store:write(ops)
    if ok then n = n + #ops.deletes
    elseif err.code ~= "check_failed" then return nil, err end
  end
  return n
end

--- The subscription's state: `{name, settings, position (brought in up to),
-- head, lag, in_flight, leased, waiting, parked, consumers = {id -> leased}}`.
function M.status(store, name)
  local settings = store:kv_get(M.SPACE, name .. ":s")
  if type(settings) ~= "table" then return nil end
  local now = store:now()
  local head = store:head()
  local position = math.tointeger(store:kv_get(M.SPACE, name .. ":c")) or (settings.from - 1)
  local sub = { store = store, name = name }
  local st = { name = name, settings = settings, position = position, head = head, in_flight = 0, leased = 0,
               waiting = 0, consumers = {} }
  for _, e in ipairs(entries(sub)) do
    st.in_flight = st.in_flight + 1
    if e.consumer ~= "-" and e.deadline > now then
      st.leased = st.leased + 1
      st.consumers[e.consumer] = (st.consumers[e.consumer] or 0) + 1
    else
      st.waiting = st.waiting + 1
    end
  end
  st.parked = store:kv_count(M.SPACE, name .. ":p:")
  -- events after `position` that the subscription will bring in (its filters applied)
  local lag = 0
  if position < head then
    store:fold({ from = position + 1, to = head, category = settings.category, types = settings.types }, 0,
      function() lag = lag + 1 end)
  end
  st.lag = lag
  return st
end

--- The names of the subscriptions in `store`.
function M.names(store)
  local out = {}
  for key in store:kv_scan(M.SPACE) do
    local name = key:match("^([^:]+):s$")
    if name then out[#out + 1] = name end
  end
  return out
end

--- Deletes subscription `name` and all its state. @return true, or nil, err
function M.delete(store, name)
  local ops = { deletes = {} }
  for key in store:kv_scan(M.SPACE, { prefix = name .. ":" }) do ops.deletes[#ops.deletes + 1] = { M.SPACE, key } end
  if #ops.deletes == 0 then return true end
  local ok, err = store:write(ops)
  if not ok then return nil, err end
  return true
end

--- Status of this subscription (see `status`).
function Subscription:status() return M.status(self.store, self.name) end

return M
