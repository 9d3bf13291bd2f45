-- The examples run as a person would run them (lua5.4 examples/X/main.lua DIR,
-- from the repository root, in a process of their own); what they print is
-- then checked against the store they leave behind.
local helpers = require "helpers"
local chronicle = require "chronicle"

-- Runs an example on a store in `dir`; returns exit status, stdout, stderr.
local function run_example(name, dir)
  local work = helpers.tmpdir()
  local out, err = work .. "/stdout", work .. "/stderr"
  local cmd = "cd " .. helpers.quote(helpers.root) .. " && "
    .. helpers.lua_command("examples/" .. name .. "/main.lua", dir)
    .. " > " .. helpers.quote(out) .. " 2> " .. helpers.quote(err) .. " < /dev/null"
  local ok, how, code = os.execute(cmd)
  local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
  end
  return (ok and 0 or (how == "exit" and code or 128 + code)), slurp(out), slurp(err)
end

-- The aggregate definition an example uses (examples/NAME/FILE.lua).
local function example_aggregate(name, file)
  return dofile(helpers.root .. "/examples/" .. name .. "/" .. file .. ".lua")
end

describe("the bank example", function()
  after_each(helpers.cleanup)

  it("runs to the end and tells a story that matches the store it leaves", function()
    local dir = helpers.tmpdir() .. "/bank"
    local status, out, err = run_example("bank", dir)
    assert.equals(0, status, "exit status; stderr:\n" .. err .. "\nstdout:\n" .. out)
    assert.equals("", err)

    assert.matches("store in " .. dir, out, nil, true)
    assert.matches("Alice and Bob open accounts.", out, nil, true)
    assert.matches("Alice deposits 100 then 50; Bob deposits 20. Balances: Alice 150, Bob 20.", out, nil, true)
    assert.matches("Bob tries to withdraw 500: refused (insufficient funds", out, nil, true)
    assert.matches("Alice transfers 30 to Bob in one transaction. Balances: Alice 120, Bob 50.", out, nil, true)
    assert.matches("Bob tries to transfer 1000 to Alice: refused", out, nil, true)
    assert.matches("would leave 110; it was rolled back, so she still has 120.", out, nil, true)

    local store = helpers.open(nil, dir)
    local accounts = store:repository(example_aggregate("bank", "rules/account"))

    -- the printed balance history is the start of the stream's history
    local printed = {}
    for version, type_, balance in out:gmatch("\n%s+v(%d+)%s+(%a+)[^\n]-%-> balance (%-?%d+)") do
      printed[#printed + 1] = { tonumber(version), type_, tonumber(balance) }
    end
    assert.is_true(#printed >= 4, "no balance history in the output")
    local actual = {}
    for version, ev, state in accounts:history("alice") do
      if #actual == #printed then break end
      actual[#actual + 1] = { version, ev.type, state.balance }
    end
    assert.same(actual, printed)

    -- the look at the past is what the store says about the past
    local then_version, then_balance = out:match("Time travel: at version (%d+) Alice had (%-?%d+)")
    assert.is_truthy(then_version, "no time travel in the output")
    assert.equals(tonumber(then_balance), (accounts:load("alice", { version = tonumber(then_version) })).balance)

    local stats = store:stats()
    assert.matches(("The store holds %d events in %d streams; verify: ok."):format(stats.events, stats.streams),
      out, nil, true)
    assert.is_true(store:verify().ok)
  end)
end)

describe("the cart example", function()
  after_each(helpers.cleanup)

  it("runs to the end, loading a busy cart from its snapshot", function()
    local dir = helpers.tmpdir() .. "/cart"
    local status, out, err = run_example("cart", dir)
    assert.equals(0, status, "exit status; stderr:\n" .. err .. "\nstdout:\n" .. out)
    assert.equals("", err)

    local store = helpers.open(nil, dir)
    local Cart = example_aggregate("cart", "cart")
    assert.equals(100, Cart.snapshot_every)
    local carts = store:repository(Cart)
    local state, version = carts:load("42")
    local kinds = 0
    for _ in pairs(state.items) do kinds = kinds + 1 end
    assert.is_true(state.checked_out)
    assert.matches(("cart 42: %d items in %d kinds, checked out at version %d"):format(state.count, kinds, version),
      out, nil, true)

    local snap = store:kv_get("snapshots", "cart-42")
    assert.is_table(snap)
    assert.is_true(snap.version >= 199 and snap.version <= version)
    assert.matches(("latest snapshot at version %d: loading replays only %d events after it")
      :format(snap.version, version - snap.version), out, nil, true)

    local before = carts:load("42", { version = 100 })
    assert.matches(("at version 100 the cart held %d items"):format(before.count), out, nil, true)
    assert.matches("adding after checkout: cart is not open", out, nil, true)
  end)
end)
