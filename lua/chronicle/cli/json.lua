--- The lossless JSON codec of the chronicle command: every value a store can
-- hold goes to JSON and comes back identical (integer or float, binary
-- strings, any table keys), and the same value always gives the same text.
-- Encoding is ours (fixed key order); decoding parses with lua-cjson, then
-- resolves the tags. The format is documented in docs/CLI.md.
--
--   integer, |n| <= 2^53          plain number            42
--   integer beyond 2^53           {"$int":"<decimal>"}    {"$int":"9007199254740993"}
--   float, not integral           plain number            0.1
--   float, integral, NaN, inf     {"$float":"<text>"}     {"$float":"1.0"} {"$float":"nan"} {"$float":"-inf"}
--   string, valid UTF-8           JSON string             "café"
--   string, not UTF-8             {"$bin":"<base64>"}     {"$bin":"/wB4"}
--   table with keys 1..n (n>=1)   array                   [1,2,3]
--   table with string keys        object, keys sorted     {"a":1,"b":2}
--   any other non-empty table     {"$map":[[k,v],...]}    {"$map":[[1,"x"],[3,"y"]]}
--   empty table                   {}
--
-- An object with exactly one key starting with "$" is a tag, so a string-keyed
-- table with exactly one such key is written as "$map".
-- @module chronicle.cli.json
local cjson = require "cjson"
local time = require "chronicle.cli.time"

local M = {}

local decoder = cjson.new()
decoder.decode_invalid_numbers(false)   -- NaN, Infinity and hex are not JSON: they come as tags
decoder.decode_max_depth(1000)
local json_null = cjson.null

local TWO53 = 2 ^ 53
local MAX_DEPTH = 200

-- ---- encoding ----

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }
for i = 0, 31 do
  local c = string.char(i)
  escapes[c] = escapes[c] or string.format("\\u%04x", i)
end
escapes["\127"] = "\\u007f"

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', escapes) .. '"'
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64_chars, b64_values = {}, {}
for i = 1, 64 do
  b64_chars[i - 1] = B64:sub(i, i)
  b64_values[B64:byte(i)] = i - 1
end

