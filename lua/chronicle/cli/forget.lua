--- chronicle forget DIR SUBJECT: erases a subject's personal data (store:forget destroys
-- its key). Destructive, so it asks first on a terminal and needs --yes elsewhere.
-- @module chronicle.cli.forget
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local terminal = require "chronicle.cli.terminal"
local time = require "chronicle.cli.time"

local M = {}

--- Adds the `forget` subcommand to the chronicle command's parser.
function M.arguments(parser)
  local forget = parser:command("forget", "Erase the personal data of one subject (destroy its key).")
    :summary("Erase the personal data of one subject (destroy its key).")
    :description("Destroy the key of SUBJECT, so that the personal data of its events can never be read "
                 .. "again: every read returns those events with no personal data and `erased = true`; their "
                 .. "types, data, metadata, times and subject stay. Asks for confirmation on a terminal; "
                 .. "elsewhere give --yes. The key's bytes leave the files at the next compaction (chronicle "
                 .. "backup writes a compacted copy); backups taken before still hold it (README, \"Personal "
                 .. "data and erasure\"). A store opened with a key file needs --key-file (or CHRONICLE_KEY_FILE).")
  forget:argument("dir", "The store's directory (or postgresql:// URL).")
  forget:argument("subject", "The subject whose personal data to erase.")
  forget:option("--key-file", "The key file that wraps the store's subject keys."):argname("<file>")
  forget:flag("-y --yes", "Do not ask for confirmation.")
  forget:flag("--json", "One JSON object.")
end

local function confirmed(subject)
  if not terminal.isatty(io.stdin) then return false end
  io.stdout:write(string.format("Erase the personal data of subject '%s' for good? Type the subject to confirm: ", subject))
  io.stdout:flush()
  local line = io.stdin:read("l")
  return line == subject
end

--- chronicle forget DIR SUBJECT [--yes] [--json] [--key-file FILE]
function M.forget(args)
  if not args.yes then
    if not terminal.isatty(io.stdin) then
      context.fail("this erases personal data for good: give --yes to confirm", 2)
    end
    if not confirmed(args.subject) then context.fail("not confirmed: nothing was erased") end
  end
  local key_file = args.key_file or os.getenv("CHRONICLE_KEY_FILE")
  if key_file == "" then key_file = nil end
  local store = context.open(args.dir, "write", { key_file = key_file })
  local res, err = store:forget(args.subject)
  store:close()
  if not res then context.fail(context.describe(err)) end
  if context.output(args).json then
    io.stdout:write(output.json_object({
      { "subject", res.subject }, { "forgotten", time.iso(res.forgotten) }, { "already", res.already or false },
    }), "\n")
  elseif res.already then
    io.stdout:write(string.format("subject '%s' was already forgotten\n", res.subject))
  else
    io.stdout:write(string.format("forgot subject '%s': its personal data can no longer be read\n", res.subject))
  end
end

return M
