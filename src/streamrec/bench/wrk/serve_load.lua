-- One phase of `streamrec bench serve` for wrk (see streamrec/bench/load_wrk.py, which runs it).
--
-- wrk runs one connection per thread (-t C -c C), so on each thread a request is always
-- followed by its own response: this script times each request itself (LuaJIT's FFI gives
-- it clock_gettime) and so can keep only the latencies it measures, e.g. the GET /recommend
-- that follows a user's POST /events, not the POST. wrk's own histogram mixes both.
--
-- Everything comes from the environment (os.getenv works in every Lua state wrk makes):
--   STREAMREC_WRK_MODE         "recommend" or "events"
--   STREAMREC_WRK_USERS/ITEMS  files, one "url-quoted id<TAB>JSON string" line per id
--   STREAMREC_WRK_KEY          the X-API-Key every request sends
--   STREAMREC_WRK_AFTER_EVENT  recommend: share of GETs sent right after an event of that user
--   STREAMREC_WRK_BATCH        events: events per POST
--   STREAMREC_WRK_K            recommend: k
--   STREAMREC_WRK_TS_OFFSET    event timestamp = wall clock + this (newer than the whole log)
--   STREAMREC_WRK_TAG          unique per phase, for unique event ids
--   STREAMREC_WRK_SEED         random seed (each thread adds its number)
--   STREAMREC_WRK_OUT          where done() writes the phase's figures as JSON
--
-- In recommend mode, thread i draws only from its own slice of the users (index mod the
-- number of threads), so no other connection posts an event for a user between this
-- connection's POST /events and its GET /recommend.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } streamrec_timespec;
int clock_gettime(int clock_id, streamrec_timespec *tp);
]]
local REALTIME, MONOTONIC = 0, 1
local timespec = ffi.new("streamrec_timespec")

