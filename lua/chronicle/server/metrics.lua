--- The server's counters and histograms, written in Prometheus' text format.
-- @module chronicle.server.metrics
local M = {}
M.__index = M

-- Upper bounds (seconds) of the request latency histogram's buckets.
local BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 }

function M.new()
  return setmetatable({ appends = 0, events = 0, commits = 0, subscribers = 0, requests = {},
                        latency = {} }, M)
end

--- Counts one request of `route` answered with `status` after `seconds`.
function M:request(route, status, seconds)
  local key = route .. "\0" .. status
  self.requests[key] = (self.requests[key] or 0) + 1
  local h = self.latency[route]
  if not h then
    h = { counts = {}, sum = 0, n = 0 }
    for i = 1, #BUCKETS do h.counts[i] = 0 end
    self.latency[route] = h
  end
  for i, le in ipairs(BUCKETS) do
    if seconds <= le then h.counts[i] = h.counts[i] + 1 end
  end
  h.sum, h.n = h.sum + seconds, h.n + 1
end

--- Counts one commit holding `entries` appends of `events` events in all.
function M:commit(entries, events)
  self.commits = self.commits + 1
  self.appends = self.appends + entries
  self.events = self.events + events
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function label(v) return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" })) end

--- The metrics as Prometheus text. `store` gives the head and projection lags.
function M:text(store)
  local out = {}
  local function add(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  add("# HELP chronicle_events_appended_total Events appended through this server.")
  add("# TYPE chronicle_events_appended_total counter")
  add("chronicle_events_appended_total %d", self.events)
  add("# HELP chronicle_appends_total Append requests committed through this server.")
  add("# TYPE chronicle_appends_total counter")
  add("chronicle_appends_total %d", self.appends)
  add("# HELP chronicle_commits_total Transactions that committed appends (group commit: fewer than appends).")
  add("# TYPE chronicle_commits_total counter")
  add("chronicle_commits_total %d", self.commits)
  add("# HELP chronicle_subscribers Open /subscribe streams.")
  add("# TYPE chronicle_subscribers gauge")
  add("chronicle_subscribers %d", self.subscribers)
  local head = store:head()
  add("# HELP chronicle_head The position of the newest event.")
  add("# TYPE chronicle_head gauge")
  add("chronicle_head %d", head)
  add("# HELP chronicle_projection_lag Events between a projection's checkpoint and the head.")
  add("# TYPE chronicle_projection_lag gauge")
  local status = store:projection_status()
  for _, name in ipairs(sorted_keys(status)) do
    add('chronicle_projection_lag{projection="%s"} %d', label(name), head - (status[name].checkpoint or 0))
  end
  add("# HELP chronicle_http_requests_total HTTP requests by route and status.")
  add("# TYPE chronicle_http_requests_total counter")
  for _, key in ipairs(sorted_keys(self.requests)) do
    local route, status_code = key:match("^(.-)%z(.*)$")
    add('chronicle_http_requests_total{route="%s",code="%s"} %d', label(route), status_code, self.requests[key])
  end
  add("# HELP chronicle_http_request_duration_seconds HTTP request latency by route.")
  add("# TYPE chronicle_http_request_duration_seconds histogram")
  for _, route in ipairs(sorted_keys(self.latency)) do
    local h, r = self.latency[route], label(route)
    for i, le in ipairs(BUCKETS) do
      add('chronicle_http_request_duration_seconds_bucket{route="%s",le="%g"} %d', r, le, h.counts[i])
    end
    add('chronicle_http_request_duration_seconds_bucket{route="%s",le="+Inf"} %d', r, h.n)
    add('chronicle_http_request_duration_seconds_sum{route="%s"} %.6f', r, h.sum)
    add('chronicle_http_request_duration_seconds_count{route="%s"} %d', r, h.n)
  end
  return table.concat(out, "\n") .. "\n"
end

return M
