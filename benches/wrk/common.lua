-- Shared by the wrk scripts of benches/load.sh: prints one machine-readable line after a run.
-- Latency percentiles come from wrk's own HDR histogram (microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d bytes=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end

-- Paced runs (WRK_PACE_MS set): after each response a connection waits 0 to 2x that many milliseconds (mean:
-- the given value) before its next request, so the offered load stays below saturation and the connections do
-- not fire in lock-step; latency is then the work itself rather than queueing behind the other connections.
local pace = tonumber(os.getenv("WRK_PACE_MS") or "")
if pace then
  function delay()
    return math.random(0, 2 * pace)
  end
end
