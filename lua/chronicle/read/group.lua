--- Consumer groups: runner processes (on one host, or on several hosts
-- sharing a PostgreSQL store) that serve the same handler, reactor or
-- projection share its work without configuration.
--
-- The work of a group is split into `partitions` by a hash of the stream
-- name (all events of one stream fall in one partition, so one member sees
-- them in order). Each partition is owned by one live member at a time
-- through a **lease**: a row in the `groups` key-value space naming the
-- owner and when the lease expires by the store's clock (`store:now()`:
-- the server's clock on PostgreSQL, so hosts need not agree on the time).
-- Members renew their leases (and their membership row) a few times per
-- lease time; the partitions are dealt to the live members, sorted by id,
-- round robin; a member that is no longer dealt a partition releases it
-- between batches, after its checkpoint committed; a member takes a
-- partition dealt to it once it is free or its lease has expired. A member
-- whose process is gone (same host, its pid no longer running) is treated as
-- expired at once.
--
-- Each partition keeps its own checkpoint (`groups` space, `<kind>:<name>:c:<p>`);
-- a batch's checkpoints commit in one write that checks each lease is still
-- the member's, so a member whose lease was taken cannot commit: a reactor's
-- outputs (which commit with its checkpoints) happen exactly once, a handler
-- is at-least-once (an event handled by a member that lost its lease before
-- committing is handled again by the next owner). A projection's group has
-- one partition: one member at a time builds the view (the others stand by),
-- so the view stays equal to a rebuild.
--
-- The old single checkpoint (`checkpoints` space, `h:<name>` / `r:<name>`)
-- is kept as the group's low-water mark (every partition is at least
-- there), written with each batch: status calls and `chronicle project`
-- read it, and a handler that ran before groups existed starts its
-- partitions from it.
-- @module chronicle.read.group
local core = require "chronicle.common"
local view = require "chronicle.read.view"
local spaces = require "chronicle.spaces"

local M = {}

--- The key-value space of leases, members and partition checkpoints.
M.SPACE = spaces.GROUPS
--- Default lease time, seconds.
M.LEASE = 5
--- Default number of partitions of a handler's or reactor's group.
M.PARTITIONS = 16
--- The most partitions a group may have.
M.MAX_PARTITIONS = 1024

local NS = 1000000000
-- How often a member looks whether the members or the deal changed (also mid-batch),
-- and how often it beats again while a rebalance is under way, at most.
local REBALANCE_NS = 10000000
-- How soon after a beat that left a rebalance under way the first look again
-- comes (then twice as long each time, up to REBALANCE_NS): partitions are
-- let go within a look of the holder, so the first retries are quick.
local RETRY_NS = 5000000

-- ------------------------------------------------------------------------
-- Who this process is

