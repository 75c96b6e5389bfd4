#!/usr/bin/env bash
# ensure_services.sh redis|postgres|stop
#   redis     make sure Redis answers at REDIS_URL; start a local one if not
#   postgres  make sure the PostgreSQL of DATABASE_URL answers, with trust auth for
#             local TCP connections and the database created
#   stop      stop what these scripts started (recorded in var/)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
REDIS_MARK="$VAR/redis-started-by-olvm"
PG_MARK="$VAR/postgres-started-by-olvm"
mkdir -p "$VAR"

# url_part URL FIELD: host, port, user or db of a redis:// or postgres:// URL.
url_part() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys
from urllib.parse import urlsplit

u = urlsplit(sys.argv[1])
default_port = 6379 if u.scheme.startswith("redis") else 5432
print({
    "host": u.hostname or "127.0.0.1",
    "port": u.port or default_port,
    "user": u.username or "postgres",
    "db": u.path.lstrip("/") or "postgres",
}[sys.argv[2]])
PYEOF
}

is_local() { case "$1" in 127.0.0.1 | localhost | ::1) return 0 ;; *) return 1 ;; esac }

redis_ping() {
    "$PY" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()' "$REDIS_URL" 2>/dev/null
}

ensure_redis() {
    if redis_ping; then
        say "Redis answers at $REDIS_URL"
        return 0
    fi
    local host port
    host="$(url_part "$REDIS_URL" host)"
    port="$(url_part "$REDIS_URL" port)"
    is_local "$host" || die "Redis does not answer at $REDIS_URL (not local, not starting one)"
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting a local redis-server on 127.0.0.1:$port"
    redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --pidfile "$VAR/redis.pid" --logfile "$VAR/redis.log"
    for _ in $(seq 50); do
        if redis_ping; then
            echo "$port" >"$REDIS_MARK"
            say "Redis started (pid $(cat "$VAR/redis.pid" 2>/dev/null || echo '?'); 'make stop' stops it)"
            return 0
        fi
        sleep 0.2
    done
    die "redis-server did not answer at $REDIS_URL; see $VAR/redis.log"
}

psql_ok() {
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -w -Atqc 'select 1' >/dev/null 2>&1
}

# The newest installed cluster version, e.g. 15.
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres() {
    local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/olvm}"
    case "$url" in postgres*) ;; *)
        say "DATABASE_URL is not PostgreSQL; nothing to start"
        return 0
        ;;
    esac
    PG_HOST="$(url_part "$url" host)"
    PG_PORT="$(url_part "$url" port)"
    PG_USER="$(url_part "$url" user)"
    local db
    db="$(url_part "$url" db)"

    if ! is_local "$PG_HOST"; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL does not answer at $PG_HOST:$PG_PORT"
        return 0
    fi

    command -v pg_isready >/dev/null && [ -n "$(pg_version)" ] || apt_install postgresql
    local ver
    ver="$(pg_version)"
    [ -n "$ver" ] || die "PostgreSQL is not installed"
    if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
        if [ ! -d "/etc/postgresql/$ver/main" ]; then
            say "creating PostgreSQL cluster $ver/main"
            pg_createcluster "$ver" main
        fi
        say "starting PostgreSQL $ver/main"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start
        echo "$ver" >"$PG_MARK"
        for _ in $(seq 50); do
            pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break
            sleep 0.2
        done
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL did not start on $PG_HOST:$PG_PORT"
    fi

    if ! psql_ok; then
        # A fresh Debian cluster asks for a password on TCP: trust local TCP connections
        # (a throw-away test database server; never do this on a shared machine).
        is_root || die "cannot connect to PostgreSQL as $PG_USER without a password (need trust auth on 127.0.0.1)"
        local hba="/etc/postgresql/$ver/main/pg_hba.conf"
        say "allowing trust auth for local TCP connections in $hba"
        local tmp
        tmp="$(mktemp)"
        { printf 'host all %s 127.0.0.1/32 trust\nhost all %s ::1/128 trust\n' "$PG_USER" "$PG_USER"; cat "$hba"; } >"$tmp"
        cat "$tmp" >"$hba" # keeps the file's owner and mode
        rm -f "$tmp"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
        sleep 1
        psql_ok || die "still cannot connect to PostgreSQL as $PG_USER at $PG_HOST:$PG_PORT"
    fi

    if [ "$db" != postgres ] &&
        [ -z "$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -w -Atqc \
            "select 1 from pg_database where datname = '$db'")" ]; then
        say "creating database $db"
        createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -w "$db"
    fi
    say "PostgreSQL answers at $PG_HOST:$PG_PORT (database $db)"
}

stop_services() {
    if [ -f "$REDIS_MARK" ]; then
        say "stopping the redis-server started by OLVM"
        [ -f "$VAR/redis.pid" ] && kill "$(cat "$VAR/redis.pid")" 2>/dev/null || true
        rm -f "$REDIS_MARK"
    fi
    if [ -f "$PG_MARK" ]; then
        say "stopping the PostgreSQL cluster started by OLVM"
        pg_ctlcluster --skip-systemctl-redirect "$(cat "$PG_MARK")" main stop || true
        rm -f "$PG_MARK"
    fi
}

case "${1:-}" in
redis) ensure_redis ;;
postgres) ensure_postgres ;;
stop) stop_services ;;
*) die "usage: $0 redis|postgres|stop" ;;
esac
