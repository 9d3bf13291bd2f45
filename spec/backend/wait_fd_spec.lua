-- store:wait_fd(): a descriptor an event loop polls instead of blocking in wait (on both backends).
local helpers = require "helpers"
local chronicle = require "chronicle"
local cqueues = require "cqueues"

-- Polls fd for reading inside a cqueues loop; true when it became readable within `seconds`.
local function readable(fd, seconds)
  local cq, got = cqueues.new(), false
  cq:wrap(function()
    local ready = cqueues.poll({ pollfd = fd, events = "r" }, seconds)
    got = ready ~= nil and ready ~= seconds and type(ready) == "table"
  end)
  assert(cq:loop())
  return got
end

describe("store:wait_fd", function()
  after_each(helpers.cleanup)

  it("becomes readable when another handle appends, and wait(after, 0) drains it", function()
    local store, target = helpers.open({ durability = "nosync" })
    local fd = store:wait_fd()
    assert.is_true(math.type(fd) == "integer" and fd >= 0, "a descriptor: " .. tostring(fd))
    assert.is_false(store:wait(0, 0))                  -- nothing yet, and nothing left to read
    assert.is_false(readable(fd, 0.05), "readable before any append")
    local other = helpers.open({ durability = "nosync" }, target)
    assert(other:append("a-1", { { type = "T" } }))
    assert.is_true(readable(store:wait_fd(), 5), "not readable after an append")
    local head
    for _ = 1, 100 do                                  -- the wake may come just before the commit shows
      head = store:wait(0, 0)
      if head then break end
      os.execute("sleep 0.005")
    end
    assert.equal(1, head)
    assert.is_false(readable(store:wait_fd(), 0.05), "still readable after wait drained it")
  end)

  it("is refused on a closed store", function()
    local store = helpers.open()
    store:close()
    assert.has_error(function() store:wait_fd() end)
  end)
end)
