--- The command line of the chronicle command: subcommands, their arguments
-- and options, and their --help texts (lua-argparse).
-- @module chronicle.cli.arguments
local argparse = require "argparse"

local M = {}

local function integer(what, min)
  return function(text)
    local n = math.tointeger(tonumber(text))
    if not n or n < min then return nil, string.format("%s must be an integer >= %d, got '%s'", what, min, text) end
    return n
  end
end

local function seconds(text)
  local n = tonumber(text)
  if not n or n < 0 then return nil, "seconds must be a number >= 0, got '" .. text .. "'" end
  return n
end

--- The argparse parser of the chronicle command.
-- @tparam string version text printed by --version
function M.parser(version)
  local parser = argparse("chronicle", "Explore, follow, export, back up and check a chronicle event store.")
    :command_target("command")
    :help_max_width(100)
    :epilog("Run 'chronicle COMMAND --help' for the options of a command. Exit status: 0 on success, "
            .. "1 when the command fails (one line on standard error), 2 for a bad command line.")
  parser:flag("--version", "Print the version and exit.")
    :action(function() io.stdout:write(version, "\n"); os.exit(0) end)

  local function store_dir(cmd) cmd:argument("dir", "The store's directory (or postgresql:// URL).") end

  local repl = parser:command("repl", "A Lua REPL with the store open as `store` and helpers bound.")
    :summary("A Lua REPL with the store open as `store` and helpers bound.")
    :description("A Lua 5.4 REPL with the store open as `store`, `chronicle` loaded and the helpers "
                 .. "streams([prefix]), show(stream[, opts]), tail([n]), state(aggregate, id[, version]), "
                 .. "view(name[, key]), reload() and help(). Line editing, history (~/.chronicle_history) "
                 .. "and completion with lua-readline on a terminal. Creates the store if it does not exist.")
  store_dir(repl)
  repl:option("--scripts", "Load aggregates, projections and handlers from this folder."):argname("<folder>")
  repl:flag("--readonly", "Open the store read-only.")

  local stats = parser:command("stats", "Counts, sizes and times of a store.")
  store_dir(stats)
  stats:flag("--json", "One JSON object.")

  local streams = parser:command("streams", "The streams of a store, in name order.")
  store_dir(streams)
  streams:option("--prefix", "Only streams whose name starts with this."):argname("<text>")
  streams:option("--after", "Only streams named after this one."):argname("<stream>")
  streams:option("--count", "At most this many streams."):argname("<n>"):convert(integer("--count", 1))
  streams:flag("--json", "JSON Lines: one object per stream.")

  local show = parser:command("show", "The events of one stream.")
  store_dir(show)
  show:argument("stream", "The stream's name.")
  show:option("--from", "Start at this stream version (0 is the first event)."):argname("<version>")
    :convert(integer("--from", 0))
  show:option("--count", "At most this many events."):argname("<n>"):convert(integer("--count", 1))
  show:flag("--backward", "Newest first.")
  show:flag("--meta", "Show each event's metadata too.")
  show:flag("--json", "JSON Lines, as export writes them.")

  local tail = parser:command("tail", "The newest events of the log; --follow waits for more.")
  store_dir(tail)
  tail:option("-n", "How many events to show first."):argname("<n>"):default("10")
    :convert(integer("-n", 0))
  tail:option("--category", "Only events of streams in this category (the name up to the first '-')."):argname("<c>")
  tail:option("--type", "Only events of this type (repeatable)."):argname("<type>"):count("*")
  tail:flag("-f --follow", "Keep printing events as other processes append them, until interrupted (Ctrl-C).")
  tail:flag("--meta", "Show each event's metadata too.")
  tail:flag("--json", "JSON Lines, as export writes them.")
  tail:option("--max-events", "Stop following after this many events."):hidden(true):convert(integer("--max-events", 1))
  tail:option("--timeout", "Stop following after this many seconds."):hidden(true):convert(seconds)

  local export = parser:command("export", "Write events as JSON Lines to standard output.")
    :summary("Write events as JSON Lines to standard output.")
    :description("Write the events of the log as JSON Lines (one event per line) to standard output: "
                 .. "a lossless form that `chronicle import` reads back, ids and times included. "
                 .. "It carries events only: no projections, checkpoints, snapshots or dead letters. "
                 .. "An import into a new store therefore runs every handler and reactor again over all "
                 .. "the events (a mail handler sends its mails again); for a copy with its state use "
                 .. "`chronicle backup`. The encoding is described in docs/CLI.md.")
  store_dir(export)
  export:option("--from", "First global position."):argname("<position>"):convert(integer("--from", 1))
  export:option("--to", "Last global position."):argname("<position>"):convert(integer("--to", 0))
  export:option("-o --output", "Write to this file instead of standard output."):argname("<file>")

  local import = parser:command("import", "Append the events of a JSON Lines file (from export).")
    :summary("Append the events of a JSON Lines file (from export).")
    :description("Append the events of a JSON Lines file written by `chronicle export`, keeping their ids, "
                 .. "times, metadata and schema versions. Events already in the store (same id, same event) "
                 .. "are skipped and counted apart from those written, so importing a file twice writes its "
                 .. "events once. A refused event stops the import with its line number. Creates the store if "
                 .. "it does not exist.")
  store_dir(import)
  import:argument("file", "The file to read, or - for standard input.")

  local copy = parser:command("copy", "Copy a whole store to another (LMDB and PostgreSQL), then verify it.")
    :summary("Copy a whole store to another (LMDB and PostgreSQL), then verify it.")
    :description("Copy every event of SRC (ids, times, positions, metadata, schema versions) and every "
                 .. "key-value space (views, checkpoints, snapshots, dead letters) into DST, a directory or a "
                 .. "postgresql:// URL, created when missing. An interrupted copy resumes where it stopped when "
                 .. "run again; at the end the two stores are compared event by event and key by key. Nothing "
                 .. "else may write DST while it runs, and SRC should not be written either.")
  copy:argument("src", "The store to copy: a directory or a URL.")
  copy:argument("dst", "The store to write: a directory or a URL.")

  local backup = parser:command("backup", "A consistent, compacted copy of a store, then verified.")
    :summary("A consistent, compacted copy of a store, then verified.")
    :description("Write a consistent, compacted copy of the store into DEST (LMDB's copy under one read "
                 .. "transaction: other processes may keep appending), then open the copy and verify it.")
  store_dir(backup)
  backup:argument("dest", "A new directory for the copy.")

  local verify = parser:command("verify", "Check every record and that the indexes agree with the log.")
    :summary("Check every record and that the indexes agree with the log.")
    :description("Read every event and every index and check that they agree: record checksums, positions "
                 .. "without gaps and contiguous stream versions (but for what scavenge removed, which it counts), every record decodes. Prints each problem "
                 .. "and exits with status 1 when there is one.")
  store_dir(verify)
  verify:option("--max-problems", "List at most this many problems."):argname("<n>")
    :convert(integer("--max-problems", 1))
  verify:flag("--json", "One JSON object.")

  local project = parser:command("project", "Run a scripts folder's projections, reactors and handlers; list them all.")
    :summary("Run a scripts folder's projections, reactors and handlers; list them all.")
    :description("Load the scripts of FOLDER (aggregates, projections, handlers, reactors) and run their "
                 .. "projections, reactors and handlers up to the head of the log; with --follow keep them "
                 .. "caught up as events arrive, until interrupted (Ctrl-C). Then list every projection, "
                 .. "reactor and handler the store holds state for (position, lag behind the head, dead "
                 .. "letters, status); without FOLDER only list them. Exits with status 1 when a projection "
                 .. "or reactor is faulted or a handler has dead letters.")
  store_dir(project)
  project:argument("folder", "The scripts folder."):args("?")
  project:flag("-f --follow", "Keep running as events arrive.")
  project:option("--timeout", "Stop following after this many seconds."):hidden(true):convert(seconds)

  local rebuild = parser:command("rebuild", "Rebuild one projection from the first event.")
    :summary("Rebuild one projection from the first event.")
    :description("Rebuild projection NAME (defined in the --scripts folder) from the first event. Readers "
                 .. "keep seeing the current rows until the rebuild has caught up.")
  store_dir(rebuild)
  rebuild:argument("name", "The projection's name.")
  rebuild:option("--scripts", "The scripts folder that defines the projection."):argname("<folder>"):count(1)

  local serve = parser:command("serve", "An HTTP API, live subscriptions and a web console for a store.")
    :summary("An HTTP API, live subscriptions and a web console for a store.")
    :description("Serve the store over HTTP until interrupted: append, read and subscribe (Server-Sent "
                 .. "Events), views and the read side's status, Prometheus metrics, and a web console at /. "
                 .. "Listens on 127.0.0.1:8080 unless --listen says otherwise; read-only unless --token-file "
                 .. "is given, and then writes need 'Authorization: Bearer <token>'. The API is in docs/HTTP.md.")
  store_dir(serve)
  serve:option("--listen", "HOST:PORT (or PORT) to listen on; port 0 picks a free one."):argname("<addr>")
  serve:option("--token-file", "A file holding the token that writes must present."):argname("<file>")
  serve:option("--scripts", "Load this scripts folder (aggregate states, handler retries)."):argname("<folder>")
  serve:option("--heartbeat", "Seconds between heartbeats on idle subscriptions (default 15)."):argname("<s>")
    :convert(seconds)

  local dead = parser:command("dead-letters", "List, show, retry or discard the dead letters of handlers.")
    :summary("List, show, retry or discard the dead letters of handlers.")
    :description("The events a handler still failed on after its retries. 'list' (the default) prints them "
                 .. "(--handler NAME: one handler's); 'show ID' prints one with its event; 'retry [NAME] "
                 .. "--scripts FOLDER' runs the handlers defined in FOLDER again on their dead letters and "
                 .. "removes those that succeed (exit status 1 when some still fail); 'discard ID' removes "
                 .. "one, 'discard --all' every one (of handler NAME with 'discard NAME --all'). An ID is "
                 .. "HANDLER:POSITION, as 'list' prints it.")
  store_dir(dead)
  dead:argument("action", "list, show, retry or discard."):args("?"):choices({ "list", "show", "retry", "discard" })
  dead:argument("target", "A dead letter's ID (show, discard) or a handler's name (retry, discard --all)."):args("?")
  dead:option("--handler", "list: only this handler's dead letters."):argname("<name>")
  dead:option("--scripts", "retry: the scripts folder that defines the handlers."):argname("<folder>")
  dead:flag("--all", "discard: every dead letter (of the named handler, when one is given).")
  dead:flag("--json", "list, show: JSON Lines, one object per dead letter.")

  require("chronicle.cli.lifecycle").define(parser, store_dir)

  return parser
end

return M
