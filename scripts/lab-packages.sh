#!/usr/bin/env bash
# Debian packages for the lab (hosts in network namespaces, each with its own libvirtd,
# and the tiny guest image). Installs only what is missing; fast when all is there.
set -euo pipefail
source "$(dirname "$0")/common.sh"

LAB_PACKAGES=(
    qemu-system-x86 qemu-utils
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    iproute2 cpio dnsmasq-base xz-utils
)

# libvirt's qemu driver resolves its built-in user "libvirt-qemu" before it reads
# qemu.conf (where the lab says user = "root"): without the user the driver does not load.
# libvirt-daemon-system would create it, but also starts a libvirtd in the root namespace.
ensure_qemu_user() {
    getent passwd libvirt-qemu >/dev/null && return 0
    is_root || die "no libvirt-qemu user (run as root: sudo $0)"
    getent group kvm >/dev/null || groupadd -r kvm
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    say "useradd libvirt-qemu"
    useradd -r -g kvm -G libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin -c "Libvirt Qemu" libvirt-qemu
}

missing=()
for pkg in "${LAB_PACKAGES[@]}"; do
    deb_installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    ensure_qemu_user
    say "lab packages already installed"
    exit 0
fi
is_root || die "missing lab packages: ${missing[*]} (run as root: sudo $0)"
# Wait for another apt/dpkg run (a colleague's, unattended-upgrades) instead of failing.
say "apt-get update"
apt-get -o DPkg::Lock::Timeout=600 update -qq
say "apt-get install ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
ensure_qemu_user