local function clock(id)
  ffi.C.clock_gettime(id, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local MAX_ERROR_TIMES = 10000

-- main state: the threads, for done()
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

-- thread state (init runs once per thread after setup; wrk's main state calls request()
-- once without init, to count the requests it returns: it gets a plain GET /health)
local mode, users, items, key, after_event, batch, k, ts_offset, tag
local get_headers, post_headers
local counter = 0
local follow = nil -- the user whose GET /recommend follows the event just accepted
local inflight, current, started

function init(args)
  mode = os.getenv("STREAMREC_WRK_MODE") or "recommend"
  key = os.getenv("STREAMREC_WRK_KEY") or ""
  after_event = tonumber(os.getenv("STREAMREC_WRK_AFTER_EVENT") or "0")
  batch = tonumber(os.getenv("STREAMREC_WRK_BATCH") or "1")
  k = tonumber(os.getenv("STREAMREC_WRK_K") or "10")
  ts_offset = tonumber(os.getenv("STREAMREC_WRK_TS_OFFSET") or "0")
  tag = os.getenv("STREAMREC_WRK_TAG") or "wrk"
  local seed = tonumber(os.getenv("STREAMREC_WRK_SEED") or "0")
  math.randomseed(seed * 1000003 + thread_number)

  local function read_ids(path)
    local ids = {}
    for line in io.lines(path) do
      local url, json = line:match("^([^\t]*)\t(.*)$")
      if url then
        ids[#ids + 1] = { url = url, json = json }
      end
    end
    return ids
  end
  local all_users = read_ids(os.getenv("STREAMREC_WRK_USERS"))
  items = read_ids(os.getenv("STREAMREC_WRK_ITEMS"))
  if mode == "recommend" then
    local slices = math.min(tonumber(os.getenv("STREAMREC_WRK_THREADS") or "1"), #all_users)
    local mine = (thread_number - 1) % slices
    users = {}
    for i = 1, #all_users do
      if (i - 1) % slices == mine then
        users[#users + 1] = all_users[i]
      end
    end
  else
    users = all_users
  end

  get_headers = { ["X-API-Key"] = key }
  post_headers = { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }

  -- what done() collects
  latencies_us = {}
  events_posted = 0
  non_2xx = 0
  statuses = {}
  error_times = {}
  versions = {} -- model_version -> { first, last } wall-clock seconds
end

local function event(user, item)
  counter = counter + 1
  return string.format(
    '{"user_id":%s,"item_id":%s,"event_type":"view","timestamp":%.6f,"event_id":"%s-%d-%d"}',
    user.json, item.json, clock(REALTIME) + ts_offset, tag, thread_number, counter
  )
end

local function post_events(body)
  post_headers["Content-Length"] = nil
  return wrk.format("POST", "/events", post_headers, body)
end

local function get_recommend(user)
  return wrk.format("GET", "/recommend/" .. user.url .. "?k=" .. k, get_headers)
end

function request()
  if not users then
    return wrk.format("GET", "/health")
  end
  started = clock(MONOTONIC)
  if mode == "events" then
    inflight = "batch"
    local events = {}
    for i = 1, batch do
      events[i] = event(users[math.random(#users)], items[math.random(#items)])
    end
    return post_events("[" .. table.concat(events, ",") .. "]")
  end
  if follow then
    inflight, current, follow = "get", follow, nil
    return get_recommend(current)
  end
  current = users[math.random(#users)]
  if after_event > 0 and math.random() < after_event then
    inflight = "post"
    return post_events("[" .. event(current, items[math.random(#items)]) .. "]")
  end
  inflight = "get"
  return get_recommend(current)
end

function response(status, headers, body)
  if not users then
    return
  end
  local now = clock(MONOTONIC)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
    if #error_times < MAX_ERROR_TIMES then
      error_times[#error_times + 1] = clock(REALTIME)
    end
    return
  end
  if inflight == "post" then
    events_posted = events_posted + 1
    follow = current
  elseif inflight == "batch" then
    events_posted = events_posted + batch
    latencies_us[#latencies_us + 1] = (now - started) * 1e6
  else
    latencies_us[#latencies_us + 1] = (now - started) * 1e6
    local version = body:match('"model_version":"([^"]*)"')
    if version then
      local seen = versions[version]
      local wall = clock(REALTIME)
      if seen then
        seen[2] = wall
      else
        versions[version] = { wall, wall }
      end
    end
  end
end

local function json_numbers(values, format)
  local parts = {}
  for i = 1, #values do
    parts[i] = string.format(format, values[i])
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- This thread's figures as one JSON object (thread state; see done()).
local function figures()
  local by_status, seen = {}, {}
  for status, count in pairs(statuses) do
    by_status[#by_status + 1] = string.format('"%d":%d', status, count)
  end
  for version, span in pairs(versions) do
    seen[#seen + 1] = string.format('"%s":[%.6f,%.6f]', version, span[1], span[2])
  end
  return string.format(
    '{"events_posted":%d,"non_2xx":%d,"statuses":{%s},"versions":{%s},"error_times":%s,"latencies_us":%s}',
    events_posted, non_2xx, table.concat(by_status, ","), table.concat(seen, ","),
    json_numbers(error_times, "%.6f"), json_numbers(latencies_us, "%.1f")
  )
end

-- wrk's thread:get copies numbers and strings, but tables corrupt the Lua stack (wrk 4.1 pops
-- one value too many for each table, and crashes on nested ones). So done() reads one string
-- per thread: looking up the absent global `streamrec_figures` builds it, through _G's __index.
-- done() runs after every thread has stopped, so nothing else uses the thread's state then.
setmetatable(_G, {
  __index = function(_, name)
    if name == "streamrec_figures" and users then
      return figures()
    end
  end,
})

function done(summary, latency, requests)
  local per_thread = {}
  for i, thread in ipairs(threads) do
    per_thread[i] = thread:get("streamrec_figures")
  end
  local errors = summary.errors
  local out = assert(io.open(os.getenv("STREAMREC_WRK_OUT"), "w"))
  out:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"threads":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.timeout, table.concat(per_thread, ",")
  ))
  out:close()
end
