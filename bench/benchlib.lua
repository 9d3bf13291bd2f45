--- Shared helpers for chronicle's benchmarks (bench/*.lua).
-- Sizes come from environment variables (bench/run.sh sets them); every
-- benchmark prints `result ...` lines that run.sh gathers into a table:
--   result name=<id> subject=<x> baseline=<y> unit=<unit> ratio=<x/y> target=<t|-> status=<ok|MISS|->
-- where subject and baseline are throughputs (higher is better), so the
-- ratio is always subject / baseline = baseline_time / subject_time.
local M = {}

local ok, clock = pcall(require, "benchclock")
if ok then
  M.now, M.cpu = clock.now, clock.cpu
else
  local sok, socket = pcall(require, "socket")
  if sok then M.now = socket.gettime else M.now = os.clock end
  M.cpu = os.clock
  io.stderr:write("bench: benchclock.so not found, using a coarser clock\n")
end

--- An integer from the environment, or `default`.
function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  if not n then error(name .. " must be an integer, got " .. v) end
  return n
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
M.shell_quote = shell_quote

--- The benchmarks' scratch directory (BENCH_TMP, made by run.sh).
M.tmp = os.getenv("BENCH_TMP")
if not M.tmp or M.tmp == "" then
  local p = io.popen("mktemp -d /tmp/chronicle-bench.XXXXXX")
  M.tmp = p:read("l")
  p:close()
  M.own_tmp = true
end

local counter = 0
--- A path for a new store (a directory that does not exist yet) under the scratch directory.
function M.fresh_dir(name)
  counter = counter + 1
  local d = string.format("%s/%s-%d-%d", M.tmp, name, counter, math.random(1 << 30))
  M.rm(d)
  return d
end

