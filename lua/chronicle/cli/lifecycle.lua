--- metadata, delete, truncate, scavenge and compact: a stream's lifecycle from
-- the command line. Destructive commands ask first on a terminal and need
-- --yes anywhere else.
-- @module chronicle.cli.lifecycle
local chronicle = require "chronicle"
local context = require "chronicle.cli.context"
local output = require "chronicle.cli.output"
local progress = require "chronicle.cli.progress"
local terminal = require "chronicle.cli.terminal"

local M = {}

local function integer(what, min)
  return function(text)
    local n = math.tointeger(tonumber(text))
    if not n or n < min then return nil, string.format("%s must be an integer >= %d, got '%s'", what, min, text) end
    return n
  end
end

local function expected_arg(text)
  if text == "any" or text == "no_stream" or text == "exists" then return text end
  local n = math.tointeger(tonumber(text))
  if not n or n < -1 then return nil, "--expected must be a version >= -1, any, exists or no_stream, got '" .. text .. "'" end
  return n
end

--- Adds the lifecycle subcommands to the chronicle command's parser.
function M.define(parser, store_dir)
  local yes = "Do it without asking (needed when standard input is not a terminal)."

  local metadata = parser:command("metadata", "Show or change a stream's metadata (retention, custom keys).")
    :summary("Show or change a stream's metadata (retention, custom keys).")
    :description("Without changes, print STREAM's metadata and its version. --max-count, --max-age, "
                 .. "--truncate-before and --set KEY=VALUE (VALUE is JSON when it parses as JSON, else a string) "
                 .. "change it: the given keys are merged into what the stream has, --unset KEY removes one. "
                 .. "Events the rules hide disappear from every read at once; 'chronicle scavenge' removes "
                 .. "them for good.")
  store_dir(metadata)
  metadata:argument("stream", "The stream's name.")
  metadata:option("--max-count", "Keep only the newest N events visible."):argname("<n>"):convert(integer("--max-count", 0))
  metadata:option("--max-age", "Hide events older than this many seconds."):argname("<s>"):convert(integer("--max-age", 0))
  metadata:option("--truncate-before", "Hide the events below this version."):argname("<version>")
    :convert(integer("--truncate-before", 0))
  metadata:option("--set", "A custom key (repeatable)."):argname("<key=value>"):count("*")
  metadata:option("--unset", "Remove a key (repeatable)."):argname("<key>"):count("*")
  metadata:option("--expected", "Change only if the metadata is at this version (-1: none yet)."):argname("<v>")
    :convert(expected_arg)
  metadata:flag("--json", "One JSON object.")

  local delete = parser:command("delete", "Delete a stream (soft: it may be written again; --hard: a tombstone).")
    :summary("Delete a stream (soft: it may be written again; --hard: a tombstone).")
    :description("Delete STREAM: its events disappear from every read, and a $stream_deleted event is "
                 .. "appended to it so that projections and handlers can drop what they hold of it. A soft "
                 .. "delete lets the stream be written again (its versions go on); --hard leaves a tombstone, "
                 .. "after which appends and reads of the stream fail with stream_deleted. 'chronicle "
                 .. "scavenge' then removes the events for good.")
  store_dir(delete)
  delete:argument("stream", "The stream's name.")
  delete:flag("--hard", "A tombstone: the stream can never be written again.")
  delete:option("--expected", "Delete only if the stream is at this version."):argname("<v>"):convert(expected_arg)
  delete:flag("-y --yes", yes)
  delete:flag("--json", "One JSON object.")

  local truncate = parser:command("truncate", "Hide a stream's events below a version.")
    :summary("Hide a stream's events below a version.")
    :description("Set STREAM's truncate_before to VERSION (its other metadata stays): the events below it "
                 .. "disappear from every read; 'chronicle scavenge' removes them for good.")
  store_dir(truncate)
  truncate:argument("stream", "The stream's name.")
  truncate:option("--before", "The first version to keep."):argname("<version>"):count(1)
    :convert(integer("--before", 0))
  truncate:flag("-y --yes", yes)
  truncate:flag("--json", "One JSON object.")

  local scavenge = parser:command("scavenge", "Remove for good the events that metadata and deletions hide.")
    :summary("Remove for good the events that metadata and deletions hide.")
    :description("Remove the records, index and id entries of every event that stream metadata (max-count, "
                 .. "max-age, truncate-before) or a deletion hides, in short write transactions of at most "
                 .. "--batch events (other writers wait at most one of them). A scavenge that is interrupted "
                 .. "or killed loses nothing: run it again to finish. The file then stops growing while the "
                 .. "freed space is reused; 'chronicle compact' writes a smaller copy. --dry-run only counts.")
  store_dir(scavenge)
  scavenge:option("--batch", "Events removed per write transaction (default 1000)."):argname("<n>")
    :convert(integer("--batch", 1))
  scavenge:flag("--dry-run", "Count what would be removed; change nothing.")
  scavenge:flag("-y --yes", yes)
  scavenge:flag("--json", "One JSON object.")

  local compact = parser:command("compact", "Write a compacted copy of a store (LMDB), giving back the space freed.")
    :summary("Write a compacted copy of a store (LMDB), giving back the space freed.")
    :description("Write a compacted copy of the store into DST (LMDB's compacting copy, under one read "
                 .. "transaction: other processes may keep writing), verify it, and print both sizes. Replace "
                 .. "the store with the copy while nothing has it open. On PostgreSQL use the server's "
                 .. "VACUUM FULL.")
  store_dir(compact)
  compact:argument("dst", "A new directory for the copy.")
  compact:flag("--json", "One JSON object.")
