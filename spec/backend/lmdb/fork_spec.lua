-- A store carried into a child across fork() refuses use with a clear error;
-- the child can open the store again, and the parent goes on undisturbed.
local helpers = require "helpers"

describe("a store across fork()", function()
  after_each(helpers.cleanup)

  it("refuses use in the child, which can open it anew", function()
    local dir = helpers.tmpdir()
    local exe = dir .. "/fork_host"
    -- Under `make check` chronicle.core is built with ASan, which must be linked into the host.
    local sanitize = package.cpath:find("build-asan", 1, true) and "-fsanitize=address,undefined" or ""
    local built = os.execute(("cc %s -o %s spec/support/fork_host.c -I/usr/include/lua5.4 -llua5.4 2>&1")
      :format(sanitize, helpers.quote(exe)))
    assert.is_true(built == true, "cc could not build spec/support/fork_host.c")
    local store_dir = dir .. "/store"
    local out = helpers.capture(("%s %s %s %s"):format(helpers.quote(exe), helpers.quote(store_dir),
      helpers.quote(package.path), helpers.quote(package.cpath)))
    assert.matches("parent: 1\n", out, 1, true)
    assert.matches("child inherited: [^\n]*cannot be used after fork%(%)", out)
    assert.matches("child closed inherited: false\n", out, 1, true)
    assert.matches("child reopened: 2\n", out, 1, true)
    assert.matches("child exit: 0\n", out, 1, true)
    assert.matches("parent reads after: 2\n", out, 1, true)
    assert.matches("parent after: 3", out, 1, true)
  end)
end)
