--- Personal data and its erasure (crypto-shredding), the same on every backend.
-- An event's `personal` table is sealed (libsodium XChaCha20-Poly1305, chronicle.crypto)
-- with a key of its `subject` and travels in the record's meta under `$personal`, so
-- the record format and the backends are unchanged. Subject keys are rows of the
-- `subject_keys` space (wrapped by the key file's key when the store is opened with
-- `key_file`); `forget` replaces a subject's row by the time it was forgotten, and from
-- then on its events read back with `personal = nil, erased = true`. Reads open the
-- boxes in Store (read, read_all, fold), each read with its own keyring that is wiped when
-- the read ends, so a `forget` committed before a read began is seen by it in every process.
-- @module chronicle.personal
local common = require "chronicle.common"

local M = {}

--- The meta key that carries `{s = subject, c = sealed box}`.
M.META = "$personal"
--- The key-value space of subject keys: subject -> key row (string), or the time (ns) it was forgotten.
M.KEYS = "subject_keys"
--- The space holding the proof of which key file wraps the store's keys (row `key_file`).
M.CHECK = "subject_key_check"

local META, KEYS, CHECK = M.META, M.KEYS, M.CHECK
local MAX_SUBJECT = 200

local crypto_module
local function crypto()
  if not crypto_module then
    local ok, mod = pcall(require, "chronicle.crypto")
    if not ok then error("personal data needs the module chronicle.crypto (libsodium), which did not load: " .. tostring(mod), 4) end
    crypto_module = mod
  end
  return crypto_module
end

local function state(store)
  local s = rawget(store, "_personal")
  if not s then s = {}; rawset(store, "_personal", s) end
  return s
end

local function fail(code, message, fields)
  return nil, common.error(code, message, fields)
end

