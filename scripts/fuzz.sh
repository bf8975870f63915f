#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a set time each, with
# libFuzzer through cargo fuzz, on the stable toolchain (RUSTC_BOOTSTRAP=1
# lets cargo fuzz pass its -Z flags). Corpora start from the repository's own
# workflows, fixtures and payloads. A crash stops the script and leaves its
# input in fuzz/artifacts/TARGET/; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-…
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(compile template signature webhook)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seed() {
    local target=$1
    local dir="fuzz/corpus/$target"
    mkdir -p "$dir"
    case "$target" in
        compile)
            find workflows tests/fixtures -name '*.yaml' -exec cp {} "$dir/" \; ;;
        template)
            grep -rhoE '\{\{[^}]*\}\}' workflows/*.yaml | sort -u | head -200 |
                awk -v d="$dir" '{ f = d "/seed-" NR; printf "%s", $0 > f; close(f) }' ;;
        signature)
            printf 't=1700000000,v1=%064d\n{"a":1}' 0 > "$dir/seed-1" ;;
        webhook)
            printf 'A{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"SiteDown","site":"dc01"}}]}' > "$dir/seed-am"
            printf 'J{"type":"incident","service":"db","id":"7","tags":["a","b"],"details":{"level":3}}' > "$dir/seed-json" ;;
    esac
}

for target in "${targets[@]}"; do
    seed "$target"
    echo "== fuzz $target for ${seconds}s"
    # -s none: the code under test is safe Rust; we hunt panics, hangs,
    # stack overflows and runaway memory, which need no sanitizer.
    cargo fuzz run -s none "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
