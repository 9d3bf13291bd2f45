-- docs/HTTP.md's examples run as written: each ```sh block, in order, against
-- a real server, and its answer matched against the ```json or ```text block
-- after it ("..." matches any value; fields the page leaves out are not checked).
local cjson = require "cjson"
local helpers = require "helpers"
local support = require "server.support"

-- The (command, expected, kind) pairs of the page, in order.
local function examples(text)
  local out = {}
  for cmd, kind, expected in text:gmatch("```sh\n(.-)```\n```(%a+)\n(.-)```") do
    out[#out + 1] = { cmd = cmd, kind = kind, expected = expected }
  end
  return out
end

-- Whether `got` has everything `want` shows.
local function matches(want, got, path)
  if want == "..." then return true end
  if type(want) ~= "table" then
    if want ~= got then return false, ("%s: expected %s, got %s"):format(path, tostring(want), tostring(got)) end
    return true
  end
  if type(got) ~= "table" then return false, path .. ": expected a table, got " .. tostring(got) end
  for k, v in pairs(want) do
    local ok, why = matches(v, got[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  return true
end

describe("docs/HTTP.md", function()
  after_each(function()
    support.stop_all(true)
    helpers.cleanup()
  end)

  it("runs every example as written and gets the answers it shows", function()
    local f = assert(io.open(helpers.root .. "/docs/HTTP.md"))
    local page = f:read("a")
    f:close()
    local list = examples(page)
    assert.is_true(#list >= 10, "expected the page's examples, found " .. #list)
    local srv = support.start(helpers.tmpdir() .. "/store", { token = "doc-token-1234" })
    for i, ex in ipairs(list) do
      local out = helpers.capture(("CHRONICLE_URL=%s CHRONICLE_TOKEN=%s timeout 20 sh -c %s 2>&1"):format(
        srv.url, srv.token, helpers.quote(ex.cmd)))
      if ex.kind == "json" then
        local ok, got = pcall(cjson.decode, out)
        assert.is_true(ok, ("example %d answered no JSON: %s\n%s"):format(i, out, ex.cmd))
        local good, why = matches(cjson.decode(ex.expected), got, "answer")
        assert.is_true(good, ("example %d: %s\n%s\ngot: %s"):format(i, tostring(why), ex.cmd, out))
      else
        assert.equals(ex.expected:gsub("\n$", ""), out, ("example %d\n%s"):format(i, ex.cmd))
      end
    end
  end)
end)
