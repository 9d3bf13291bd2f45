--- A structural check of an LMDB 0.9 data.mdb (64-bit, as liblmdb 0.9.24 writes it), for the
-- power-cut checker: chronicle's verify() reads every event, but not LMDB's free list, and a
-- stale free-list page (an older version of it) only shows when later commits hand out pages
-- that are still in use. This walks, from the meta page LMDB would pick (the higher txnid),
-- the free-list tree, the main tree and every named database in it, and checks:
--   every page it reaches lies inside the file and says its own number in its header, has the
--   kind its parent expects (branch, leaf, overflow), and is reached once;
--   each database's branch, leaf and overflow page counts and entry count are those its
--   record (MDB_db) says;
--   every page from 2 to the meta's last page is either in a tree or in the free list, never
--   both, and no page is listed free twice.
-- Layouts (lmdb.h, mdb.c): page header { pgno u64, pad u16, flags u16, lower u16, upper u16 |
-- pages u32 }; node { lo u16, hi u16, flags u16, ksize u16, key, data }; MDB_db { pad u32,
-- flags u16, depth u16, branch u64, leaf u64, overflow u64, entries u64, root u64 }; meta at
-- offset 16 of pages 0 and 1 { magic u32, version u32, address u64, mapsize u64, dbs[2],
-- last_pg u64, txnid u64 }; the page size is dbs[0].pad.
local M = {}

local P_BRANCH, P_LEAF, P_OVERFLOW, P_LEAF2 = 0x01, 0x02, 0x04, 0x20
local F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
local MAGIC = 0xBEEFC0DE
local HDR = 16

local function db_record(s, at)   -- at: 1-based offset of an MDB_db
  local pad, flags, depth, branch, leaf, overflow, entries, root = string.unpack("<I4I2I2I8I8I8I8i8", s, at)
  return { pad = pad, flags = flags, depth = depth, branch = branch, leaf = leaf, overflow = overflow,
           entries = entries, root = root }
end

local function meta(s, off)
  if #s < off + HDR + 136 then return nil end
  local magic, version = string.unpack("<I4I4", s, off + HDR + 1)
  if magic ~= MAGIC or version ~= 1 then return nil end
  local free = db_record(s, off + HDR + 24 + 1)
  local main = db_record(s, off + HDR + 72 + 1)
  local last_pg, txnid = string.unpack("<I8I8", s, off + HDR + 120 + 1)
  return { free = free, main = main, last_pg = last_pg, txnid = txnid, psize = free.pad }
end

--- The meta page LMDB would pick (the valid one with the higher txnid): { free, main (MDB_db
-- records: root, depth, entries, ...), last_pg, txnid, psize }, or nil.
function M.meta(s)
  local m0 = meta(s, 0)
  local m1 = m0 and m0.psize >= 512 and meta(s, m0.psize) or nil
  if m1 and (not m0 or m1.txnid > m0.txnid) then return m1 end
  return m0
end

