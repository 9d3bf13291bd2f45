-- A transfer between two accounts as a process of its own: requested,
-- debited, credited, completed; failed when the debit is refused, and
-- compensated (money back) when the credit is refused.
local chronicle = require "chronicle"

local function step(from_status, event_type, data_fn)
  return function(state, args)
    if state.status ~= from_status then
      return nil, ("transfer is %s, not %s"):format(tostring(state.status), from_status)
    end
    return { type = event_type, data = data_fn and data_fn(args) or nil }
  end
end

return chronicle.aggregate {
  name = "transfer",
  initial = function() return { status = "new" } end,
  apply = {
    TransferRequested = function(s, ev)
      s.status, s.from, s.to, s.amount = "requested", ev.data.from, ev.data.to, ev.data.amount
    end,
    TransferDebited = function(s) s.status = "debited" end,
    TransferCredited = function(s) s.status = "credited" end,
    TransferCompleted = function(s) s.status = "completed" end,
    TransferFailed = function(s, ev) s.status, s.reason = "failed", ev.data.reason end,
    TransferCompensated = function(s, ev) s.status, s.reason = "compensated", ev.data.reason end,
  },
  commands = {
    request = function(state, args)
      if state.status ~= "new" then return nil, "transfer already requested" end
      return { type = "TransferRequested", data = { from = args.from, to = args.to, amount = args.amount } }
    end,
    mark_debited = step("requested", "TransferDebited"),
    mark_credited = step("debited", "TransferCredited"),
    complete = step("credited", "TransferCompleted"),
    fail = step("requested", "TransferFailed", function(a) return { reason = a.reason } end),
    compensate = step("debited", "TransferCompensated", function(a) return { reason = a.reason } end),
  },
}
