#!/usr/bin/env bash
# Load benchmark of the webhook path (not a test; run by hand):
#   1. ~RATE alerts/s of distinct fingerprints for DURATION seconds against
#      /hooks/alertmanager of a real `lifeboat serve` on SQLite; prints the
#      latency percentiles and checks that every accepted alert became
#      exactly one run.
#   2. The same alert 5,000 times from 50 connections: exactly one run.
#
#   scripts/bench-hooks.sh [RATE=500] [DURATION=30]
#
# Needs `wrk` (apt-get install wrk) and python3. wrk is closed-loop and its
# Lua has no wall clock, so the rate is paced per connection with wrk's
# delay() hook: CONNECTIONS connections, each waiting
# 1000*CONNECTIONS/RATE - LATENCY_MS between requests (LATENCY_MS: the
# expected response time). The achieved rate is printed: read it, not RATE.
# The server runs with the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-500}
DURATION=${2:-30}
CONNECTIONS=${CONNECTIONS:-50}
LATENCY_MS=${LATENCY_MS:-40}
SAME_COUNT=5000
command -v wrk >/dev/null || { echo "bench-hooks: wrk not found (apt-get install wrk)" >&2; exit 2; }

cargo build --release -p lifeboat-orchestrator --bin lifeboat --bin lifeboat-exec >&2
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/lifeboat
DIR=$(mktemp -d /tmp/lifeboat-bench-hooks.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=bench-$RANDOM$RANDOM
SERVE_PID=""
cleanup() {
    if [[ -n "$SERVE_PID" ]]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR/workflows"
cat >"$DIR/lifeboat.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[[users]]
name = "bench"
token_env = "BENCH_USER_TOKEN"
roles = ["admin"]
[hooks.alertmanager]
format = "alertmanager"
bearer_token_env = "BENCH_HOOK_TOKEN"
TOML
# One set step, then a gate: the executor does real work per run and every
# run stays active, so repeats of an alert must be deduplicated.
cat >"$DIR/workflows/bench.yaml" <<'YAML'
name: bench
inputs:
  instance: { type: string, required: true }
triggers:
  - webhook: alertmanager
    match: { alertname: BenchDown }
    inputs: { instance: "{{alert.labels.instance}}" }
steps:
  note: { uses: set, with: { instance: "{{inputs.instance}}" } }
  gate: { needs: [note], uses: approval, with: { approvers: [bench] } }
YAML

export BENCH_HOOK_TOKEN=$TOKEN BENCH_USER_TOKEN=user-$TOKEN
(cd "$DIR" && exec "$BIN" --database-url "sqlite://$DIR/lifeboat.db" serve) >"$DIR/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { cat "$DIR/serve.log"; exit 1; }

runs_json() {
    (cd "$DIR" && "$BIN" --database-url "sqlite://$DIR/lifeboat.db" runs --json --limit 1000000)
}

DELAY_MS=$(( 1000 * CONNECTIONS / RATE - LATENCY_MS ))
(( DELAY_MS >= 0 )) || DELAY_MS=0
echo "== $RATE alerts/s (paced: $CONNECTIONS connections x ${DELAY_MS}ms) of distinct fingerprints for ${DURATION}s"
MODE=distinct HOOK_TOKEN=$TOKEN DELAY_MS=$DELAY_MS RUN_TAG=d wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency \
    -s scripts/bench-hooks.lua "http://127.0.0.1:$PORT" | tee "$DIR/distinct.txt"
sleep 1
runs_json | python3 -c '
import json, sys, re
runs = json.load(sys.stdin)
fps = [r["trigger"].get("fingerprint") for r in runs]
result = open(sys.argv[1]).read()
accepted = int(re.search(r"accepted=(\d+)", result).group(1))
requests = int(re.search(r"requests=(\d+)", result).group(1))
connections = int(sys.argv[2])
print(f"runs: {len(runs)}, distinct fingerprints: {len(set(fps))}, 202 responses: {accepted} of {requests}")
assert len(set(fps)) == len(fps), "an alert started two runs"
assert accepted == requests, "some alerts were refused"
# wrk stops with up to one request per connection in flight: the server may
# have started those runs without wrk counting the answer.
assert accepted <= len(runs) <= accepted + connections, "accepted alerts and runs differ"
print(f"OK: every accepted alert became exactly one run ({len(runs) - accepted} more were in flight when wrk stopped)")
' "$DIR/distinct.txt" "$CONNECTIONS"
BEFORE=$(runs_json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

echo "== the same alert $SAME_COUNT times from 50 connections"
MODE=same HOOK_TOKEN=$TOKEN LIMIT=$(( SAME_COUNT / 2 )) RUN_TAG=s wrk -t2 -c50 -d30s --timeout 10s --latency \
    -s scripts/bench-hooks.lua "http://127.0.0.1:$PORT" | tee "$DIR/same.txt"
sleep 1
runs_json | python3 -c '
import json, sys
runs = [r for r in json.load(sys.stdin) if r["trigger"].get("fingerprint") == "s-same"]
print(f"runs of the repeated alert: {len(runs)}")
assert len(runs) == 1, "the repeated alert must start exactly one run"
print("OK: exactly one run")
'
echo "== serve log (errors only)"
grep -iE "error|panic" "$DIR/serve.log" | head -20 || true