--- Checks the bytes of a data.mdb. Returns a list of problems (empty when sound) and a summary
-- { txnid, last_pg, used, free } (nil when no meta page is usable).
function M.check(s)
  local problems = {}
  local function problem(fmt, ...)
    if #problems < 20 then problems[#problems + 1] = fmt:format(...) end
  end
  local m = M.meta(s)
  if not m then return { "no valid meta page" }, nil end
  local psize = m.psize
  local used, free = {}, {}
  local nused, nfree = 0, 0

  local function page(pg, want, owner)
    local off = pg * psize
    if pg < 2 or pg > m.last_pg then problem("%s reaches page %d, outside 2..%d", owner, pg, m.last_pg) return nil end
    if off + psize > #s then problem("%s reaches page %d, past the end of the file", owner, pg) return nil end
    local hpg, _, flags = string.unpack("<I8I2I2", s, off + 1)
    if hpg ~= pg then problem("%s: page %d says it is page %d", owner, pg, hpg) return nil end
    if flags & want == 0 then problem("%s: page %d has flags 0x%x", owner, pg, flags) return nil end
    if used[pg] then problem("page %d is in %s and in %s", pg, used[pg], owner) return nil end
    used[pg] = owner
    nused = nused + 1
    return off, flags
  end

  local function overflow(pg, owner, count)
    local off = page(pg, P_OVERFLOW, owner)
    if not off then return nil end
    local pages = string.unpack("<I4", s, off + 13)
    count.overflow = count.overflow + pages
    for p = pg + 1, pg + pages - 1 do
      if used[p] then problem("overflow page %d of %s is in %s too", p, owner, used[p])
      else used[p] = owner; nused = nused + 1 end
    end
    return off + HDR
  end

  local walk
  -- A leaf node's data: the bytes and, for F_SUBDATA, nothing else needed.
  local function leaf_data(node, ksize, dsize, nflags, owner, count)
    local at = node + 8 + ksize   -- 0-based offset of the data
    if nflags & F_BIGDATA ~= 0 then
      local ov = string.unpack("<I8", s, at + 1)
      local data_at = overflow(ov, owner, count)
      if not data_at then return nil end
      return s:sub(data_at + 1, data_at + dsize)
    end
    return s:sub(at + 1, at + dsize)
  end

  function walk(root, owner, is_free, is_main, count, depth)
    if depth > 64 then problem("%s is deeper than 64 levels", owner) return end
    local off, flags = page(root, P_BRANCH | P_LEAF, owner)
    if not off then return end
    if flags & P_LEAF2 ~= 0 then problem("%s: page %d is a LEAF2 page (no database here uses them)", owner, root) return end
    local lower = string.unpack("<I2", s, off + 13)
    local n = (lower - HDR) // 2
    if flags & P_BRANCH ~= 0 then count.branch = count.branch + 1 else count.leaf = count.leaf + 1 end
    for i = 0, n - 1 do
      local ptr = string.unpack("<I2", s, off + HDR + 2 * i + 1)
      local node = off + ptr
      if ptr < HDR or ptr + 8 > psize then problem("%s: page %d node %d at %d", owner, root, i, ptr) return end
      local lo, hi, nflags, ksize = string.unpack("<I2I2I2I2", s, node + 1)
      if flags & P_BRANCH ~= 0 then
        walk(lo | (hi << 16) | (nflags << 32), owner, is_free, is_main, count, depth + 1)
      else
        count.entries = count.entries + 1
        local dsize = lo | (hi << 16)
        if nflags & F_DUPDATA ~= 0 then problem("%s: a duplicate-data node (no database here has them)", owner) end
        local data = leaf_data(node, ksize, dsize, nflags, owner, count)
        if data and is_free then
          local ids = string.unpack("<I8", data)
          if #data < 8 * (ids + 1) then problem("free list record of %d ids in %d bytes", ids, #data) end
          for k = 1, math.min(ids, #data // 8 - 1) do
            local p = string.unpack("<I8", data, 8 * k + 1)
            if free[p] then problem("page %d is listed free twice", p)
            else free[p] = true; nfree = nfree + 1 end
          end
        elseif data and is_main and nflags & F_SUBDATA ~= 0 then
          local name = s:sub(node + 8 + 1, node + 8 + ksize)
          local db = db_record(data, 1)
          local sub = { branch = 0, leaf = 0, overflow = 0, entries = 0 }
          if db.root ~= -1 then walk(db.root, "database " .. name, false, false, sub, 1) end
          for _, k in ipairs({ "branch", "leaf", "overflow", "entries" }) do
            if sub[k] ~= db[k] then problem("database %s: %d %s, its record says %d", name, sub[k], k, db[k]) end
          end
        end
      end
    end
  end

  for _, t in ipairs({ { m.free, "the free list", true, false }, { m.main, "the main database", false, true } }) do
    local db, count = t[1], { branch = 0, leaf = 0, overflow = 0, entries = 0 }
    if db.root ~= -1 then walk(db.root, t[2], t[3], t[4], count, 1) end
    for _, k in ipairs({ "branch", "leaf", "overflow", "entries" }) do
      if count[k] ~= db[k] then problem("%s: %d %s, its record says %d", t[2], count[k], k, db[k]) end
    end
  end
  for p in pairs(free) do
    if used[p] then problem("page %d is free and in %s", p, used[p]) end
    if p < 2 or p > m.last_pg then problem("free page %d outside 2..%d", p, m.last_pg) end
  end
  local lost = 0
  for p = 2, m.last_pg do
    if not used[p] and not free[p] then lost = lost + 1 end
  end
  if lost > 0 then problem("%d pages of 2..%d are neither in use nor free", lost, m.last_pg) end
  return problems, { txnid = m.txnid, last_pg = m.last_pg, used = nused, free = nfree, owner = used, free_pages = free }
end

return M
