"""The lab: real KVM hosts on one machine, for development and tests.

Each lab host is a network namespace joined to the bridge ``olvmbr0`` (10.213.0.1/24, the
engine side) with its own virtlogd and libvirtd (private /etc/libvirt, /run/libvirt,
/var/lib/libvirt, ... through bind mounts in a mount namespace) and, when asked for, its own
host agent. See ``hostagent.lab.core`` for the API and ``python -m hostagent.lab --help``
for the command line. Pure Python: no Django import here.
"""

from hostagent.lab.core import (
    BRIDGE,
    DEFAULT_STATE_DIR,
    IMAGES_DIR,
    LabError,
    LabHost,
    down,
    fail,
    heal,
    kvm_works,
    status,
    tiny_guest_xml,
    up,
)

__all__ = [
    "BRIDGE",
    "DEFAULT_STATE_DIR",
    "IMAGES_DIR",
    "LabError",
    "LabHost",
    "down",
    "fail",
    "heal",
    "kvm_works",
    "status",
    "tiny_guest_xml",
    "up",
]
