-- wrk: POST /v1/logtanks with a distinct resource per request.

local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   group = os.getenv("BENCH_GROUP")
   stream = os.getenv("BENCH_STREAM")
   token = os.getenv("BENCH_TOKEN")
   run = os.getenv("BENCH_RUN") or "0"
end

function request()
   counter = counter + 1
   local body = string.format(
      '{"logtank":{"resource_type":"LISTENER",' ..
      '"resource_id":"res-%s-%d-%d","log_group_id":"%s",' ..
      '"log_stream_id":"%s"}}', run, id, counter, group, stream)
   return wrk.format("POST", "/v1/logtanks",
                     { ["X-Auth-Token"] = token,
                       ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
   io.write(string.format("BENCH p50=%.3f p99=%.3f\n",
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000))
end
