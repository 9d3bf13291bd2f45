-- Group commit: appends that arrive together share one transaction, and each
-- keeps its own outcome (in-process, with real cqueues coroutines and a real
-- store); and a server killed with SIGKILL under load loses no acknowledged append.
local helpers = require "helpers"
local support = require "server.support"
local http = require("chronicle.server.http").load()
local group_commit = require "chronicle.server.group_commit"

-- Runs one coroutine per entry, all started in the same step; returns each
-- one's results and the sizes of the commits made.
local function run_together(store, entries)
  local commits, results = {}, {}
  local committer = group_commit.new(store, http.cqueues, http.condition, function(n) commits[#commits + 1] = n end)
  local cq = http.cqueues.new()
  for i, entry in ipairs(entries) do
    cq:wrap(function() results[i] = { pcall(committer.append, committer, entry) } end)
  end
  assert(cq:loop())
  return results, commits
end

describe("group commit", function()
  after_each(function()
    support.stop_all(true)
    helpers.cleanup()
  end)

  it("commits appends that arrive together in one transaction, each with its own result", function()
    local store = helpers.open({ durability = "nosync" })
    local entries = {}
    for i = 1, 10 do entries[i] = { stream = "s-" .. i, expected = "no_stream", events = { { type = "A", data = i } } } end
    local results, commits = run_together(store, entries)
    assert.same({ 10 }, commits)
    for i = 1, 10 do
      assert.is_true(results[i][1])
      assert.same({ stream = "s-" .. i, version = 0 }, { stream = results[i][2].stream, version = results[i][2].version })
    end
    assert.equals(10, store:head())
  end)

  it("gives a conflict to its entry only: the others commit together", function()
    local store = helpers.open({ durability = "nosync" })
    assert(store:append("s-3", { { type = "A" } }))
    local entries = {}
    for i = 1, 5 do entries[i] = { stream = "s-" .. i, expected = "no_stream", events = { { type = "B" } } } end
    local results, commits = run_together(store, entries)
    assert.same({ 4 }, commits)
    assert.is_nil(results[3][2])
    assert.same({ "conflict", 0 }, { results[3][3].code, results[3][3].actual })
    for _, i in ipairs({ 1, 2, 4, 5 }) do assert.equals(0, results[i][2].version) end
    assert.equals(0, store:stream_version("s-3"))
  end)

  it("falls back to one commit per entry when an entry is bad input, and raises only for that one", function()
    local store = helpers.open({ durability = "nosync" })
    local entries = {
      { stream = "s-1", events = { { type = "A" } } },
      { stream = "s-2", events = { { data = 1 } } },        -- no type: append_many raises
      { stream = "s-3", events = { { type = "C" } } },
    }
    local results, commits = run_together(store, entries)
    assert.same({ 1, 1 }, commits)
    assert.is_true(results[1][1] and results[1][2] ~= nil)
    assert.is_false(results[2][1])
    assert.truthy(tostring(results[2][2]):find("type", 1, true))
    assert.is_true(results[3][1] and results[3][2] ~= nil)
    assert.equals(2, store:head())
  end)

  it("keeps every acknowledged append when the server is killed with SIGKILL under load", function()
    local dir = helpers.tmpdir() .. "/store"
    local token = "kill-nine-token"
    local srv = support.start(dir, { token = token })
    local work = helpers.tmpdir()
    for n = 1, 4 do
      os.execute(("%s timeout 60 lua5.4 %s/spec/server/append_worker.lua %d %d 2000 %s/acks-%d %s >/dev/null 2>&1 &"):format(
        support.lua_env(), helpers.quote(helpers.root), srv.port, n, work, n, token))
    end
    -- let them append for a while (at least some acknowledgements), then kill the server
    local acked = 0
    for _ = 1, 200 do
      os.execute("sleep 0.05")
      acked = tonumber(helpers.capture("cat " .. work .. "/acks-* 2>/dev/null | wc -l")) or 0
      if acked >= 200 then break end
    end
    assert.is_true(acked > 0, "no append was acknowledged")
    support.stop(srv, "KILL")
    os.execute("sleep 0.5")                 -- the workers see the refused connections and stop
    local ids = {}
    for id in helpers.capture("cat " .. work .. "/acks-*"):gmatch("[^\n]+") do ids[#ids + 1] = id end
    local store = helpers.open(nil, dir)
    local seen = {}
    for ev in store:read_all() do seen[ev.id] = (seen[ev.id] or 0) + 1 end
    for _, id in ipairs(ids) do assert.equals(1, seen[id], "acknowledged append " .. id .. " is missing or twice") end
    assert.is_true(store:verify().ok)
  end)
end)
