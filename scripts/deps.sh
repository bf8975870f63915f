#!/usr/bin/env bash
# Installs what the test suite needs besides Rust and Postgres 15, if it is
# missing: a real SMTP server for the email tests (aiosmtpd, from PyPI), a
# real Prometheus Alertmanager for the webhook test, promtool for the
# alerting rules, the lab's BIND9 and HAProxy (Debian packages), and for
# the web UI's browser test (tests/ui/cockpit.py) Debian's chromium driven by
# Playwright for Python (PyPI; it uses the system chromium, so `playwright
# install` is never run).
# Idempotent and quiet when everything is there; scripts/test.sh calls it.
set -euo pipefail

need_apt=()
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# promtool checks and unit-tests contrib/prometheus/lifeboat-rules.yml.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# The lab (lab/lab.sh, tests/lab.rs): DNS with TSIG updates, a load balancer.
[[ -x /usr/sbin/named ]] || need_apt+=(bind9)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
[[ -x /usr/sbin/haproxy ]] || need_apt+=(haproxy)
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps.sh: missing ${need_apt[*]}: run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    echo "deps.sh: installing ${need_apt[*]} (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
    # The packages start system daemons; the tests and the lab run their own.
    for unit in prometheus-alertmanager prometheus named bind9 haproxy; do
        (systemctl disable --now "$unit" >/dev/null 2>&1 || service "$unit" stop >/dev/null 2>&1 || true)
    done
fi

if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "deps.sh: installing aiosmtpd (pip)" >&2
    python3 -m pip install --quiet aiosmtpd >&2 \
        || python3 -m pip install --quiet --break-system-packages aiosmtpd >&2
fi

if ! python3 -c 'import playwright' >/dev/null 2>&1; then
    echo "deps.sh: installing playwright (pip)" >&2
    python3 -m pip install --quiet playwright >&2 \
        || python3 -m pip install --quiet --break-system-packages playwright >&2
fi
