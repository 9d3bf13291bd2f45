--- Event times (integer nanoseconds since the Unix epoch, UTC) as ISO 8601
-- text and back, exactly: "2026-11-23T10:47:38.833781299Z".
-- @module chronicle.cli.time
local M = {}

local NS = 1000000000

-- Howard Hinnant's civil-date algorithms: exact in integers, no os.date range limits.
local function civil_from_days(z)
  z = z + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- ISO 8601 UTC text of `ns`; `digits` fraction digits (9, the default, is exact).
function M.iso(ns, digits)
  digits = digits or 9
  local secs, frac = ns // NS, ns % NS
  local days, rest = secs // 86400, secs % 86400
  local y, m, d = civil_from_days(days)
  local text = string.format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, rest // 3600, rest % 3600 // 60, rest % 60)
  if digits > 0 then text = text .. "." .. string.format("%09d", frac):sub(1, digits) end
  return text .. "Z"
end

--- Nanoseconds of an ISO 8601 UTC text ("YYYY-MM-DDTHH:MM:SS[.fraction]Z"), or nil.
function M.parse_iso(text)
  if type(text) ~= "string" then return nil end
  local y, mo, d, h, mi, s, frac = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$")
  if not y then return nil end
  y, mo, d, h, mi, s = math.tointeger(tonumber(y)), math.tointeger(tonumber(mo)), math.tointeger(tonumber(d)),
                       math.tointeger(tonumber(h)), math.tointeger(tonumber(mi)), math.tointeger(tonumber(s))
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 59 or #frac > 9 then return nil end
  local days = days_from_civil(y, mo, d)
  if select(3, civil_from_days(days)) ~= d then return nil end   -- 2026-02-30 and the like
  local ns = math.tointeger(tonumber(frac .. string.rep("0", 9 - #frac))) or 0
  return ((days * 86400 + h * 3600 + mi * 60 + s) * NS) + ns
end

return M