--- Standard base64 (RFC 4648, with padding).
function M.base64(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = (a << 16) | ((b or 0) << 8) | (c or 0)
    out[#out + 1] = b64_chars[(v >> 18) & 63] .. b64_chars[(v >> 12) & 63] ..
                    (b and b64_chars[(v >> 6) & 63] or "=") .. (c and b64_chars[v & 63] or "=")
  end
  return table.concat(out)
end

--- The bytes of a base64 text, or nil when it is not canonical base64.
function M.unbase64(text)
  if #text % 4 ~= 0 or text:find("[^%w%+/=]") or text:find("=[^=]") or text:find("===") then return nil end
  local out = {}
  for i = 1, #text, 4 do
    local a, b, c, d = text:byte(i, i + 3)
    local va, vb = b64_values[a], b64_values[b]
    local vc, vd = b64_values[c], b64_values[d]
    if not va or not vb or (not vc and c ~= 61) or (not vd and d ~= 61) or (c == 61 and d ~= 61) then return nil end
    if (c == 61 or d == 61) and i + 3 ~= #text then return nil end
    local v = (va << 18) | (vb << 12) | ((vc or 0) << 6) | (vd or 0)
    if c == 61 then out[#out + 1] = string.char(v >> 16)
    elseif d == 61 then out[#out + 1] = string.char(v >> 16, (v >> 8) & 255)
    else out[#out + 1] = string.char(v >> 16, (v >> 8) & 255, v & 255) end
  end
  local bytes = table.concat(out)
  if M.base64(bytes) ~= text then return nil end   -- non-zero padding bits: not canonical
  return bytes
end

--- The shortest decimal text that reads back as exactly the float `x` (finite).
function M.float_text(x)
  for precision = 15, 17 do
    local s = string.format("%." .. precision .. "g", x)
    if tonumber(s) == x then return s end
  end
  return string.format("%.17g", x)
end

local function tagged_float(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  local s = M.float_text(x)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

-- Order of keys in "$map": booleans, then numbers by value, then strings bytewise.
local key_rank = { boolean = 1, number = 2, string = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (key_rank[ta] or 9) < (key_rank[tb] or 9) end
  if ta == "boolean" then return (not a) and b end
  return a < b
end
M.key_less = key_less

--- True when `t` has exactly the keys 1..n, n >= 1.
local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end
M.is_array = is_array

local encode

local function encode_table(t, out, depth, seen)
  if seen[t] then error("cannot encode a table that contains itself", 0) end
  if depth > MAX_DEPTH then error("cannot encode tables nested deeper than " .. MAX_DEPTH .. " levels", 0) end
  seen[t] = true
  if next(t) == nil then
    out[#out + 1] = "{}"
  elseif is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode(t[i], out, depth + 1, seen)
    end
    out[#out + 1] = "]"
  else
    local keys, plain, dollars = {}, true, 0
    for k in pairs(t) do
      keys[#keys + 1] = k
      if type(k) ~= "string" or not utf8.len(k) then plain = false
      elseif k:byte(1) == 36 then dollars = dollars + 1 end
    end
    if plain and #keys == 1 and dollars == 1 then plain = false end
    table.sort(keys, key_less)
    if plain then
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        out[#out + 1] = (i > 1 and "," or "") .. quote(k) .. ":"
        encode(t[k], out, depth + 1, seen)
      end
      out[#out + 1] = "}"
    else
      out[#out + 1] = '{"$map":['
      for i, k in ipairs(keys) do
        out[#out + 1] = i > 1 and ",[" or "["
        encode(k, out, depth + 1, seen)
        out[#out + 1] = ","
        encode(t[k], out, depth + 1, seen)
        out[#out + 1] = "]"
      end
      out[#out + 1] = "]}"
    end
  end
  seen[t] = nil
end

function encode(v, out, depth, seen)
  local tv = type(v)
  if tv == "string" then
    if utf8.len(v) then out[#out + 1] = quote(v)
    else out[#out + 1] = '{"$bin":"' .. M.base64(v) .. '"}' end
  elseif tv == "number" then
    if math.type(v) == "integer" then
      if v >= -TWO53 and v <= TWO53 then out[#out + 1] = string.format("%d", v)
      else out[#out + 1] = string.format('{"$int":"%d"}', v) end
    elseif v ~= v or v == math.floor(v) then   -- NaN, infinities, integral floats
      out[#out + 1] = '{"$float":"' .. tagged_float(v) .. '"}'
    else
      out[#out + 1] = M.float_text(v)
    end
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "table" then
    encode_table(v, out, depth, seen)
  elseif tv == "nil" then
    out[#out + 1] = "null"
  else
    error("cannot encode a " .. tv, 0)
  end
end

--- The JSON text of a value (raises on functions, userdata and cycles).
function M.encode(v)
  local out = {}
  encode(v, out, 0, {})
  return table.concat(out)
end

-- ---- decoding ----

local function decode_error(path, msg)
  error({ json_error = path .. ": " .. msg }, 0)
end

local resolve

local function resolve_tag(tag, arg, path)
  if tag == "$int" then
    local n = type(arg) == "string" and arg:match("^%-?%d+$") and math.tointeger(tonumber(arg))
    if not n or string.format("%d", n) ~= arg then decode_error(path, "$int needs a decimal integer string in 64-bit range") end
    return n
  elseif tag == "$float" then
    if type(arg) ~= "string" then decode_error(path, "$float needs a string") end
    if arg == "nan" then return 0 / 0 end
    if arg == "inf" then return math.huge end
    if arg == "-inf" then return -math.huge end
    if not arg:match("^%-?%d+%.?%d*[eE]?[%+%-]?%d*$") then decode_error(path, "$float needs a decimal number, nan, inf or -inf") end
    local x = tonumber(arg)
    if not x then decode_error(path, "$float needs a decimal number, nan, inf or -inf") end
    if math.type(x) == "integer" then x = x + 0.0 end   -- "-0.0" must stay negative zero
    return x
  elseif tag == "$bin" then
    local bytes = type(arg) == "string" and M.unbase64(arg)
    if not bytes then decode_error(path, "$bin needs a base64 string") end
    return bytes
  elseif tag == "$map" then
    if type(arg) ~= "table" or (next(arg) ~= nil and not is_array(arg)) then
      decode_error(path, "$map needs an array of [key, value] pairs")
    end
    local t = {}
    for i, pair in ipairs(arg) do
      local where = path .. ".$map[" .. i .. "]"
      if type(pair) ~= "table" or #pair ~= 2 or not is_array(pair) then decode_error(where, "expected a [key, value] pair") end
      local k, v = resolve(pair[1], where .. "[1]"), resolve(pair[2], where .. "[2]")
      if k == nil or k ~= k then decode_error(where, "a table key cannot be null or NaN") end
      if type(k) == "table" then decode_error(where, "a table key cannot be a table") end
      if t[k] ~= nil then decode_error(where, "the key appears twice") end
      if v == nil then decode_error(where, "a value cannot be null") end
      t[k] = v
    end
    return t
  end
  decode_error(path, "unknown tag " .. tag .. " (known: $int, $float, $bin, $map)")
end

-- Turns what lua-cjson decoded into the value it stands for.
function resolve(v, path)
  local tv = type(v)
  if tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then decode_error(path, "not a JSON number") end
    if v == math.floor(v) then
      if v < -TWO53 or v > TWO53 then
        decode_error(path, "the number " .. M.float_text(v) .. " is beyond 2^53: write {\"$int\":\"...\"} or {\"$float\":\"...\"}")
      end
      return math.tointeger(v)
    end
    return v
  elseif tv == "table" then
    local k1 = next(v)
    if type(k1) == "string" and k1:byte(1) == 36 and next(v, k1) == nil then
      return resolve_tag(k1, v[k1], path)
    end
    local t = {}
    for k, x in pairs(v) do
      local sub = path .. (type(k) == "string" and ("." .. k) or ("[" .. tostring(k) .. "]"))
      if x == json_null then decode_error(sub, "null is not a value a store can hold") end
      t[k] = resolve(x, sub)
    end
    return t
  elseif v == json_null then
    return nil
  end
  return v
end

--- Parses one JSON text. Returns the value, or nil and a message.
function M.decode(text, path)
  local ok, raw = pcall(decoder.decode, text)
  if not ok then return nil, (tostring(raw):gsub("^Expected", "expected")) end
  local ok2, value = pcall(resolve, raw, path or "value")
  if not ok2 then
    if type(value) == "table" and value.json_error then return nil, value.json_error end
    error(value, 0)
  end
  return value
end

--- The already-parsed form: resolves tags in a value lua-cjson produced.
function M.resolve(raw, path)
  local ok, value = pcall(resolve, raw, path or "value")
  if not ok then
    if type(value) == "table" and value.json_error then return nil, value.json_error end
    error(value, 0)
  end
  return value
end

-- ---- events ----

--- One event as a JSON object, keys in this order: position, stream, version,
-- type, time (ISO 8601 UTC, nanoseconds), id, schema, meta, data (meta and data
-- left out when nil).
function M.encode_event(ev)
  local out = { '{"position":', string.format("%d", ev.position), ',"stream":' }
  local seen = {}
  encode(ev.stream, out, 0, seen)
  out[#out + 1] = ',"version":' .. string.format("%d", ev.version) .. ',"type":'
  encode(ev.type, out, 0, seen)
  out[#out + 1] = ',"time":"' .. time.iso(ev.time) .. '","id":'
  encode(ev.id, out, 0, seen)
  out[#out + 1] = ',"schema":' .. string.format("%d", ev.schema or 1)
  if ev.meta ~= nil then
    out[#out + 1] = ',"meta":'
    encode(ev.meta, out, 0, seen)
  end
  if ev.data ~= nil then
    out[#out + 1] = ',"data":'
    encode(ev.data, out, 0, seen)
  end
  -- Personal data (chronicle.personal): in the clear, as the store reads it; an erased event
  -- says so and has none.
  if ev.subject ~= nil then
    out[#out + 1] = ',"subject":'
    encode(ev.subject, out, 0, seen)
  end
  if ev.personal ~= nil then
    out[#out + 1] = ',"personal":'
    encode(ev.personal, out, 0, seen)
  end
  if ev.erased then out[#out + 1] = ',"erased":true' end
  out[#out + 1] = "}"
  return table.concat(out)
end

local event_fields = { position = true, stream = true, version = true, type = true, time = true, id = true,
                       schema = true, meta = true, data = true, subject = true, personal = true, erased = true }

--- Parses one exported event line into what `store:append` takes:
-- `stream, {type=, id=, time=, schema=, meta=, data=}, position`. Returns nil and a message when invalid.
function M.decode_event(line)
  local ok, raw = pcall(decoder.decode, line)
  if not ok then return nil, (tostring(raw):gsub("^Expected", "expected")) end
  if type(raw) ~= "table" or (next(raw) ~= nil and is_array(raw)) then return nil, "expected a JSON object (one event)" end
  for k in pairs(raw) do
    if not event_fields[k] then return nil, "unknown field '" .. tostring(k) .. "'" end
  end
  local function field(name)
    local v = raw[name]
    if v == nil or v == json_null then return nil end
    local value, err = M.resolve(v, name)
    if value == nil and err then error({ json_error = err }, 0) end
    return value
  end
  local good, result = pcall(function()
    local stream, type_name = field("stream"), field("type")
    if type(stream) ~= "string" or stream == "" then decode_error("stream", "a non-empty string is required") end
    if type(type_name) ~= "string" or type_name == "" then decode_error("type", "a non-empty string is required") end
    local ev = { type = type_name, meta = field("meta"), data = field("data") }
    ev.subject, ev.personal = field("subject"), field("personal")
    if ev.subject ~= nil and type(ev.subject) ~= "string" then decode_error("subject", "expected a string") end
    if ev.personal ~= nil and type(ev.personal) ~= "table" then decode_error("personal", "expected an object") end
    local id = field("id")
    if id ~= nil and type(id) ~= "string" then decode_error("id", "expected a UUID string") end
    ev.id = id
    local t = raw.time
    if type(t) == "string" then
      ev.time = time.parse_iso(t)
      if not ev.time then decode_error("time", "expected ISO 8601 UTC time like 2026-01-02T03:04:05.123456789Z") end
    elseif t ~= nil and t ~= json_null then
      ev.time = field("time")
      if math.type(ev.time) ~= "integer" then decode_error("time", "expected an ISO 8601 time or integer nanoseconds") end
    end
    local schema = field("schema")
    if schema ~= nil and math.type(schema) ~= "integer" then decode_error("schema", "expected an integer") end
    ev.schema = schema
    local position = field("position")
    if position ~= nil and math.type(position) ~= "integer" then decode_error("position", "expected an integer") end
    return { stream = stream, event = ev, position = position }
  end)
  if not good then
    if type(result) == "table" and result.json_error then return nil, result.json_error end
    error(result, 0)
  end
  return result
end

return M
