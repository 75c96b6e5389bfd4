# Shared helpers for the scripts in this folder; source it, don't run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
VAR="${OLVM_VAR_DIR:-$ROOT/var}"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die() {
    printf '\033[1;31merror:\033[0m %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# True when the Debian package is installed (not just known to dpkg).
deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=""
# apt_install PKG... : apt-get update (once per script) then install, when root.
apt_install() {
    [ $# -gt 0 ] || return 0
    if ! is_root || ! command -v apt-get >/dev/null; then
        warn "missing system packages: $*  (not root: install them with 'sudo apt-get install -y $*')"
        return 0
    fi
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@"
}
