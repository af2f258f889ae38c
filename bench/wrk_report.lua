-- wrk script for bench.scale: optional random unit in the path, and one JSON line of results.
-- usage: wrk ... -s bench/wrk_report.lua URL -- [PATH_TEMPLATE UNITS]
-- PATH_TEMPLATE has one %d (or %04d) replaced by a random unit number 1..UNITS for each request.

local template, units = nil, 0

function init(args)
  if args[1] ~= nil and args[2] ~= nil then
    template, units = args[1], tonumber(args[2])
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  if template ~= nil then
    return wrk.format(nil, string.format(template, math.random(1, units)))
  end
  return wrk.format(nil)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"requests":%d,"duration_s":%.2f,' ..
    '"errors_status":%d,"errors_socket":%d}\n',
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout))
end
