#!/usr/bin/env bash
# The full test suite: unit tests, end-to-end tests against the real binary,
# snapshot tests, property tests, and a single pass of each benchmark.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Snapshots must match what is committed; never write new ones in CI.
export INSTA_UPDATE=no

cargo test --workspace --all-targets "$@"
