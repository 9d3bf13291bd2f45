-- The transfer saga: a reactor that moves each transfer one step per event.
-- The commands it issues for an event commit together with its checkpoint,
-- so each step happens exactly once even if the process dies in between.
return function(accounts, transfers)
  local function id_of(ev) return ev.stream:match("^transfer%-(.+)$") end

  return {
    name = "transfer_saga",
    from = { category = "transfer" },
    handlers = {
      TransferRequested = function(ev, ctx)
        local id, t = id_of(ev), ev.data
        local ok, err = ctx:execute(accounts, t.from, "withdraw", { amount = t.amount })
        if ok then
          ctx:execute(transfers, id, "mark_debited")
        else
          ctx:execute(transfers, id, "fail", { reason = err.reason })
        end
      end,

      TransferDebited = function(ev, ctx)
        local id = id_of(ev)
        local t = ctx:load(transfers, id)
        local ok, err = ctx:execute(accounts, t.to, "deposit", { amount = t.amount })
        if ok then
          ctx:execute(transfers, id, "mark_credited")
        else
          -- The credit was refused: give the money back and record why.
          ctx:execute(accounts, t.from, "deposit", { amount = t.amount })
          ctx:execute(transfers, id, "compensate", { reason = err.reason })
        end
      end,

      TransferCredited = function(ev, ctx)
        ctx:execute(transfers, id_of(ev), "complete")
      end,
    },
  }
end
