-- The web console in a real browser: Debian's chromium, headless, driven
-- through chromedriver, against a real `chronicle serve` process.
-- CHRONICLE_SCREENSHOTS=DIR also saves a PNG of each page there (docs/images).
local chronicle = require "chronicle"
local helpers = require "helpers"
local support = require "server.support"
local webdriver = require "server.webdriver"

local shots = os.getenv("CHRONICLE_SCREENSHOTS")

describe("the web console", function()
  if not webdriver.available() then
    it("needs chromium and chromedriver (scripts/deps.sh installs them)", function()
      error("chromium or chromedriver is not installed")
    end)
    return
  end

  local srv, store, browser, dir
  local payment_id = chronicle.uuid()

  setup(function()
    dir = helpers.tmpdir() .. "/store"
    store = helpers.open(nil, dir)
    local scripts = assert(chronicle.load_scripts(store, helpers.root .. "/examples/bank/rules"))
    local accounts = scripts:repository("account")
    assert(accounts:execute("1", "open", { owner = "Ada" }))
    assert(accounts:execute("1", "deposit", { amount = 100 }))
    assert(accounts:execute("1", "withdraw", { amount = 30 }))
    assert(accounts:execute("2", "open", { owner = "<b>Bob</b>" }))
    assert(store:append("payment-7", { { type = "Requested", id = payment_id, data = { amount = 5 } } }))
    assert(store:append("payment-7", { { type = "Settled", data = { amount = 5 },
                                         meta = { causation_id = payment_id, correlation_id = payment_id } } }))
    assert(chronicle.runner(store):run({ until_idle = true }))
    srv = support.start(dir, { args = { "--scripts", helpers.root .. "/examples/bank/rules" }, life = 240 })
    browser = webdriver.start()
  end)

  teardown(function()
    if browser then browser:quit() end
    support.stop_all(true)
    helpers.cleanup()
  end)

  local function shot(name)
    if shots then browser:screenshot(shots .. "/console-" .. name .. ".png") end
  end

  it("shows the dashboard's counts, and a live append from another process", function()
    browser:go(srv.url .. "/#/")
    local el, text = browser:wait_for("#events", "6")
    assert.is_truthy(el, "dashboard count: " .. tostring(text))
    assert.is_truthy(browser:wait_for("#latest tbody tr", "payment-7"))
    local t0 = chronicle.now()
    assert(store:append("order-77", { { type = "Placed", data = { total = 12 } } }))    -- this spec is another process
    local row = browser:wait_for("#latest tbody tr", "order-77")
    assert.is_truthy(row, "the live append did not show on the dashboard")
    print(("# console: a live append showed on the dashboard after %.0f ms"):format((chronicle.now() - t0) / 1e6))
    assert.is_truthy(browser:wait_for("#events", "7"))
    shot("dashboard")
  end)

  it("lists streams with search, opens a stream, then one event with its data", function()
    browser:go(srv.url .. "/#/streams")
    assert.is_truthy(browser:wait_for("#streams tbody tr", "account-2"))
    browser:go(srv.url .. "/#/streams?prefix=pay")
    local _, text = browser:wait_for("#streams tbody", "payment-7")
    assert.is_falsy(text:find("account", 1, true))
    shot("streams")
    local link = browser:wait_for("#streams a", "payment-7")
    browser:click(link)
    assert.is_truthy(browser:wait_for("#events tbody tr", "Settled"))
    shot("stream")
    browser:click((browser:wait_for("#events a", "6")))
    local data = browser:wait_for("#data", "amount")
    assert.is_truthy(data)
    assert.matches('"amount": 5', browser:text(data), 1, true)
    shot("event")
  end)

  it("follows an event's causation link to the event that caused it", function()
    browser:go(srv.url .. "/#/event/6")
    local link = browser:wait_for("#causation a", payment_id)
    assert.is_truthy(link)
    browser:click(link)
    local title = browser:wait_for("h1", "Event 5")
    assert.is_truthy(title, "the causation link did not lead to event 5")
  end)

  it("shows untrusted text as text, never as markup", function()
    browser:go(srv.url .. "/#/stream/account-2")
    assert.is_truthy(browser:wait_for("#events tbody tr", "<b>Bob</b>"))
    assert.same({}, browser:find_all("#events b"))
  end)

  it("tails the whole log live, filtered by category", function()
    browser:go(srv.url .. "/#/log?category=order")
    assert.is_truthy(browser:wait_for("#log tbody tr", "order-77"))
    assert(store:append("account-9", { { type = "Opened", data = { owner = "Cy" } } }))
    assert(store:append("order-78", { { type = "Placed", data = { total = 3 } } }))
    assert.is_truthy(browser:wait_for("#log tbody tr", "order-78"), "the live tail did not show order-78")
    local _, all = browser:wait_for("#log tbody", "order-78")
    assert.is_falsy(all:find("account-9", 1, true))
    shot("log")
  end)

  it("shows projections, reactors, handlers and dead letters with their lag", function()
    browser:go(srv.url .. "/#/read-side")
    local row = browser:wait_for("#projections tbody tr", "balances")
    assert.is_truthy(row)
    shot("read-side")
  end)

  it("travels an aggregate's state through its versions with a slider", function()
    browser:go(srv.url .. "/#/stream/account-1")
    browser:click((browser:wait_for("#travel", "State")))
    assert.is_truthy(browser:wait_for("#state", '"balance": 70'))
    browser:run([[const s = document.getElementById("version"); s.value = "1"; s.dispatchEvent(new Event("input"));]])
    assert.is_truthy(browser:wait_for("#state", '"balance": 100'), "version 1 should show the balance after the deposit")
    browser:run([[const s = document.getElementById("version"); s.value = "0"; s.dispatchEvent(new Event("input"));]])
    assert.is_truthy(browser:wait_for("#state", '"balance": 0'))
    assert.is_truthy(browser:wait_for("#version-label", "0"))
    shot("aggregate")
  end)
end)
