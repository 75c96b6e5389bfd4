#!/usr/bin/env bash
# make run: the whole engine on this machine, in the foreground (Ctrl-C stops it all).
# Web (daphne), Celery worker and Celery beat share the embedded SQLite database
# var/olvm.sqlite3 unless DATABASE_URL says otherwise.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PORT="${PORT:-8000}"
"$ROOT/scripts/ensure_services.sh" redis

# A random secret key, made once and kept in var/ (gitignored).
if [ -z "${OLVM_SECRET_KEY:-}" ]; then
    if [ ! -s "$VAR/secret_key" ]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$VAR/secret_key")
    fi
    OLVM_SECRET_KEY="$(cat "$VAR/secret_key")"
    export OLVM_SECRET_KEY
fi

say "manage.py migrate"
"$PY" manage.py migrate --noinput
say "manage.py collectstatic"
"$PY" manage.py collectstatic --noinput -v 0

# The admin password: OLVM_ADMIN_PASSWORD, else one generated once into var/admin_password.
if [ -z "${OLVM_ADMIN_PASSWORD:-}" ]; then
    if [ ! -s "$VAR/admin_password" ]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(12))' >"$VAR/admin_password")
    fi
    OLVM_ADMIN_PASSWORD="$(cat "$VAR/admin_password")"
fi
export OLVM_ADMIN_PASSWORD
say "admin user"
"$PY" manage.py shell --no-imports -c '
import os
from django.contrib.auth import get_user_model

user, created = get_user_model().objects.get_or_create(username="admin")
user.is_staff = user.is_superuser = user.is_active = True
user.set_password(os.environ["OLVM_ADMIN_PASSWORD"])
user.save()
print("created" if created else "updated", "superuser admin")
'

if "$PY" manage.py help --commands | grep -qx seed_demo; then
    say "manage.py seed_demo"
    "$PY" manage.py seed_demo
else
    warn "manage.py seed_demo does not exist yet; skipping the demo data"
fi

# Hosts: as root on a machine with QEMU and libvirt, two real lab hosts (network
# namespaces with their own libvirtd and agent, the tiny template on shared storage);
# otherwise the simulated hosts of seed_demo only, and we say so.
# Lab agents report to the ingest listener on the lab bridge, so it listens there too.
HOSTS_NOTE="simulated hosts only (seed_demo)"
if [ "${OLVM_LAB:-auto}" != "no" ] && is_root && command -v qemu-system-x86_64 >/dev/null && command -v libvirtd >/dev/null; then
    export OLVM_INGEST_LISTEN="${OLVM_INGEST_LISTEN:-127.0.0.1:54322,10.213.0.1:54322}"
    say "manage.py lab up --hosts 2"
    if "$PY" manage.py lab up --hosts 2; then
        HOSTS_NOTE="lab hosts h1, h2 (real libvirtd + QEMU, software emulation) and the simulated demo hosts"
    else
        warn "the lab did not come up; the engine runs with simulated hosts only"
    fi
else
    warn "not root or no QEMU/libvirt here: no lab hosts, simulated hosts only (labelled simulated)"
fi

cat <<EOT

  OLVM is starting (Ctrl-C stops web, worker and beat)
    portal    http://127.0.0.1:$PORT/
    API       http://127.0.0.1:$PORT/api/v1/
    API docs  http://127.0.0.1:$PORT/api/docs/
    login     admin / $OLVM_ADMIN_PASSWORD
    hosts     $HOSTS_NOTE
    database  ${DATABASE_URL:-sqlite $VAR/olvm.sqlite3 (embedded, shared by web, worker and beat)}
    redis     $REDIS_URL

EOT
exec honcho start -f "$ROOT/Procfile" -p "$PORT"
