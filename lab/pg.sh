#!/usr/bin/env bash
# The lab's Postgres: a Postgres 15 primary and a streaming standby on loopback.
#
#   eval "$(lab/pg.sh start)"        # prints `export LIFEBOAT_LAB_PRIMARY_URL=…`,
#                                    # `…_STANDBY_URL=…` and `…_LAB_DIR=…`
#   lab/pg.sh break DIR stop-primary # stops the primary (fast shutdown), keeps its data
#   lab/pg.sh break DIR delay SECS   # the standby applies WAL SECS seconds late
#                                    # (recovery_min_apply_delay; 0 lifts it)
#   lab/pg.sh rebuild DIR NODE       # NODE (primary|standby, the data dir's name)
#                                    # becomes a standby of the other node: stopped,
#                                    # pg_rewind (a fresh pg_basebackup if that
#                                    # fails), started streaming from the other
#   lab/pg.sh stop DIR               # stops both and deletes DIR
#
# The primary is initdb'd with a superuser `lifeboat` and a random password
# (scram-sha-256 over TCP from 127.0.0.0/8, replication included). The standby
# is `pg_basebackup -R` of it, streaming, hot. The primary listens on
# 127.0.0.1 and the standby on 127.0.0.2 (so DNS can tell them apart), each on
# a free port; data, logs and sockets live in one temp dir.
# Binaries, the postgres user when root, free ports and initdb: scripts/pg-common.sh.
# Only the export lines go to stdout; progress and errors go to stderr.
set -euo pipefail

PG_SCRIPT=lab/pg.sh
MARKER=.lifeboat-lab
# shellcheck source=scripts/pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/pg-common.sh"

usage() {
    echo "usage: lab/pg.sh start | stop DIR | break DIR stop-primary | break DIR delay SECS | rebuild DIR primary|standby" >&2
    exit 2
}

ensure_binaries
[[ -x "$PG_BIN/pg_basebackup" ]] || die "$PG_BIN/pg_basebackup is missing: reinstall postgresql-$PG_VERSION"

# The loopback address each node listens on.
address_of() {
    case "$1" in
    primary) echo 127.0.0.1 ;;
    standby) echo 127.0.0.2 ;;
    *) die "no node $1: primary or standby" ;;
    esac
}

# pg_start USER DIR NAME PORT: writes the port and address and starts DIR/NAME.
pg_start() {
    local user=$1 dir=$2 name=$3 port=$4
    printf "port = %s\nlisten_addresses = '%s'\n" "$port" "$(address_of "$name")" >>"$dir/$name/postgresql.auto.conf"
    run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/$name" -l "$dir/$name.log" -w -t 60 start >/dev/null 2>&1
}

# start_on_a_free_port USER DIR NAME: starts DIR/NAME, trying another port
# when one is taken in the meantime; prints the port.
start_on_a_free_port() {
    local port
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if pg_start "$1" "$2" "$3" "$port"; then
            echo "$port"
            return
        fi
        log "the $3 could not start on port $port; trying another"
    done
    tail -n 20 "$2/$3.log" >&2 || true
    die "the $3 did not start (log: $2/$3.log)"
}

