-- wrk script for scripts/bench-hooks.sh: POST /hooks/alertmanager with an
-- Alertmanager v4 payload.
--   MODE=distinct  every request carries a new fingerprint (one run each);
--                  each connection waits DELAY_MS between requests (pacing).
--   MODE=same      every request carries the same alert; each thread stops
--                  after LIMIT requests.
local mode = os.getenv("MODE") or "distinct"
local token = os.getenv("HOOK_TOKEN") or ""
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local limit = tonumber(os.getenv("LIMIT") or "0")
local run_tag = os.getenv("RUN_TAG") or "bench"

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   n = 0
   answered = 0
   accepted = 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. token
end

local function body(fingerprint)
   return '{"version":"4","status":"firing","receiver":"lifeboat",' ..
      '"groupLabels":{"alertname":"BenchDown"},"commonLabels":{"alertname":"BenchDown"},' ..
      '"externalURL":"http://bench","alerts":[{"status":"firing",' ..
      '"labels":{"alertname":"BenchDown","site":"dc01","instance":"' .. fingerprint .. '"},' ..
      '"annotations":{},"startsAt":"2024-05-01T10:00:00Z","fingerprint":"' .. fingerprint .. '"}]}'
end

function request()
   n = n + 1
   local fp
   if mode == "same" then
      fp = run_tag .. "-same"
   else
      fp = string.format("%s-%d-%d", run_tag, tid, n)
   end
   return wrk.format(nil, "/hooks/alertmanager", nil, body(fp))
end

function delay()
   return delay_ms
end

function response(status, headers, body)
   answered = answered + 1
   if status == 202 then
      accepted = accepted + 1
   end
   if limit > 0 and answered >= limit then
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local a = 0
   for _, t in ipairs(threads) do
      a = a + (t:get("accepted") or 0)
   end
   io.write(string.format("RESULT requests=%d accepted=%d non2xx=%d connect_err=%d read_err=%d timeouts=%d seconds=%.1f rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
      summary.requests, a, summary.errors.status, summary.errors.connect, summary.errors.read,
      summary.errors.timeout, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000))
end
