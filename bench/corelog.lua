-- wrk: POST /core-log/{trafficSourceId} with a distinct request/response
-- pair per request.  The pairs were made by bench/run.sh with ids built
-- from a counter: requests 00000000-0000-4000-8000-<12 hex>, responses
-- 00000000-0000-4000-9000-<12 hex>.  Thread k of n uses k, k+n, k+2n...

local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
   base = tonumber(os.getenv("BENCH_OFFSET") or "0")
   ts = os.getenv("BENCH_TS")
   cp = os.getenv("BENCH_CP")
   token = os.getenv("BENCH_TOKEN")
   counter = id
end

function request()
   local n = base + counter + 1
   counter = counter + nthreads
   local rq = string.format("00000000-0000-4000-8000-%012x", n)
   local rs = string.format("00000000-0000-4000-9000-%012x", n)
   local body = string.format(
      '{"status":200,"method":"GET","elapsedTime":%d.5,' ..
      '"corePathnameId":"%s","requestId":"%s","responseId":"%s"}',
      n % 1000, cp, rq, rs)
   return wrk.format("POST", "/core-log/" .. ts,
                     { ["Authorization"] = "Bearer " .. token,
                       ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
   io.write(string.format("BENCH p50=%.3f p99=%.3f\n",
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000))
end