local function read_line(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local line = f:read("l")
  f:close()
  return line
end

local boot_id = (read_line("/proc/sys/kernel/random/boot_id") or ""):gsub("%s", "")
if boot_id == "" then boot_id = nil end
local host = (read_line("/proc/sys/kernel/hostname") or read_line("/etc/hostname") or "?"):gsub("%s", "")

-- pid and start time (clock ticks since boot) of process `pid` ("self" for this one);
-- nil when it is gone. A zombie is gone: a killed member whose parent does not reap
-- it (an orphan under a PID 1 that never calls wait) must not keep its leases.
local function proc_stat(pid)
  local line = read_line("/proc/" .. pid .. "/stat")
  if not line then return nil end
  local id, state, rest = line:match("^(%d+) %b() (%a) (.*)$")
  if not id or state == "Z" or state == "X" then return nil end
  local fields = {}
  for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
  return tonumber(id), fields[19]   -- field 22 of stat, counted from the field after the state (field 4)
end

local member_cache = {}

--- This process's member identity: `{id, pid, start, boot, host}`. One per
-- process (a forked child gets its own), shared by its runners.
function M.me()
  local pid, start = proc_stat("self")
  local key = pid or "?"
  local m = member_cache[key]
  if not m then
    m = { id = (core.uuid():gsub("-", "")):sub(-16), pid = pid or 0, start = start or "0", boot = boot_id or "-", host = host }
    member_cache = { [key] = m }
  end
  return m
end

-- Member rows are strings, so checks on them compare exact bytes.
local function member_row(me, expires, joined)
  return ("%d %d %d %s %s %s"):format(expires, joined, me.pid, me.start, me.boot, me.host)
end

local function parse_member(s)
  if type(s) ~= "string" then return nil end
  local expires, joined, pid, start, boot, h = s:match("^(%-?%d+) (%-?%d+) (%d+) (%S+) (%S+) (%S+)$")
  if not expires then return nil end
  return { expires = math.tointeger(tonumber(expires)), joined = math.tointeger(tonumber(joined)),
           pid = math.tointeger(tonumber(pid)), start = start, boot = boot, host = h }
end

-- True when member row `m` names a process on this host that is gone.
local function gone(m)
  if not boot_id or m.boot ~= boot_id then return false end
  local pid, start = proc_stat(m.pid)
  return pid == nil or start ~= m.start
end

local function lease_row(owner, expires) return owner .. " " .. expires end
local function parse_lease(s)
  if type(s) ~= "string" then return nil end
  local owner, expires = s:match("^(%S+) (%-?%d+)$")
  if not owner then return nil end
  return owner, math.tointeger(tonumber(expires))
end

-- ------------------------------------------------------------------------
-- Partitions

local part_cache, part_cache_n = {}, 0

--- The partition (0 .. n-1) of stream `stream` in a group of `n` partitions.
function M.partition(stream, n)
  if n == 1 then return 0 end
  local h = part_cache[stream]
  if not h then
    h = tonumber(core.hash(stream):sub(1, 8), 16)
    if part_cache_n >= 100000 then part_cache, part_cache_n = {}, 0 end
    part_cache[stream], part_cache_n = h, part_cache_n + 1
  end
  return h % n
end

local function pkey(p) return ("%04d"):format(p) end

-- ------------------------------------------------------------------------
-- The deal: which member each partition goes to
--
-- Round robin over the live members sorted by id, unless the group's deal row
-- (`d`) was made for exactly these members: then what it says. The member with
-- the lowest id writes the deal row when the members change and the group has
-- a backlog: it counts the events each partition has pending (in the next
-- DEAL_WINDOW events after the lowest checkpoint) and deals the partitions so
-- the members' pending events are as even as it can make them (the hash split
-- alone leaves the busiest of 4 members of 400 streams with about 5% more than
-- a quarter, and the group runs as long as its busiest member). The deal only
-- says where partitions should go: they move as before, between batches and
-- under the lease checks, so a wrong or stale deal costs time, never safety.

--- Events after the lowest checkpoint the deal weighs, at most.
M.DEAL_WINDOW = 20000

local function encode_deal(alive, owner_of, partitions)
  local index = {}
  for i, id in ipairs(alive) do index[id] = i - 1 end
  local parts = {}
  for p = 0, partitions - 1 do parts[p + 1] = index[owner_of[p]] end
  return table.concat(alive, ",") .. "|" .. table.concat(parts, " ")
end

-- The deal row's owners (p -> member id) when it was made for `members` (the
-- live ids joined by ","); false when it was made for them and says round robin
-- (there was no backlog to weigh); else nil.
local function decode_deal(raw, members, alive, partitions)
  if type(raw) ~= "string" then return nil end
  local who, list = raw:match("^([^|]*)|(.*)$")
  if who ~= members then return nil end
  if list == "" then return false end
  local owner_of, p = {}, 0
  for i in list:gmatch("%d+") do
    local id = alive[tonumber(i) + 1]
    if not id then return nil end
    owner_of[p], p = id, p + 1
  end
  if p ~= partitions then return nil end
  return owner_of
end

-- Pending events per partition (p -> count) in the window after the lowest of
-- `at` (p -> checkpoint), and their total.
local function pending(g, at, head)
  local n = g.partitions
  local low = at[0]
  for p = 1, n - 1 do if at[p] < low then low = at[p] end end
  local w = {}
  for p = 0, n - 1 do w[p] = 0 end
  local to = math.min(head, low + M.DEAL_WINDOW)
  if to <= low then return w, 0 end
  local f = g.filter or {}
  local total = g.store:fold({ from = low + 1, to = to, types = f.types, category = f.category,
                               fields = { "stream", "position" } }, 0, function(sum, ev)
    local p = M.partition(ev.stream, n)
    if ev.position > at[p] then
      w[p] = w[p] + 1
      return sum + 1
    end
    return sum
  end)
  return w, total or 0
