--- Power-cut states for spec/reliability/powercut_spec.lua, built the way ALICE and LazyFS do it: from the
-- image of data.mdb before a workload and the log of every write and sync the workload made to
-- it (scripts/powercut_shim.c), the files a power cut at any moment could leave on disk.
--
-- The file-system model (what may be on disk after a power cut):
--
-- * A completed fdatasync/fsync of data.mdb makes every earlier write to data.mdb durable,
--   whichever descriptor made it (it syncs the file, not the descriptor).
-- * A write through a descriptor opened with O_DSYNC (LMDB's meta-page descriptor in "full") is
--   durable once it has returned; it makes nothing else durable.
-- * Every other write that returned is pending: after the cut any subset of the pending writes
--   may be on disk, in any order (ext4 data=ordered orders data before the metadata that points
--   to it, but gives no order between two unsynced data writes; writeback goes page by page).
--   Where two pending writes overlap, the later one wins when both are kept.
-- * The write in progress at the cut (the first one after it in the log) is pending too.
-- * A pending write may be torn: it persists in part, at sector granularity. "torn4096": any
--   subset of its 4096-byte pages (writeback page by page); "torn512": a prefix cut at a
--   512-byte boundary (a device that lost power mid-write). A 512-byte sector is atomic (what
--   drives promise and LMDB's unchecksummed meta page relies on).
-- * "zeros": a pending write past the end of the file may leave the file longer with zeros in
--   its place (the size reached the disk, the data did not: ext4 data=writeback, XFS).
-- * lock.mdb is not part of a state: LMDB rebuilds it when the first process opens the store
--   (it only holds the reader table and the writer mutex, which die with the processes).
local M = {}

local SECTOR = 512
local ZERO = ("\0"):rep(SECTOR)

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read = read

---------------------------------------------------------------------------------------------
-- The log
---------------------------------------------------------------------------------------------

--- Parses a log of scripts/powercut_shim.c. Returns { ops = {...}, lock_calls = n } where each
-- op on data.mdb is { kind = "W", off, data, dsync } | { kind = "S", how } and each mark
-- (acknowledgement) is { kind = "A", j, position }. Raises on what the model does not cover.
function M.parse(path)
  local s = assert(read(path), "no log at " .. path)
  local ops, lock_calls, pos = {}, 0, 1
  while pos <= #s do
    local e = assert(s:find("\n", pos, true), "log cut short")
    local line = s:sub(pos, e - 1)
    pos = e + 1
    local kind = line:sub(1, 1)
    if kind == "W" then
      local file, off, len, dsync = line:match("^W (%a+) (%d+) (%d+) ([01])$")
      assert(file, "bad log line: " .. line)
      len = tonumber(len)
      local data = s:sub(pos, pos + len - 1)
      assert(#data == len and s:sub(pos + len, pos + len) == "\n", "log cut short in a write")
      pos = pos + len + 1
      if file == "data" then
        ops[#ops + 1] = { kind = "W", off = tonumber(off), data = data, dsync = dsync == "1" }
      else
        lock_calls = lock_calls + 1
      end
    elseif kind == "A" then
      local len = tonumber(line:match("^A (%d+)$"))
      local text = s:sub(pos, pos + len - 1)
      pos = pos + len + 1
      for j, position in text:gmatch("ack (%d+) (%d+)\n") do
        ops[#ops + 1] = { kind = "A", j = tonumber(j), position = tonumber(position) }
      end
    elseif kind == "S" or kind == "T" or kind == "M" then
      local file = line:match("^%a (%a+)")
      if file ~= "data" then
        lock_calls = lock_calls + 1
      elseif kind == "S" then
        ops[#ops + 1] = { kind = "S", how = line:match("(%S+)$") }
      else
        -- LMDB without MDB_WRITEMAP neither truncates nor msyncs data.mdb; if it ever does,
        -- this model (and the recorder: writes through a map are invisible) must change
        error("the log has " .. line .. ": data.mdb written through its map or truncated, which this model does not cover")
      end
    else
      error("bad log line: " .. line)
    end
  end
  local log = M.log(ops)
  log.lock_calls = lock_calls
  return log
end

--- A log from a list of ops (as M.parse makes them): notes for each op the last sync of
-- data.mdb at or before it.
function M.log(ops)
  local last = 0
  for i, op in ipairs(ops) do
    if op.kind == "S" then last = i end
    op.last_sync = last
  end
  return { ops = ops, lock_calls = 0 }
end

--- Counts of a parsed log: { ops, writes, dsync_writes, syncs, acks, bytes }.
function M.summary(log)
  local c = { ops = #log.ops, writes = 0, dsync_writes = 0, syncs = 0, acks = 0, bytes = 0 }
  for _, op in ipairs(log.ops) do
    if op.kind == "W" then
      c.writes = c.writes + 1
      c.bytes = c.bytes + #op.data
      if op.dsync then c.dsync_writes = c.dsync_writes + 1 end
    elseif op.kind == "S" then c.syncs = c.syncs + 1
    else c.acks = c.acks + 1 end
  end
  return c
end

---------------------------------------------------------------------------------------------
-- Images: data.mdb as 512-byte sectors (a base image shared by the states, an overlay each)
---------------------------------------------------------------------------------------------

--- An image from the bytes of a file.
function M.image(bytes)
  local img = { len = #bytes, sec = {} }
  for i = 0, (#bytes - 1) // SECTOR do
    local s = bytes:sub(i * SECTOR + 1, (i + 1) * SECTOR)
    img.sec[i] = s .. ZERO:sub(1, SECTOR - #s)
  end
  return img
end

--- A state's image: writes go into its own sectors, reads fall through to `base`.
function M.overlay(base)
  return { len = base.len, sec = {}, base = base }
end

local function sector(img, i)
  local s = img.sec[i]
  if s then return s end
  if img.base then return img.base.sec[i] or ZERO end
  return ZERO
end

--- Writes `data` at byte offset `off` of `img`.
function M.apply(img, off, data)
  local stop = off + #data   -- exclusive
  for i = off // SECTOR, (stop - 1) // SECTOR do
    local s0 = i * SECTOR
    local a, b = math.max(off, s0), math.min(stop, s0 + SECTOR)
    local piece = data:sub(a - off + 1, b - off)
    if b - a == SECTOR then
      img.sec[i] = piece
    else
      local old = sector(img, i)
      img.sec[i] = old:sub(1, a - s0) .. piece .. old:sub(b - s0 + 1)
    end
  end
  if stop > img.len then img.len = stop end
end

--- The bytes of an image.
function M.bytes(img)
  local parts = {}
  for i = 0, (img.len - 1) // SECTOR do parts[#parts + 1] = sector(img, i) end
  return table.concat(parts):sub(1, img.len)
end

--- Every write of the log applied to `base_bytes`: what data.mdb held when the workload ended.
function M.replay(base_bytes, log)
  local img = M.image(base_bytes)
  for _, op in ipairs(log.ops) do
    if op.kind == "W" then M.apply(img, op.off, op.data) end
  end
  return M.bytes(img)
end

---------------------------------------------------------------------------------------------
-- Deterministic choices
---------------------------------------------------------------------------------------------

--- A generator of integers in 1..n from a seed (splitmix64: the same numbers on every machine
-- and Lua 5.4 build, independent of math.random).
function M.rng(seed)
  local state = seed
  return function(n)
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 1) % n + 1
  end
end

---------------------------------------------------------------------------------------------
-- Crash states
---------------------------------------------------------------------------------------------

M.kinds = { "synced", "prefix", "subset", "torn4096", "torn512", "zeros" }

-- Pieces of a write [off, off + len) cut at multiples of `g`: list of { from, to } (1-based,
-- inclusive, into the write's data).
local function pieces(off, len, g)
  local out, a = {}, off
  while a < off + len do
    local b = math.min((a // g + 1) * g, off + len)
    out[#out + 1] = { a - off + 1, b - off }
    a = b
  end
  return out
end

--- The facts of a cut after op `c` (ops 1..c completed): the pending writes (op indexes), the
-- in-flight write (op c+1 when it is a write), and the acknowledgements.
--   required: the last append whose acknowledgement came before the cut and every write before
--             which is durable (synced, or an O_DSYNC write that returned);
--   acked:    the last append acknowledged before the cut (what the program was told);
--   max:      the last append that may be there (the one in progress at the cut).
function M.cut(log, c, base_appends)
  local ops = log.ops
  local s = c > 0 and ops[c].last_sync or 0
  local pending, first_pending = {}, nil
  for i = s + 1, c do
    if ops[i].kind == "W" and not ops[i].dsync then
      pending[#pending + 1] = i
      first_pending = first_pending or i
    end
  end
  local inflight = ops[c + 1] and ops[c + 1].kind == "W" and c + 1 or nil
  if inflight then pending[#pending + 1] = inflight end
  local required, acked = base_appends, base_appends
  for i = 1, c do
    local op = ops[i]
    if op.kind == "A" then
      acked = op.j
      if not first_pending or i < first_pending then required = op.j end
    end
  end
  return { c = c, last_sync = s, pending = pending, inflight = inflight, required = required,
           acked = acked, max = acked + 1 }
end

--- The plan of state number `n` for seed `seed`: a cut, a kind, and what each pending write
-- keeps ("all", "none", or a list of kept pieces with their granularity).
function M.plan(log, seed, n, base_appends)
  local r = M.rng(seed * 1000003 + n)
  local c = r(#log.ops + 1) - 1
  local cut = M.cut(log, c, base_appends)
  local kind = M.kinds[r(#M.kinds)]
  local keep = {}
  local torn_one = #cut.pending > 0 and cut.pending[r(#cut.pending)]
  local prefix = r(#cut.pending + 1) - 1
  for idx, i in ipairs(cut.pending) do
    local op = log.ops[i]
    local k
    if kind == "synced" then k = "none"
    elseif kind == "prefix" then k = idx <= prefix and "all" or "none"
    else k = r(2) == 1 and "all" or "none" end
    if kind == "torn4096" and r(2) == 1 then
      local p = pieces(op.off, #op.data, 4096)
      local kept = {}
      for pi = 1, #p do kept[pi] = r(2) == 1 end
      k = { g = 4096, kept = kept }
    elseif kind == "torn512" and i == torn_one then
      local p = pieces(op.off, #op.data, SECTOR)
      local upto = r(#p + 1) - 1   -- sectors kept from the start: 0..all
      local kept = {}
      for pi = 1, #p do kept[pi] = pi <= upto end
      k = { g = SECTOR, kept = kept }
    end
    keep[i] = k
  end
  return { seed = seed, n = n, cut = cut, kind = kind, keep = keep, zeros = kind == "zeros" }
end

local function keep_text(k)
  if type(k) == "string" then return k end
  local bits = {}
  for i, b in ipairs(k.kept) do bits[i] = b and "1" or "0" end
  return ("torn%d:%s"):format(k.g, table.concat(bits))
end

local function op_text(op)
  if op.kind == "W" then return ("W %d+%d%s"):format(op.off, #op.data, op.dsync and " O_DSYNC" or "") end
  if op.kind == "S" then return "S " .. op.how end
  return ("ack %d"):format(op.j)
end

--- A one-line description of a plan (for failure messages and the signature of distinct states).
function M.describe(log, plan)
  local cut = plan.cut
  local parts = {}
  for _, i in ipairs(cut.pending) do parts[#parts + 1] = ("op%d=%s"):format(i, keep_text(plan.keep[i])) end
  return ("state %d of seed %d: %s, cut after op %d of %d (%s), last sync op %d, pending [%s]%s, "
          .. "acknowledged 1..%d, required 1..%d"):format(plan.n, plan.seed, plan.kind, cut.c, #log.ops,
    cut.c > 0 and op_text(log.ops[cut.c]) or "start", cut.last_sync, table.concat(parts, " "),
    plan.zeros and ", lost writes past the end leave zeros" or "", cut.acked, cut.required)
end

--- What a plan leaves on disk, as an overlay of `durable` (the image with every write up to the
-- plan's last sync applied). Writes are applied in log order.
function M.build(log, durable, plan)
  local img = M.overlay(durable)
  local cut = plan.cut
  local last = plan.cut.inflight or cut.c
  for i = cut.last_sync + 1, last do
    local op = log.ops[i]
    if op.kind == "W" then
      local k = plan.keep[i]
      if k == nil or k == "all" then   -- nil: a durable O_DSYNC write
        M.apply(img, op.off, op.data)
      elseif k ~= "none" then
        for pi, p in ipairs(pieces(op.off, #op.data, k.g)) do
          if k.kept[pi] then M.apply(img, op.off + p[1] - 1, op.data:sub(p[1], p[2])) end
        end
      end
      if plan.zeros and k ~= nil and k ~= "all" and op.off + #op.data > img.len then
        img.len = op.off + #op.data   -- the size got there, the data did not
      end
    end
  end
  return img
end

--- Plans for states 1..count, and the durable images they stand on, in an order that builds
-- each durable image once: calls fn(plan, image_bytes, image) for every state, in order of last
-- sync. With `only`, just state number `only`.
function M.each_state(log, base_bytes, seed, count, base_appends, fn, only)
  local plans = {}
  for n = 1, count do
    if not only or only == n then plans[#plans + 1] = M.plan(log, seed, n, base_appends) end
  end
  table.sort(plans, function(a, b)
    if a.cut.last_sync ~= b.cut.last_sync then return a.cut.last_sync < b.cut.last_sync end
    return a.n < b.n
  end)
  local durable, upto = M.image(base_bytes), 0
  for _, plan in ipairs(plans) do
    for i = upto + 1, plan.cut.last_sync do
      local op = log.ops[i]
      if op.kind == "W" then M.apply(durable, op.off, op.data) end
    end
    upto = plan.cut.last_sync
    local img = M.build(log, durable, plan)
    fn(plan, M.bytes(img), img)
  end
end

---------------------------------------------------------------------------------------------
-- Processes
---------------------------------------------------------------------------------------------

local helpers = require "helpers"

-- Under `make check` the lua5.4 first on PATH is a wrapper that preloads the ASan runtime
-- (scripts/asan-lua.sh); a preload of ours must come after that list, so with the wrapper the
-- real interpreter is run with both lists (as spec/support/reliability/run.lua does for the fault shim).
local wrapper_preload, real_lua
do
  local f = io.open(helpers.capture("command -v lua5.4"), "rb")
  local head = f and f:read(4096) or ""
  if f then f:close() end
  if head:sub(1, 2) == "#!" then
    wrapper_preload, real_lua = head:match('LD_PRELOAD="([^"]*)"%s+"([^"]+)"')
  end
end

--- Runs `lua5.4 spec/support/SCRIPT args...` under `timeout SECONDS`, with environment `env`
-- and, when given, the library `preload`. Returns { code, signal, crashed, timed_out, stdout,
-- stderr }: crashed when the process died of a signal or a sanitizer spoke.
function M.run(script, args, opts)
  opts = opts or {}
  local cmd = helpers.lua_command(helpers.root .. "/spec/support/" .. script, table.unpack(args))
  assert(cmd:sub(1, 4) == "env ", "helpers.lua_command no longer starts with env")
  local prefix = {}
  for k, v in pairs(opts.env or {}) do prefix[#prefix + 1] = k .. "=" .. helpers.quote(v) end
  if opts.preload then
    if wrapper_preload then
      prefix[#prefix + 1] = "LD_PRELOAD=" .. helpers.quote(wrapper_preload .. " " .. opts.preload)
      cmd = cmd:gsub(" lua5%.4 ", " " .. helpers.quote(real_lua) .. " ", 1)
    else
      prefix[#prefix + 1] = "LD_PRELOAD=" .. helpers.quote(opts.preload)
    end
  end
  if #prefix > 0 then cmd = "env " .. table.concat(prefix, " ") .. " " .. cmd:sub(5) end
  local out, err = os.tmpname(), os.tmpname()
  local _, how, code = os.execute(("timeout -k 5 %d %s >%s 2>%s </dev/null"):format(opts.timeout or 60, cmd, out, err))
  local r = { stdout = read(out) or "", stderr = read(err) or "" }
  os.remove(out)
  os.remove(err)
  r.code = how == "exit" and code or 128 + code
  r.timed_out = how == "exit" and (code == 124 or code == 137)
  r.crashed = how == "signal" or r.code >= 128 or r.timed_out
    or r.stderr:find("AddressSanitizer", 1, true) ~= nil or r.stderr:find("runtime error:", 1, true) ~= nil
    or r.stderr:find("LeakSanitizer", 1, true) ~= nil
  return r
end

--- A one-line description of a run for failure messages.
function M.describe_run(r)
  return ("exit %d%s; stdout: %s; stderr: %s"):format(r.code, r.timed_out and " (timed out)" or "",
    r.stdout:sub(1, 600), r.stderr:sub(1, 1200))
end

--- Builds scripts/powercut_shim.c into `dir`; returns the .so path.
function M.build_shim(dir)
  local so, log = dir .. "/powercut_shim.so", dir .. "/powercut_shim.log"
  local ok = os.execute(("cc -shared -fPIC -O2 -Wall -Wextra -Werror -std=c11 -o %s %s -ldl -lpthread >%s 2>&1"):format(
    helpers.quote(so), helpers.quote(helpers.root .. "/scripts/powercut_shim.c"), helpers.quote(log)))
  assert(ok, "cannot build scripts/powercut_shim.c: " .. (read(log) or ""))
  return so
end

return M
