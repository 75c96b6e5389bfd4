"""Does KVM really run guests here? `/dev/kvm` existing proves little (nested KVM can hang).

The probe runs a tiny real-mode guest through the KVM ioctls in a child process with a
timeout: the guest counts down a register from 20,000, writes one byte to a port and
halts. KVM "works" when the child sees that byte and the halt. A hang, a crash or a wrong
exit means it does not, and the agent builds `<domain type='qemu'>` (software emulation).

It does not boot a full kernel: a host where this passes but real guests still hang
(seen with some nested setups) should set `kvm = no` in the agent config.
"""

from __future__ import annotations

import subprocess
import sys

PROBE_TIMEOUT = 5.0

_CHILD = r"""
import ctypes, fcntl, mmap, os, struct, sys
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_REGS = 0x4090AE82
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
api = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
if api != 12:
    print("unexpected KVM API version %d" % api); sys.exit(1)
vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
mem = mmap.mmap(-1, 0x10000)
# mov ecx, 20000 / loop: dec ecx / jnz loop / mov dx, 0x3f8 / mov al, 0x42 / out dx, al / hlt
code = bytes([0x66, 0xB9]) + struct.pack("<I", 20000) + bytes([0x66, 0x49, 0x75, 0xFC,
    0xBA, 0xF8, 0x03, 0xB0, 0x42, 0xEE, 0xF4])
mem[0x1000:0x1000 + len(code)] = code
addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("=IIQQQ", 0, 0, 0, 0x10000, addr))
vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
sregs = bytearray(312)
fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
struct.pack_into("=Q", sregs, 0, 0)
struct.pack_into("=H", sregs, 12, 0)
fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
regs = bytearray(144)
struct.pack_into("=Q", regs, 16 * 8, 0x1000)
struct.pack_into("=Q", regs, 17 * 8, 2)
fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
seen = None
for _ in range(4):
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    reason = struct.unpack_from("=I", run, 8)[0]
    if reason == 2:
        direction, size, port, count, offset = struct.unpack_from("=BBHIQ", run, 32)
        seen = (port, run[offset])
    elif reason == 5:
        break
    else:
        print("unexpected exit reason %d" % reason); sys.exit(1)
if seen != (0x3F8, 0x42) or reason != 5:
    print("the probe guest did not write its byte and halt"); sys.exit(1)
print("ok")
"""


def probe(timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """(works, detail) for this machine's KVM."""
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
            [sys.executable, "-I", "-c", _CHILD], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"the KVM probe guest did not finish within {timeout:g} s (hung vCPU)"
    except OSError as exc:
        return False, f"cannot run the KVM probe: {exc}"
    if done.returncode == 0 and done.stdout.strip() == "ok":
        return True, "a probe guest ran under KVM"
    detail = done.stdout.strip() or done.stderr.strip().splitlines()[-1:] or ["failed"]
    detail = detail if isinstance(detail, str) else detail[0]
    return False, f"KVM probe failed: {detail}"
