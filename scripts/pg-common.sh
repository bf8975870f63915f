# What scripts/pg.sh (the test suite's cluster) and the lab's scripts
# (lab/pg.sh, lab/dns.sh, lab/haproxy.sh) share: finding the Postgres 15 binaries, the OS user
# Postgres runs as, free loopback ports, and making a cluster directory with
# an initdb'd data dir. Sourced, not run: the caller sets PG_SCRIPT (its
# name in messages) and MARKER (the file that marks its directories).

PG_VERSION=15
PG_BIN="${LIFEBOAT_PG_BIN:-/usr/lib/postgresql/$PG_VERSION/bin}"

log() { echo "$PG_SCRIPT: $*" >&2; }
die() {
    log "error: $*"
    exit 1
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

# The user owning a directory's clusters (empty: ourselves).
owner_of() {
    local user=""
    if [[ $EUID -eq 0 ]]; then user=$(stat -c %U "$1"); fi
    if [[ "$user" == root ]]; then user=""; fi
    echo "$user"
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

# new_cluster_dir PREFIX USER: a fresh marked temp dir owned by USER. In /tmp,
# not $TMPDIR: the postgres user must be able to reach it.
new_cluster_dir() {
    local dir
    dir=$(mktemp -d "${LIFEBOAT_PG_TMP:-/tmp}/$1.XXXXXX")
    touch "$dir/$MARKER"
    chmod 700 "$dir"
    if [[ -n "$2" ]]; then chown -R "$2" "$dir"; fi
    echo "$dir"
}

# initdb_cluster USER DIR DATA: initdb DIR/DATA with a superuser `lifeboat`
# whose random password goes to PASSWORD (scram-sha-256 over TCP, trust on
# the socket). Run from DIR.
initdb_cluster() {
    local user=$1 dir=$2 data=$3
    PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && echo "$PASSWORD" >"$dir/pwfile")
    if [[ -n "$user" ]]; then chown "$user" "$dir/pwfile"; fi
    log "initdb in $dir/$data${user:+ as $user}"
    run_as "$user" "$PG_BIN/initdb" -D "$dir/$data" --username=lifeboat --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || {
        rm -f "$dir/pwfile"
        cat "$dir/initdb.log" >&2
        die "initdb failed (log: $dir/initdb.log)"
    }
    rm -f "$dir/pwfile"
}

# stop_pidfile FILE NAME: stops the daemon whose pid FILE holds (TERM, then
# KILL after 5 s) and removes FILE; nothing to do without FILE.
stop_pidfile() {
    local file=$1 name=$2 pid
    [[ -f "$file" ]] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
    log "$name stopped"
}

# check_marked DIR WHAT: DIR was made by these scripts (it holds MARKER),
# or stop before touching it; WHAT names what it should be.
check_marked() {
    [[ -n "${1:-}" ]] || usage
    [[ -f "$1/$MARKER" ]] || die "$1 is not $2; not touching it"
}
