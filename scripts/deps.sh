#!/bin/bash
# Install the Debian (bookworm) packages needed to build, run and test the
# corelog module.  Idempotent: when everything is installed already it only
# asks dpkg, prints nothing and exits 0; apt-get runs (after one
# `apt-get update`) only for what is missing.  Works as root, or through
# sudo when run as an ordinary user.
#
#   scripts/deps.sh                  the packages below
#   scripts/deps.sh PKG...           those and PKG...
#   scripts/deps.sh --only PKG...    PKG... alone (make fuzz's compiler...)
set -euo pipefail

only=
if [ "${1:-}" = --only ]; then
    only=1
    shift
fi

packages=(
    # build: scripts/build.sh compiles against Debian's nginx source tree
    gcc libc6-dev make pkg-config
    nginx nginx-dev
    libjansson-dev libpq-dev libssl-dev
    # make test builds nginx itself too (make debug-build, .build/debug/)
    libpcre2-dev zlib1g-dev
    # run and test: PostgreSQL 15 (pg_stat_statements ships in
    # postgresql-15; postgresql-contrib is the bookworm metapackage for it)
    postgresql postgresql-contrib
    # test harness: prove, core Perl (Test::More, JSON::PP, IO::Select...)
    # plus DBI/DBD::Pg
    perl libdbd-pg-perl
    # t/045: a DNS server whose answer moves (Net::DNS::Nameserver);
    # t/046: PgBouncer in transaction mode between nginx and PostgreSQL
    libnet-dns-perl pgbouncer
    # `make run` prints a curl line
    curl
    # make bench: the HTTP load generator
    wrk
    # t/094: promtool check metrics and a real Prometheus server scraping
    # the status endpoint (t/lib/Corelog/Prometheus.pm starts its own)
    prometheus
)

if [ -n "$only" ]; then
    packages=("$@")
else
    packages+=("$@")
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing: ${missing[*]}" >&2

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "deps: missing packages (${missing[*]}) and not root, no sudo" >&2
    exit 1
fi

# `env` so that the variable survives sudo's environment reset.
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
     -o DPkg::Lock::Timeout="${DEPS_LOCK_WAIT:-600}")

# Another apt-get or dpkg at work (a second build; unattended-upgrades,
# which fresh cloud machines run at boot) is waited for, up to
# DEPS_LOCK_WAIT seconds (default 600), not a failure: dpkg's lock through
# DPkg::Lock::Timeout, and apt-get update's lock on its lists, which that
# option does not cover, by trying again every 2 s.
run_apt() {
    local err rc waited=0
    err=$(mktemp)
    while :; do
        rc=0
        "${apt[@]}" "$@" 2>"$err" || rc=$?
        cat "$err" >&2
        [ "$rc" -eq 0 ] && break
        grep -qE 'Could not get lock|Unable to lock|Unable to acquire' "$err" \
            || break
        if [ "$waited" -ge "${DEPS_LOCK_WAIT:-600}" ]; then
            echo "deps: apt's lock still held after ${waited} s: try again" \
                 "when the other apt-get or dpkg is done" >&2
            break
        fi
        [ "$waited" -gt 0 ] ||
            echo "deps: another apt-get or dpkg holds apt's lock (above):" \
                 "waiting for it, up to ${DEPS_LOCK_WAIT:-600} s" >&2
        sleep 2
        waited=$((waited + 2))
    done
    rm -f "$err"
    return "$rc"
}

run_apt update -q
run_apt install -y -q --no-install-recommends "${missing[@]}"

# On machines with an init system the Debian nginx package starts the system
# nginx on port 80; it is not needed (tests and `make run` start their own).
# The prometheus package starts a Prometheus server on port 9090 that
# scrapes itself (and node-exporter, a recommended package we do not
# install) into /var/lib/prometheus, at every boot: stopped and disabled
# too.  It could not disturb the tests (they never use a fixed port:
# Corelog::Prometheus starts its own server on a free port of the harness,
# below the ephemeral range, with its own configuration and data), but it
# would keep a daemon writing to disk for nothing.  update-rc.d disable
# removes both the init script's and systemd's start links.
for p in "${missing[@]}"; do
    case $p in
    nginx)
        "${as_root[@]}" service nginx stop >/dev/null 2>&1 || true ;;
    prometheus)
        "${as_root[@]}" service prometheus stop >/dev/null 2>&1 || true
        "${as_root[@]}" update-rc.d prometheus disable >/dev/null 2>&1 \
            || true ;;
    esac
done

exit 0
