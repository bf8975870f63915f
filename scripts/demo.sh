#!/usr/bin/env bash
# The main job, on a fresh machine: a real failover of the local simulated
# estate (workflows/estate/) on the embedded SQLite default (lifeboat.db).
# Resets the estate, takes its primary site dc01 down, then runs
# workflows/failover.yaml with live progress; exits with the run's result.
#   scripts/demo.sh [extra `lifeboat run` arguments, e.g. -i severity=P1]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p lifeboat-orchestrator --bin lifeboat
estate=workflows/estate/estate
"$estate" reset >/dev/null
"$estate" up >/dev/null
"$estate" break dc01 >/dev/null
echo "estate: dc01 (primary) is down; dc02 and dc03 replicate. Failing over:"
exec target/release/lifeboat run workflows/failover.yaml -i failed_site=dc01 -i severity=P0 "$@" --wait
