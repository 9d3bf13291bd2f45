--- The one checker of options tables: every public function that takes an
-- options table checks it here, so that a misspelt option (`until_idel`) or a
-- value of the wrong type (`dry_run = "yes"`) raises instead of being ignored.
-- @module chronicle.options
local M = {}

-- What a type name reads as in an error ("a boolean", "an integer").
local function article(name)
  return (name:match("^[aeiou]") and "an " or "a ") .. name
end

-- The type of v as a type spec names it: "integer" for integer numbers.
local function matches(v, want)
  if want == "any" then return true end
  if want == "integer" then return type(v) == "number" and math.tointeger(v) ~= nil end   -- 2^30 too
  return type(v) == want
end

-- True when v fits one of the '|'-separated names of spec.
local function fits(v, spec)
  for name in spec:gmatch("[^|]+") do
    if matches(v, name) then return true end
  end
  return false
end

local function describe(spec)
  local parts = {}
  for name in spec:gmatch("[^|]+") do parts[#parts + 1] = article(name) end
  return table.concat(parts, " or ")
end

-- What v is, for an error: its type, and with_value its value when it is a
-- number or a short string (`got number 1.5` where an integer was wanted).
local function got(v, with_value)
  if with_value and type(v) == "number" then return "number " .. tostring(v) end
  if with_value == "all" and type(v) == "string" and #v <= 40 then return ("string %q"):format(v) end
  return type(v)
end

local allowed_cache = setmetatable({}, { __mode = "k" })

-- The schema's option names, sorted and joined, computed once per schema.
local function allowed(schema)
  local text = allowed_cache[schema]
  if not text then
    local names = {}
    for name in pairs(schema) do names[#names + 1] = name end
    table.sort(names)
    text = table.concat(names, ", ")
    allowed_cache[schema] = text
  end
  return text
end

--- Checks an options table against a schema and returns it (`{}` for nil).
-- @tparam string fname the function's name as errors show it ("open", "runner:run")
-- @param opts the options table, or nil
-- @tparam table schema option name -> type spec: a type name ("boolean",
--   "string", "number", "integer" (a number with an exact integer value),
--   "function", "table", "any"), several
--   joined by `|` ("string|table"), or a function `fn(value)` returning true,
--   or false and what the value must be ("an integer >= 1")
-- @tparam[opt=2] integer level the level the error is raised at, as for `error`
--   called by the function that calls `check` (2: that function's caller)
-- @treturn table opts
-- @raise `fname: options must be a table, got T`,
--   `fname: unknown option 'x' (allowed: a, b, c)`,
--   `fname: option 'x' must be a boolean, got string`
function M.check(fname, opts, schema, level)
  level = (level or 2) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), level)
  end
  for k, v in pairs(opts) do
    local spec = type(k) == "string" and schema[k] or nil
    if spec == nil then
      error(("%s: unknown option '%s' (allowed: %s)"):format(fname, tostring(k), allowed(schema)), level)
    end
    if type(spec) == "function" then
      local ok, what = spec(v)
      if not ok then
        error(("%s: option '%s' must be %s, got %s"):format(fname, k, what or "valid", got(v, "all")), level)
      end
    elseif not fits(v, spec) then
      error(("%s: option '%s' must be %s, got %s"):format(fname, k, describe(spec), got(v, spec:find("integer"))), level)
    end
  end
  return opts
end

--- A type spec for an integer of at least `min`, for `check`.
function M.integer_at_least(min)
  return function(v)
    if type(v) == "number" and math.tointeger(v) and v >= min then return true end
    return false, "an integer >= " .. min
  end
end

--- A type spec for a number of at least `min` (integer or float, not NaN), for `check`.
function M.number_at_least(min)
  return function(v)
    if type(v) == "number" and v >= min then return true end
    return false, "a number >= " .. min
  end
end

--- A type spec for one of the given strings, for `check`.
function M.one_of(...)
  local names, set = { ... }, {}
  for _, n in ipairs(names) do set[n] = true end
  local what = "one of \"" .. table.concat(names, "\", \"") .. "\""
  return function(v) return set[v] == true, what end
end

return M
