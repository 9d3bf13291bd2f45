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

local KEYS, CHECK = M.KEYS, M.CHECK
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

-- The row of M.CHECK that counts forgets (see `writer`).
local FORGETS = "forgets"

-- Drops (wipes) the writes' keyring of store state `st`.
local function drop_writer(st)
  local w = st.writer
  if w then st.writer = nil; w.ring:close() end
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
  if not s then return end
  drop_writer(s)
  if s.master then crypto().close_key(s.master); s.master = nil end
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

-- The writes' keyring: the subject keys this store object has sealed with, kept from one write
-- to the next (so a subject's key row is read and unwrapped once, not once per write), with the
-- value of the `forgets` counter (M.CHECK) it was read under. Every write checks that counter:
-- `forget` moves it in the same transaction that drops a key, so a write whose cached keys
-- could include a forgotten one fails its check, the keyring is dropped and the write is tried
-- again with the rows read afresh. New keys are put in the write with a check that the subject
-- had none. Dropped (wiped) on any failed write, on forget and on close; kept to MAX_CACHED keys.
local MAX_CACHED = 10000

local function writer(store)
  local st = state(store)
  local w = st.writer
  if w then return w end
  local forgets, err = store:kv_get(CHECK, FORGETS)
  if err then return nil, err end
  w = { ring = crypto().keyring(st.master), forgets = forgets }
  st.writer = w
  return w
end

-- The key-row lookup of one write: the row of a subject the keyring lacks, read (or made, and
-- put by the write) once; adds the checks and puts the write needs for it.
local function fetcher(store, w, checks, puts)
  local master = state(store).master
  local unkeyed = false
  return function(subject)
    local row, err = store:kv_get(KEYS, subject)
    if err then return nil, err end
    if math.type(row) == "integer" then
      return fail("forgotten", "subject '" .. subject .. "' was forgotten: its personal data cannot be written again",
                  { subject = subject })
    end
    if row == nil then
      if not master and not unkeyed then
        local check
        check, err = store:kv_get(CHECK, "key_file")
        if err then return nil, err end
        if check ~= nil then
          return fail("bad_key", "this store's subject keys are wrapped by a key file: open it with key_file",
                      { subject = subject })
        end
        checks[#checks + 1] = { CHECK, "key_file", nil }
        unkeyed = true
      end
      row = crypto().new_row(master, subject)
      checks[#checks + 1] = { KEYS, subject, nil }
      puts[#puts + 1] = { KEYS, subject, row }
    end
    return row
  end
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local function retryable(err)
  return err and err.code == "check_failed" and (err.space == KEYS or err.space == CHECK)
end

-- Runs write `ops` (whose appends may carry personal data) sealed, with the subject-key checks
-- and puts added; again when another process made or forgot a key meanwhile. ring:prepare checks
-- the events and loads their subjects' keys; the backend then seals each event's personal data
-- into its meta while it encodes the append (ops.seal, csrc/common/seal.h): the events are not
-- copied, and no Lua value is made per event.
local function write_sealed(store, h, ops, level)
  local st = state(store)
  for attempt = 1, 3 do
    local w, err = writer(store)
    if not w then return nil, err end
    local checks, puts = { { CHECK, FORGETS, w.forgets } }, {}
    local ok, ready, why = pcall(w.ring.prepare, w.ring, ops.appends, fetcher(store, w, checks, puts))
    if not ok or not ready then
      drop_writer(st)                     -- it may hold a key no write stored
      if not ok then error(ready, 0) end
      if ready == false then error(why, level + 1) end
      return nil, why
    end
    local full = copy(ops)
    full.seal = w.ring
    full.checks = ops.checks and table.move(ops.checks, 1, #ops.checks, 1, {}) or {}
    table.move(checks, 1, #checks, #full.checks + 1, full.checks)
    if #puts > 0 then
      full.puts = ops.puts and table.move(ops.puts, 1, #ops.puts, 1, {}) or {}
      table.move(puts, 1, #puts, #full.puts + 1, full.puts)
    end
    local done, res
    done, res, err = pcall(h.write, h, full)
    if not done then drop_writer(st); error(res, 0) end   -- misuse the backend raised
    if res and not res.dry_run then
      if w.ring:count() > MAX_CACHED then drop_writer(st) end
      return res
    end
    if #puts > 0 or not res then drop_writer(st) end
    if res then return res end
    if not retryable(err) then return res, err end
    if attempt == 3 then return res, err end
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

-- The keys one read uses: opened on first need, wiped by `close`. Its lookup reads a
-- subject's key row once per read (false: the subject was forgotten, or has no key).
local Reader = {}
Reader.__index = Reader

function Reader:close()
  local ring = self.ring
  if ring then self.ring = nil; ring:close() end
end
Reader.__close = Reader.close

--- A reader for one read of `store` (close it when the read ends; also a to-be-closed value).
function M.reader(store)
  local reader = setmetatable({ store = store }, Reader)
  reader.fetch = function(subject)
    local row, err = store:kv_get(KEYS, subject)
    if err then return nil, err end
    if type(row) ~= "string" then return false end
    return row
  end
  return reader
end

-- Opens the envelope in `ev`'s meta, in C (ring:reveal): sets subject, and personal or erased;
-- takes `$personal` out of meta. Returns true, or nil, err (the key row could not be read, the
-- key file is missing or wrong, the box is damaged).
function Reader:open(ev)
  local ring = self.ring
  if not ring then
    ring = crypto().keyring(state(self.store).master)
    self.ring = ring
  end
  return ring:reveal(ev, self.fetch)
end

-- The reveal function a store gives its backend's read, read_all and fold (csrc/common/event_table.h):
-- the backend calls it only for events whose meta carries `$personal`, so reads of other events
-- never leave C for it. reveal(ev) opens ev in place and returns true, or nil, err (and ends
-- itself); reveal(nil) ends it (the backend calls it when a read that revealed something ends):
-- the keys it opened are wiped then. Also a to-be-closed value, for fold. This is the fallback
-- when chronicle.crypto does not load (its first personal event raises why);
-- chronicle.crypto's revealer does the same in C (csrc/crypto/reveal.c), one keyring per read.
local Revealer = {}
Revealer.__index = Revealer

function Revealer:__call(ev)
  local reader = self.reader
  if ev == nil then
    if reader then self.reader = nil; reader:close() end
    return true
  end
  if not reader then reader = M.reader(self.store); self.reader = reader end
  local ok, err = reader:open(ev)
  if not ok then self.reader = nil; reader:close() end
  return ok, err
end

function Revealer:__close() self(nil) end

local has_crypto
--- The reveal function of one read of `store` (see above).
function M.revealer(store)
  if has_crypto == nil then has_crypto = pcall(crypto) end
  if not has_crypto then return setmetatable({ store = store }, Revealer) end
  local st = state(store)
  local fetch = st.fetch
  if not fetch then
    fetch = function(subject)
      local row, err = store:kv_get(KEYS, subject)
      if err then return nil, err end
      if type(row) ~= "string" then return false end
      return row
    end
    st.fetch = fetch
  end
  return crypto_module.revealer(st.master, fetch)
end

---------------------------------------------------------------------------
-- Erasure

--- Forgets `subject`: replaces its key row by the time (ns) it was forgotten, so no read
-- can open its personal data again. Forgetting a forgotten subject changes nothing.
-- @return `{subject=, forgotten= (ns), already= (true when it was forgotten before)}`, or
--   nil, err (`not_found`: the store holds no key of that subject)
function M.forget(store, subject)
  check_subject(subject, "forget", 3)
  for _ = 1, 5 do
    local row, err = store:kv_get(KEYS, subject)
    if err then return nil, err end
    if row == nil then
      return fail("not_found", "no subject '" .. subject .. "' in this store (no event carries its personal data)",
                  { subject = subject })
    end
    if math.type(row) == "integer" then return { subject = subject, forgotten = row, already = true } end
    local forgets
    forgets, err = store:kv_get(CHECK, FORGETS)
    if err then return nil, err end
    local now = common.now()
    local res
    res, err = store:write { checks = { { KEYS, subject, row }, { CHECK, FORGETS, forgets } },
                             puts = { { KEYS, subject, now }, { CHECK, FORGETS, (forgets or 0) + 1 } } }
    drop_writer(state(store))
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
