#!/usr/bin/env bash
# The lab: real servers on loopback for the lab runbooks (workflows/lab/).
# A Postgres 15 primary (127.0.0.1) and streaming standby (127.0.0.2)
# (lab/pg.sh), BIND9 serving lab.example with TSIG-signed updates
# (lab/dns.sh), and HAProxy in front of the pair (lab/haproxy.sh).
#
#   eval "$(lab/lab.sh up)"             # everything up; prints the exports the
#                                       # runbooks' connections read (lab/lifeboat.toml),
#                                       # also written to $LIFEBOAT_LAB_DIR/lab.env
#   lab/lab.sh status DIR               # who takes writes, what DNS answers, HAProxy's servers
#   lab/lab.sh break DIR stop-primary   # the primary goes down (its data stays)
#   lab/lab.sh break DIR delay SECS     # the standby replays WAL SECS seconds late (0 lifts it)
#   lab/lab.sh break DIR promote-fails  # the `standby` connection points at the primary, a
#                                       # node that is not a standby: `. DIR/lab.env` again
#   lab/lab.sh down DIR                 # stops everything and deletes DIR
#
# Tables made at start on the primary: orders (the application's) and
# lifeboat_failover_check (the runbooks' verification writes).
set -euo pipefail

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_SCRIPT=lab/lab.sh
MARKER=.lifeboat-lab
# shellcheck source=scripts/pg-common.sh
source "$LAB/../scripts/pg-common.sh"

usage() {
    echo "usage: lab/lab.sh up | status DIR | break DIR stop-primary|delay SECS|promote-fails | down DIR" >&2
    exit 2
}

check_lab() {
    [[ -n "${1:-}" && -f "$1/$MARKER" && -f "$1/lab.env" ]] || die "${1:-(no DIR)} is not a lab made by lab/lab.sh up"
}

DIR=""
undo_up() {
    [[ -n "$DIR" ]] || return 0
    log "up failed: tearing down $DIR"
    down "$DIR" >/dev/null 2>&1 || true
}

up() {
    local pg dns lb
    pg=$(bash "$LAB/pg.sh" start)
    DIR=$(sed -n 's/^export LIFEBOAT_LAB_DIR=//p' <<<"$pg")
    trap undo_up EXIT
    dns=$(bash "$LAB/dns.sh" start "$DIR")
    lb=$(bash "$LAB/haproxy.sh" start "$DIR")
    printf '%s\n%s\n%s\n' "$pg" "$dns" "$lb" >"$DIR/lab.env"
    chmod 600 "$DIR/lab.env"
    # shellcheck disable=SC1091
    (. "$DIR/lab.env" && psql_on "$LIFEBOAT_LAB_PRIMARY_URL" \
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now());
         CREATE TABLE lifeboat_failover_check (run_id text PRIMARY KEY, at timestamptz DEFAULT now());" >/dev/null)
    DIR_DONE=$DIR
    DIR=""
    log "the lab is up in $DIR_DONE: lab/lab.sh status $DIR_DONE; lab/lab.sh down $DIR_DONE"
    cat "$DIR_DONE/lab.env"
}

psql_on() {
    PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" "$1" -XtAq -v ON_ERROR_STOP=1 -c "$2"
}

down() {
    local dir=${1:-}
    check_marked "$dir" "a lab made by lab/lab.sh up"
    bash "$LAB/haproxy.sh" stop "$dir" || true
    bash "$LAB/dns.sh" stop "$dir" || true
    bash "$LAB/pg.sh" stop "$dir"
}

# haproxy_servers SOCKET: "pg1 UP weight 100" lines for backend pg.
haproxy_servers() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
lines = data.decode().splitlines()
cols = lines[0].lstrip("# ").split(",")
for line in lines[1:]:
    row = dict(zip(cols, line.split(",")))
    if row.get("pxname") == "pg" and row.get("svname") not in ("FRONTEND", "BACKEND"):
        print(f"{row['svname']} {row['addr']} {row['status']} weight {row['weight']}")
PY
}

status() {
    local dir=${1:-} node url answer
    check_lab "$dir"
    # shellcheck disable=SC1091
    . "$dir/lab.env"
    for node in primary standby; do
        url=$([[ $node == primary ]] && echo "$LIFEBOAT_LAB_PRIMARY_URL" || echo "$LIFEBOAT_LAB_STANDBY_URL")
        if answer=$(psql_on "$url" "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby (read-only)'
                WHEN current_setting('default_transaction_read_only') = 'on' THEN 'primary, FENCED (refuses writes)'
                ELSE 'primary (takes writes)' END || ', ' || (SELECT count(*) FROM orders) || ' orders'" 2>/dev/null); then
            echo "postgres $node ($(sed -E 's|.*@([^/]*)/.*|\1|' <<<"$url")): $answer"
        else
            echo "postgres $node ($(sed -E 's|.*@([^/]*)/.*|\1|' <<<"$url")): DOWN"
        fi
    done
    echo "dns: db.lab.example A $(dig +short +time=1 +tries=1 -p "${LIFEBOAT_LAB_DNS_SERVER#*:}" @127.0.0.1 db.lab.example A | tr '\n' ' ')"
    haproxy_servers "${LIFEBOAT_LAB_HAPROXY_URL#unix://}" | sed 's/^/haproxy: /'
    if answer=$(psql_on "$LIFEBOAT_LAB_WRITE_URL" "SELECT host(inet_server_addr())" 2>/dev/null); then
        echo "through haproxy: connected to $answer"
    else
        echo "through haproxy: no server takes connections"
    fi
}

break_lab() {
    local dir=${1:-} what=${2:-}
    check_lab "$dir"
    case "$what" in
    stop-primary | delay) bash "$LAB/pg.sh" break "$dir" "$what" "${3:-}" ;;
    promote-fails)
        # shellcheck disable=SC1091
        . "$dir/lab.env"
        sed -i "s|^export LIFEBOAT_LAB_STANDBY_URL=.*|export LIFEBOAT_LAB_STANDBY_URL=$LIFEBOAT_LAB_PRIMARY_URL|" "$dir/lab.env"
        log "the standby connection now points at the primary (not a standby): . $dir/lab.env"
        ;;
    *) usage ;;
    esac
}

ensure_binaries
case "${1:-}" in
up) up ;;
status) status "${2:-}" ;;
break) break_lab "${2:-}" "${3:-}" "${4:-}" ;;
down) down "${2:-}" ;;
*) usage ;;
esac
