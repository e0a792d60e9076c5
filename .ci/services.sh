#!/usr/bin/env bash
# Bring up the real services the test suite talks to.  Idempotent: installs
# only missing packages, starts only services that are down, and exits
# non-zero with a clear message if something cannot be brought up.
set -euo pipefail

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for NAME COMMAND...: poll COMMAND for up to 60 s.
wait_for() {
    local name=$1; shift
    local i
    for ((i = 0; i < 120; i++)); do
        if "$@" >/dev/null 2>&1; then
            say "$name is answering"
            return 0
        fi
        sleep 0.5
    done
    die "$name did not answer within 60 s (checked with: $*)"
}

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts system services)"

# --- (a) packages ------------------------------------------------------------
missing=()
# The database servers come preinstalled on the usual CI machine; on a bare Debian
# they are installed here and configured below.
# pgbouncer: the SQL store's tests run PostgreSQL behind it (tests/servers.py starts it).
# libmariadb-dev, gcc, python3-dev: MariaDB Connector/Python (pip install mariadb, in
# .ci/run) builds against them. python3-venv: .ci/run tests in a fresh virtual environment.
packages=(memcached chromium chromium-driver wrk postgresql mariadb-server redis-server pgbouncer
          libmariadb-dev gcc python3-dev python3-venv)
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # Another apt run may hold the lock; wait for it instead of failing.
    apt_opts=(-o DPkg::Lock::Timeout=600)
    # Refresh the package lists once, and only if some package is unknown.
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            say "apt-get update (no candidate for $pkg)"
            apt-get "${apt_opts[@]}" update || die "apt-get update failed"
            break
        fi
    done
    say "installing: ${missing[*]}"
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
else
    say "packages already installed: ${packages[*]}"
fi

# --- (b) PostgreSQL ------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if pg_up; then
    say "PostgreSQL already running"
else
    [ -d /etc/postgresql ] || die "PostgreSQL is not installed (/etc/postgresql missing)"
    say "starting PostgreSQL"
    # shellcheck disable=SC2046  # the cluster version is one word, e.g. 15
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start \
        || die "pg_ctlcluster could not start PostgreSQL"
fi
wait_for PostgreSQL pg_up
psql_q() { psql -h 127.0.0.1 -U postgres -d postgres -tAq "$@"; }
# The tests log in over TCP without a password (trust), as the usual CI machine allows.
# A fresh Debian install asks for one: trust loopback for this throwaway server.
if ! psql_q -w -c 'select 1' >/dev/null 2>&1; then
    say "PostgreSQL: trusting loopback logins for the tests"
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
    # shellcheck disable=SC2046
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main reload \
        || die "pg_ctlcluster could not reload PostgreSQL"
    psql_q -w -c 'select 1' >/dev/null || die "PostgreSQL still refuses postgres@127.0.0.1"
fi
if [ "$(psql_q -c "select 1 from pg_roles where rolname = 'root'")" != 1 ]; then
    psql_q -c 'create role root superuser login' || die "could not create PostgreSQL role root"
fi
if [ "$(psql_q -c "select 1 from pg_database where datname = 'test'")" = 1 ]; then
    say "PostgreSQL database 'test' exists"
else
    say "creating PostgreSQL database 'test'"
    psql_q -c 'create database test' || die "could not create PostgreSQL database 'test'"
fi

# --- Redis -----------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if redis_up; then
    say "Redis already running"
else
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || die "redis-server could not start (see /var/log/redis/ci.log)"
fi
wait_for Redis redis_up

# --- MariaDB ---------------------------------------------------------------------
maria_up() { mariadb -e 'select 1'; }
if maria_up >/dev/null 2>&1; then
    say "MariaDB already running"
else
    [ -x /usr/sbin/mariadbd ] || die "MariaDB is not installed (/usr/sbin/mariadbd missing)"
    say "starting MariaDB"
    # /run is a tmpfs: recreate the socket directory after a reboot.
    install -d -o mysql -g mysql /run/mysqld
    # mariadbd refuses to run as root: have it switch to the mysql user. With
    # --background its errors would be lost, so keep them in a log.
    install -d -o mysql -g adm /var/log/mysql
    start-stop-daemon --start --oknodo --background --output /var/log/mysql/ci.log \
        --exec /usr/sbin/mariadbd -- --user=mysql \
        || die "start-stop-daemon could not start mariadbd (see /var/log/mysql/ci.log)"
fi
wait_for MariaDB maria_up
mariadb -e 'create database if not exists test' || die "could not create MariaDB database 'test'"
say "MariaDB database 'test' exists"
# The tests connect as root over TCP, not through the socket checked above. A fresh
# Debian install lets root in only through the socket: allow an empty password too.
if ! mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1' test >/dev/null 2>&1; then
    say "MariaDB: letting root log in over TCP without a password"
    mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" \
        || die "could not change MariaDB root's login"
fi
mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1' test >/dev/null \
    || die "MariaDB answers on its socket but root cannot log in over TCP 127.0.0.1:3306"

say "all services up: PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379, MariaDB 127.0.0.1:3306"
