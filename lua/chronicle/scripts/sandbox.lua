--- chronicle.scripts.sandbox: untrusted scripts, each in its own Lua state.
-- A sandbox is a `lua_State` made by the C module `chronicle.sandbox` (which
-- loads neither LMDB nor libpq) with a memory budget in its
-- allocator; each `load` and `call` runs under an instruction budget and a
-- wall-clock deadline that the script cannot catch with `pcall`. Nothing is
-- shared with the host but values, copied both ways by the MessagePack codec.
--
-- What a script has: the base library without `dofile`, `loadfile`,
-- `collectgarbage`, `print` and `warn` (`load` takes text only, and
-- `setmetatable` refuses `__gc`); `string` without `dump`; `table`; `math`;
-- `utf8`; `os.time`, `os.clock`, `os.date`. No `io`, `require`, `package`,
-- `debug` or `coroutine`. Pattern functions count their steps against the
-- instruction budget; other library functions pay for the bytes or elements
-- they touch (`LIMITS.bytes_per_step`); patterns are at most
-- `LIMITS.max_pattern` bytes; `string.rep` fails with a memory error when its
-- result would not fit in the memory left. Every charge saturates, and one
-- larger than the instructions left is refused before the work starts.
--
-- What one load or call copies out to the host (its result, view keys and
-- values, `view:update` results, the definition's description) may take at
-- most the memory budget in the host, counted per copy (a table referenced
-- twice counts twice); past it the load or call fails with "memory_exceeded"
-- and "<path>: too large: ...". `view:put` and `view:update` also pay one
-- instruction per `LIMITS.bytes_per_step` bytes of what they copy.
-- @module chronicle.scripts.sandbox
local csandbox = require "chronicle.sandbox"

local M = {}

--- The defaults and caps, from the C module: `memory`, `instructions`,
-- `time_ms` (defaults), `min_memory`, `max_pattern`, `bytes_per_step`,
-- `max_message` (bytes of an error message kept).
M.LIMITS = csandbox.LIMITS

local options = require "chronicle.options"
local new_options = {
  memory = options.integer_at_least(csandbox.LIMITS.min_memory), instructions = options.integer_at_least(1),
  time_ms = options.integer_at_least(1), name = "string",
}

-- What the C sandbox is told about a projection's script: its callables are in
-- `definition.handlers`, and the proxy a call with a view hands the script has
-- the view's four methods, each with what it hands the host besides its key.
local HANDLERS = "handlers"
local VIEW_PROXY = { { "get", "key" }, { "put", "value" }, { "update", "function" }, { "delete", "key" } }

--- Makes a sandbox.
-- @tparam[opt] table opts `memory` (bytes, default 16 MiB), `instructions`
--   (per call, default 10,000,000), `time_ms` (per call, default 1000), `name`
--   (the script's name in error messages)
-- @return a sandbox with the methods below; close it with `sb:close()` or `<close>`
--
-- `sb:load(source [, chunkname])` runs the script's text (never bytecode) under
-- the budgets; the script returns its definition. Returns a plain description:
-- the definition's string, number and boolean fields, its `from`, and
-- `handlers`, the sorted names of its handlers. Or `nil, err` with `err.code`
-- "syntax_error", "script_error", "bad_definition", "budget_exceeded",
-- "timeout" or "memory_exceeded" and a message naming the chunk and line. The
-- code says what ended the script: a script that recovers from a memory error
-- with `pcall` and then raises its own error gets "script_error" and its message.
--
-- `sb:call(handler, event [, view])` copies `event` in and calls
-- `definition.handlers[handler](proxy, event)` when a `view` is given,
-- `definition.handlers[handler](event)` otherwise, and returns a copy of the
-- handler's first result. The proxy has only `get(k)`, `put(k, v)`,
-- `update(k, fn)` and `delete(k)`, which call the same methods of the host's
-- `view` (values copied both ways; `update` hands the host a function that
-- runs `fn` in the sandbox); a host error becomes an error in the script.
-- Failures return `nil, err`, `err.code` one of "script_error",
-- "budget_exceeded", "timeout", "memory_exceeded", "no_handler", with
-- `err.script`, `err.handler` and a message naming both and the event.
--
-- `sb:call_field(name, value [, view])` does the same for `definition[name]`
-- (such as a projection's `init`). `sb:stats()` returns `memory` (bytes held
-- now), `memory_limit`, `instructions` (used by the last call, to the nearest
-- thousand) and `calls`. `sb:copied()` returns the bytes the last load or
-- call copied out to the host, as the cap above counts them (a sandboxed
-- projection charges them to its batch: `projection.BATCH_BYTES`).
function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table of options expected, got " .. type(opts) .. ")", 2)
  end
  options.check("sandbox.new", opts, new_options, 2)
  return csandbox.new({ memory = opts.memory, instructions = opts.instructions, time_ms = opts.time_ms,
                        name = opts.name, handlers = HANDLERS, proxy = VIEW_PROXY })
end

return M
