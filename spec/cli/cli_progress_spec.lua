-- Long work draws a progress bar with rate and time left on a terminal, and
-- nothing extra when the output is not a terminal. (`script` gives the
-- command a pseudo-terminal.)
local helpers = require "helpers"
local chronicle = require "chronicle"

local function run(cmd) return helpers.capture(cmd .. " 2>&1") end

describe("the chronicle command's progress", function()
  after_each(helpers.cleanup)

  local function store_with_events(n)
    local dir = helpers.tmpdir() .. "/store"
    local store = assert(chronicle.open(dir, { durability = "nosync" }))
    for i = 1, n // 1000 do
      local events = {}
      for j = 1, 1000 do events[j] = { type = "T", data = { i = i, j = j, pad = ("p"):rep(200) } } end
      assert(store:append("s-" .. i % 5, events))
    end
    store:close()
    return dir
  end

  local has_script = os.execute("command -v script >/dev/null 2>&1") == true

  it("shows verify's and backup's bars on a terminal", function()
    if not has_script then pending("the script command is not installed") return end
    local dir = store_with_events(30000)
    local chron = helpers.lua_command(helpers.root .. "/bin/chronicle")
    local verify = run("script -qc " .. helpers.quote(chron .. " verify " .. helpers.quote(dir)) .. " /dev/null")
    assert.matches("verify %[", verify)
    assert.matches("events/s", verify, 1, true)
    assert.matches("left", verify, 1, true)
    local dest = dir .. "-copy"
    local backup = run("script -qc " .. helpers.quote(chron .. " backup " .. helpers.quote(dir) .. " " .. helpers.quote(dest)) .. " /dev/null")
    assert.matches("backup %[", backup)
    assert.matches("bytes/s", backup, 1, true)
    os.execute("rm -rf " .. helpers.quote(dest))
  end)

  it("draws nothing when the output is not a terminal", function()
    local dir = store_with_events(5000)
    local out = run(helpers.lua_command(helpers.root .. "/bin/chronicle", "verify", dir))
    assert.are.equal("ok: 5,000 events in 5 streams; every record checks and the indexes agree", out)
  end)
end)
