#!/usr/bin/env bash
# Benchmark: the lab failover's wall time, from the start of the run to the
# first write accepted on the new primary (verify_write's successful attempt
# ending), measured through the real binary against the real lab servers.
# Each round: the primary is stopped, pg-failover runs (P0), then
# pg-failback restores the lab (its time is reported too).
#   scripts/bench-lab.sh [ROUNDS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

bash scripts/deps.sh
cargo build --release -q -p lifeboat-orchestrator --bin lifeboat --bin lifeboat-exec
# Where cargo put it (CARGO_TARGET_DIR moves it).
lifeboat=${CARGO_TARGET_DIR:-$PWD/target}/release/lifeboat
eval "$(bash lab/lab.sh up 2>/dev/null)"
trap 'bash lab/lab.sh down "$LIFEBOAT_LAB_DIR" >/dev/null 2>&1' EXIT
export LIFEBOAT_DATABASE_URL="sqlite://$LIFEBOAT_LAB_DIR/lab.db"
lb() { "$lifeboat" --config lab/lifeboat.toml "$@"; }

# ms RUN_ID STEP: ms from the run's start to STEP's last successful attempt's end.
measure() {
    lb show "$1" --json | python3 -c '
import json, sys
from datetime import datetime
def ms(v):
    return v if isinstance(v, int) else int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
run, step = json.load(sys.stdin), sys.argv[1]
ends = [ms(a["finished_at"]) for s in run["steps"] if s["id"] == step for a in s.get("attempts", []) if a.get("status") == "succeeded"]
print(ends[-1] - ms(run["started_at"]) if ends and run["status"] == "succeeded" else "FAILED:" + run["status"])
' "$2"
}

failovers=() failbacks=()
for round in $(seq 1 "$rounds"); do
    bash lab/lab.sh break "$LIFEBOAT_LAB_DIR" stop-primary 2>/dev/null
    lb run workflows/lab/pg-failover.yaml -i severity=P0 --wait --json >/dev/null || true
    id=$(lb runs --json --limit 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
    failovers+=("$(measure "$id" verify_write)")
    lb run workflows/lab/pg-failback.yaml -i lab_dir="$LIFEBOAT_LAB_DIR" -i auto=true --wait --json >/dev/null || true
    id=$(lb runs --json --limit 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
    failbacks+=("$(measure "$id" summary)")
    echo "round $round: failover to first write ${failovers[-1]} ms, failback ${failbacks[-1]} ms"
done
python3 - "${failovers[*]}" "${failbacks[*]}" <<'PY'
import sys, statistics
for name, text, target in (("failover (run start -> first write on the new primary)", sys.argv[1], "; target < 10000 ms"), ("failback (whole run)", sys.argv[2], "")):
    values = [int(v) for v in text.split() if v.lstrip("-").isdigit()]
    failed = [v for v in text.split() if not v.lstrip("-").isdigit()]
    if values:
        values.sort()
        print(f"{name}: median {statistics.median(values):.0f} ms, min {values[0]} ms, max {values[-1]} ms over {len(values)} runs{target}" + (f"; {len(failed)} failed" if failed else ""))
    else:
        print(f"{name}: every run failed: {failed}")
PY
