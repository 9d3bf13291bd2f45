--- Shared by the projection, handler, reactor and runner specs and their subprocess scripts: the "ledger"
-- projection over bank-like events, the same ledger computed the plain way
-- from read_all, and a deterministic text form of rows for comparisons
-- across processes.
local M = {}

--- A deterministic text form of a value (sorted keys, integers vs floats kept apart).
function M.serialize(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. M.serialize(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "number" then
    return math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  elseif t == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end

--- Every row of a reader view as a table key -> row.
function M.rows(view, opts)
  local out = {}
  for k, v in view:pairs(opts) do out[k] = v end
  return out
end

--- Every row, serialized: one "key<TAB>row" line per row, in key order.
function M.dump(view)
  local lines = {}
  for k, v in view:pairs() do lines[#lines + 1] = k .. "\t" .. M.serialize(v) end
  return table.concat(lines, "\n")
end

local function account_id(stream) return stream:match("^account%-(.+)$") end

--- The ledger projection: one row per account of category "account"
-- (owner, balance, number of deposits), deleted when the account closes, and
-- a "total" row with the sum of all movements and the number of events seen.
-- `opts.version`, `opts.batch_size`, `opts.name` are passed through;
-- `opts.on_event(ev)` (optional) is called for each event handled.
function M.ledger(opts)
  opts = opts or {}
  local on_event = opts.on_event
  local function seen(view, ev, delta)
    if on_event then on_event(ev) end
    view:update("total", function(t)
      t = t or { sum = 0, events = 0 }
      t.sum, t.events = t.sum + delta, t.events + 1
      return t
    end)
  end
  return {
    name = opts.name or "ledger",
    version = opts.version or 1,
    batch_size = opts.batch_size,
    from = { category = "account" },
    handlers = {
      Opened = function(view, ev)
        view:put(account_id(ev.stream), { owner = ev.data.owner, balance = 0, deposits = 0 })
        seen(view, ev, 0)
      end,
      Deposited = function(view, ev)
        view:update(account_id(ev.stream), function(row)
          row.balance = row.balance + ev.data.amount
          row.deposits = row.deposits + 1
        end)
        seen(view, ev, ev.data.amount)
      end,
      Withdrawn = function(view, ev)
        view:update(account_id(ev.stream), function(row)
          return { owner = row.owner, balance = row.balance - ev.data.amount, deposits = row.deposits }
        end)
        seen(view, ev, -ev.data.amount)
      end,
      Closed = function(view, ev)
        view:delete(account_id(ev.stream))
        seen(view, ev, 0)
      end,
    },
  }
end

--- The ledger computed directly from `store:read_all()`: key -> row.
-- With `limit`, only the first `limit` events the ledger handles count
-- (the state a consistent view is in after exactly that many).
function M.expected_ledger(store, limit)
  local rows, total = {}, nil
  local handled = 0
  for ev in store:read_all() do
    local id = account_id(ev.stream)
    local kind = ev.type
    if limit and handled >= limit then break end
    if id and (kind == "Opened" or kind == "Deposited" or kind == "Withdrawn" or kind == "Closed") then
      handled = handled + 1
      local delta = 0
      if kind == "Opened" then
        rows[id] = { owner = ev.data.owner, balance = 0, deposits = 0 }
      elseif kind == "Deposited" then
        rows[id].balance = rows[id].balance + ev.data.amount
        rows[id].deposits = rows[id].deposits + 1
        delta = ev.data.amount
      elseif kind == "Withdrawn" then
        rows[id].balance = rows[id].balance - ev.data.amount
        delta = -ev.data.amount
      else
        rows[id] = nil
      end
      total = total or { sum = 0, events = 0 }
      total.sum, total.events = total.sum + delta, total.events + 1
    end
  end
  rows.total = total
  return rows
end

--- Appends a pseudo-random but reproducible history: `n` rounds over
-- `accounts` accounts (opened first), deposits, withdrawals that never
-- overdraw, a few closes, and noise in other categories and types.
-- @return the number of events appended
function M.history(store, n, accounts, seed)
  local state = seed or 1
  local function rand(k)   -- a small LCG, so the history does not depend on math.random
    state = (state * 1103515245 + 12345) % 2147483648
    return state % k + 1
  end
  local balances, open, appended = {}, {}, 0
  local pending = {}
  local function flush()   -- many small appends, committed 25 at a time with append_many
    if #pending > 0 then assert(store:append_many(pending)) end
    pending = {}
  end
  local function add(stream, events)
    pending[#pending + 1] = { stream = stream, events = events }
    appended = appended + #events
    if #pending >= 25 then flush() end
  end
  for a = 1, accounts do
    add("account-" .. a, { { type = "Opened", data = { owner = "owner " .. a } } })
    balances[a], open[a] = 0, true
  end
  for _ = 1, n do
    local a = rand(accounts)
    local r = rand(10)
    if not open[a] then
      add("audit-" .. a, { { type = "Noticed", data = { note = "closed account touched" } } })
    elseif r <= 5 then
      local amount = rand(100)
      balances[a] = balances[a] + amount
      add("account-" .. a, { { type = "Deposited", data = { amount = amount } } })
    elseif r <= 8 and balances[a] > 0 then
      local amount = rand(balances[a])
      balances[a] = balances[a] - amount
      add("account-" .. a, { { type = "Withdrawn", data = { amount = amount } } })
    elseif r == 9 and a % 4 == 0 then
      add("account-" .. a, { { type = "Closed" } })
      open[a] = false
    else
      -- noise: same type in another category, and an unhandled type in the category
      add("savings-" .. a, { { type = "Deposited", data = { amount = 1 } } })
      add("account-" .. a, { { type = "Viewed" } })
    end
  end
  flush()
  return appended
end

return M
