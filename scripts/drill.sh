#!/usr/bin/env bash
# Rehearses every runbook: each drill scenario (`drills:`) of the five
# example workflows runs as a drill (`lifeboat drill WORKFLOW --scenario NAME
# --wait`) against a fresh simulated estate (workflows/estate/, reset before
# each scenario), on a throwaway SQLite database. Prints a verdict table with
# each drill's recovery time; exits non-zero if any scenario's verdict failed.
# Notifications never page anyone: scripts/demo/lifeboat.toml's `[drill]
# channels` write them to scripts/demo/drills/.
#   scripts/drill.sh [WORKFLOW...]   (default: all five; e.g. failover backup)
#   PROFILE=debug scripts/drill.sh   (use the debug build instead of release)
#   KEEP=1 ...                       (keep the database and estate afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
case "$profile" in
    release) cargo build --release -q -p lifeboat-orchestrator -p lifeboat-estate --bin lifeboat --bin lifeboat-exec --bin estate ;;
    debug) cargo build -q -p lifeboat-orchestrator -p lifeboat-estate --bin lifeboat --bin lifeboat-exec --bin estate ;;
    *) echo "PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
target="${CARGO_TARGET_DIR:-target}/$profile"
lifeboat="$target/lifeboat"
config=scripts/demo/lifeboat.toml

work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-drill.XXXXXX")
estate=workflows/estate/estate
export ESTATE_BIN="$PWD/$target/estate"
export ESTATE_DIR="$work/estate"
export ESTATE_PORT="${ESTATE_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export LIFEBOAT_DATABASE_URL="sqlite://$work/drills.db"
# Backups of the rehearsal estate are encrypted with a throwaway passphrase.
export LIFEBOAT_SECRET_BACKUP_PASSPHRASE="${LIFEBOAT_SECRET_BACKUP_PASSPHRASE:-drill-only-passphrase}"
url="http://127.0.0.1:$ESTATE_PORT"
cleanup() {
    "$estate" down >/dev/null 2>&1 || true
    if [[ -n "${KEEP:-}" ]]; then
        echo "kept $work (lifeboat report RUN with LIFEBOAT_DATABASE_URL=$LIFEBOAT_DATABASE_URL)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
"$estate" up >/dev/null
rm -rf scripts/demo/drills

# The inputs that point each runbook at the rehearsal estate and its files
# (a scenario's own inputs come from its file; these override none of them).
inputs_of() {
    case "$1" in
        failover | failback) echo "-i estate_url=$url" ;;
        backup) echo "-i estate_url=$url -i backup_dir=$work/backups -i offsite_dir=$work/offsite" ;;
        restore-test) echo "-i backup_dir=$work/offsite -i scratch_dir=$work/scratch" ;;
        *) ;;
    esac
}

# backup before restore-test: a restore drill restores the backup drill's.
workflows=("$@")
[[ ${#workflows[@]} -gt 0 ]] || workflows=(failover failback backup restore-test crisis-escalation)

started=$(date +%s%N)
rows=()
failed=0
for wf in "${workflows[@]}"; do
    file="workflows/$wf.yaml"
    scenarios=$("$lifeboat" --config "$config" drills "$file" --json |
        python3 -c 'import json, sys
for w in json.load(sys.stdin)["freshness"]:
    for s in w["scenarios"]:
        print(s["scenario"])')
    for scenario in $scenarios; do
        "$estate" reset >/dev/null
        out="$work/$wf.$scenario.json"
        # shellcheck disable=SC2046  # one word per input
        "$lifeboat" --config "$config" drill "$file" --scenario "$scenario" \
            $(inputs_of "$wf") --wait --json >"$out" 2>"$work/$wf.$scenario.log" || true
        row=$(python3 - "$out" "$wf" "$scenario" <<'PY'
import json, sys
path, wf, scenario = sys.argv[1:]
try:
    doc = json.load(open(path))
except ValueError:
    print(f"{wf}\t{scenario}\t-\tERROR\t-\t-\t-")
    sys.exit()
v = doc.get("verdict") or {}
def secs(ms):
    return "-" if ms is None else f"{ms / 1000:.1f}s"
def budget(ms):
    if ms is None:
        return "-"
    for unit, size in (("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return secs(ms)
verdict = "passed" if v.get("passed") else "FAILED"
print(f"{wf}\t{scenario}\t{doc.get('status', '-')}\t{verdict}\t{secs(v.get('recovery_ms'))}\t{budget(v.get('rto_ms'))}\t{doc.get('id', '-')}")
if not v.get("passed"):
    print(f"{wf}/{scenario} did not pass:", file=sys.stderr)
for c in v.get("expectations", []):
    if not c["ok"]:
        print(f"  FAIL {c['what']}: expected {c['expected']}, actual {c['actual']}", file=sys.stderr)
PY
        )
        rows+=("$row")
        case $(cut -f4 <<<"$row") in
            passed) ;;
            ERROR)
                failed=$((failed + 1))
                echo "$wf/$scenario did not start or did not end:" >&2
                tail -n 5 "$work/$wf.$scenario.log" >&2 || true
                ;;
            *) failed=$((failed + 1)) ;;
        esac
    done
done
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
[[ $failed -eq 0 ]] || KEEP=1   # keep the evidence of a failed drill

{
    printf 'WORKFLOW\tSCENARIO\tSTATUS\tVERDICT\tRECOVERY\tRTO\tRUN\n'
    printf '%s\n' "${rows[@]}"
} | column -t -s $'\t'
echo
printf '%d scenarios, %d failed, in %d.%01ds; notifications in scripts/demo/drills/\n' \
    "${#rows[@]}" "$failed" $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100))
[[ $failed -eq 0 ]]
