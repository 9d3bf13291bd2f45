-- A handler script: "sends" a mail (into a table the spec reads) for each welcome.
return {
  kind = "handler",
  name = "mailer",
  types = { "WelcomeSent" },
  retries = 1,
  handle = function(ev)
    local outbox = _G.chronicle_scripts_spec_outbox
    outbox[#outbox + 1] = "Welcome, " .. ev.data.owner
  end,
}
