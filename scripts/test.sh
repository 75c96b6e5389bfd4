#!/usr/bin/env bash
# make test: lint, Django checks and the test suite against PostgreSQL and Redis.
# Extra pytest arguments come from PYTEST_ARGS, e.g. PYTEST_ARGS="-n 2 -k vm".
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/olvm}"
# Tests use their own Redis db so a running `make run` worker (db 0) never takes their tasks.
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/1}"
"$ROOT/scripts/ensure_services.sh" postgres
"$ROOT/scripts/ensure_services.sh" redis

say "ruff check ."
ruff check .
say "ruff format --check ."
ruff format --check .
say "manage.py check"
"$PY" manage.py check
say "manage.py makemigrations --check --dry-run"
"$PY" manage.py makemigrations --check --dry-run

say "pytest ${PYTEST_ARGS:-}"
status=0
# shellcheck disable=SC2086 # PYTEST_ARGS is split on purpose
pytest ${PYTEST_ARGS:-} || status=$?
if [ "$status" -eq 5 ]; then
    die "pytest collected no tests"
fi
exit "$status"
