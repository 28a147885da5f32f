-- wrk: the HTTP ceiling, nginx answering `return 201` to the same POST.

function init(args)
   body = string.rep("x", 200)
end

function request()
   return wrk.format("POST", "/ceiling",
                     { ["Content-Type"] = "application/json" },
                     '{"status":200,"method":"GET","elapsedTime":1,"x":"' ..
                     body .. '"}')
end

function done(summary, latency, requests)
   io.write(string.format("BENCH p50=%.3f p99=%.3f\n",
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000))
end
