-- chronicle.load_scripts(store, dir, { sandbox = true }): rule scripts run in
-- their own sandboxes; they act only through their views and the events they
-- return, and a hostile one is stopped without touching the others.
local helpers = require "helpers"
local chronicle = require "chronicle"

describe("sandboxed scripts", function()
  after_each(helpers.cleanup)

  local function setup()
    local store = helpers.open()
    for _, amount in ipairs({ 5, 150, 7, 20 }) do
      assert(store:append("account-1", { { type = "Deposited", data = { amount = amount } } }))
    end
    local scripts = chronicle.load_scripts(store, "spec/support/sandboxed", {
      sandbox = true, limits = { instructions = 200000, time_ms = 500 },
    })
    return store, scripts
  end

  it("load projections and reactors, each in its own sandbox", function()
    local store, scripts = setup()
    assert.same({}, scripts.errors)
    local kinds = {}
    for _, a in ipairs(scripts.last_report.added) do kinds[a.name] = a.kind end
    assert.same({ counts = "projection", large = "reactor", spin = "projection", escape = "reactor" }, kinds)
    chronicle.runner(store):run_once()
    assert.are.equal(182, store:view("counts"):get("account-1"))
    assert.is_true(store:view("counts"):get("started"))
    local alerts = helpers.collect(store:read("alert-account-1"))
    assert.are.equal(1, #alerts)
    assert.are.equal(150, alerts[1].data.amount)
  end)

  it("stop a script that loops inside pcall, faulting only its projection", function()
    local store = setup()
    chronicle.runner(store):run_once()
    local status = store:projection_status()
    assert.are.equal("faulted", status.spin.status)
    assert.are.equal(3, status.spin.fault.position)
    assert.matches("spin", status.spin.fault.error)
    assert.are.equal("live", status.counts.status)
  end)

  it("give a script no io, and commit nothing from a call that failed", function()
    local store = setup()
    os.remove("/tmp/chronicle-escape")
    chronicle.runner(store):run_once()
    assert.is_nil(io.open("/tmp/chronicle-escape"))
    assert.is_nil(store:stream_info("escaped"))
    local status = store:reactor_status()
    assert.are.equal("faulted", status.escape.status)
    assert.matches("io", status.escape.fault.error)
    assert.are.equal("live", status.large.status)
    assert.are.equal(store:head(), status.large.checkpoint)
  end)
end)
