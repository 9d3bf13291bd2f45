--- The chronicle command: parses the command line, runs one subcommand and
-- turns what went wrong into one line on standard error and an exit status
-- (0 success, 1 failure, 2 bad command line, 130 interrupted).
-- @module chronicle.cli.main
local chronicle = require "chronicle"
local arguments = require "chronicle.cli.arguments"
local context = require "chronicle.cli.context"
local terminal = require "chronicle.cli.terminal"

local M = {}

-- Subcommand -> module and function.
local commands = {
  repl = { "chronicle.cli.repl", "run" },
  stats = { "chronicle.cli.browse", "stats" },
  streams = { "chronicle.cli.browse", "streams" },
  show = { "chronicle.cli.browse", "show" },
  tail = { "chronicle.cli.browse", "tail" },
  export = { "chronicle.cli.transfer", "export" },
  import = { "chronicle.cli.transfer", "import" },
  backup = { "chronicle.cli.integrity", "backup" },
  copy = { "chronicle.cli.copy", "copy" },
  verify = { "chronicle.cli.integrity", "verify" },
  project = { "chronicle.cli.projections", "project" },
  rebuild = { "chronicle.cli.projections", "rebuild" },
  serve = { "chronicle.cli.serve", "serve" },
  ["dead-letters"] = { "chronicle.cli.deadletters", "run" },
  metadata = { "chronicle.cli.lifecycle", "metadata" },
  delete = { "chronicle.cli.lifecycle", "delete" },
  truncate = { "chronicle.cli.lifecycle", "truncate" },
  scavenge = { "chronicle.cli.lifecycle", "scavenge" },
  compact = { "chronicle.cli.lifecycle", "compact" },
}

-- Subcommands whose normal end is Ctrl-C: an interrupt there is success.
local follows = { tail = true, project = true }

local function first_word(argv)
  for _, a in ipairs(argv) do
    if commands[a] then return a end
  end
end

local function say_error(command, message)
  message = tostring(message):gsub("\n.*", "")
  if command and message:sub(1, #command + 2) == command .. ": " then message = message:sub(#command + 3) end
  io.stdout:flush()
  io.stderr:write("chronicle", command and (" " .. command) or "", ": ", message, "\n")
  io.stderr:flush()
end

--- Runs the command line `argv` (a list of strings); returns the exit status.
function M.run(argv)
  local parser = arguments.parser(chronicle._VERSION)
  local ok, args = parser:pparse(argv)
  local command = first_word(argv)
  if not ok then
    say_error(command, args .. (command and (" (see 'chronicle " .. command .. " --help')") or
                               " (see 'chronicle --help')"))
    return 2
  end
  command = args.command
  local spec = commands[command]
  local fn = require(spec[1])[spec[2]]
  local traceback
  local ran, err = xpcall(fn, function(e)
    if not context.is_failure(e) and os.getenv("CHRONICLE_DEBUG") then traceback = debug.traceback(tostring(e), 2) end
    return e
  end, args)
  if ran then
    io.stdout:flush()
    return 0
  end
  if context.is_failure(err) then
    say_error(command, err.message)
    return err.status
  end
  if type(err) == "string" and err:find("interrupted!$") then
    io.stdout:flush()
    if follows[command] and args.follow then
      if terminal.isatty(io.stderr) then io.stderr:write("\n") end   -- after the terminal's ^C
      return 0
    end
    say_error(command, "interrupted")
    return 130
  end
  if traceback then io.stderr:write(traceback, "\n") end
  say_error(command, context.describe(err))
  return 1
end

return M
