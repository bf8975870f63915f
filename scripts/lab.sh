#!/usr/bin/env bash
# Watch a real failover: the lab comes up (Postgres primary + streaming
# standby, BIND9, HAProxy on loopback: lab/lab.sh), the application writes
# rows through HAProxy, the primary is stopped, and workflows/lab/pg-failover.yaml
# fails over with live progress. Then before/after: which node takes writes,
# what DNS answers, HAProxy's servers, rows lost, and the time against the RTO.
#   scripts/lab.sh [--failback] [--keep]
#     --failback  then run workflows/lab/pg-failback.yaml and show the lab again
#     --keep      leave the lab running (lab/lab.sh down DIR stops it)
set -euo pipefail
cd "$(dirname "$0")/.."

failback=false keep=false
for arg in "$@"; do
    case "$arg" in
    --failback) failback=true ;;
    --keep) keep=true ;;
    *) echo "usage: scripts/lab.sh [--failback] [--keep]" >&2; exit 2 ;;
    esac
done

bash scripts/deps.sh
cargo build --release -q -p lifeboat-orchestrator --bin lifeboat --bin lifeboat-exec
# Where cargo put it (CARGO_TARGET_DIR moves it).
lifeboat=${CARGO_TARGET_DIR:-$PWD/target}/release/lifeboat

echo "== bringing the lab up"
eval "$(bash lab/lab.sh up)"
if ! $keep; then trap 'bash lab/lab.sh down "$LIFEBOAT_LAB_DIR" >/dev/null 2>&1' EXIT; fi
export LIFEBOAT_DATABASE_URL="sqlite://$LIFEBOAT_LAB_DIR/lab.db"
psql=/usr/lib/postgresql/15/bin/psql
"$psql" "$LIFEBOAT_LAB_WRITE_URL" -Xq -c \
    "INSERT INTO orders (note) SELECT 'order ' || n FROM generate_series(1, 100) AS n"
committed=$("$psql" "$LIFEBOAT_LAB_PRIMARY_URL" -XtAc "SELECT count(*) FROM orders")

echo
echo "== before: the application wrote $committed orders through HAProxy"
bash lab/lab.sh status "$LIFEBOAT_LAB_DIR"

echo
echo "== stopping the primary (127.0.0.1)"
bash lab/lab.sh break "$LIFEBOAT_LAB_DIR" stop-primary

echo
echo "== failing over: lifeboat run workflows/lab/pg-failover.yaml -i severity=P0 --wait"
status=0
"$lifeboat" --config lab/lifeboat.toml run workflows/lab/pg-failover.yaml -i severity=P0 --wait || status=$?

echo
echo "== after"
bash lab/lab.sh status "$LIFEBOAT_LAB_DIR"
now=$("$psql" "$LIFEBOAT_LAB_STANDBY_URL" -XtAc "SELECT count(*) FROM orders WHERE note LIKE 'order %'" 2>/dev/null || echo "?")
echo "rows lost: $((committed - now)) of $committed committed before the primary stopped"
run=$("$lifeboat" --config lab/lifeboat.toml runs --json --limit 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
"$lifeboat" --config lab/lifeboat.toml show "$run" --json | python3 -c '
import json, sys
run = json.load(sys.stdin)
started = run["started_at"]
def ms(v):
    from datetime import datetime
    return v if isinstance(v, int) else int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
write = [a for s in run["steps"] if s["id"] == "verify_write" for a in s.get("attempts", []) if a.get("status") == "succeeded"]
took = (ms(run["finished_at"]) - ms(started)) if run.get("finished_at") else None
first = (ms(write[-1]["finished_at"]) - ms(started)) if write else None
print(f"time: first write accepted on the new primary {first} ms after the run started; run {took} ms; RTO 30000 ms")
'
if $failback && [[ $status -eq 0 ]]; then
    echo
    echo "== failing back: lifeboat run workflows/lab/pg-failback.yaml -i lab_dir=… -i auto=true --wait"
    "$lifeboat" --config lab/lifeboat.toml run workflows/lab/pg-failback.yaml \
        -i lab_dir="$LIFEBOAT_LAB_DIR" -i auto=true --wait || status=$?
    echo
    bash lab/lab.sh status "$LIFEBOAT_LAB_DIR"
fi
if $keep; then echo "the lab is still up: . $LIFEBOAT_LAB_DIR/lab.env; lab/lab.sh down $LIFEBOAT_LAB_DIR"; fi
exit "$status"