end

-- Deals the partitions to `alive` so the pending events `w` are even: the
-- heaviest partition first, each to the member with the least so far (ties: the
-- fewest partitions, then the lowest id). Partitions with nothing pending go the
-- same way, which evens out the partition counts.
local function balance(w, alive, partitions)
  local order = {}
  for p = 0, partitions - 1 do order[p + 1] = p end
  table.sort(order, function(a, b) if w[a] ~= w[b] then return w[a] > w[b] end return a < b end)
  local load, count, owner_of = {}, {}, {}
  for i = 1, #alive do load[i], count[i] = 0, 0 end
  for _, p in ipairs(order) do
    local best = 1
    for i = 2, #alive do
      if load[i] < load[best] or (load[i] == load[best] and count[i] < count[best]) then best = i end
    end
    load[best], count[best] = load[best] + w[p], count[best] + 1
    owner_of[p] = alive[best]
  end
  return owner_of
end
M.balance = balance     -- for the specs

-- A member's checkpoints row: "<p>:<checkpoint> ..." for the partitions it held
-- when its last batch committed (never checked, so a table would do; a string
-- keeps integer keys plain). `list` is the partitions, sorted; `values` their
-- checkpoints, or one checkpoint for all of them (a batch mostly moves every
-- partition it holds to the same place: then the row is `template(list)` with
-- that number put in, and making it converts one number to a string, not 16).
local function template(list)
  local parts = {}
  for i, p in ipairs(list) do parts[i] = p .. ":#" end
  return table.concat(parts, " ")
end
local function encode_marks(list, values, tmpl)
  if type(values) ~= "table" then return ((tmpl or template(list)):gsub("#", tostring(values))) end
  local parts = {}
  for i, p in ipairs(list) do parts[i] = p .. ":" .. values[p] end
  return table.concat(parts, " ")
end
local function decode_marks(s)
  local out = {}
  if type(s) ~= "string" then return out end
  for p, c in s:gmatch("(%d+):(%-?%d+)") do out[math.tointeger(tonumber(p))] = math.tointeger(tonumber(c)) end
  return out
end
M.encode_marks, M.decode_marks = encode_marks, decode_marks   -- for the specs

-- ------------------------------------------------------------------------
-- A member's view of one group

local Group = {}
Group.__index = Group
M.Group = Group

local KIND_KEY = { handler = "h", reactor = "r", projection = "p" }

--- The group `kind` ("handler", "reactor", "projection") `name` as member
-- `me` sees it. `opts`: `lease` (seconds), `partitions`, `filter` (`{types,
-- category}`: the events the group handles, for weighing its backlog).
function M.new(store, kind, name, opts)
  local pfx = kind .. ":" .. name .. ":"
  return setmetatable({
    store = store, kind = kind, name = name, pfx = pfx, me = opts.me or M.me(),
    lease_ns = math.floor((opts.lease or M.LEASE) * NS), partitions = opts.partitions or M.PARTITIONS,
    base_key = KIND_KEY[kind] and (KIND_KEY[kind] .. ":" .. name),
    owned = {}, owned_count = 0, valid_until = 0, next_beat = 0, next_look = 0, joined = nil, settled = false,
    dealt = {}, config_checked = false, filter = opts.filter,
  }, Group)
end

-- Reads (or creates) the group's config row: the partition count is fixed when
-- the group is first made, and members that disagree refuse to serve it.
local function check_config(g)
  if g.config_checked then return true end
  local key = g.pfx .. "g"
  local stored, err = g.store:kv_get(M.SPACE, key)
  if err then return nil, err end
  if stored == nil then
    local ok, werr = g.store:write { checks = { { M.SPACE, key, nil } }, puts = { { M.SPACE, key, g.partitions } } }
    if not ok and werr.code ~= "check_failed" then return nil, werr end
    stored = g.store:kv_get(M.SPACE, key)
  end
  if stored ~= g.partitions then
    return nil, core.error("group_mismatch", ("%s %s: its group has %s partitions in this store, this runner asks for %d "
      .. "(every member must use the same 'partitions')"):format(g.kind, g.name, tostring(stored), g.partitions),
      { kind = g.kind, name = g.name, partitions = stored })
  end
  g.config_checked = true
  return true
