--- Scripts loaded at runtime: every `*.lua` in a folder returns a definition
-- with `kind = "aggregate" | "projection" | "handler" | "reactor"`.
-- `reload()` picks up added, changed and removed files; a projection whose
-- code changed rebuilds, the others keep their checkpoints. A file with a
-- syntax error or a bad definition is reported with its name (and line) and
-- the others still load. With `sandbox = true` projections and reactors run
-- isolated (chronicle.sandbox): scripts then reach nothing but the values
-- they are given, and act only by returning events.
-- @module chronicle.scripts
local common = require "chronicle.common"
local aggregate = require "chronicle.write.aggregate"
local names = require "chronicle.names"
local options = require "chronicle.options"

local M = {}
local Scripts = {}
Scripts.__index = Scripts

local function list_lua_files(dir)
  local ok, lfs = pcall(require, "lfs")
  local names = {}
  if ok then
    local attr = lfs.attributes(dir)
    if not attr or attr.mode ~= "directory" then return nil, "not a directory: " .. dir end
    for name in lfs.dir(dir) do
      if name:match("%.lua$") then names[#names + 1] = name end
    end
  else
    local p = io.popen("ls -1 '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
    for name in p:lines() do
      if name:match("%.lua$") then names[#names + 1] = name end
    end
    p:close()
  end
  table.sort(names)
  return names
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function error_entry(path, message)
  message = tostring(message)
  local line = message:sub(1, #path) == path and message:sub(#path + 1):match("^:(%d+):") or message:match(":(%d+):")
  return { file = path, line = line and tonumber(line), message = tostring(message) }
end

-- Loads a trusted script: an ordinary chunk that may `require "chronicle"`.
local function load_trusted(path, source)
  local chunk, err = load(source, "@" .. path, "t")
  if not chunk then return nil, err end
  local ok, def = pcall(chunk)
  if not ok then return nil, def end
  if aggregate.is_aggregate(def) then return def end
  if type(def) ~= "table" then return nil, path .. ": the script must return a definition table, got " .. type(def) end
  return def
end

-- Loads an untrusted script into its own sandbox; its handlers become proxies.
local function load_sandboxed(path, source, limits)
  local sandbox = require "chronicle.scripts.sandbox"
  local opts = { name = path }
  for k, v in pairs(limits or {}) do opts[k] = v end
  local sb = sandbox.new(opts)
  local desc, err = sb:load(source, "@" .. path)
  if not desc then
    sb:close()
    return nil, type(err) == "table" and err.message or err
  end
  local def = {}
  for k, v in pairs(desc) do if k ~= "handlers" then def[k] = v end end
  if def.kind ~= "projection" and def.kind ~= "reactor" then
    sb:close()
    return nil, path .. ": a sandboxed script must define a projection or a reactor"
  end
  if def.kind == "reactor" then
    -- The host's bounds hold: a script may lower them, never raise them.
    local reactor = require "chronicle.read.reactor"
    for key, default in pairs(reactor.BOUNDS) do
      if type(def[key]) == "number" and def[key] > default then
        sb:close()
        return nil, ("%s: a sandboxed reactor's '%s' may be at most %d, got %s"):format(path, key, default,
          tostring(def[key]))
      end
    end
  end
  if def.kind == "projection" then
    def.init = function(view)
      local _, ierr = sb:call_field("init", nil, view)
      if view.charge then view:charge(sb:copied()) end
      if ierr and ierr.code ~= "no_handler" then error(ierr.message, 0) end
    end
  end
  def.handlers = {}
  for _, name in ipairs(desc.handlers or {}) do
    if def.kind == "projection" then
      def.handlers[name] = function(view, ev)
        local _, cerr = sb:call(name, ev, view)
        if view.charge then view:charge(sb:copied()) end   -- the batch ends early past BATCH_BYTES
        if cerr then error(cerr.message, 0) end
      end
    else
      def.handlers[name] = function(ev)
        local out, cerr = sb:call(name, ev)
        if cerr then error(cerr.message, 0) end
        return out
      end
    end
  end
  return def, nil, sb
end

-- The line of `source` where field `field` is first set (`field =`), or nil.
local function field_line(source, field)
  if type(source) ~= "string" or type(field) ~= "string" then return nil end
  local line = 1
  for text in (source .. "\n"):gmatch("([^\n]*)\n") do
    if text:find("%f[%w_]" .. field:gsub("%p", "%%%0") .. "%s*=%f[^=]") then return line end
    line = line + 1
  end
  return nil
end

-- A definition error as the user's file and line, never chronicle's own.
local function definition_error(path, source, err)
  local message = tostring(type(err) == "table" and (err.message or err) or err)
  message = require("chronicle.fault").strip_location(message)
  if message:sub(1, #path + 1) == path .. ":" then return message end   -- already names the user's file
  local line = field_line(source, message:match("'([%a_][%w_]*)'"))
  return ("%s:%s %s"):format(path, line and (line .. ":") or "", message)
end

local function definition_name(def)
  if aggregate.is_aggregate(def) then return "aggregate", def.name end
  return def.kind, def.name
end

-- Registers one definition on the store; returns kind, name.
local function register(self, path, def, hash)
  local store = self.store
  local kind, name = definition_name(def)
  local owner = type(name) == "string" and self.owners[name]
  if owner and owner.file ~= path then
    error(("%s '%s' is already defined by %s (a %s): names are unique across the scripts of a store")
      :format(tostring(kind), name, owner.file, owner.kind), 0)
  end
  if aggregate.is_aggregate(def) or def.kind == "aggregate" then
    local agg = aggregate.is_aggregate(def) and def or aggregate.define(def)
    names.claim(store, "aggregate", agg.name, 1)
    self.aggregates[agg.name] = agg
    store:registrations().aggregates[agg.name] = agg
    return "aggregate", agg.name
  elseif def.kind == "projection" then
    def.code_hash = hash
    local p, err = store:projection(def)
    if not p then error(err, 0) end
    return "projection", p.name
  elseif def.kind == "reactor" then
    local r = store:reactor(def)
    return "reactor", r.name
  elseif def.kind == "handler" then
    if type(def.handle) ~= "function" then error("a handler script needs a 'handle' function", 0) end
    local h = store:on(def.types, def.handle, { name = def.name, retries = def.retries, batch_size = def.batch_size,
                                                category = def.category })
    return "handler", h.name
  end
  error("'kind' must be \"aggregate\", \"projection\", \"handler\" or \"reactor\", got " .. tostring(def.kind), 0)
end

local function unregister(self, entry, keep_sandbox)
  if entry.kind == "aggregate" then
    self.aggregates[entry.name] = nil
    local reg = self.store:registrations().aggregates
    if reg[entry.name] == entry.def then reg[entry.name] = nil end
  else
    self.store:unregister(entry.name)
  end
  if self.owners[entry.name] and self.owners[entry.name].file == entry.file then self.owners[entry.name] = nil end
  if entry.sandbox and not keep_sandbox then entry.sandbox:close() end
end

-- Registers the loaded definition of `path` in place of its old version;
-- returns true, or false and the error (the old version is then back).
local function install(self, path, loaded)
  local old = self.files[path]
  if old then unregister(self, old, true) end
  local ok, kind, rname = pcall(register, self, path, loaded.def, loaded.hash)
  if not ok then
    local message = definition_error(path, loaded.source, kind)
    if old then
      pcall(register, self, path, old.def, old.hash)
      self.owners[old.name] = { file = path, kind = old.kind }
    end
    return false, message
  end
  if old and old.sandbox then old.sandbox:close() end
  self.files[path] = { file = path, hash = loaded.hash, kind = kind, name = rname, sandbox = loaded.sandbox,
                       def = loaded.def }
  self.owners[rname] = { file = path, kind = kind }
  return true, kind, rname, old ~= nil
end

--- Loads (or reloads) the folder; returns what changed. Removed files go
-- first, so their names are free for the others; a file whose name another
-- file holds is an error naming both, and is tried again at every reload.
-- @return `{added = {...}, changed = {...}, removed = {...}, errors = {...}}`
function Scripts:reload()
  local report = { added = {}, changed = {}, removed = {}, errors = {} }
  local names_list, err = list_lua_files(self.dir)
  if not names_list then
    report.errors[1] = { file = self.dir, message = err }
    self.errors = report.errors
    return report
  end
  local present = {}
  for _, name in ipairs(names_list) do present[self.dir .. "/" .. name] = true end
  local gone = {}
  for path in pairs(self.files) do if not present[path] then gone[#gone + 1] = path end end
  table.sort(gone)
  for _, path in ipairs(gone) do
    local entry = self.files[path]
    unregister(self, entry)
    self.files[path] = nil
    report.removed[#report.removed + 1] = { file = path, kind = entry.kind, name = entry.name }
  end

  -- Load every new or changed file once, then register them in passes: a
  -- name that a changed file gives up in one pass is free for the next.
  local pending, failures = {}, {}
  for _, name in ipairs(names_list) do
    local path = self.dir .. "/" .. name
    local source, rerr = read_file(path)
    local hash = source and common.hash(source)
    local old = self.files[path]
    if not source then
      failures[path] = error_entry(path, rerr)
    elseif not old or old.hash ~= hash then
      local def, lerr, sb
      if self.sandbox then def, lerr, sb = load_sandboxed(path, source, self.limits)
      else def, lerr = load_trusted(path, source) end
      if def then
        pending[#pending + 1] = { path = path, def = def, hash = hash, sandbox = sb, source = source }
      else
        failures[path] = error_entry(path, lerr)
      end
    end
  end
  local progress = true
  while progress and #pending > 0 do
    progress = false
    local left = {}
    for _, loaded in ipairs(pending) do
      local ok, kind, rname, changed = install(self, loaded.path, loaded)
      if ok then
        progress = true
        failures[loaded.path] = nil
        local list = changed and report.changed or report.added
        list[#list + 1] = { file = loaded.path, kind = kind, name = rname }
      else
        failures[loaded.path] = error_entry(loaded.path, kind)
        left[#left + 1] = loaded
      end
    end
    pending = left
  end
  for _, loaded in ipairs(pending) do
    if loaded.sandbox then loaded.sandbox:close() end   -- keep the version that worked
  end
  for _, name in ipairs(names_list) do
    local path = self.dir .. "/" .. name
    if failures[path] then report.errors[#report.errors + 1] = failures[path] end
  end
  self.errors = report.errors
  return report
end

--- A repository of an aggregate defined by one of the scripts.
function Scripts:repository(name)
  if getmetatable(self) ~= Scripts then
    error("scripts:repository(name): call it with a colon (scripts:repository(\"" .. tostring(self)
      .. "\")), not a dot", 2)
  end
  local agg = self.aggregates[name]
  if not agg then error("scripts: no aggregate named '" .. tostring(name) .. "'", 2) end
  return self.store:repository(agg)
end

local load_options = { sandbox = "boolean", limits = "table" }

--- Loads every `*.lua` in `dir` into `store`.
-- @tparam Store store the store
-- @tparam string dir the folder
-- @tparam[opt] table opts `sandbox` (run projections and reactors isolated),
--   `limits` (sandbox budgets: memory, instructions, time_ms)
-- @return the Scripts object (see `errors`, `aggregates`, `reload()`)
function M.load(store, dir, opts)
  if type(dir) ~= "string" then error("load_scripts: folder name expected", 2) end
  if dir:find("\0", 1, true) then error("load_scripts: the folder name must not contain a NUL byte", 2) end
  opts = options.check("load_scripts", opts, load_options, 2)
  local self = setmetatable({ store = store, dir = dir:gsub("/+$", ""), sandbox = opts.sandbox == true,
                              limits = opts.limits, files = {}, owners = {}, aggregates = {}, errors = {} },
                        Scripts)
  self.last_report = self:reload()
  return self
end

--- Loads one projection script file (store:projection("path.lua")).
function M.load_file(store, path)
  if path:find("\0", 1, true) then error("projection: the file name must not contain a NUL byte", 3) end
  local source, err = read_file(path)
  if not source then return nil, common.error("not_found", "cannot read " .. path .. ": " .. tostring(err)) end
  local def, lerr = load_trusted(path, source)
  if not def then error(lerr, 2) end
  def.code_hash = def.code_hash or common.hash(source)
  return store:projection(def)
end

return M
