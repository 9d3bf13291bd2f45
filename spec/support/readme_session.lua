-- The README's CLI session: finds it in README.md, runs its commands for real in one shell, and
-- gives back the transcript that run produced, in the README's form. spec/readme_spec.lua
-- compares it with the README; to regenerate the README's block after a change, run
--   lua5.4 spec/support/readme_session.lua            (from the repository root, after `make build`)
-- and paste what it prints (it runs the bank demo in a temporary folder first, as `make demo` does).
local M = {}

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- The session block of `readme` (text): the ``` block whose first line is "$ chronicle ...".
-- @return the block's text, and a list of steps `{ command = line, input = {lines} }`
function M.find(readme)
  do
    local block = readme:match("\n```\n(%$ chronicle .-\n)```")
    if block then
      local steps = {}
      for line in block:gmatch("([^\n]*)\n") do
        local command = line:match("^%$ (.*)$")
        if command then
          steps[#steps + 1] = { command = command, input = {} }
        else
          local input = line:match("^>>? (.*)$")
          if input and steps[#steps].command:match("^chronicle repl ") then
            table.insert(steps[#steps].input, input)
          end
        end
      end
      return block, steps
    end
  end
end

-- A REPL's piped output (a prompt before each line read, no echo) as a terminal shows it.
local function interleave(out, input)
  local lines, i, k = {}, 1, 0
  while i <= #out do
    local prompt = out:match("^>>? ", i)
    if not prompt then
      lines[#lines + 1] = out:sub(i)
      break
    end
    i = i + #prompt
    k = k + 1
    local stop, text = i - 1, ""   -- a prompt right after a prompt: that line printed nothing
    if not out:match("^>>? ", i) then
      stop = out:find("\n>>? ", i) or #out
      text = out:sub(i, stop)
    end
    if input[k] then lines[#lines + 1] = prompt .. input[k] .. "\n" end
    if text ~= "" and text ~= "\n" then lines[#lines + 1] = text end
    i = stop + 1
  end
  return table.concat(lines)
end

--- Runs `steps` in `work` (which holds data/bank, as `make demo` leaves it, and examples/) with
-- `chronicle` meaning `env ... lua5.4 root/bin/chronicle`. Returns the transcript and a list of
-- the exit statuses.
function M.run(steps, work, root, env)
  local script = { "cd " .. quote(work) .. " || exit 99",
                   "chronicle() { " .. env .. " lua5.4 " .. quote(root .. "/bin/chronicle") .. " \"$@\"; }" }
  for i, step in ipairs(steps) do
    script[#script + 1] = ("echo '@@@ %d'"):format(i)
    if #step.input > 0 then
      script[#script + 1] = ("%s 2>&1 <<'INPUT_END'\n%s\nINPUT_END"):format(step.command, table.concat(step.input, "\n"))
    else
      script[#script + 1] = step.command .. " 2>&1 < /dev/null"
    end
    script[#script + 1] = "echo \"@@@ rc $?\""
  end
  local file = work .. "/session.sh"
  local f = assert(io.open(file, "w"))
  f:write(table.concat(script, "\n"), "\n")
  f:close()
  local p = assert(io.popen("timeout 120 sh " .. quote(file)))
  local out = p:read("a")
  p:close()
  local transcript, statuses = {}, {}
  for i, step in ipairs(steps) do
    local body, rc = out:match("@@@ " .. i .. "\n(.-)@@@ rc (%d+)\n")
    body = body or "(no output: the session stopped)\n"
    if #step.input > 0 then body = interleave(body, step.input) end
    transcript[#transcript + 1] = "$ " .. step.command .. "\n" .. body
    statuses[i] = tonumber(rc)
  end
  return table.concat(transcript), statuses
end

--- What may differ between two runs of the session: times, ids, sizes.
function M.mask(text)
  return (text:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[.%d]*Z", "<time>")
              :gsub("%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x", "<uuid>")
              :gsub("%d+%.%d [KMG]?i?B", "<size>"))
end

-- Run as a script: print the session's transcript from a fresh demo store.
if arg and arg[0] and arg[0]:match("readme_session%.lua$") then
  local root = io.popen("pwd"):read("l")
  local work = io.popen("mktemp -d /tmp/chronicle-readme.XXXXXX"):read("l")
  local env = ("env LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(
    quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"), quote(root .. "/build/?.so;;"))
  assert(os.execute(("cd %s && ln -s %s examples && %s lua5.4 examples/bank/main.lua > /dev/null")
    :format(quote(work), quote(root .. "/examples"), env)))
  local f = assert(io.open(root .. "/README.md"))
  local _, steps = M.find(f:read("a"))
  f:close()
  io.write((M.run(steps, work, root, env)))
  os.execute("rm -rf " .. quote(work))
end

return M
