#!/usr/bin/env bash
# The lab's DNS: BIND9 serving zone lab.example on 127.0.0.1 (a free high
# port), with RFC 2136 dynamic updates allowed for one TSIG key.
#
#   lab/dns.sh start DIR   # DIR: a lab directory (lab/pg.sh start made it);
#                          # prints `export LIFEBOAT_LAB_DNS_URL=dns://…` and
#                          # `export LIFEBOAT_LAB_DNS_SERVER=127.0.0.1:PORT`
#   lab/dns.sh stop DIR    # stops named (DIR itself stays)
#
# The zone starts with db.lab.example A 127.0.0.1 (the primary's address,
# TTL 5 s). The key `lab-key` (hmac-sha256) is random; its secret is in the
# URL, percent-encoded. named runs with its files in DIR/dns.
set -euo pipefail

PG_SCRIPT=lab/dns.sh
MARKER=.lifeboat-lab
# shellcheck source=scripts/pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/pg-common.sh"

usage() {
    echo "usage: lab/dns.sh start DIR | stop DIR" >&2
    exit 2
}

NAMED=$(command -v named || echo /usr/sbin/named)

start() {
    local dir=$1 port secret encoded mark
    check_marked "$dir" "a lab directory"
    [[ -x "$NAMED" ]] || die "named not found: install bind9 (scripts/deps.sh does)"
    mkdir -p "$dir/dns"
    secret=$(head -c 32 /dev/urandom | base64)
    encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$secret")
    # This named's own mark: another lab's named (a test running beside
    # this one) may hold the port this one failed to bind, and answer for
    # the same zone; only an answer carrying this mark is this lab's.
    mark=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat >"$dir/dns/lab.example.zone" <<ZONE
\$TTL 5
@   IN SOA ns.lab.example. admin.lab.example. 1 60 60 600 5
@   IN NS  ns.lab.example.
ns  IN A   127.0.0.1
db  IN A   127.0.0.1
lab-id IN TXT "$mark"
ZONE
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/dns/named.conf" <<CONF
// written by lab/dns.sh
options {
    directory "$dir/dns";
    pid-file "$dir/dns/named.pid";
    listen-on port $port { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    allow-transfer { none; };
    notify no;
};
key "lab-key" {
    algorithm hmac-sha256;
    secret "$secret";
};
controls { };
logging {
    channel lab { file "$dir/dns/named.log"; severity info; print-time yes; };
    category default { lab; };
    category update { lab; };
    category update-security { lab; };
};
zone "lab.example" {
    type primary;
    file "$dir/dns/lab.example.zone";
    update-policy { grant lab-key zonesub ANY; };
};
CONF
        # -u only when root: named drops to the owner of the lab directory.
        local as_user=()
        if [[ $EUID -eq 0 ]]; then
            local owner
            owner=$(stat -c %U "$dir")
            if [[ "$owner" != root ]]; then
                chown -R "$owner" "$dir/dns"
                as_user=(-u "$owner")
            fi
        fi
        if "$NAMED" -c "$dir/dns/named.conf" "${as_user[@]}" >"$dir/dns/start.log" 2>&1; then
            for _ in $(seq 1 50); do
                # Over UDP and TCP (lifeboat's dns kind speaks TCP), with
                # this lab's mark: a port taken by another process between
                # free_port and named's bind leaves named on one of them
                # only, or not at all while the other answers; then try
                # another port.
                if [[ "$(dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 lab-id.lab.example TXT 2>/dev/null)" == "\"$mark\"" &&
                    "$(dig +tcp +short +time=1 +tries=1 -p "$port" @127.0.0.1 lab-id.lab.example TXT 2>/dev/null)" == "\"$mark\"" ]]; then
                    echo "$port" >"$dir/dns/port"
                    log "BIND9 serves lab.example on 127.0.0.1:$port; stop: lab/dns.sh stop $dir"
                    echo "export LIFEBOAT_LAB_DNS_URL=dns://lab-key:$encoded@127.0.0.1:$port/lab.example"
                    echo "export LIFEBOAT_LAB_DNS_SERVER=127.0.0.1:$port"
                    return
                fi
                sleep 0.1
            done
            stop "$dir" >/dev/null 2>&1 || true
        fi
        log "named did not start on port $port; trying another"
    done
    tail -n 20 "$dir/dns/start.log" "$dir/dns/named.log" >&2 2>/dev/null || true
    die "named did not start (logs in $dir/dns)"
}

stop() {
    local dir=$1
    check_marked "$dir" "a lab directory"
    stop_pidfile "$dir/dns/named.pid" named
}

case "${1:-}" in
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*) usage ;;
esac
