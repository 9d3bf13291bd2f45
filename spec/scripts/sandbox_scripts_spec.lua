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

  it("fault a script whose output the store refuses, with its event, and keep the runner and the others going, also after a restart", function()
    local store, dir = helpers.open({ durability = "nosync" })
    assert(store:append("account-1", { { type = "Deposited", data = { amount = 5 } } }))
    local function load(s)
      return chronicle.load_scripts(s, "spec/support/sandboxed_outputs", { sandbox = true, limits = { memory = 64 * 1024 * 1024 } })
    end
    local scripts = load(store)
    assert.equals(1, #scripts.errors)
    assert.matches("greedy.lua: a sandboxed reactor's 'max_outputs' may be at most 100", scripts.errors[1].message, nil, true)
    local n, report = chronicle.runner(store):run_once()
    assert.is_true(n >= 1)
    local faulted = {}
    for _, f in ipairs(report.faulted) do faulted[f.name] = f end
    for _, name in ipairs({ "empty_stream", "no_type", "huge", "long_key" }) do
      assert.is_table(faulted[name], name .. " is not faulted")
      assert.equals(1, faulted[name].position, name)
      assert.equals("Deposited", faulted[name].type, name)
    end
    assert.equals("projection", faulted.long_key.kind)
    assert.is_nil(faulted.fine)
    assert.equals(1, #helpers.collect(store:read("fine-1")))
    store:close()

    local again = helpers.open({ durability = "nosync" }, dir)
    load(again)
    assert(again:append("account-1", { { type = "Deposited", data = { amount = 6 } } }))
    local _, report2 = chronicle.runner(again):run_once()
    assert.equals(4, #report2.faulted)
    assert.equals(1, #helpers.collect(again:read("fine-3")), "the good reactor answered the new event")
  end)
end)
