--- How the chronicle command shows things: Lua values as readable literals
-- (one line, or indented when long), events as aligned lines, key/value
-- reports and tables, in colour on a terminal; or JSON Lines with --json.
-- @module chronicle.cli.output
local json = require "chronicle.cli.json"
local time = require "chronicle.cli.time"
local terminal = require "chronicle.cli.terminal"

local M = {}

-- ---- values ----

local string_escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
                         ["\0"] = "\\0" }

--- A Lua string literal for `s`: printable UTF-8 kept, everything else escaped.
function M.quote(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and 2 or 0
    local piece = len > 0 and s:sub(i, i + len - 1) or nil
    if piece and len > 1 and utf8.len(piece) == 1 then
      out[#out + 1] = piece
      i = i + len
    else
      local ch = string.char(c)
      out[#out + 1] = string_escapes[ch] or ((c < 32 or c >= 127) and string.format("\\x%02X", c)) or ch
      i = i + 1
    end
  end
  return '"' .. table.concat(out) .. '"'
end

--- A number as Lua would read it back: floats keep a ".0", specials are nan, inf, -inf.
function M.number(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  local s = json.float_text(v)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not ({
    ["and"] = 1, ["break"] = 1, ["do"] = 1, ["else"] = 1, ["elseif"] = 1, ["end"] = 1, ["false"] = 1,
    ["for"] = 1, ["function"] = 1, ["goto"] = 1, ["if"] = 1, ["in"] = 1, ["local"] = 1, ["nil"] = 1,
    ["not"] = 1, ["or"] = 1, ["repeat"] = 1, ["return"] = 1, ["then"] = 1, ["true"] = 1, ["until"] = 1,
    ["while"] = 1 })[k]
end

local function scalar(v, paint)
  local tv = type(v)
  if tv == "string" then return paint("string", M.quote(v)) end
  if tv == "number" then return paint("number", M.number(v)) end
  if tv == "boolean" or tv == "nil" then return paint("boolean", tostring(v)) end
  return paint("dim", tostring(v))
end

-- The keys of `t`: the array part 1..n first, then the rest in a fixed order.
local function ordered_keys(t)
  local n, keys, rest = #t, {}, {}
  for i = 1, n do if rawget(t, i) ~= nil then keys[#keys + 1] = i else n = i - 1; break end end
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then rest[#rest + 1] = k end
  end
  table.sort(rest, function(a, b)
    local ok, less = pcall(json.key_less, a, b)
    if ok then return less end
    return tostring(a) < tostring(b)
  end)
  return keys, rest, n
end

local function key_text(k, paint)
  if is_identifier(k) then return paint("key", k) end
  return "[" .. scalar(k, paint) .. "]"
end

-- Visible length of a text that may hold colour codes.
local function visible_len(s)
  return utf8.len((s:gsub("\27%[[%d;]*m", ""))) or #s
end
M.visible_len = visible_len

-- Keys whose integer values are event or stream times (ns since the epoch), shown with
-- their ISO 8601 text in a comment when `times` is on, the value itself unchanged.
local TIME_KEYS = { time = true, created = true, updated = true }
local FIRST_NS = 10 ^ 15 * 1.0    -- 1970-01-12 in ns: smaller integers are no event times

local function time_text(v, paint)
  return paint("number", M.number(v)) .. " " .. paint("dim", "--[[" .. time.iso(v, 9) .. "]]")
end

local function render(v, paint, width, indent, seen, depth, times)
  if type(v) ~= "table" then return scalar(v, paint) end
  if seen[v] then return paint("dim", "<cycle>") end
  if depth > 50 then return paint("dim", "{...}") end
  local mt = getmetatable(v)
  if mt and mt.__tostring and not mt.__chronicle_list then return paint("dim", tostring(v)) end
  local keys, rest = ordered_keys(v)
  if #keys == 0 and #rest == 0 then return "{}" end
  seen[v] = true
  local parts = {}
  for _, i in ipairs(keys) do parts[#parts + 1] = render(v[i], paint, width, indent .. "  ", seen, depth + 1, times) end
  for _, k in ipairs(rest) do
    local value = v[k]
    local text
    if times and TIME_KEYS[k] and math.type(value) == "integer" and value >= FIRST_NS then
      text = time_text(value, paint)
    else
      text = render(value, paint, width, indent .. "  ", seen, depth + 1, times)
    end
    parts[#parts + 1] = key_text(k, paint) .. " = " .. text
  end
  seen[v] = nil
  local one_line = "{ " .. table.concat(parts, ", ") .. " }"
  if not width or (visible_len(one_line) + #indent <= width and not one_line:find("\n")) then return one_line end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. ",\n" .. indent .. "}"
end

--- One-line Lua-literal text of any value (`paint` from terminal.painter, optional).
function M.inline(v, paint)
  return render(v, paint or terminal.painter(false), nil, "", {}, 0)
end

--- Lua-literal text of any value, broken over indented lines where wider than `width`.
-- `opts.times`: integer `time`, `created` and `updated` fields also show their ISO 8601
-- text, as a Lua comment after the number (`time = 1795...123 --[[2026-11-23T...Z]]`).
function M.pretty(v, paint, width, opts)
  return render(v, paint or terminal.painter(false), width or 80, "", {}, 0, opts and opts.times)
end

-- ---- numbers for people ----

--- 1234567 -> "1,234,567".
function M.count(n)
  local s = string.format("%d", n)
  local sign, digits = s:match("^(%-?)(%d+)$")
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end

--- "1 problem", "2 problems": a count with its noun.
function M.plural(n, noun)
  return M.count(n) .. " " .. noun .. (n == 1 and "" or "s")
end

--- Bytes as "12.3 MiB".
function M.bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i, x = 1, n
  while x >= 1024 and i < #units do x = x / 1024; i = i + 1 end
  if i == 1 then return string.format("%d B", n) end
  return string.format("%.1f %s", x, units[i])
end

--- Seconds as "1:02:03" or "2:03".
function M.duration(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

local function pad(text, width, right)
  local gap = width - visible_len(text)
  if gap <= 0 then return text end
  return right and (string.rep(" ", gap) .. text) or (text .. string.rep(" ", gap))
end
M.pad = pad

-- ---- events ----

local function event_cells(ev, paint, show_meta, time_digits)
  local stream = type(ev.stream) == "string" and utf8.len(ev.stream) and not ev.stream:find("%c")
                 and ev.stream or M.quote(ev.stream)
  local type_name = type(ev.type) == "string" and utf8.len(ev.type) and not ev.type:find("%c")
                    and ev.type or M.quote(ev.type)
  local data = ev.data == nil and "" or M.inline(ev.data, paint)
  if show_meta and ev.meta ~= nil then data = data .. "  " .. paint("dim", "meta " .. M.inline(ev.meta)) end
  return {
    paint("position", M.count(ev.position)),
    paint("dim", time.iso(ev.time, time_digits or 3)),
    paint("stream", stream) .. paint("dim", "@" .. ev.version),
    paint("type", type_name),
    data,
  }
end

--- An event printer: `printer:add(event)` then `printer:flush()`.
-- Human mode buffers up to `buffer` events to size the columns, which then only grow;
-- JSON mode writes one line per event as it comes.
-- @tparam table opts `json` (bool), `out` (file, default io.stdout), `colour` (bool),
--   `buffer` (events held to align, default 1000; 0 writes at once), `flush_each` (bool),
--   `meta` (show each event's metadata after its data), `time_digits` (fraction digits of
--   the times, default 3)
function M.event_printer(opts)
  local out = opts.out or io.stdout
  local paint = terminal.painter(opts.colour)
  local printer = { count = 0 }
  if opts.json then
    function printer.add(_, ev)
      out:write(json.encode_event(ev), "\n")
      printer.count = printer.count + 1
      if opts.flush_each then out:flush() end
    end
    function printer.flush() out:flush() end
    return printer
  end
  local widths, pending, limit = { 0, 0, 0, 0 }, {}, opts.buffer or 1000
  local function write_row(cells)
    out:write(pad(cells[1], widths[1], true), "  ", cells[2], "  ", pad(cells[3], widths[3]), "  ",
              cells[5] == "" and cells[4] or (pad(cells[4], widths[4]) .. "  " .. cells[5]), "\n")
  end
  function printer.add(_, ev)
    local cells = event_cells(ev, paint, opts.meta, opts.time_digits)
    for i = 1, 4 do widths[i] = math.max(widths[i], visible_len(cells[i])) end
    printer.count = printer.count + 1
    if #pending < limit then
      pending[#pending + 1] = cells
      if #pending >= limit then printer:flush() end
      return
    end
    write_row(cells)
    if opts.flush_each then out:flush() end
  end
  -- After a flush, events print at once (the widths found so far only grow).
  function printer.flush()
    for _, cells in ipairs(pending) do write_row(cells) end
    pending = {}
    limit = 0
    out:flush()
  end
  return printer
end

-- ---- reports and tables ----

--- Writes `rows` ({label, value} pairs) as aligned "label  value" lines.
function M.report(rows, out, paint)
  out = out or io.stdout
  paint = paint or terminal.painter(false)
  local w = 0
  for _, row in ipairs(rows) do w = math.max(w, visible_len(row[1])) end
  for _, row in ipairs(rows) do out:write(paint("key", pad(row[1], w)), "  ", row[2], "\n") end
end

--- Writes a table: `headers` (names), `rows` (lists of texts), `right` (set of right-aligned column indexes).
function M.table(headers, rows, right, out, paint)
  out = out or io.stdout
  paint = paint or terminal.painter(false)
  right = right or {}
  local widths = {}
  for i, h in ipairs(headers) do widths[i] = visible_len(h) end
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, visible_len(cell)) end
  end
  local function line(cells, head)
    local parts = {}
    for i, cell in ipairs(cells) do
      local text = i == #cells and not right[i] and cell or pad(cell, widths[i], right[i])
      parts[i] = head and paint("dim", text) or text
    end
    out:write(table.concat(parts, "  "), "\n")
  end
  line(headers, true)
  for _, row in ipairs(rows) do line(row) end
end

--- A JSON object with keys in the given order: `pairs` is a list of {key, value}.
function M.json_object(fields)
  local parts = {}
  for _, f in ipairs(fields) do
    if f[2] ~= nil then parts[#parts + 1] = json.encode(f[1]) .. ":" .. json.encode(f[2]) end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- A stream info as ordered JSON fields (times as ISO 8601).
function M.stream_fields(info)
  return {
    { "stream", info.stream }, { "category", info.category }, { "version", info.version },
    { "count", info.count }, { "first_position", info.first_position }, { "last_position", info.last_position },
    { "created", info.created and time.iso(info.created) }, { "updated", info.updated and time.iso(info.updated) },
  }
end

return M