end

-- Where a partition's checkpoint lives: its `c:` row (written when a member
-- releases it, or takes it over from a member whose lease expired), else the
-- group's low-water mark; and, while a member holds it, that member's `k:` row
-- (one row per member, written with each of its batches): the checkpoint is
-- the highest of these.
local function marks_of(g, id)
  local raw = g.store:kv_get(M.SPACE, g.pfx .. "k:" .. id)
  return decode_marks(raw), raw
end

-- Where each partition has got to (p -> position): its stored checkpoint, or the group's
-- low-water mark, or further, the mark its lease holder has written since in its own row.
-- lease_of(p) gives partition p's lease row.
local function positions(g, stored, base, lease_of)
  local at, marks = {}, {}
  for p = 0, g.partitions - 1 do
    local c = stored[p] or base
    local owner = parse_lease(lease_of(p))
    if owner then
      marks[owner] = marks[owner] or marks_of(g, owner)
      local m = marks[owner][p]
      if m and m > c then c = m end
    end
    at[p] = c
  end
  return at
end

-- @return p -> stored checkpoint, the low-water mark (0 when none), and the mark's row as stored
local function checkpoints(g)
  local store = g.store
  local raw = g.base_key and store:kv_get(view.CHECKPOINTS, g.base_key)
  local base = type(raw) == "number" and raw or 0
  local out = {}
  for key, value in store:kv_scan(M.SPACE, { prefix = g.pfx .. "c:" }) do
    local p = math.tointeger(tonumber(key:sub(#g.pfx + 3)))
    if p then out[p] = value end
  end
  return out, base, raw
end

--- Renews this member's row and leases, releases partitions dealt to others
-- and takes the free ones dealt to it: one write (tried again on a race).
-- @return true, or nil, err (a store failure)
function Group:beat()
  local ok, err = check_config(self)
  if not ok then return nil, err end
  local store = self.store
  for _ = 1, 5 do
    local t0 = core.now()
    local now, nerr = store:now()
    if not now then return nil, nerr end
    local me = self.me
    local members, leases, member_raw = {}, {}, {}
    for key, value in store:kv_scan(M.SPACE, { prefix = self.pfx .. "m:" }) do
      members[#members + 1] = { id = key:sub(#self.pfx + 3), raw = value, row = parse_member(value) }
      member_raw[members[#members].id] = value
    end
    for key, value in store:kv_scan(M.SPACE, { prefix = self.pfx .. "l:" }) do
      local p = math.tointeger(tonumber(key:sub(#self.pfx + 3)))
      if p then leases[p] = value end
    end
    local ops = { checks = {}, puts = {}, deletes = {} }
    local alive, tidied, removed = { me.id }, {}, {}
    for _, m in ipairs(members) do
      if m.id ~= me.id then
        local r = m.row
        if r and r.expires > now and not gone(r) then
          alive[#alive + 1] = m.id
        elseif not r or r.expires + self.lease_ns < now or gone(r) then
          -- long expired, or its process is gone: tidy its row away
          ops.checks[#ops.checks + 1] = { M.SPACE, self.pfx .. "m:" .. m.id, m.raw }
          ops.deletes[#ops.deletes + 1] = { M.SPACE, self.pfx .. "m:" .. m.id }
          tidied[m.id], removed[m.id] = true, true
        end
      end
    end
    local stored, base = checkpoints(self)
    local marks, fenced = {}, {}
    local function value_of(p, owner)
      local c = stored[p] or base
      if owner then
        if not marks[owner] then
          local raw
          marks[owner], raw = marks_of(self, owner)
          if owner ~= me.id then
            -- the member's checkpoints row must not move under this write (a batch of it
            -- committing meanwhile would be lost), and its member row goes: its next
            -- batch, which checks that row, cannot commit
            ops.checks[#ops.checks + 1] = { M.SPACE, self.pfx .. "k:" .. owner, raw }
            if member_raw[owner] and not tidied[owner] then
              ops.checks[#ops.checks + 1] = { M.SPACE, self.pfx .. "m:" .. owner, member_raw[owner] }
              ops.deletes[#ops.deletes + 1] = { M.SPACE, self.pfx .. "m:" .. owner }
              removed[owner] = true
            end
            fenced[owner] = true
          end
        end
        local m = marks[owner][p]
        if m and m > c then c = m end
      end
      return c
    end
    local named = {}       -- members whose checkpoints row still holds a partition's checkpoint
    table.sort(alive)
    local live = {}
    for _, id in ipairs(alive) do live[id] = true end
    local expires = now + self.lease_ns
    self.joined = self.joined or now
    local my_row = member_row(me, expires, self.joined)
    ops.puts[#ops.puts + 1] = { M.SPACE, self.pfx .. "m:" .. me.id, my_row }
    local owner_of
    local deal_key = self.pfx .. "d"
    local deal_raw = store:kv_get(M.SPACE, deal_key)
    local deal_now = deal_raw
    if #alive > 1 and self.partitions > 1 then
      local members = table.concat(alive, ",")
      owner_of = decode_deal(deal_raw, members, alive, self.partitions)
      if owner_of == nil and alive[1] == me.id then
        -- the members changed and this member deals: weigh the backlog
        local at = positions(self, stored, base, function(p) return leases[p] end)
        local w, total = pending(self, at, store:head())
        if total >= self.partitions then owner_of = balance(w, alive, self.partitions) end
        local row = owner_of and encode_deal(alive, owner_of, self.partitions) or (members .. "|")
        ops.checks[#ops.checks + 1] = { M.SPACE, deal_key, deal_raw }
        ops.puts[#ops.puts + 1] = { M.SPACE, deal_key, row }
        deal_now = row
      end
    end
    local owned, count, settled = {}, 0, true
    local dealt = {}
    for p = 0, self.partitions - 1 do
      local target = owner_of and owner_of[p] or alive[(p % #alive) + 1]
      local raw = leases[p]
      local owner, until_ = parse_lease(raw)
      local key = self.pfx .. "l:" .. pkey(p)
      if target == me.id then
        dealt[#dealt + 1] = p
        if owner == nil or owner == me.id or until_ <= now or not live[owner] then
          local value = lease_row(me.id, expires)
          ops.checks[#ops.checks + 1] = { M.SPACE, key, raw }
          ops.puts[#ops.puts + 1] = { M.SPACE, key, value }
          if owner and owner ~= me.id then
            -- taken over from a member whose lease ran out: its checkpoint moves to the c: row
            ops.puts[#ops.puts + 1] = { M.SPACE, self.pfx .. "c:" .. pkey(p), value_of(p, owner) }
          end
          owned[p], count = value, count + 1
        else
          settled = false           -- dealt to me, still held by a live member
          named[owner] = true
        end
      elseif owner == me.id then
        -- released: its checkpoint moves to the c: row for the member it is dealt to
        ops.checks[#ops.checks + 1] = { M.SPACE, key, raw }
        ops.deletes[#ops.deletes + 1] = { M.SPACE, key }
        ops.puts[#ops.puts + 1] = { M.SPACE, self.pfx .. "c:" .. pkey(p), value_of(p, me.id) }
      else
        if owner then named[owner] = true end
        if owner == nil or until_ <= now or not live[owner] then
          settled = false           -- waits for the member it is dealt to
        end
      end
    end
    for id in pairs(tidied) do
      if not named[id] and not fenced[id] then ops.deletes[#ops.deletes + 1] = { M.SPACE, self.pfx .. "k:" .. id } end
    end
    local res, werr = store:write(ops)
    if res then
      self.owned, self.owned_count, self.settled, self.dealt = owned, count, settled, dealt
      self.alive = alive
      self.member_raw = my_row
      self.valid_until = t0 + self.lease_ns
      -- renew after a third of the lease; sooner while a rebalance is under way
      if settled then
        self.retry_ns = nil
        self.next_beat = t0 + self.lease_ns // 3
      else
        self.retry_ns = math.min((self.retry_ns or RETRY_NS // 2) * 2, REBALANCE_NS)
        self.next_beat = t0 + math.min(self.lease_ns // 10, self.retry_ns)
      end
      -- the member rows as this write left them (counting them again could see a
      -- member that joined since the scan, and then changed() would not notice it)
      local rows = 0
      for _, m in ipairs(members) do
        if m.id ~= me.id and not removed[m.id] then rows = rows + 1 end
      end
      self.member_rows = rows + 1
      self.deal_raw = deal_now
      self.cache = nil          -- read the checkpoints again: the partitions held may have changed
      return true
    end
    if werr.code ~= "check_failed" then return nil, werr end
  end
  -- Lost every race: hold nothing until the next beat.
  self.owned, self.owned_count, self.settled, self.next_beat = {}, 0, false, 0
  return true
end

--- Beats when it is time to (a third of the lease since the last one, or
-- sooner while a rebalance is under way), or when a member joined or left
-- since the last beat (so a joining member gets its share after the
-- current batch). @return true, or nil, err
function Group:tick()
  if core.now() >= self.next_beat or self:changed() then return self:beat() end
  return true
end

--- True when a member joined or left, or the deal changed, since the last beat,
-- or a rebalance is under way and the next beat is due (looked up at most every
-- 10 ms): a long batch ends early so the partitions can move.
function Group:changed(now)
  now = now or core.now()
  if now < self.next_look then return false end
  self.next_look = now + (self.settled and REBALANCE_NS or (self.retry_ns or REBALANCE_NS))
  -- while a rebalance is under way a partition dealt to this member may have been
  -- let go since its last beat: beat again when due, even mid-batch
  if not self.settled and now >= self.next_beat then return true end
  local rows = self.store:kv_count(M.SPACE, self.pfx .. "m:")
  if (rows ~= nil and rows ~= self.member_rows)
     or (self.member_rows ~= 1 and self.store:kv_get(M.SPACE, self.pfx .. "d") ~= self.deal_raw) then
    self.next_beat = 0                -- the next tick beats
    return true
  end
  return false
end

--- Forgets the leases (after a write found one taken): the next tick beats.
function Group:lost()
  self.owned, self.owned_count, self.next_beat, self.cache = {}, 0, 0, nil
end

--- The local time (core.now) until which this member may work on its
-- partitions: a margin before its leases expire.
function Group:deadline()
  return self.valid_until - self.lease_ns // 5
end

-- Brings the group's low-water mark up to the lowest partition's checkpoint, if that
-- is past it. The write checks the mark is as read, so it never moves back when two
-- members do this at once (the one that loses reads again and sees the other's).
-- @return the mark as this call last saw or wrote it, or nil, err
local function raise_mark(g)
  local base
  for _ = 1, 5 do
    local at, raw
    at, base, raw = M.partition_checkpoints(g.store, g.pfx, g.partitions, g.base_key)
    local low = at[0]
    for p = 1, g.partitions - 1 do if at[p] < low then low = at[p] end end
    if low <= base then return base end
    local ok, err = g.store:write { checks = { { view.CHECKPOINTS, g.base_key, raw } },
                                    puts = { { view.CHECKPOINTS, g.base_key, low } } }
    if ok then return low end
    if err.code ~= "check_failed" then return nil, err end
  end
  return base
end

--- Leaves the group: deletes this member's row and releases its leases.
function Group:leave()
  local ops = { checks = {}, puts = {}, deletes = { { M.SPACE, self.pfx .. "m:" .. self.me.id },
                                                    { M.SPACE, self.pfx .. "k:" .. self.me.id } } }
  local stored, base = checkpoints(self)
  local mine = marks_of(self, self.me.id)
  for p, value in pairs(self.owned) do
    local key = self.pfx .. "l:" .. pkey(p)
    ops.checks[#ops.checks + 1] = { M.SPACE, key, value }
    ops.deletes[#ops.deletes + 1] = { M.SPACE, key }
    local c = math.max(stored[p] or base, mine[p] or 0)
    ops.puts[#ops.puts + 1] = { M.SPACE, self.pfx .. "c:" .. pkey(p), c }
  end
  self.owned, self.owned_count, self.next_beat, self.joined = {}, 0, 0, nil
  local ok, err = self.store:write(ops)
  if not ok and err.code == "check_failed" then
    -- a lease was taken meanwhile: whoever took it moved its checkpoint; the
    -- checkpoints row stays for the partitions whose leases still name this member
    ok, err = self.store:write { deletes = { { M.SPACE, self.pfx .. "m:" .. self.me.id } } }
  end
  if not ok then return nil, err end
  -- the last member to leave sees every partition's final checkpoint: the mark that
  -- status calls and `chronicle project` read gets there too
  if self.base_key then
    local mark, merr = raise_mark(self)
    if not mark then return nil, merr end
  end
  return ok
end

-- ------------------------------------------------------------------------
-- Batches over a member's partitions

-- What a member knows of its partitions between two beats: the checkpoints of
-- the partitions it holds are only written by it (under a check of its leases),
-- so what it last read or wrote holds until its next beat; the others' are only
-- used for the low-water mark. Read again after a beat, and after a batch whose
-- write failed (it may have committed all the same).
local function load_cache(g)
  local stored, base = checkpoints(g)
  local mine = marks_of(g, g.me.id)
  local at, list = {}, {}
  for p in pairs(g.owned) do
    local c = stored[p] or base
    if mine[p] and mine[p] > c then c = mine[p] end
    at[p] = c
    list[#list + 1] = p
  end
  table.sort(list)
  local others                -- the lowest checkpoint of the partitions others hold
  for p = 0, g.partitions - 1 do
    if not g.owned[p] then
      local c = stored[p] or base
      if others == nil or c < others then others = c end
    end
  end
  local cache = { at = at, list = list, tmpl = template(list), others = others, base = base,
                  pending = {}, dirty = false }
  local from, same = nil, true
  for _, p in ipairs(list) do
    local c = at[p]
    if from == nil then from = c elseif c ~= from then same = false; if c < from then from = c end end
  end
  -- uniform: every partition held is at `from` (then `at` may lag behind: it only
  -- says which partitions are held, since the batches start after `from`); a batch
  -- moves every partition held to the same place, so a cache stays uniform once it is.
  cache.from, cache.uniform = from, same
  return cache
end

-- The batch cursor of `cache` (made once per cache: a batch makes no closures).
local function make_cursor(g, cache)
  local n, at, list, pending = g.partitions, cache.at, cache.list, cache.pending
  local memo = g.memo
  if not memo or g.memo_n > 100000 then memo = {}; g.memo, g.memo_n = memo, 0 end
  local mark_key, member_key = g.pfx .. "k:" .. g.me.id, g.pfx .. "m:" .. g.me.id
  local cursor = {}
  --- True when event `ev` (after `from`) is this member's to handle now.
  function cursor.wants(ev)
    local stream = ev.stream
    local p = memo[stream]
    if p == nil then
      p = M.partition(stream, n)
      memo[stream], g.memo_n = p, g.memo_n + 1
    end
    local a = at[p]                   -- only the partitions this member holds have one
    return a ~= nil and ev.position > a
  end
  --- Adds to `ops` the check that this member's leases hold and the new
  -- checkpoints (every owned partition is done up to `upto`), and the base.
  function cursor.commit(ops, upto)
    ops.checks, ops.puts = ops.checks or {}, ops.puts or {}
    -- Every lease this member holds is still its own while its member row is the one
    -- its last beat wrote: a member taking one over deletes that row in the same write.
    ops.checks[#ops.checks + 1] = { M.SPACE, member_key, g.member_raw }
    local low, marks = cache.others, nil
    if cache.uniform then
      local c = cache.from
      if upto > c then c = upto end
      cache.next = c
      if low == nil or c < low then low = c end
      marks = encode_marks(list, c, cache.tmpl)
    else
      for _, p in ipairs(list) do
        local c = at[p]
        if upto > c then c = upto end
        pending[p] = c
        if low == nil or c < low then low = c end
      end
      marks = encode_marks(list, pending)
    end
    ops.puts[#ops.puts + 1] = { M.SPACE, mark_key, marks }
    cache.pending_low = nil
    if g.base_key and low and low > cache.base then
      ops.puts[#ops.puts + 1] = { view.CHECKPOINTS, g.base_key, low }
      cache.pending_low = low
    end
    cache.dirty = true
  end
  --- After the batch's write succeeded: what it wrote is what the member holds now.
  function cursor.done()
    if g.cache ~= cache then return end
    if cache.uniform then
      cache.from = cache.next
    else
      local from, same = nil, true
      for _, p in ipairs(list) do
        local c = pending[p]
        at[p] = c
        if from == nil then from = c elseif c ~= from then same = false; if c < from then from = c end end
      end
      cache.from, cache.uniform = from, same
    end
    if cache.pending_low then cache.base = cache.pending_low end
    cache.dirty = false
  end
  return cursor
end

--- Where a batch of this member starts, and how to commit it.
-- @return a cursor `{from, head, count, every, wants(ev), commit(ops, upto), done()}`
--   (`every`: every event after `from` is wanted), or nil when this member has
--   nothing to do now, or nil, err
function Group:cursor(batch_size)
  if self.owned_count == 0 then return nil end
  local cache = self.cache
  if not cache or cache.dirty then
    cache = load_cache(self)
    self.cache = cache
  end
  local head = self.store:head()
  local from = cache.from
  if from >= head then
    -- Nothing to do here: bring the low-water mark up if every partition is past it
    -- (the last batches of two members may each have seen the other behind).
    if self.base_key and cache.base < head then
      local base, err = raise_mark(self)
      if not base then return nil, err end
      cache.base = base
    end
    return nil
  end
  local cursor = cache.cursor
  if not cursor then
    cursor = make_cursor(self, cache)
    cache.cursor = cursor
  end
  cursor.from, cursor.head = from, head
  cursor.every = cache.uniform and #cache.list == self.partitions
  -- read more events per batch when this member owns a small share of the partitions
  cursor.count = math.min(batch_size * math.max(1, self.partitions // math.max(1, self.owned_count)), batch_size * 16)
  return cursor
end

--- The checkpoint of every partition of a group (p -> position) and its
-- low-water mark, as stored now (and the mark's row as stored: nil when none).
function M.partition_checkpoints(store, pfx, partitions, base_key)
  local g = { store = store, pfx = pfx, base_key = base_key, partitions = partitions }
  local stored, base, raw = checkpoints(g)
  local at = positions(g, stored, base, function(p) return store:kv_get(M.SPACE, pfx .. "l:" .. pkey(p)) end)
  return at, base, raw
end

--- True when every partition of the group is caught up to `head` (by whichever member).
function Group:caught_up(head)
  local at = M.partition_checkpoints(self.store, self.pfx, self.partitions, self.base_key)
  for p = 0, self.partitions - 1 do
    if at[p] < head then return false end
  end
  return true
end

-- ------------------------------------------------------------------------
-- Status

--- The status of group `kind` `name` in `store`: `{partitions, lease (s),
-- members = {{member, host, pid, joined, expires, alive, partitions = {p...},
-- share, checkpoint, lag}}, unowned = {p...}, checkpoint, lag}` (`checkpoint`
-- is the lowest of the partitions'), or nil when the store has no such group.
function M.status(store, kind, name)
  local pfx = kind .. ":" .. name .. ":"
  local partitions = store:kv_get(M.SPACE, pfx .. "g")
  if math.type(partitions) ~= "integer" then return nil end
  local now = store:now()
  local head = store:head()
  local at = M.partition_checkpoints(store, pfx, partitions, KIND_KEY[kind] and (KIND_KEY[kind] .. ":" .. name))
  local members, by_id = {}, {}
  for key, value in store:kv_scan(M.SPACE, { prefix = pfx .. "m:" }) do
    local r = parse_member(value) or {}
    local m = { member = key:sub(#pfx + 3), host = r.host, pid = r.pid, joined = r.joined, expires = r.expires,
                alive = r.expires ~= nil and r.expires > now and not gone(r), partitions = {} }
    members[#members + 1], by_id[m.member] = m, m
  end
  local unowned = {}
  local low
  for p = 0, partitions - 1 do
    local c = at[p]
    if kind == "projection" then c = nil end
    local owner, until_ = parse_lease(store:kv_get(M.SPACE, pfx .. "l:" .. pkey(p)))
    local m = owner and until_ > now and by_id[owner]
    if m then
      m.partitions[#m.partitions + 1] = p
      if c and (m.checkpoint == nil or c < m.checkpoint) then m.checkpoint = c end
    else
      unowned[#unowned + 1] = p
    end
    if c and (low == nil or c < low) then low = c end
  end
  table.sort(members, function(a, b) return a.member < b.member end)
  for _, m in ipairs(members) do
    m.share = #m.partitions / partitions
    if m.checkpoint then m.lag = head - m.checkpoint end
  end
  return { kind = kind, name = name, partitions = partitions, members = members, unowned = unowned,
           checkpoint = low, head = head, lag = low and head - low or nil }
end

return M
