-- A reactor script: every opened account gets a WelcomeSent event of its own.
return {
  kind = "reactor",
  name = "greeter",
  from = { category = "account" },
  handlers = {
    Opened = function(ev)
      return { { stream = "welcome-" .. ev.stream:match("%-(.+)$"), type = "WelcomeSent",
                 data = { owner = ev.data.owner } } }
    end,
  },
}
