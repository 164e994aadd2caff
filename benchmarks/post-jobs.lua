-- wrk script for the HTTP benchmark: every request is `POST /jobs?duration_ms=10`, and the
-- summary is printed as one JSON line (latencies in microseconds) for `benchmarks/run`.
wrk.method = "POST"
wrk.path = "/jobs?duration_ms=10"
wrk.headers["Content-Length"] = "0"

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
