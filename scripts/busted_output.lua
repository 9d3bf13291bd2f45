-- busted output handler for `make test`: prints one line per test as it ends, and records
-- every outcome as a JSON line in $CHRONICLE_TEST_RESULTS for scripts/run_specs.lua to add up.
local cjson = require "cjson"

local function clock_ms(tick_start, tick_end)
  if tick_start and tick_end then return (tick_end - tick_start) * 1000 end
end

return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.base"()

  local results_path = os.getenv("CHRONICLE_TEST_RESULTS")
  local results = results_path and assert(io.open(results_path, "a"))

  -- Written and flushed one by one, so a crash loses at most the test that was running.
  local function record(entry)
    if results then
      results:write(cjson.encode(entry), "\n")
      results:flush()
    end
  end

  local function say(line)
    io.stdout:write(line, "\n")
    io.stdout:flush()
  end

  local function where(t)
    local trace = t.trace or (t.element and t.element.trace) or {}
    if trace.short_src then return trace.short_src .. ":" .. tostring(trace.currentline) end
    return "?"
  end

  local function message_of(t)
    local m = t.message
    if m == nil then return "(no message)" end
    if type(m) ~= "string" then m = require("pl.pretty").write(m) end
    return m
  end

  local function show_failure(kind, t)
    say(("  %-5s %s"):format(kind, t.name ~= "" and t.name or "(" .. tostring(t.element.descriptor) .. ")"))
    local msg, at = message_of(t), where(t)
    if msg:sub(1, #at) ~= at then msg = at .. ": " .. msg end
    say("        " .. msg:gsub("%s+$", ""):gsub("\n", "\n        "))
    local tb = t.trace and t.trace.traceback
    if options.verbose and tb then
      say("        " .. tb:gsub("^\n", ""):gsub("%s+$", ""):gsub("\n", "\n        "))
    end
  end

  handler.testStart = function(element)
    record({ event = "start", name = handler.getFullName(element) })
    return nil, true
  end

  handler.testEnd = function(element, parent, status)
    local ms = clock_ms(element.starttick, element.endtick)
    local t
    if status == "success" then
      t = handler.successes[#handler.successes]
      say(("  ok    %s%s"):format(t.name, ms and ms >= 100 and ("  (%.0f ms)"):format(ms) or ""))
    elseif status == "pending" then
      t = handler.pendings[#handler.pendings]
      say(("  skip  %s%s"):format(t.name, t.message and ("  -- " .. message_of(t)) or ""))
    elseif status == "failure" then
      t = handler.failures[#handler.failures]
      show_failure("FAIL", t)
    else
      t = handler.errors[#handler.errors]
      show_failure("ERROR", t)
    end
    record({ event = "test", status = status, name = t and t.name or handler.getFullName(element),
             where = t and where(t), message = t and status ~= "success" and message_of(t) or nil,
             ms = ms })
    return nil, true
  end

  -- Failures outside an `it` (a file that does not load, a failing setup or teardown):
  -- busted counts them as errors, and so does the summary.
  handler.blockError = function(element, parent, message, debug)
    if element.descriptor == "it" then return nil, true end
    local t = handler.errors[#handler.errors]
    show_failure("ERROR", t)
    record({ event = "test", status = "error", name = t.name ~= "" and t.name or element.descriptor,
             where = where(t), message = message_of(t) })
    return nil, true
  end

  handler.suiteEnd = function()
    record({ event = "end" })
    return nil, true
  end

  busted.subscribe({ "test", "start" }, handler.testStart, { predicate = handler.cancelOnPending })
  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "error" }, handler.blockError)
  busted.subscribe({ "failure" }, handler.blockError)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)

  return handler
end