--- Opens the key file `path` for `store` (chronicle.open's `key_file`): the first key file a
-- store sees is recorded (a check row sealed with it); any other key file is `bad_key`.
-- @return true, or nil, err (`bad_key`)
function M.use_key_file(store, path)
  local c = crypto()
  local master, err = c.load_key_file(path)
  if not master then return nil, err end
  local row
  row, err = store:kv_get(CHECK, "key_file")
  if err then return nil, err end
  if row == nil then
    for _, value in store:kv_scan(KEYS, { count = 1 }) do
      if type(value) == "string" then
        c.close_key(master)
        return fail("bad_key", "this store's subject keys are not wrapped by a key file: open it without key_file",
                    { key_file = path })
      end
    end
    if not (store.options and store.options.readonly) then
      local res, werr = store:write { checks = { { CHECK, "key_file", nil } }, puts = { { CHECK, "key_file", c.check_row(master) } } }
      if not res and werr.code ~= "check_failed" then c.close_key(master); return nil, werr end
      row = store:kv_get(CHECK, "key_file")
    end
  end
  if row ~= nil and not c.check(master, row) then
    c.close_key(master)
    return fail("bad_key", "the key file " .. path .. " is not the one this store's subject keys are wrapped with",
                { key_file = path })
  end
  state(store).master = master
  return true
end

--- Wipes the key file's key (Store:close).
function M.close(store)
  local s = rawget(store, "_personal")
  if s and s.master then crypto().close_key(s.master); s.master = nil end
end

local function check_subject(subject, where, level)
  if type(subject) ~= "string" or #subject == 0 or #subject > MAX_SUBJECT then
    error(where .. ": subject must be a string of 1 to " .. MAX_SUBJECT .. " bytes, got " ..
          (type(subject) == "string" and #subject .. " bytes" or type(subject)), level + 1)
  end
end

--- True when one of `events` carries `personal` or `subject`.
function M.any(events)
  if type(events) ~= "table" then return false end
  for i = 1, #events do
    local e = events[i]
    if type(e) == "table" and (e.personal ~= nil or e.subject ~= nil) then return true end
  end
  return false
end

--- True when an append_many / write list has an entry whose events carry personal data.
function M.any_in(list)
  if type(list) ~= "table" then return false end
  for i = 1, #list do
    local entry = list[i]
    if type(entry) == "table" and M.any(entry.events) then return true end
  end
  return false
end

-- A sealing pass over one write: the subject keys it uses, and the checks and puts that
-- make the write commit only with those keys (none forgotten or made meanwhile).
local function sealer(store)
  local s = state(store)
  local ring = crypto().keyring(s.master)
  return { store = store, master = s.master, ring = ring, checks = {}, puts = {}, seen = {}, rows = {} }
end

-- The key rows this store object last read or wrote, by subject: appends use them without
-- reading them again, since the write checks that each is still the stored row (and a stale
-- one fails the check, empties the cache and the write is tried again).
local function cached_rows(store)
  local st = state(store)
  if not st.rows then st.rows = {} end
  return st.rows
end

local function subject_key(w, subject)
  if w.seen[subject] then return true end
  local rows = cached_rows(w.store)
  local row, err = rows[subject], nil
  if row == nil then
    row, err = w.store:kv_get(KEYS, subject)
    if err then return nil, err end
  end
  if math.type(row) == "integer" then
    return fail("forgotten", "subject '" .. subject .. "' was forgotten: its personal data cannot be written again",
                { subject = subject })
  end
  if row == nil then
    if not w.master and not w.unkeyed then
      local check
      check, err = w.store:kv_get(CHECK, "key_file")
      if err then return nil, err end
      if check ~= nil then
        return fail("bad_key", "this store's subject keys are wrapped by a key file: open it with key_file",
                    { subject = subject })
      end
      w.checks[#w.checks + 1] = { CHECK, "key_file", nil }
      w.unkeyed = true
    end
    row = crypto().new_row(w.master, subject)
    w.checks[#w.checks + 1] = { KEYS, subject, nil }
    w.puts[#w.puts + 1] = { KEYS, subject, row }
  else
    w.checks[#w.checks + 1] = { KEYS, subject, row }
  end
  local ok
  ok, err = w.ring:add(subject, row)
  if not ok then return nil, err end
  w.seen[subject] = true
  w.rows[subject] = row
  return true
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- The events of one entry with `personal` sealed into meta; raises on misuse.
local function seal_events(w, events, where, level)
  if not M.any(events) then return events end
  local out = {}
  for i = 1, #events do
    local e = events[i]
    if type(e) == "table" and (e.personal ~= nil or e.subject ~= nil) then
      local at = where .. "[" .. i .. "]"
      if e.subject == nil then error(at .. ": personal data needs a subject (whose data it is)", level + 1) end
      check_subject(e.subject, at, level + 1)
      if e.personal ~= nil and type(e.personal) ~= "table" then
        error(at .. ".personal must be a table, got " .. type(e.personal), level + 1)
      end
      if e.meta ~= nil and type(e.meta) ~= "table" then error(at .. ".meta must be a table, got " .. type(e.meta), level + 1) end
      if e.meta and e.meta[META] ~= nil then error(at .. ".meta: the key '" .. META .. "' is chronicle's", level + 1) end
      local sealed = copy(e)
      sealed.personal, sealed.subject = nil, nil
      sealed.id = e.id or common.uuid()
      local envelope = { s = e.subject }
      if e.personal ~= nil then
        local ok, err = subject_key(w, e.subject)
        if not ok then return nil, err end
        envelope.c = w.ring:seal(e.subject, sealed.id, e.personal)
      end
      sealed.meta = e.meta and copy(e.meta) or {}
      sealed.meta[META] = envelope
      out[i] = sealed
    else
      out[i] = e
    end
  end
  return out
end

local function retryable(err)
  return err and err.code == "check_failed" and (err.space == KEYS or err.space == CHECK)
end

-- Runs write `ops` (whose appends may carry personal data) with the subject-key checks and
-- puts added; once more when another process made or forgot a key meanwhile.
local function write_sealed(store, h, ops, level)
  for attempt = 1, 3 do
    local w = sealer(store)
    local appends = {}
    for i, entry in ipairs(ops.appends) do
      if type(entry) == "table" and M.any(entry.events) then
        local events, err = seal_events(w, entry.events, (#ops.appends > 1 and "entries[" .. i .. "]." or "") .. "events", level + 1)
        if not events then w.ring:close(); return nil, err end
        local e = copy(entry)
        e.events = events
        appends[i] = e
      else
        appends[i] = entry
      end
    end
    w.ring:close()
    local full = copy(ops)
    full.appends = appends
    if #w.checks > 0 then
      full.checks = ops.checks and table.move(ops.checks, 1, #ops.checks, 1, {}) or {}
      table.move(w.checks, 1, #w.checks, #full.checks + 1, full.checks)
    end
    if #w.puts > 0 then
      full.puts = ops.puts and table.move(ops.puts, 1, #ops.puts, 1, {}) or {}
      table.move(w.puts, 1, #w.puts, #full.puts + 1, full.puts)
    end
    local res, err = h:write(full)
    local st = state(store)
    if res then
      local rows = cached_rows(store)
      for subject, row in pairs(w.rows) do rows[subject] = row end
      return res
    end
    st.rows = nil
    if not retryable(err) or attempt == 3 then return res, err end
  end
end

--- store:append with personal data: one write with the subject keys' checks.
function M.append(store, h, stream, events, expected)
  local res, err = write_sealed(store, h, { appends = { { stream = stream, events = events, expected = expected } } }, 3)
  if not res then
    if type(err) == "table" then err.index = nil end
    return nil, err
  end
  local r = res[1]
  return { version = r.version, position = r.position, time = r.time }
end

--- store:append_many with personal data.
function M.append_many(store, h, batch)
  local res, err = write_sealed(store, h, { appends = batch }, 3)
  if res then res.dry_run = nil end
  return res, err
end

--- store:write with personal data.
function M.write(store, h, ops)
  return write_sealed(store, h, ops, 3)
end

---------------------------------------------------------------------------
-- Reading

-- The keys one read uses: opened on first need, wiped by `close`.
local Reader = {}
Reader.__index = Reader

function Reader:close()
  local ring = self.ring
  if ring then self.ring = nil; ring:close() end
end
Reader.__close = Reader.close

--- A reader for one read of `store` (close it when the read ends; also a to-be-closed value).
function M.reader(store)
  return setmetatable({ store = store, gone = {} }, Reader)
end

-- Opens the envelope of `ev` (meta `m`, envelope `env`): sets subject, personal or erased.
-- Returns true, or nil, err (the key row could not be read, the key file is missing or
-- wrong, the box is damaged).
function Reader:reveal(ev, m, env)
  m[META] = nil
  if next(m) == nil then ev.meta = nil end
  local subject = env.s
  ev.subject = subject
  local box = env.c
  if box == nil or ev.id == nil then return true end
  if self.gone[subject] then ev.erased = true; return true end
  local ring = self.ring
  if not ring then
    ring = crypto().keyring(state(self.store).master)
    self.ring = ring
  end
  local value, err = ring:open(subject, ev.id, box)
  if value == false then
    local row
    row, err = self.store:kv_get(KEYS, subject)
    if err then return nil, err end
    if type(row) ~= "string" then
      self.gone[subject] = true
      ev.erased = true
      return true
    end
    local ok
    ok, err = ring:add(subject, row)
    if not ok then return nil, err end
    value, err = ring:open(subject, ev.id, box)
  end
  if not value then return nil, err end
  ev.personal = value
  return true
end

-- The reveal function a store gives its backend's read, read_all and fold (csrc/common/event_table.h):
-- the backend calls it only for events whose meta carries `$personal`, so reads of other events
-- never leave C for it. reveal(ev) opens ev in place and returns true, or nil, err (and ends
-- itself); reveal(nil) ends it (the backend calls it when a read that revealed something ends):
-- the keys it opened are wiped then. Also a to-be-closed value, for fold.
local Revealer = {}
Revealer.__index = Revealer

function Revealer:__call(ev)
  local reader = self.reader
  if ev == nil then
    if reader then self.reader = nil; reader:close() end
    return true
  end
  if not reader then reader = M.reader(self.store); self.reader = reader end
  local m = ev.meta
  local ok, err = reader:reveal(ev, m, m[META])
  if not ok then self.reader = nil; reader:close() end
  return ok, err
end

function Revealer:__close() self(nil) end

--- The reveal function of one read of `store` (see above).
function M.revealer(store)
  return setmetatable({ store = store }, Revealer)
end

---------------------------------------------------------------------------
-- Erasure

--- Forgets `subject`: replaces its key row by the time (ns) it was forgotten, so no read
-- can open its personal data again. Forgetting a forgotten subject changes nothing.
-- @return `{subject=, forgotten= (ns), already= (true when it was forgotten before)}`, or
--   nil, err (`not_found`: the store holds no key of that subject)
function M.forget(store, subject)
  check_subject(subject, "forget", 3)
  for _ = 1, 3 do
    local row, err = store:kv_get(KEYS, subject)
    if err then return nil, err end
    if row == nil then
      return fail("not_found", "no subject '" .. subject .. "' in this store (no event carries its personal data)",
                  { subject = subject })
    end
    if math.type(row) == "integer" then return { subject = subject, forgotten = row, already = true } end
    local now = common.now()
    local res
    res, err = store:write { checks = { { KEYS, subject, row } }, puts = { { KEYS, subject, now } } }
    state(store).rows = nil
    if res then return { subject = subject, forgotten = now } end
    if not retryable(err) then return nil, err end
  end
  return fail("conflict", "subject '" .. subject .. "': its key kept changing; forget again", { subject = subject })
end

--- The subjects the store holds keys for: iterator of `subject, {forgotten = ns | nil}`.
function M.subjects(store, opts)
  local step, st, init, closer = store:kv_scan(KEYS, opts)
  return function(s, c)
    local subject, row = step(s, c)
    if subject == nil then return nil end
    return subject, { forgotten = math.type(row) == "integer" and row or nil }
  end, st, init, closer
end

return M
