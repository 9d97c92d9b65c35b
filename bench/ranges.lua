-- wrk script: GETs of random 1 MiB ranges of one object.
-- BENCH_SIZE (object bytes) and BENCH_SPAN (range bytes) come from the environment.
-- Each thread's sequence is seeded by its number, so every server gets the same ranges.
-- The summary goes out as one "BENCH ..." line for bench/wrk.py to parse.

local size = tonumber(os.getenv("BENCH_SIZE"))
local span = tonumber(os.getenv("BENCH_SPAN"))
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("seed", counter)
end

function init(args)
   math.randomseed(seed)
end

function request()
   local first = math.random(0, size - span)
   local range = string.format("bytes=%d-%d", first, first + span - 1)
   return wrk.format("GET", nil, { ["Range"] = range })
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
