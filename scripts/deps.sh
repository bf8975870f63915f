#!/usr/bin/env bash
# Installs what the test suite needs besides Rust and Postgres 15, if it is
# missing: a real SMTP server for the email tests (aiosmtpd, from PyPI) and a
# real Prometheus Alertmanager for the webhook test and promtool for the
# alerting rules (Debian packages).
# Idempotent and quiet when everything is there; scripts/test.sh calls it.
set -euo pipefail

need_apt=()
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# promtool checks and unit-tests contrib/prometheus/lifeboat-rules.yml.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps.sh: missing ${need_apt[*]}: run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    echo "deps.sh: installing ${need_apt[*]} (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
    # The package starts a system Alertmanager; the tests run their own.
    for unit in prometheus-alertmanager prometheus; do
        (systemctl disable --now "$unit" >/dev/null 2>&1 || service "$unit" stop >/dev/null 2>&1 || true)
    done
fi

if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "deps.sh: installing aiosmtpd (pip)" >&2
    python3 -m pip install --quiet aiosmtpd >&2 \
        || python3 -m pip install --quiet --break-system-packages aiosmtpd >&2
fi
