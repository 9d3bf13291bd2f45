-- One of several processes sharing a store. Roles:
--   writer ID N: N appends to 10 shared streams with expected versions and retries
--   reader SECONDS: reads the whole log again and again, checking it is gap-free
--   runner SECONDS: keeps a projection (events per stream) caught up
local chronicle = require "chronicle"
local dir, role, a, b = arg[1], arg[2], arg[3], arg[4]
local store = assert(chronicle.open(dir, { durability = "nosync" }))

local function projection()
  return {
    name = "per_stream",
    from = { category = "shared" },
    handlers = {
      Put = function(view, ev) view:update(ev.stream, function(n) return (n or 0) + 1 end) end,
    },
  }
end

if role == "writer" then
  local id, n = tonumber(a), tonumber(b)
  math.randomseed(id * 7919)
  local retries = 0
  for i = 1, n do
    local stream = "shared-" .. math.random(0, 9)
    while true do
      local info = store:stream_info(stream)
      local expected = info and info.version or chronicle.NO_STREAM
      local res, err = store:append(stream, { { type = "Put", data = { writer = id, i = i } } }, { expected = expected })
      if res then break end
      assert(err.code == "conflict", tostring(err))
      retries = retries + 1
    end
  end
  print("retries " .. retries)
elseif role == "reader" then
  local deadline, scans = os.time() + tonumber(a), 0
  repeat
    local last = 0
    for ev in store:read_all() do
      assert(ev.position == last + 1, "gap after " .. last)
      last = ev.position
    end
    scans = scans + 1
  until os.time() >= deadline
  print("scans " .. scans)
elseif role == "runner" then
  assert(store:projection(projection()))
  local runner = chronicle.runner(store, { wait = 0.05 })
  runner:run({ max_seconds = tonumber(a) })
  print("runner done")
elseif role == "catch_up" then
  assert(store:projection(projection()))
  store:run_projections()
  for i = 0, 9 do print("shared-" .. i .. " " .. tostring(store:view("per_stream"):get("shared-" .. i))) end
end
