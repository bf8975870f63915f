#!/usr/bin/env bash
# The full test suite: unit tests, end-to-end tests against the real binary,
# snapshot tests, property tests, and a single pass of each benchmark.
# The store's conformance stories run on SQLite and on a throwaway Postgres 15
# cluster that this script starts (scripts/pg.sh) and always stops on exit.
# To use a server of your own instead, set LIFEBOAT_TEST_POSTGRES_URL to a URL
# whose user may CREATE DATABASE (each story makes a `story_<random>` database).
# Usage: scripts/test.sh [FILTER]   (only the tests whose names contain FILTER)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# A real SMTP server and a real Alertmanager for the end-to-end tests.
bash scripts/deps.sh
# deps.sh installed every tool the tests use (chromium, Playwright, BIND,
# HAProxy, Postgres 15): a test that finds one missing fails, never skips.
export LIFEBOAT_REQUIRE_TOOLS=1
# Snapshots must match what is committed; never write new ones in CI.
export INSTA_UPDATE=no

if [[ -z "${LIFEBOAT_TEST_POSTGRES_URL:-}" ]]; then
    LIFEBOAT_TEST_POSTGRES_DIR=""
    stop_postgres() {
        if [[ -n "$LIFEBOAT_TEST_POSTGRES_DIR" ]]; then
            bash scripts/pg.sh stop "$LIFEBOAT_TEST_POSTGRES_DIR" || true
        fi
    }
    trap stop_postgres EXIT
    # A signal ends the script through `exit`, so the EXIT trap stops Postgres.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    pg_env=$(bash scripts/pg.sh start)
    eval "$pg_env"
fi
export LIFEBOAT_TEST_POSTGRES_URL

cargo test --workspace --all-targets "$@"

# The end-to-end suite once more, every test on Postgres instead of SQLite.
# The binary the first pass built runs again: asking cargo for it by `-p` or
# `--test` would resolve other features and rebuild half the dependencies.
echo "== end-to-end tests on Postgres"
e2e=$(cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "e2e" and m.get("executable"):
        print(m["executable"])')
[[ -x "$e2e" ]] || { echo "test.sh: the e2e test binary was not found" >&2; exit 1; }
# Run from the package directory, as `cargo test` does, on the toolchain cargo
# used: tests that build something (the runbooks build the estate) would
# otherwise get the rust-toolchain.toml of each dependency's source folder.
if [[ -z "${RUSTUP_TOOLCHAIN:-}" ]] && command -v rustup >/dev/null; then
    RUSTUP_TOOLCHAIN=$(rustup show active-toolchain | cut -d' ' -f1)
    export RUSTUP_TOOLCHAIN
fi
(cd orchestrator && LIFEBOAT_E2E_BACKEND=postgres "$e2e" "$@")
