-- Runs each spec file in its own busted process (a crash or a memory error in one file is
-- counted there and the others still run) and ends with the line `N passed, N failed, N skipped`
-- added up from busted's own results. Before it, a list of what failed quotes each failure's
-- message, and a sanitizer's or valgrind's report for a file that ended badly with every test
-- passed. Exits 1 when anything failed or errored.
--
-- lua5.4 scripts/run_specs.lua [--cpath PATTERN] [--wrap 'CMD ...'] [--timeout SECONDS] [FILE...]
--   --cpath    where busted looks first for chronicle.core (e.g. build-asan/?.so)
--   --wrap     a command every busted run goes through (valgrind ...); specs see it in
--              CHRONICLE_TEST_WRAP, to run the programs they start through it too
--   --timeout  seconds one spec file may take before it is killed and counted as failed
--   --tally    a file that adds up the counts of several runs (make test's two backends):
--              this run's counts are added to it, and the last line printed is the sum
local cjson = require "cjson"

-- busted's runner script, run with lua5.4 whatever interpreter its #! line names (Debian's is `lua`).
local function find_busted()
  local p = io.popen("command -v busted 2>/dev/null")
  local found = p and p:read("l")
  if p then p:close() end
  return found
end
local BUSTED = os.getenv("BUSTED") or find_busted() or "/usr/bin/busted"
local LUA = os.getenv("LUA") or "lua5.4"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function say(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

local cpath, wrap, timeout, tally, files = nil, nil, 900, nil, {}
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--cpath" then cpath = arg[i + 1]; i = i + 1
    elseif a == "--wrap" then wrap = arg[i + 1]; i = i + 1
    elseif a == "--timeout" then timeout = assert(tonumber(arg[i + 1]), "--timeout needs seconds"); i = i + 1
    elseif a == "--tally" then tally = assert(arg[i + 1], "--tally needs a file"); i = i + 1
    else files[#files + 1] = a end
    i = i + 1
  end
end

if #files == 0 then
  local p = assert(io.popen("find spec -name '*_spec.lua' -not -path '*/.*' 2>/dev/null | LC_ALL=C sort"))
  for line in p:lines() do files[#files + 1] = line end
  p:close()
end

local results_path, output_path, status_path = os.tmpname(), os.tmpname(), os.tmpname()

local function read_all(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- The first n lines of text, indented to sit under a failure in the list.
local function first_lines(text, n)
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if #out == n then out[#out + 1] = "..."; break end
    out[#out + 1] = line
  end
  return table.concat(out, "\n      ")
end

-- The lines of a spec file's output that a sanitizer or valgrind wrote (at most 12).
local function reports_in(output)
  local found = {}
  for line in output:gmatch("[^\n]+") do
    if line:match("^==%d+==") or line:match("Sanitizer") or line:match("runtime error:")
       or line:match("^SUMMARY:") or line:match("^Tracer caught signal") then
      found[#found + 1] = line
      if #found == 12 then break end
    end
  end
  return table.concat(found, "\n      ")
end

local totals = { passed = 0, failed = 0, skipped = 0 }
local problems = {}

local function read_results()
  local entries = {}
  for line in (read_all(results_path) or ""):gmatch("[^\n]+") do
    local ok, entry = pcall(cjson.decode, line)
    if ok then entries[#entries + 1] = entry end
  end
  return entries
end

local started = os.time()
for _, file in ipairs(files) do
  assert(io.open(results_path, "w")):close()
  say("== " .. file)
  local cmd = {}
  cmd[#cmd + 1] = "CHRONICLE_TEST_RESULTS=" .. shell_quote(results_path)
  if wrap then cmd[#cmd + 1] = "CHRONICLE_TEST_WRAP=" .. shell_quote(wrap) end
  cmd[#cmd + 1] = ("timeout -k 10 %d"):format(timeout)
  if wrap then cmd[#cmd + 1] = wrap end
  cmd[#cmd + 1] = LUA .. " " .. shell_quote(BUSTED)
  if cpath then cmd[#cmd + 1] = "--cpath=" .. shell_quote(cpath) end
  cmd[#cmd + 1] = "-o scripts/busted_output.lua " .. shell_quote(file) .. " </dev/null 2>&1"
  local t0 = os.time()
  -- The output goes to the terminal as it comes and to a file, so that a sanitizer's or
  -- valgrind's report can be quoted in the list of failures at the end.
  assert(io.open(status_path, "w")):close()
  os.execute(("( %s; echo $? > %s ) | tee %s"):format(table.concat(cmd, " "), shell_quote(status_path),
                                                      shell_quote(output_path)))
  local status = tonumber(read_all(status_path) or "") or 1

  local failed_here, ended, running = 0, false, nil
  for _, e in ipairs(read_results()) do
    if e.event == "start" then
      running = e.name
    elseif e.event == "test" then
      running = nil
      if e.status == "success" then
        totals.passed = totals.passed + 1
      elseif e.status == "pending" then
        totals.skipped = totals.skipped + 1
      else
        totals.failed = totals.failed + 1
        failed_here = failed_here + 1
        local msg, at = e.message or "", e.where or "?"
        if msg:sub(1, #at) ~= at then msg = at .. ": " .. msg end
        problems[#problems + 1] = ("%s: %s (%s)\n      %s"):format(file, e.name, e.status, first_lines(msg, 6))
      end
    elseif e.event == "end" then
      ended = true
    end
  end

  -- busted's exit status is its failures + errors; anything else non-zero came from outside
  -- its results: a crash, a sanitizer or valgrind error, a timeout.
  if not ended or (status ~= 0 and failed_here == 0) then
    local why
    if status == 124 or status == 137 then why = ("killed after the %d s timeout"):format(timeout)
    elseif status > 128 then why = ("killed by signal %d"):format(status - 128)
    elseif ended then why = ("exit status %d with every test passed (sanitizer or valgrind error? see above)"):format(status)
    else why = ("exit status %d before busted finished its results"):format(status) end
    if running then why = why .. ", during: " .. running end
    say("  FAIL  " .. file .. ": " .. why)
    totals.failed = totals.failed + 1
    local report = reports_in(read_all(output_path) or "")
    problems[#problems + 1] = file .. ": " .. why .. (report ~= "" and "\n      " .. report or "")
  end
  say(("   (%s: %d s)"):format(file, os.time() - t0))
end
os.remove(results_path); os.remove(output_path); os.remove(status_path)

say("")
if #files == 0 then say("no spec files found") end
if #problems > 0 then
  say("Failed:")
  for _, p in ipairs(problems) do say("  " .. p) end
end
say(("%d spec files in %d s"):format(#files, os.time() - started))
say(("%d passed, %d failed, %d skipped"):format(totals.passed, totals.failed, totals.skipped))
if tally then
  local sum, runs = { passed = 0, failed = 0, skipped = 0 }, 0
  local f = io.open(tally, "r")
  if f then
    local text = f:read("a")
    f:close()
    local p, fl, sk, r = text:match("^(%d+) (%d+) (%d+) (%d+)")
    if p then sum = { passed = tonumber(p), failed = tonumber(fl), skipped = tonumber(sk) }; runs = tonumber(r) end
  end
  for k in pairs(sum) do sum[k] = sum[k] + totals[k] end
  runs = runs + 1
  f = assert(io.open(tally, "w"))
  f:write(("%d %d %d %d\n"):format(sum.passed, sum.failed, sum.skipped, runs))
  f:close()
  if runs > 1 then
    say(("all %d runs:"):format(runs))
    say(("%d passed, %d failed, %d skipped"):format(sum.passed, sum.failed, sum.skipped))
  end
end
os.exit(totals.failed == 0 and #files > 0 and 0 or 1)