function M.rm(path)
  assert(path:sub(1, #M.tmp) == M.tmp, "refusing to remove outside the scratch dir")
  os.execute("rm -rf " .. shell_quote(path))
end

-- Stores made by scratch(), removed together by remove_scratch().
local scratched = {}

--- A fresh store directory whose removal waits for remove_scratch(), after
-- `sync` has flushed what earlier measurements left dirty (on a filesystem
-- mounted with `discard`, a large rm slows the I/O that follows).
function M.scratch(name)
  local d = M.fresh_dir(name)
  scratched[#scratched + 1] = d
  os.execute("sync")
  return d
end

function M.remove_scratch()
  for _, d in ipairs(scratched) do M.rm(d) end
  scratched = {}
end

--- Runs cases[name]() for every name of `order`, `rounds` times, starting
-- each round one name further along so no case always goes first. Returns
-- got[name][round] = what the case returned; after_round(r, got) runs after
-- each round.
function M.rotate(order, cases, rounds, after_round)
  local got = {}
  for _, name in ipairs(order) do got[name] = {} end
  for r = 1, rounds do
    for k = 0, #order - 1 do
      local name = order[(r - 1 + k) % #order + 1]
      got[name][r] = cases[name]()
    end
    if after_round then after_round(r, got) end
  end
  return got
end

--- got[a][r] / got[b][r] for every round r of a rotate() result.
function M.ratios(got, a, b)
  local t = {}
  for r = 1, #got[a] do t[r] = got[a][r] / got[b][r] end
  return t
end

--- Removes the scratch directory if this process made it.
function M.cleanup()
  if M.own_tmp then os.execute("rm -rf " .. shell_quote(M.tmp)) end
end

--- Runs `fn` once and returns the wall seconds it took (after a full GC).
function M.time(fn)
  collectgarbage("collect")
  local t0 = M.now()
  fn()
  return M.now() - t0
end

function M.min(t)
  local m = math.huge
  for _, v in ipairs(t) do if v < m then m = v end end
  return m
end

function M.max(t)
  local m = -math.huge
  for _, v in ipairs(t) do if v > m then m = v end end
  return m
end

function M.median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  if n % 2 == 1 then return c[(n + 1) // 2] end
  return (c[n // 2] + c[n // 2 + 1]) / 2
end

--- Prints one result line. `subject` and `baseline` are throughputs (per second).
-- `per_round` (optional) holds the ratio of each round, for the median.
function M.result(name, subject, baseline, unit, target, per_round)
  local ratio = subject / baseline
  local status = "-"
  if target then status = ratio >= target and "ok" or "MISS" end
  local med = per_round and string.format(" median_ratio=%.3f", M.median(per_round)) or ""
  print(string.format("result name=%s subject=%.1f baseline=%.1f unit=%s ratio=%.3f target=%s status=%s%s",
                      name, subject, baseline, unit, ratio, target and string.format("%.2f", target) or "-",
                      status, med))
  io.stdout:flush()
end

function M.note(fmt, ...)
  print("# " .. string.format(fmt, ...))
  io.stdout:flush()
end

--- Parses `key=value` words from a program's output into a table.
function M.parse_kv(text)
  local t = {}
  for k, v in text:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

--- Opens chronicle (the module must be on LUA_PATH / LUA_CPATH).
function M.chronicle() return require "chronicle" end

-- ---------------------------------------------------------------------------
-- Event payloads. A flat map of 8 fields; its MessagePack size is
-- 101 + note_len bytes when note_len <= 31 or 102 + note_len above that,
-- given the value ranges below (amount and seq always take 5 bytes).

local NOTE = string.rep("lorem ipsum dolor sit amet, consectetur adipiscing elit; ", 4)

function M.event_data(i, note_len)
  return {
    account = string.format("acct-%06d", i % 1000000),
    amount = 70000 + (i * 7919) % 20000,
    currency = "EUR",
    note = NOTE:sub(1, note_len),
    seq = 100000 + i,
    ok = i % 3 ~= 0,
    rate = 1 + (i % 100) / 64,
    ref = string.format("%016x", (i * 2654435761) % 0x100000000),
  }
end

--- The fields of event_data, for baselines that copy a data table field by field.
M.DATA_FIELDS = { "account", "amount", "currency", "note", "seq", "ok", "rate", "ref" }

-- MessagePack size of the values event_data and meta use (as msgpack-c packs
-- them in csrc/common/codec.c: smallest integer form, doubles as float64, valid
-- UTF-8 as str). Enough to compute the exact stored record size.
local function mp_size(v)
  local t = type(v)
  if t == "nil" or t == "boolean" then return 1 end
  if math.type(v) == "float" then return 9 end
  if math.type(v) == "integer" then
    if v >= 0 then
      if v < 128 then return 1 elseif v < 256 then return 2 elseif v < 65536 then return 3
      elseif v < 4294967296 then return 5 else return 9 end
    else
      if v >= -32 then return 1 elseif v >= -128 then return 2 elseif v >= -32768 then return 3
      elseif v >= -2147483648 then return 5 else return 9 end
    end
  end
  if t == "string" then
    local n = #v
    if n < 32 then return 1 + n elseif n < 256 then return 2 + n elseif n < 65536 then return 3 + n end
    return 5 + n
  end
  if t == "table" then
    local n, size = 0, 0
    for k, x in pairs(v) do n = n + 1; size = size + mp_size(k) + mp_size(x) end
    local hdr = n < 16 and 1 or (n < 65536 and 3 or 5)
    return hdr + size
  end
  error("mp_size: unsupported " .. t)
end
M.mp_size = mp_size

M.CATEGORIES = { "account", "order", "invoice", "customer" }
M.TYPES = { "Opened", "Deposited", "Withdrawn", "Renamed", "Closed" }

--- The name of stream n (0-based): "<category>-<n>", categories in turn.
function M.stream_name(n)
  return M.CATEGORIES[n % #M.CATEGORIES + 1] .. "-" .. n
end

--- Fills store `s` with `total` events over `nstreams` streams, with
-- append_many transactions of `batch` events: each transaction appends
-- `batch / k` events to each of k = min(100, nstreams) consecutive streams,
-- so every stream's events are spread along the log. Event i (1-based) has
-- type TYPES[i % 5 + 1] and data make_data(i), by default
-- event_data(i, i % 100): 101 to 201 bytes. Returns the seconds it took.
function M.load(s, total, nstreams, batch, make_data)
  make_data = make_data or function(i) return M.event_data(i, i % 100) end
  local k = math.min(100, nstreams)
  local per = batch // k
  assert(per >= 1 and total % (k * per) == 0, "total must be a multiple of the transaction size")
  local names = {}
  for n = 0, nstreams - 1 do names[n] = M.stream_name(n) end
  local i, next_stream = 0, 0
  return M.time(function()
    while i < total do
      local entries = {}
      for e = 1, k do
        local events = {}
        for j = 1, per do
          i = i + 1
          events[j] = { type = M.TYPES[i % #M.TYPES + 1], data = make_data(i) }
        end
        entries[e] = { stream = names[next_stream], events = events }
        next_stream = (next_stream + 1) % nstreams
      end
      local r, err = s:append_many(entries)
      if not r then error(tostring(err)) end
    end
  end)
end

--- The bytes chronicle stores in the log for one event (csrc/common/record.h).
function M.record_size(stream, ev)
  return 52 + #stream + #ev.type + mp_size(ev.meta) + mp_size(ev.data)
end

return M
