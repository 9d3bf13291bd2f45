--- backup and verify: a consistent copy of a store taken while others write,
-- checked by opening it; and a full check of a store's records and indexes.
-- @module chronicle.cli.integrity
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local progress = require "chronicle.cli.progress"
local terminal = require "chronicle.cli.terminal"

local M = {}

local function write_problems(result, paint)
  local listed = result.problems or {}
  for _, p in ipairs(listed) do io.stdout:write(paint("error", "problem"), "  ", p, "\n") end
  local more = (result.problem_count or #listed) - #listed
  if more > 0 then io.stdout:write(string.format("... and %s more\n", output.count(more))) end
end

--- chronicle backup DIR DEST
function M.backup(args)
  local store = context.open(args.dir, "read")
  local bar = progress.new({ label = "backup", unit = "bytes" })
  local ok, err = store:backup(args.dest, { progress = function(done, total)
    bar.total = total
    bar:update(done)
  end })
  bar:finish()
  store:close()
  if not ok then context.fail(context.describe(err)) end

  local copy, oerr = chronicle.open(args.dest, { readonly = true })
  if not copy then context.fail("the copy in " .. args.dest .. " does not open: " .. context.describe(oerr)) end
  local check = progress.new({ label = "verify", unit = "events", total = copy:head() })
  local result = copy:verify({ progress = function(done) check:update(done) end })
  check:finish()
  local stats = copy:stats()
  copy:close()
  local paint = terminal.painter(terminal.colour(io.stdout))
  if not result.ok then
    write_problems(result, paint)
    context.fail(string.format("the copy in %s does not verify (%s)", args.dest,
                               output.plural(result.problem_count or #result.problems, "problem")))
  end
  io.stdout:write(string.format("backed up %s events in %s streams to %s (%s); the copy verifies: %s\n",
                                output.count(stats.events), output.count(stats.streams), args.dest,
                                output.bytes(stats.file_size), paint("ok", "ok")))
end

--- chronicle verify DIR [--max-problems N] [--json]
function M.verify(args)
  local store = context.open(args.dir, "read")
  local bar = progress.new({ label = "verify", unit = "events", total = store:head() })
  local result, err = store:verify({ max_problems = args.max_problems, progress = function(done) bar:update(done) end })
  bar:finish()
  store:close()
  if not result then context.fail(context.describe(err)) end
  local out = context.output(args)
  if out.json then
    local list = {}
    for i, p in ipairs(result.problems or {}) do list[i] = p end
    io.stdout:write(output.json_object({
      { "ok", result.ok }, { "events", result.events }, { "streams", result.streams },
      { "problem_count", result.problem_count or #list }, { "problems", #list > 0 and list or nil },
    }), "\n")
  else
    local paint = terminal.painter(out.colour)
    if result.ok then
      io.stdout:write(string.format("%s: %s events in %s streams; every record checks and the indexes agree\n",
                                    paint("ok", "ok"), output.count(result.events), output.count(result.streams)))
    else
      write_problems(result, paint)
    end
  end
  if not result.ok then
    context.fail(string.format("%s has %s", args.dir, output.plural(result.problem_count or #result.problems, "problem")))
  end
end

return M