START_DIR=""
undo_start() {
    [[ -n "$START_DIR" ]] || return 0
    log "start failed: removing $START_DIR"
    tail -n 20 "$START_DIR"/*.log >&2 2>/dev/null || true
    stop "$START_DIR" >/dev/null 2>&1 || rm -rf "$START_DIR"
}

start() {
    local user dir password primary_port standby_port
    user=$(pick_user)
    dir=$(new_cluster_dir lifeboat-lab "$user")
    START_DIR=$dir
    trap undo_start EXIT
    cd "$dir"
    initdb_cluster "$user" "$dir" primary
    password=$PASSWORD
    (umask 077 && echo "$password" >"$dir/password")
    cat >>"$dir/primary/pg_hba.conf" <<HBA
# lab/pg.sh: both nodes and lifeboat connect from anywhere on loopback
host all all 127.0.0.0/8 scram-sha-256
host replication all 127.0.0.0/8 scram-sha-256
HBA
    cat >"$dir/primary/postgresql.auto.conf" <<CONF
# written by lab/pg.sh
unix_socket_directories = '$dir'
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
wal_keep_size = '256MB'
hot_standby = on
wal_receiver_status_interval = '1s'
CONF
    if [[ -n "$user" ]]; then chown "$user" "$dir/primary/postgresql.auto.conf"; fi
    primary_port=$(start_on_a_free_port "$user" "$dir" primary)

    log "pg_basebackup -R of 127.0.0.1:$primary_port into $dir/standby"
    run_as "$user" env PGPASSWORD="$password" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" \
        -U lifeboat -D "$dir/standby" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 ||
        die "pg_basebackup failed (log: $dir/basebackup.log)"
    standby_port=$(start_on_a_free_port "$user" "$dir" standby)
    echo "$primary_port" >"$dir/primary.port"
    echo "$standby_port" >"$dir/standby.port"
    START_DIR=""
    log "primary on 127.0.0.1:$primary_port, standby on 127.0.0.2:$standby_port; stop: lab/pg.sh stop $dir"
    echo "export LIFEBOAT_LAB_PRIMARY_URL=postgres://lifeboat:$password@127.0.0.1:$primary_port/postgres"
    echo "export LIFEBOAT_LAB_STANDBY_URL=postgres://lifeboat:$password@127.0.0.2:$standby_port/postgres"
    echo "export LIFEBOAT_LAB_DIR=$dir"
}

check_lab() {
    check_marked "${1:-}" "a lab made by lab/pg.sh"
}

stop() {
    local dir=${1:-} user
    check_lab "$dir"
    user=$(owner_of "$dir")
    for name in standby primary; do
        if [[ -f "$dir/$name/postmaster.pid" ]]; then
            (cd "$dir" && run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/$name" -m fast -w -t 60 stop >/dev/null) ||
                log "pg_ctl stop of the $name failed (log: $dir/$name.log)"
        fi
    done
    rm -rf "$dir"
    log "stopped and removed $dir"
}

break_lab() {
    local dir=${1:-} what=${2:-} user
    check_lab "$dir"
    user=$(owner_of "$dir")
    cd "$dir"
    case "$what" in
    stop-primary)
        run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/primary" -m fast -w -t 60 stop >/dev/null
        log "primary stopped (its data stays in $dir/primary)"
        ;;
    delay)
        local secs=${3:-}
        [[ "$secs" =~ ^[0-9]+$ ]] || usage
        echo "recovery_min_apply_delay = '${secs}s'" >>"$dir/standby/postgresql.auto.conf"
        run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/standby" reload >/dev/null
        log "the standby now applies WAL ${secs}s late"
        ;;
    *) usage ;;
    esac
}

# start_as_standby USER DIR NODE PORT: NODE's data (copied from the other
# node) gets back its own port and address, and starts as a standby.
start_as_standby() {
    local user=$1 dir=$2 node=$3 port=$4
    printf "port = %s\nlisten_addresses = '%s'\n" "$port" "$(address_of "$node")" >>"$dir/$node/postgresql.auto.conf"
    run_as "$user" touch "$dir/$node/standby.signal"
    run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/$node" -l "$dir/$node.log" -w -t 60 start >/dev/null 2>&1
}

# rebuild DIR NODE: NODE becomes a standby of the other node.
rebuild() {
    local dir=${1:-} node=${2:-} user other port other_port password conninfo
    check_lab "$dir"
    case "$node" in
    primary) other=standby ;;
    standby) other=primary ;;
    *) usage ;;
    esac
    user=$(owner_of "$dir")
    cd "$dir"
    port=$(cat "$dir/$node.port")
    other_port=$(cat "$dir/$other.port")
    password=$(cat "$dir/password")
    if [[ -f "$dir/$node/postmaster.pid" ]]; then
        run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/$node" -m fast -w -t 60 stop >/dev/null ||
            die "could not stop the $node (log: $dir/$node.log)"
    fi
    conninfo="host=$(address_of "$other") port=$other_port user=lifeboat password=$password dbname=postgres"
    log "pg_rewind of the $node from the $other"
    if run_as "$user" "$PG_BIN/pg_rewind" -D "$dir/$node" --source-server="$conninfo" -R \
        >"$dir/rewind.log" 2>&1 && start_as_standby "$user" "$dir" "$node" "$port"; then
        :
    else
        # pg_rewind cannot always find where two timelines forked (a node
        # rewound before, promoted again): a fresh copy always works.
        log "pg_rewind did not give a startable standby (logs: $dir/rewind.log, $dir/$node.log): taking a fresh base backup"
        if [[ -f "$dir/$node/postmaster.pid" ]]; then
            run_as "$user" "$PG_BIN/pg_ctl" -D "$dir/$node" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
        fi
        rm -rf "${dir:?}/$node"
        run_as "$user" env PGPASSWORD="$password" "$PG_BIN/pg_basebackup" -h "$(address_of "$other")" \
            -p "$other_port" -U lifeboat -D "$dir/$node" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 ||
            die "pg_basebackup failed (log: $dir/basebackup.log)"
        start_as_standby "$user" "$dir" "$node" "$port" ||
            die "the rebuilt $node did not start (log: $dir/$node.log)"
    fi
    log "the $node is a standby of the $other again, streaming from $(address_of "$other"):$other_port"
}

case "${1:-}" in
start) start ;;
rebuild) rebuild "${2:-}" "${3:-}" ;;
stop) stop "${2:-}" ;;
break) break_lab "${2:-}" "${3:-}" "${4:-}" ;;
*) usage ;;
esac
