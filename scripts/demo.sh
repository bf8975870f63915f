#!/usr/bin/env bash
# The main job, on a fresh machine: a real failover of the local simulated
# estate (workflows/estate/) on the embedded SQLite default (lifeboat.db).
# Resets the estate, takes its primary site dc01 down, then runs
# workflows/failover.yaml with live progress; exits with the run's result.
# Notifications are written to scripts/demo/notifications/ (the `file`
# channels of scripts/demo/lifeboat.toml) and listed at the end.
#   scripts/demo.sh [extra `lifeboat run` arguments, e.g. -i severity=P1]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p lifeboat-orchestrator --bin lifeboat --bin lifeboat-exec
estate=workflows/estate/estate
config=scripts/demo/lifeboat.toml
notifications=scripts/demo/notifications
"$estate" reset >/dev/null
"$estate" up >/dev/null
"$estate" break dc01 >/dev/null
rm -rf "$notifications"
echo "estate: dc01 (primary) is down; dc02 and dc03 replicate. Failing over:"
status=0
"${CARGO_TARGET_DIR:-target}"/release/lifeboat --config "$config" run workflows/failover.yaml \
  -i failed_site=dc01 -i severity=P0 "$@" --wait || status=$?
echo
if compgen -G "$notifications/*" >/dev/null; then
  echo "notifications written to $notifications/ (email as .eml, Slack and PagerDuty as .json):"
  ls -1 "$notifications"
else
  echo "no notification was written to $notifications/"
fi
exit "$status"
