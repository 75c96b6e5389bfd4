#!/usr/bin/env bash
# make setup: system packages, the Python venv and the npm front-end libraries.
# Idempotent, and fast when everything is already in place.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

# --- Python interpreter: prefer python3.11, need >= 3.11 ------------------------------
find_python() {
    local candidate
    local path
    for candidate in python3.11 python3; do
        # Every match on PATH but our own venv's (which may be the broken one we replace).
        while read -r path; do
            case "$path" in "$VENV"/*) continue ;; esac
            if "$path" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                echo "$path"
                return 0
            fi
        done < <(type -a -p "$candidate" 2>/dev/null)
    done
    return 1
}

# --- System packages (only what is missing) ------------------------------------------
missing=()
# libvirt-python builds against libvirt-dev, found with pkg-config, compiled with gcc.
for pkg in libvirt-dev pkg-config; do
    deb_installed "$pkg" || missing+=("$pkg")
done
command -v gcc >/dev/null || missing+=(gcc)
command -v redis-server >/dev/null || deb_installed redis-server || missing+=(redis-server)
deb_installed postgresql || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
command -v node >/dev/null || missing+=(nodejs)
# Portal tests drive Debian's chromium with Playwright (its own browser download cannot work here).
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null || missing+=(npm)

SYS_PY="$(find_python || true)"
if [ -z "$SYS_PY" ]; then
    missing+=(python3 python3-venv python3-dev)
elif [ ! -x "$PY" ]; then
    # Debian's own python3 needs python3-venv for `-m venv` and python3-dev for headers.
    "$SYS_PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    "$SYS_PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        missing+=(python3-dev)
fi
apt_install "${missing[@]}"

# --- The lab: qemu, libvirt daemons, iproute2 (real hosts in network namespaces) --------
# Only as root (the lab needs it); the lab tests say what is missing otherwise.
if is_root; then
    "$ROOT/scripts/lab-packages.sh"
    # The tiny guest (kernel + busybox initramfs + qemu-guest-agent) from Debian packages.
    "$ROOT/scripts/build-guest-image.sh"
fi
[ -n "$SYS_PY" ] || SYS_PY="$(find_python)" || die "no python3 >= 3.11 found"

# --- Virtualenv --------------------------------------------------------------------------
# (An interrupted earlier creation leaves a venv without pip: make it again.)
if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    say "creating .venv with $SYS_PY ($("$SYS_PY" -V))"
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV"
fi

STAMP="$VENV/.requirements-stamp"
if [ "$STAMP" -nt requirements.txt ] && [ "$STAMP" -nt requirements-dev.txt ]; then
    : # requirements unchanged since the last install
else
    say "pip install -r requirements-dev.txt"
    "$PY" -m pip install --disable-pip-version-check --progress-bar off -q -r requirements-dev.txt
    touch "$STAMP"
fi

# --- Front-end libraries (served from node_modules by whitenoise) --------------------
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    say "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    touch node_modules
fi

mkdir -p "$VAR/static" # STATIC_ROOT: whitenoise warns when it is missing
