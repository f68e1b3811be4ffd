-- wrk script: the requests of a list of paths, in order, sent at a fixed rate.
--
--   wrk -t1 -cCONNECTIONS -dSECONDS -s bench/wrk_rate.lua http://HOST:PORT -- PATHS RATE
--
-- PATHS is a file of request paths, one a line; RATE is requests per second (run one
-- thread: the schedule is per thread), or 0 for none (a closed loop: capacity). wrk by itself sends the next request as soon
-- as a connection's answer arrives; here each request gets a slot on a fixed timetable
-- (start + k / RATE, from the monotonic clock through LuaJIT's FFI) and waits for it,
-- so the rate does not follow the server's speed. A request can only go out late when
-- every connection is still waiting for an answer at its slot: those are counted
-- (`late`, with the worst delay) and make the run invalid, so give enough connections.
-- done() prints one JSON line: counts, errors, latency percentiles in microseconds.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } wrk_rate_timespec;
int clock_gettime(int clock, wrk_rate_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("wrk_rate_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per thread (globals, read by done() through thread:get).
paths = {}
interval_ms = 0
next_path = 0
slot = 0
start_ms = nil
late = 0
worst_late_ms = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      paths[#paths + 1] = line
    end
  end
  -- RATE 0: no timetable, each request as soon as a connection is free (closed loop).
  local rate = tonumber(args[2])
  interval_ms = rate > 0 and 1000 / rate or 0
  wrk.headers["Accept-Encoding"] = "gzip"
end

function request()
  next_path = next_path % #paths + 1
  return wrk.format("GET", paths[next_path])
end

function delay()
  if interval_ms == 0 then
    return 0
  end
  local now = now_ms()
  if start_ms == nil then
    start_ms = now
  end
  local due = start_ms + slot * interval_ms
  slot = slot + 1
  local wait = due - now
  if wait < -1 then
    late = late + 1
    worst_late_ms = math.max(worst_late_ms, -wait)
  end
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end

function done(summary, latency, requests)
  local late_total, worst = 0, 0
  for _, thread in ipairs(threads) do
    late_total = late_total + thread:get("late")
    worst = math.max(worst, thread:get("worst_late_ms"))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "late": %d, "worst_late_ms": %.1f, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, '
      .. '"mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, late_total, worst, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean
  ))
end
