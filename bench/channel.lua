-- wrk: POST /api/v1/log/create with distinct bodies.

local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   ch = os.getenv("BENCH_CHANNEL")
   token = os.getenv("BENCH_TOKEN")
   prefix = (os.getenv("BENCH_RUN") or "0") .. "-" .. id
end

function request()
   counter = counter + 1
   local body = string.format(
      '{"channel_id":"%s","label":"checkout %s-%d","reference":"user-%d",' ..
      '"type":"action","tags":"bench, web","custom_references":' ..
      '{"order":"o-%d","amount":%d}}',
      ch, prefix, counter, counter % 997, counter, counter % 500)
   return wrk.format("POST", "/api/v1/log/create",
                     { ["Authorization"] = "Bearer " .. token,
                       ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
   io.write(string.format("BENCH p50=%.3f p99=%.3f\n",
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000))
end
