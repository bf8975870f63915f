#!/usr/bin/env bash
# The lab's load balancer: HAProxy in front of the lab's Postgres pair, one
# TCP frontend on 127.0.0.1 (a free port), backend `pg` with server `pg1`
# (the primary, weight 100) and `pg2` (the standby, weight 0), health
# checked every 500 ms, and the runtime API on a unix socket (level admin).
#
#   lab/haproxy.sh start DIR  # DIR: a lab directory (lab/pg.sh start made it);
#                             # prints `export LIFEBOAT_LAB_HAPROXY_URL=unix://…`
#                             # and `export LIFEBOAT_LAB_WRITE_URL=postgres://…`
#                             # (the frontend: where applications write)
#   lab/haproxy.sh stop DIR   # stops HAProxy (DIR itself stays)
set -euo pipefail

PG_SCRIPT=lab/haproxy.sh
MARKER=.lifeboat-lab
# shellcheck source=scripts/pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/pg-common.sh"

usage() {
    echo "usage: lab/haproxy.sh start DIR | stop DIR" >&2
    exit 2
}

HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

check_lab() {
    check_marked "${1:-}" "a lab directory"
    [[ -f "$1/primary.port" && -f "$1/standby.port" ]] || die "$1 has no Postgres pair: run lab/pg.sh start first"
}

start() {
    local dir=$1 port password
    check_lab "$dir"
    [[ -x "$HAPROXY" ]] || die "haproxy not found: install haproxy (scripts/deps.sh does)"
    mkdir -p "$dir/haproxy"
    password=$(cat "$dir/password")
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/haproxy/haproxy.cfg" <<CONF
# written by lab/haproxy.sh
global
    daemon
    pidfile $dir/haproxy/haproxy.pid
    stats socket $dir/haproxy/admin.sock mode 600 level admin
    log stderr format short local0 notice

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    default-server inter 500ms fastinter 200ms fall 2 rise 1

frontend pg_front
    bind 127.0.0.1:$port
    default_backend pg

backend pg
    balance roundrobin
    server pg1 127.0.0.1:$(cat "$dir/primary.port") check weight 100
    server pg2 127.0.0.2:$(cat "$dir/standby.port") check weight 0
CONF
        if "$HAPROXY" -f "$dir/haproxy/haproxy.cfg" >"$dir/haproxy/start.log" 2>&1; then
            for _ in $(seq 1 50); do
                [[ -S "$dir/haproxy/admin.sock" ]] && break
                sleep 0.1
            done
            echo "$port" >"$dir/haproxy/port"
            log "HAProxy on 127.0.0.1:$port (backend pg: pg1 weight 100, pg2 weight 0); stop: lab/haproxy.sh stop $dir"
            echo "export LIFEBOAT_LAB_HAPROXY_URL=unix://$dir/haproxy/admin.sock"
            echo "export LIFEBOAT_LAB_WRITE_URL=postgres://lifeboat:$password@127.0.0.1:$port/postgres"
            return
        fi
        log "HAProxy did not start on port $port; trying another"
    done
    cat "$dir/haproxy/start.log" >&2 || true
    die "HAProxy did not start (log: $dir/haproxy/start.log)"
}

stop() {
    local dir=$1
    check_marked "$dir" "a lab directory"
    stop_pidfile "$dir/haproxy/haproxy.pid" HAProxy
}

case "${1:-}" in
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*) usage ;;
esac
