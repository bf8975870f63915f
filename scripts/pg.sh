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

PG_VERSION=15
PG_BIN="${LIFEBOAT_PG_BIN:-/usr/lib/postgresql/$PG_VERSION/bin}"
MARKER=.lifeboat-test-cluster

log() { echo "pg.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    echo "usage: scripts/pg.sh start | scripts/pg.sh stop DIR" >&2
    exit 2
}

ensure_binaries() {
    [[ -x "$PG_BIN/postgres" && -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] && return
    log "Postgres $PG_VERSION binaries not found in $PG_BIN: installing postgresql-$PG_VERSION"
    command -v apt-get >/dev/null || die "no apt-get: install Postgres $PG_VERSION so that $PG_BIN/postgres exists"
    local sudo=()
    if [[ $EUID -ne 0 ]]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "postgresql-$PG_VERSION" >&2
    [[ -x "$PG_BIN/postgres" ]] || die "postgresql-$PG_VERSION installed but $PG_BIN/postgres is missing"
}

# The OS user Postgres runs as (empty: the current user).
pick_user() {
    if [[ $EUID -ne 0 ]]; then
        echo ""
    elif id -u postgres >/dev/null 2>&1; then
        echo postgres
    else
        if ! id -u lifeboat-test >/dev/null 2>&1; then
            useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin lifeboat-test >&2 ||
                id -u lifeboat-test >/dev/null 2>&1 || die "could not create user lifeboat-test"
        fi
        echo lifeboat-test
    fi
}

# run_as USER CMD...: runs CMD as USER (or as we are, when USER is empty), from a
# directory USER can read (initdb fails where it cannot read the cwd).
run_as() {
    local user=$1
    shift
    if [[ -z "$user" ]]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u "$user" -- "$@"
    else
        su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" || {
            echo "$port"
            return
        }
    done
    die "found no free port"
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
    # /tmp, not $TMPDIR: the postgres user must be able to reach it.
    dir=$(mktemp -d "${LIFEBOAT_PG_TMP:-/tmp}/lifeboat-pg.XXXXXX")
    START_DIR=$dir
    trap undo_start EXIT
    touch "$dir/$MARKER"
    chmod 700 "$dir"
    if [[ -n "$user" ]]; then chown -R "$user" "$dir"; fi
    cd "$dir"
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && echo "$password" >"$dir/pwfile")
    if [[ -n "$user" ]]; then chown "$user" "$dir/pwfile"; fi

    log "initdb in $dir/data${user:+ as $user}"
    run_as "$user" "$PG_BIN/initdb" -D "$dir/data" --username=lifeboat --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    }
    rm -f "$dir/pwfile"

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
    [[ -n "$dir" ]] || usage
    [[ -f "$dir/$MARKER" ]] || die "$dir is not a cluster made by scripts/pg.sh; not touching it"
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        local user=""
        if [[ $EUID -eq 0 ]]; then user=$(stat -c %U "$dir/data"); fi
        if [[ "$user" == root ]]; then user=""; fi
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