end

-- Asks on the terminal, or needs --yes; fails when not confirmed.
local function confirm(args, question)
  if args.yes then return end
  if not (terminal.isatty(io.stdin) and terminal.isatty(io.stderr)) then
    context.fail(question .. ": not confirmed (give --yes when standard input is not a terminal)")
  end
  io.stderr:write(question, " [y/N] ")
  io.stderr:flush()
  local answer = io.stdin:read("l")
  if not answer or not answer:lower():match("^%s*y") then context.fail("not confirmed") end
end

local function value_of(text)
  local json = require "chronicle.cli.json"
  local ok, v = pcall(json.decode, text)
  if ok and v ~= nil then return v end
  return text
end

local function print_metadata(out, stream, info)
  if out.json then
    io.stdout:write(output.json_object({
      { "stream", stream }, { "metadata_version", info.metadata_version },
      { "metadata", info.metadata },
      { "deleted", info.deleted }, { "version", info.version },
    }), "\n")
    return
  end
  local paint = terminal.painter(out.colour)
  local rows = { { "stream", stream }, { "metadata version", tostring(info.metadata_version) } }
  local keys = {}
  for k in pairs(info.metadata) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do rows[#rows + 1] = { k, output.inline(info.metadata[k], paint) } end
  if info.deleted then rows[#rows + 1] = { "deleted", info.deleted } end
  output.report(rows, io.stdout, paint)
end

--- chronicle metadata DIR STREAM [changes]
function M.metadata(args)
  local changing = args.max_count or args.max_age or args.truncate_before or #args.set > 0 or #args.unset > 0
  local store = context.open(args.dir, changing and "write" or "read")
  local info, err = store:stream_info(args.stream)
  if not info and not (changing and err.code == "not_found") then context.fail(context.describe(err)) end
  if changing then
    local meta = info and info.metadata or {}
    for _, kv in ipairs(args.set) do
      local k, v = kv:match("^([^=]+)=(.*)$")
      if not k then context.fail("--set wants KEY=VALUE, got '" .. kv .. "'", 2) end
      meta[k] = value_of(v)
    end
    for _, k in ipairs(args.unset) do meta[k] = nil end
    meta.max_count = args.max_count or meta.max_count
    meta.max_age = args.max_age or meta.max_age
    meta.truncate_before = args.truncate_before or meta.truncate_before
    -- A value the store refuses (a negative --set max_count=-1) raises: a bad command line.
    local ok, res, serr = pcall(store.set_stream_metadata, store, args.stream, meta, { expected = args.expected })
    if not ok then context.fail((tostring(res):gsub("^[^:]*:%d+: ", "")), 2) end
    if not res then context.fail(context.describe(serr)) end
    info = store:stream_info(args.stream) or { metadata = meta, metadata_version = res.version }
  end
  print_metadata(context.output(args), args.stream, info)
  store:close()
end

--- chronicle delete DIR STREAM [--hard] [--expected V] [--yes]
function M.delete(args)
  local store = context.open(args.dir, "write")
  local info, err = store:stream_info(args.stream)
  if not info then context.fail(context.describe(err)) end
  confirm(args, string.format("%s stream '%s' (%s)?", args.hard and "hard-delete (for ever)" or "delete",
                              args.stream, output.plural(info.count, "event")))
  local res, derr = store:delete_stream(args.stream, { hard = args.hard, expected = args.expected })
  if not res then context.fail(context.describe(derr)) end
  store:close()
  local out = context.output(args)
  if out.json then
    io.stdout:write(output.json_object({ { "stream", args.stream }, { "deleted", args.hard and "hard" or "soft" },
      { "version", res.version }, { "position", res.position } }), "\n")
  else
    io.stdout:write(string.format("deleted stream '%s'%s: $stream_deleted at version %d, position %d\n",
      args.stream, args.hard and " (hard: a tombstone)" or "", res.version, res.position))
  end
end

--- chronicle truncate DIR STREAM --before V [--yes]
function M.truncate(args)
  local store = context.open(args.dir, "write")
  local info, err = store:stream_info(args.stream)
  if not info then context.fail(context.describe(err)) end
  confirm(args, string.format("hide the events of stream '%s' below version %d?", args.stream, args.before))
  local res, terr = store:truncate_stream(args.stream, args.before)
  if not res then context.fail(context.describe(terr)) end
  store:close()
  local out = context.output(args)
  if out.json then
    io.stdout:write(output.json_object({ { "stream", args.stream }, { "truncate_before", args.before },
      { "metadata_version", res.version } }), "\n")
  else
    io.stdout:write(string.format("stream '%s' now starts at version %d (metadata version %d)\n", args.stream,
      args.before, res.version))
  end
end

--- chronicle scavenge DIR [--batch N] [--dry-run] [--yes]
function M.scavenge(args)
  local store = context.open(args.dir, args.dry_run and "read" or "write")
  local out = context.output(args)
  local started = chronicle.now()
  if not args.dry_run then
    local dry, derr = store:scavenge({ dry_run = true })
    if not dry then context.fail(context.describe(derr)) end
    if dry.reclaimable > 0 then
      confirm(args, string.format("remove %s for good?", output.plural(dry.reclaimable, "hidden event")))
    end
  end
  local bar = progress.new({ label = "scavenge", unit = "events" })
  local res, err = store:scavenge({ batch = args.batch, dry_run = args.dry_run,
                                    progress = function(removed) bar:update(removed) end })
  bar:finish()
  if not res then context.fail(context.describe(err)) end
  local st = store:stats()
  store:close()
  local seconds = (chronicle.now() - started) / 1e9
  if out.json then
    io.stdout:write(output.json_object({ { "removed", res.removed }, { "reclaimable", res.reclaimable },
      { "streams", res.streams }, { "batches", res.batches }, { "seconds", seconds },
      { "events", st and st.events }, { "dry_run", args.dry_run or nil } }), "\n")
  elseif args.dry_run then
    io.stdout:write(string.format("%s would be removed\n", output.plural(res.reclaimable, "hidden event")))
  else
    io.stdout:write(string.format("removed %s from %s in %s (%s); %s left\n", output.plural(res.removed, "event"),
      output.plural(res.streams, "stream"), output.plural(res.batches, "transaction"), output.duration(seconds),
      output.plural(st and st.events or 0, "event")))
  end
end

--- chronicle compact DIR DST
function M.compact(args)
  local store = context.open(args.dir, "read")
  local before = store:stats()
  if before.backend == "postgres" then
    store:close()
    context.fail("a PostgreSQL store gives back space with the server's VACUUM FULL (on the schema's tables)")
  end
  local bar = progress.new({ label = "compact", unit = "bytes" })
  local ok, err = store:backup(args.dst, { progress = function(done, total) bar.total = total; bar:update(done) end })
  bar:finish()
  store:close()
  if not ok then context.fail(context.describe(err)) end
  local copy, oerr = chronicle.open(args.dst, { readonly = true })
  if not copy then context.fail("the copy in " .. args.dst .. " does not open: " .. context.describe(oerr)) end
  local result = copy:verify()
  local after = copy:stats()
  copy:close()
  if not result.ok then context.fail("the copy in " .. args.dst .. " does not verify: " .. tostring(result.problems[1])) end
  if context.output(args).json then
    io.stdout:write(output.json_object({ { "dst", args.dst }, { "events", after.events },
      { "file_size_before", before.file_size }, { "file_size_after", after.file_size } }), "\n")
  else
    io.stdout:write(string.format("compacted %s into %s: %s -> %s; the copy verifies\n",
      output.plural(after.events, "event"), args.dst, output.bytes(before.file_size), output.bytes(after.file_size)))
  end
end

return M
