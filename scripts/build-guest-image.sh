#!/usr/bin/env bash
# Build the lab's tiny guest into var/images/ (the `tiny` template) from Debian packages:
#   vmlinuz          the Debian cloud kernel (direct kernel boot)
#   initrd.img       a busybox initramfs with the virtio modules and the real qemu-guest-agent
#   tiny-disk.qcow2  a small empty qcow2 (64 MiB) for the template's disk
# The packages are fetched with `apt-get download` (cached in var/images/debs/) and unpacked
# with `dpkg -x`; nothing is installed on this machine. Idempotent: does nothing when the
# outputs are newer than this script (FORCE=1 rebuilds).
#
# Guest kernel command line understood by /init:
#   olvm.hostname=NAME        hostname (default "tiny")
#   olvm.ip=10.213.0.X/24     static address on eth0 (olvm.gw=IP for a default route);
#                             without it eth0 asks DHCP (udhcpc, in the background)
#   console=ttyS0             a root shell with the prompt "tiny# " runs on the serial console
set -euo pipefail
source "$(dirname "$0")/common.sh"

OUT="${OLVM_IMAGES_DIR:-$VAR/images}"
SCRIPT="$ROOT/scripts/build-guest-image.sh"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.img"
DISK="$OUT/tiny-disk.qcow2"

if [ "${FORCE:-}" != 1 ] && [ "$KERNEL" -nt "$SCRIPT" ] && [ "$INITRD" -nt "$SCRIPT" ] && [ "$DISK" -nt "$SCRIPT" ]; then
    say "tiny guest image is up to date in $OUT ($(du -ch "$KERNEL" "$INITRD" "$DISK" | tail -1 | cut -f1))"
    exit 0
fi

for tool in apt-get apt-cache dpkg cpio xz gzip qemu-img ldd; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/lab-packages.sh)"
done

START=$SECONDS
mkdir -p "$OUT/debs"
WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- 1. Which packages: the kernel version the cloud meta-package points at ------------
KPKG="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -1)"
if [ -z "$KPKG" ]; then
    # No package lists yet on a fresh machine.
    is_root && apt-get -o DPkg::Lock::Timeout=600 update -qq
    KPKG="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -1)"
fi
[ -n "$KPKG" ] || die "apt offers no linux-image-cloud-amd64 (apt-get update?)"
KVER="${KPKG#linux-image-}"
# qemu-ga's shared libraries come from the same Debian release as the agent.
QGA_LIBS="$(apt-cache depends qemu-guest-agent | sed -n 's/^ *Depends: \(lib[^ <>]*\)$/\1/p' | sort -u)"
PACKAGES=("$KPKG" busybox-static qemu-guest-agent $QGA_LIBS)
say "packages: ${PACKAGES[*]}"

# --- 2. Fetch (cached) and unpack -------------------------------------------------------
(
    cd "$OUT/debs"
    need=()
    for pkg in "${PACKAGES[@]}"; do
        compgen -G "${pkg}_*.deb" >/dev/null || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        say "apt-get download ${need[*]}"
        # -o APT::Sandbox::User=root: the _apt user may not write here (var/ is root's).
        apt-get download -q=2 -o APT::Sandbox::User=root "${need[@]}"
    fi
)
ROOTFS="$WORK/root"
mkdir -p "$WORK/pkg" "$ROOTFS"
for pkg in "${PACKAGES[@]}"; do
    deb="$(ls -t "$OUT/debs/${pkg}"_*.deb | head -1)"
    dpkg -x "$deb" "$WORK/pkg"
done

# --- 3. The initramfs tree --------------------------------------------------------------
cd "$ROOTFS"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev run tmp root var/lib lib/modules \
    usr/share/udhcpc
ln -s ../run var/run
cp "$WORK/pkg/bin/busybox" bin/busybox
for applet in $(bin/busybox --list-full); do
    [ -e "$applet" ] || ln -s /bin/busybox "$applet"
done

# qemu-ga with the libraries ldd resolves (the unpacked Debian ones first) and ld-linux.
cp "$WORK/pkg/usr/sbin/qemu-ga" usr/sbin/qemu-ga
PKG_LIBPATH="$WORK/pkg/lib/x86_64-linux-gnu:$WORK/pkg/usr/lib/x86_64-linux-gnu"
LDD_OUT="$(LD_LIBRARY_PATH="$PKG_LIBPATH" ldd usr/sbin/qemu-ga)"
if grep -q 'not found' <<<"$LDD_OUT"; then
    die "qemu-ga needs libraries not found here or in the fetched packages:
$(grep 'not found' <<<"$LDD_OUT")"
fi
while read -r lib; do
    dest="lib/x86_64-linux-gnu"
    case "$lib" in
        */ld-linux-x86-64.so.2)
            dest="lib64"
            # The loader must match the libc copied next to it: take the fetched one.
            [ -e "$WORK/pkg/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] &&
                lib="$WORK/pkg/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ;;
    esac
    mkdir -p "$dest"
    cp -L "$lib" "$dest/$(basename "$lib")"
done < <(awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' <<<"$LDD_OUT")
[ -e lib64/ld-linux-x86-64.so.2 ] || die "ld-linux not found in ldd output of qemu-ga"

# The virtio modules, decompressed, each after the modules it depends on (read from the
# module's own "depends=" field: the package has no modules.dep, and virtio_ring must come
# before virtio). Modules built into the kernel are skipped.
MODDIR="$WORK/pkg/lib/modules/$KVER"
[ -d "$MODDIR" ] || die "no modules for $KVER in $KPKG"
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console \
failover net_failover virtio_net virtio_blk virtio_balloon"
: >etc/modules-order
add_module() {
    local mod="$1" ko dep
    grep -qx "$mod" etc/modules-order && return 0
    ko="$(find "$MODDIR" \( -name "$mod.ko" -o -name "$mod.ko.xz" -o -name "${mod//_/-}.ko" \
        -o -name "${mod//_/-}.ko.xz" \) | head -1)"
    if [ -z "$ko" ]; then
        grep -q "/${mod}.ko\$" "$MODDIR/modules.builtin" 2>/dev/null || warn "module $mod: neither a file nor built in"
        return 0
    fi
    case "$ko" in
        *.xz) xz -dc "$ko" >"lib/modules/$mod.ko" ;;
        *) cp "$ko" "lib/modules/$mod.ko" ;;
    esac
    for dep in $(grep -a -o 'depends=[a-z0-9_,-]*' "lib/modules/$mod.ko" | head -1 | cut -d= -f2 | tr , ' '); do
        add_module "$dep"
    done
    echo "$mod" >>etc/modules-order
}
for mod in $MODULES; do
    add_module "$mod"
done
cp "$WORK/pkg/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

cat >etc/os-release <<'EOF'
ID=olvm-tiny
NAME="OLVM tiny guest"
PRETTY_NAME="OLVM tiny guest 1"
VERSION_ID=1
VERSION="1"
EOF
cat >etc/profile <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PS1='tiny# '
EOF
echo 'root:x:0:0:root:/root:/bin/sh' >etc/passwd
echo 'root:x:0:' >etc/group
echo '127.0.0.1 localhost' >etc/hosts
printf 'hosts: files dns\n' >etc/nsswitch.conf
# qemu-ga's guest-shutdown runs /sbin/shutdown -h|-r -P +0 "message".
rm -f sbin/shutdown
cat >sbin/shutdown <<'EOF'
#!/bin/sh
sync
case " $* " in *" -r "*) exec reboot -f ;; *) exec poweroff -f ;; esac
EOF
chmod 755 sbin/shutdown

cat >usr/share/udhcpc/default.script <<'EOF'
#!/bin/sh
# udhcpc hook: apply the lease to the interface.
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    ;;
esac
exit 0
EOF
chmod 755 usr/share/udhcpc/default.script

cat >init <<'EOF'
#!/bin/sh
# OLVM tiny guest: PID 1 of the busybox initramfs.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

for mod in $(cat /etc/modules-order); do
    insmod "/lib/modules/$mod.ko" || echo "olvm: insmod $mod failed"
done

hostname=tiny ip= gw=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    olvm.hostname=*) hostname="${arg#olvm.hostname=}" ;;
    olvm.ip=*) ip="${arg#olvm.ip=}" ;;
    olvm.gw=*) gw="${arg#olvm.gw=}" ;;
    esac
done
hostname "$hostname"
echo "$hostname" >/etc/hostname
echo "127.0.1.1 $hostname" >>/etc/hosts

# The guest agent, on the virtio-serial port named org.qemu.guest_agent.0.
mkdir -p /dev/virtio-ports
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    found=
    for port in /sys/class/virtio-ports/vport*; do
        [ -e "$port/name" ] || continue
        name="$(cat "$port/name")"
        [ -n "$name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$name"
        [ "$name" = org.qemu.guest_agent.0 ] && found="/dev/${port##*/}"
    done
    [ -n "$found" ] && [ -e "$found" ] && break
    sleep 0.1
done
if [ -n "$found" ]; then
    qemu-ga -m virtio-serial -p "$found" -d
else
    echo "olvm: no org.qemu.guest_agent.0 port, qemu-ga not started"
fi

ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    if [ -n "$ip" ]; then
        ip addr add "$ip" dev eth0
        [ -n "$gw" ] && ip route add default via "$gw"
    else
        udhcpc -i eth0 -b -q -t 5 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
    fi
fi

echo "olvm: tiny guest $hostname is up"
# A root shell on the serial console, again and again (PID 1 must never exit).
while true; do
    setsid -c sh -l </dev/ttyS0 >/dev/ttyS0 2>&1
    sleep 1
done
EOF
chmod 755 init

# --- 4. Pack, and the disk ---------------------------------------------------------------
find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -9 >"$WORK/initrd.img"
mv "$WORK/vmlinuz" "$KERNEL"
mv "$WORK/initrd.img" "$INITRD"
rm -f "$DISK"
qemu-img create -q -f qcow2 "$DISK" 64M
echo "$KVER" >"$OUT/kernel-version"

TOTAL="$(du -ch "$KERNEL" "$INITRD" "$DISK" | tail -1 | cut -f1)"
say "tiny guest built in $OUT: kernel $KVER, $TOTAL in total, $((SECONDS - START)) s"
ls -l "$KERNEL" "$INITRD" "$DISK"
