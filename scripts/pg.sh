#!/usr/bin/env bash
# A throwaway Postgres 15 cluster for the test suite.
#
#   eval "$(scripts/pg.sh start)"   # prints `export LIFEBOAT_TEST_POSTGRES_URL=…` and
#                                   # `export LIFEBOAT_TEST_POSTGRES_DIR=…`
#   scripts/pg.sh stop DIR          # stops it and deletes DIR
#
# The cluster lives in a fresh temp dir (data, log and unix socket), listens on
# 127.0.0.1 on a free port, with fsync and synchronous_commit on (the store's
# durability is what is under test), and a random password for its superuser
# `lifeboat`. As root, Postgres runs as the `postgres` user (or a `lifeboat-test`
# user created for it): Postgres refuses to run as root. If the Postgres 15
# binaries are missing, they are installed with apt-get.
# Only the export lines go to stdout; progress and errors go to stderr.
set -euo pipefail

PG_SCRIPT=pg.sh
MARKER=.lifeboat-test-cluster
# shellcheck source=scripts/pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-common.sh"

usage() {
    echo "usage: scripts/pg.sh start | scripts/pg.sh stop DIR" >&2
    exit 2
}

# A start that fails half-way leaves nothing behind.
START_DIR=""
undo_start() {
    [[ -n "$START_DIR" ]] || return 0
    log "start failed: removing $START_DIR"
    stop "$START_DIR" >/dev/null 2>&1 || rm -rf "$START_DIR"
}

start() {
    ensure_binaries
    local user dir password port started=""
    user=$(pick_user)
    dir=$(new_cluster_dir lifeboat-pg "$user")
    START_DIR=$dir
    trap undo_start EXIT
    cd "$dir"
    initdb_cluster "$user" "$dir" data
    password=$PASSWORD

    for _ in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/data/postgresql.auto.conf" <<EOF
# written by scripts/pg.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
EOF
        if [[ -n "$user" ]]; then chown "$user" "$dir/data/postgresql.auto.conf"; fi
        if run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1; then
            started=1
            break
        fi
        log "could not start on port $port; trying another"
    done
    if [[ -z "$started" ]]; then
        tail -n 20 "$dir/postgres.log" >&2 || true
        die "Postgres did not start (log: $dir/postgres.log)"
    fi
    START_DIR=""
    log "Postgres $PG_VERSION up on 127.0.0.1:$port (socket dir and data in $dir); stop: scripts/pg.sh stop $dir"
    echo "export LIFEBOAT_TEST_POSTGRES_URL=postgres://lifeboat:$password@127.0.0.1:$port/postgres"
    echo "export LIFEBOAT_TEST_POSTGRES_DIR=$dir"
}

stop() {
    local dir=${1:-}
    check_marked "$dir" "a cluster made by scripts/pg.sh"
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        local user
        user=$(owner_of "$dir/data")
        (cd "$dir" && run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null) ||
            log "pg_ctl stop failed (log: $dir/postgres.log)"
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*) usage ;;
esac
