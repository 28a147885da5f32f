-- wrk: POST one body, from the file BENCH_BODY_FILE, to BENCH_BODY_PATH
-- (default /api/v1/log/create), again and again: the cost of one shape of
-- body (make bench's "body:" runs).

function init(args)
   local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
   body = f:read("*a")
   f:close()
   path = os.getenv("BENCH_BODY_PATH") or "/api/v1/log/create"
   token = os.getenv("BENCH_TOKEN")
end

function request()
   return wrk.format("POST", path,
                     { ["Authorization"] = "Bearer " .. token,
                       ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
   io.write(string.format("BENCH p50=%.3f p99=%.3f\n",
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000))
end
