# Shared helpers for the scripts in this folder; source it, don't run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
VAR="${OLVM_VAR_DIR:-$ROOT/var}"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

# Colours only on a terminal (CI logs stay plain).
C_BLUE="" C_YELLOW="" C_RED="" C_OFF=""
if [ -t 1 ]; then
    C_BLUE=$'\033[1;34m' C_YELLOW=$'\033[1;33m' C_RED=$'\033[1;31m' C_OFF=$'\033[0m'
fi
say() { printf '%s==>%s %s\n' "$C_BLUE" "$C_OFF" "$*"; }
warn() { printf '%swarning:%s %s\n' "$C_YELLOW" "$C_OFF" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$C_RED" "$C_OFF" "$*" >&2
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
