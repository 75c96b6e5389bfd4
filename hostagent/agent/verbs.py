"""The verb table: every verb the agent serves, its parameters and how each is validated.

Verb names and parameter names are the engine client's (`hostagent.client.AgentClient`)
method and argument names, so `client.create_vm(spec)` is the JSON-RPC call
`{"method": "create_vm", "params": {"spec": {...}}}` (positional `params` arrays work too).

Validation is strict at the top level (an unknown parameter is an error) and tolerant one
level down: a nested object (a VM spec, an image) may carry keys the agent does not use,
which are dropped, so the engine can add fields before every host knows them. What the
verb receives holds only validated keys. Every failure is an `InvalidParams` naming the
field (`spec.disks[0].id: must be a UUID`), which the server answers with -32602.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParams

MISSING = object()
MAX_IMAGE_BYTES = 2**50  # 1 PiB
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Characters XML 1.0 cannot carry: a string with one of them could never be escaped.
XML_ILLEGAL = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
# A host in a URI: a DNS name, an IPv4 address or a bracketed IPv6 address.
_URI_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])"
_URI_PORT = r"(?::(?P<port>[0-9]{1,5}))?"
DEST_URI_RE = re.compile(
    rf"^(?:qemu\+(?:tcp|tls|ssh)://(?:[A-Za-z0-9._-]{{1,64}}@)?{_URI_HOST}{_URI_PORT}/system"
    r"(?:\?[A-Za-z0-9._~=&%/+-]{0,512})?"
    rf"|sim://{_URI_HOST}:(?P<sim_port>[0-9]{{1,5}}))$"
)
MIGRATE_URI_RE = re.compile(rf"^tcp://{_URI_HOST}{_URI_PORT}$")


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


class Spec:
    def clean(self, value, where: str):
        raise NotImplementedError


class Text(Spec):
    """A string that can go into XML: no control characters but tab/newline, bounded length."""

    def __init__(
        self,
        max_len: int = 255,
        *,
        min_len: int = 0,
        pattern: re.Pattern | None = None,
        forbid: str = "",
        hint: str = "",
    ):
        self.max_len, self.min_len, self.pattern, self.forbid, self.hint = max_len, min_len, pattern, forbid, hint

    def clean(self, value, where):
        if not isinstance(value, str):
            raise InvalidParams(where, f"must be a string, not {_kind(value)}")
        if len(value) < self.min_len:
            raise InvalidParams(
                where, "must not be empty" if self.min_len == 1 else f"needs {self.min_len}+ characters"
            )
        if len(value) > self.max_len:
            raise InvalidParams(where, f"is longer than {self.max_len} characters")
        bad = XML_ILLEGAL.search(value)
        if bad:
            raise InvalidParams(where, f"contains the control character U+{ord(bad.group()):04X}")
        for ch in self.forbid:
            if ch in value:
                raise InvalidParams(where, f"must not contain {ch!r}")
        if self.pattern is not None and not self.pattern.match(value):
            raise InvalidParams(where, self.hint or f"does not match {self.pattern.pattern}")
        return value


class Uuid(Spec):
    def clean(self, value, where):
        if not isinstance(value, str) or not UUID_RE.match(value):
            shown = repr(value[:60]) if isinstance(value, str) else _kind(value)
            raise InvalidParams(where, f"must be a UUID (8-4-4-4-12 hex digits), not {shown}")
        return value.lower()


class Mac(Spec):
    def clean(self, value, where):
        if not isinstance(value, str) or not MAC_RE.match(value):
            raise InvalidParams(where, "must be a MAC address like 56:6f:1a:00:00:01")
        if int(value[:2], 16) & 1:
            raise InvalidParams(where, "must be a unicast MAC address (the first octet must be even)")
        return value.lower()


class AbsPath(Text):
    def __init__(self):
        super().__init__(4096, min_len=1)

    def clean(self, value, where):
        value = super().clean(value, where)
        if not value.startswith("/"):
            raise InvalidParams(where, "must be an absolute path")
        if ".." in value.split("/"):
            raise InvalidParams(where, "must not contain '..'")
        return value


class Int(Spec):
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def clean(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParams(where, f"must be an integer, not {_kind(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise InvalidParams(where, "must be a whole number")
            value = int(value)
        if not self.low <= value <= self.high:
            raise InvalidParams(where, f"must be between {self.low} and {self.high}")
        return value


class Bool(Spec):
    def clean(self, value, where):
        if not isinstance(value, bool):
            raise InvalidParams(where, f"must be true or false, not {_kind(value)}")
        return value


class Enum(Spec):
    def __init__(self, *choices: str):
        self.choices = choices

    def clean(self, value, where):
        if not isinstance(value, str) or value not in self.choices:
            raise InvalidParams(where, f"must be one of {', '.join(self.choices)}")
        return value


class Uri(Text):
    """A URI of a fixed form (`pattern`, whose `port` or `sim_port` group must be 1-65535)."""

    def __init__(self, pattern: re.Pattern, hint: str):
        super().__init__(1024, min_len=1, pattern=pattern, hint=hint)

    def clean(self, value, where):
        value = super().clean(value, where)
        match = self.pattern.match(value)
        port = match.groupdict().get("port") or match.groupdict().get("sim_port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise InvalidParams(where, f"has the port {port}, not between 1 and 65535")
        return value


class Nullable(Spec):
    def __init__(self, inner: Spec):
        self.inner = inner

    def clean(self, value, where):
        return None if value is None else self.inner.clean(value, where)


class ListOf(Spec):
    def __init__(self, item: Spec, max_items: int):
        self.item, self.max_items = item, max_items

    def clean(self, value, where):
        if not isinstance(value, list):
            raise InvalidParams(where, f"must be an array, not {_kind(value)}")
        if len(value) > self.max_items:
            raise InvalidParams(where, f"has more than {self.max_items} items")
        return [self.item.clean(v, f"{where}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class F:
    """A field of an object: its spec, a default when it may be left out, other accepted names."""

    spec: Spec
    default: Any = MISSING
    aliases: tuple[str, ...] = ()


class Obj(Spec):
    def __init__(self, fields: dict[str, F], check: Callable[[dict, str], None] | None = None):
        self.fields, self.check = fields, check

    def clean(self, value, where):
        if not isinstance(value, dict):
            raise InvalidParams(where, f"must be an object, not {_kind(value)}")
        cleaned = {}
        for name, f in self.fields.items():
            raw = MISSING
            for key in (name, *f.aliases):
                if key in value:
                    raw = value[key]
                    break
            if raw is MISSING or (raw is None and f.default is None):
                if f.default is MISSING:
                    raise InvalidParams(f"{where}.{name}", "is required")
                cleaned[name] = f.default() if callable(f.default) else f.default
            else:
                cleaned[name] = f.spec.clean(raw, f"{where}.{name}")
        if self.check:
            self.check(cleaned, where)
        return cleaned


# The shapes the engine sends ------------------------------------------------------------

NAME = Text(255, min_len=1, forbid="/\t\n\r")
DESCRIPTION = Text(4096)
DOMAIN = Obj(
    {
        "id": F(Nullable(Uuid()), None),
        "name": F(Text(255), ""),
        "type": F(Text(32), ""),
        "path": F(AbsPath()),
    }
)
IMAGE_REF = Obj({"id": F(Uuid()), "storage_domain": F(DOMAIN)})


def _check_image(image: dict, where: str) -> None:
    if image["backing_id"] and image["copy_from_id"]:
        raise InvalidParams(f"{where}.copy_from_id", "cannot be combined with backing_id")
    if image["backing_id"] and image["format"] != "qcow2":
        raise InvalidParams(f"{where}.format", "must be qcow2 for an overlay on a base image")
    if image["backing_id"] and image["allocation"] == "preallocated":
        raise InvalidParams(f"{where}.allocation", "an overlay on a base image is always thin")
    if image["id"] in (image["backing_id"], image["copy_from_id"]):
        raise InvalidParams(f"{where}.id", "must differ from the image it is made from")


IMAGE_FIELDS = {
    "id": F(Uuid()),
    "alias": F(Text(255), ""),
    "storage_domain": F(DOMAIN),
    "size": F(Nullable(Int(1, MAX_IMAGE_BYTES)), None),
    "format": F(Enum("qcow2", "raw"), "qcow2"),
    "allocation": F(Enum("thin", "preallocated"), "thin"),
    "backing_id": F(Nullable(Uuid()), None),
    "copy_from_id": F(Nullable(Uuid()), None),
    "copy_from_domain": F(Nullable(DOMAIN), None),
}
IMAGE = Obj(IMAGE_FIELDS, _check_image)
DISK = Obj(
    {
        "id": F(Uuid()),
        "alias": F(Text(255), ""),
        "storage_domain": F(DOMAIN),
        "format": F(Enum("qcow2", "raw"), "qcow2"),
        "interface": F(Enum("virtio", "virtio_scsi", "sata"), "virtio"),
        "bootable": F(Bool(), False),
        "read_only": F(Bool(), False),
        "shareable": F(Bool(), False),
        "cache": F(Nullable(Enum("none", "writeback", "writethrough", "directsync", "unsafe")), None),
    }
)
NIC = Obj(
    {
        "id": F(Nullable(Uuid()), None),
        "name": F(Text(64), ""),
        "mac": F(Mac()),
        "model": F(Enum("virtio", "e1000", "rtl8139"), "virtio", aliases=("interface",)),
        "network": F(
            Nullable(Text(15, pattern=BRIDGE_RE, hint="must be a bridge name (1-15 letters, digits, _ . -)")), None
        ),
        "vlan": F(Nullable(Int(0, 4094)), None, aliases=("vlan_tag",)),
        "linked": F(Bool(), True),
        "mtu": F(Nullable(Int(0, 65535)), 0),
    }
)


def _check_vm(spec: dict, where: str) -> None:
    if spec["max_vcpus"] is not None and spec["max_vcpus"] < spec["vcpus"]:
        raise InvalidParams(f"{where}.max_vcpus", "must not be below vcpus")
    if spec["max_memory_mib"] is not None and spec["max_memory_mib"] < spec["memory_mib"]:
        raise InvalidParams(f"{where}.max_memory_mib", "must not be below memory_mib")
    if spec["initrd"] and not spec["kernel"]:
        raise InvalidParams(f"{where}.initrd", "needs a kernel (direct kernel boot)")
    if spec["cmdline"] and not spec["kernel"]:
        raise InvalidParams(f"{where}.cmdline", "needs a kernel (direct kernel boot)")
    seen: set = set()
    for i, disk in enumerate(spec["disks"]):
        if disk["id"] in seen:
            raise InvalidParams(f"{where}.disks[{i}].id", "appears twice")
        seen.add(disk["id"])
    seen = set()
    for i, nic in enumerate(spec["nics"]):
        if nic["mac"] in seen:
            raise InvalidParams(f"{where}.nics[{i}].mac", "appears twice")
        seen.add(nic["mac"])


VM_SPEC = Obj(
    {
        "id": F(Uuid()),
        "name": F(NAME),
        "description": F(DESCRIPTION, ""),
        "vcpus": F(Int(1, 512)),
        "max_vcpus": F(Nullable(Int(1, 512)), None),
        "memory_mib": F(Int(16, MAX_MEMORY_MIB)),
        "max_memory_mib": F(Nullable(Int(16, MAX_MEMORY_MIB)), None),
        "guaranteed_memory_mib": F(Nullable(Int(0, MAX_MEMORY_MIB)), None),
        "os_type": F(Text(64), "other"),
        "console_type": F(Enum("vnc", "spice", "serial", "headless"), "vnc"),
        "disks": F(ListOf(DISK, 64), list),
        "nics": F(ListOf(NIC, 32), list),
        "kernel": F(Nullable(AbsPath()), None),
        "initrd": F(Nullable(AbsPath()), None),
        "cmdline": F(Text(4096), ""),
        "machine": F(Nullable(Text(64, pattern=TOKEN_RE, hint="must be a machine type like pc or q35")), None),
        "cpu_model": F(Nullable(Text(64, pattern=TOKEN_RE, hint="must be a CPU model name")), None),
    },
    _check_vm,
)
HOST_NETWORK = Obj(
    {
        "name": F(Text(15, min_len=1, pattern=BRIDGE_RE, hint="must be a bridge name (1-15 letters, digits, _ . -)")),
        "vlan": F(Nullable(Int(0, 4094)), None, aliases=("vlan_tag",)),
        "mtu": F(Nullable(Int(0, 65535)), None),
    }
)
SNAPSHOT = Obj({"id": F(Uuid()), "description": F(DESCRIPTION, ""), "with_memory": F(Bool(), False)})
STATE_PATH = Text(4096, min_len=1)
DEST_URI = Uri(
    DEST_URI_RE,
    "must be a libvirt URI like qemu+tcp://10.0.0.12/system (qemu+tcp, qemu+tls or qemu+ssh) "
    "or sim://ADDRESS:PORT for a simulated host",
)
MIGRATE_URI = Uri(MIGRATE_URI_RE, "must be tcp://ADDRESS or tcp://ADDRESS:PORT (the migration network)")
MIGRATION_POLICIES = ("minimal_downtime", "post_copy", "suspend_workload", "legacy")
VM_ID = F(Uuid())
OPTIONAL_SPEC = F(Nullable(VM_SPEC), None)


# The table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    name: str
    params: dict[str, F]
    doc: str
    timeout: str = "request"  # request | long | image | shutdown
    check: Callable[[dict], None] | None = None
    server_side: bool = False  # handled by the server itself (console tickets)

    def validate(self, params) -> dict:
        if isinstance(params, list):
            names = list(self.params)
            if len(params) > len(names):
                raise InvalidParams("params", f"{self.name} takes at most {len(names)} positional parameter(s)")
            params = dict(zip(names, params, strict=False))
        if not isinstance(params, dict):
            raise InvalidParams("params", f"must be an object or an array, not {_kind(params)}")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise InvalidParams(
                f"params.{unknown[0][:80]}",
                f"is not a parameter of {self.name} (it takes: {', '.join(self.params) or 'none'})",
            )
        cleaned = Obj(self.params).clean(params, "params")
        if self.check:
            self.check(cleaned)
        return cleaned

    def deadline(self, config, params: dict) -> float:
        if self.timeout == "shutdown":
            return params["timeout"] + 15.0
        if self.timeout == "long":
            return max(config.long_timeout, config.request_timeout)
        if self.timeout == "image":
            return config.image_timeout + 15.0
        return config.request_timeout


def _needs_backing(params: dict) -> None:
    if not params["image"]["backing_id"]:
        raise InvalidParams("params.image.backing_id", "is required to clone an image as an overlay")


def _needs_source(params: dict) -> None:
    if not params["image"]["copy_from_id"]:
        raise InvalidParams("params.image.copy_from_id", "is required to copy an image")


def _verbs(*verbs: Verb) -> dict[str, Verb]:
    return {v.name: v for v in verbs}


VERBS: dict[str, Verb] = _verbs(
    # Host
    Verb("ping", {}, "Is the agent alive; its version, driver and verbs."),
    Verb("capabilities", {}, "CPU, memory, versions, hostname, NICs, storage roots, whether KVM really works."),
    Verb("host_stats", {}, "CPU and memory use of the host, load, running VMs, NIC byte counters."),
    # VM lifecycle
    Verb("vm_list", {}, "Every VM defined on the host, OLVM's or not, with its status."),
    Verb("create_vm", {"spec": F(VM_SPEC)}, "Define the VM from its spec and start it."),
    Verb("destroy_vm", {"vm_id": VM_ID}, "Power the VM off at once (a VM not running is already down)."),
    Verb(
        "shutdown_vm",
        {"vm_id": VM_ID, "timeout": F(Int(1, 3600), 120), "mode": F(Enum("auto", "acpi", "guest_agent"), "auto")},
        "Ask the guest to power off (ACPI or guest agent) and wait up to `timeout` seconds.",
        timeout="shutdown",
    ),
    Verb("reboot_vm", {"vm_id": VM_ID, "mode": F(Enum("auto", "acpi", "guest_agent"), "auto")}, "Reboot the guest."),
    Verb("pause_vm", {"vm_id": VM_ID}, "Pause the VM's vCPUs."),
    Verb("resume_vm", {"vm_id": VM_ID}, "Resume a paused VM."),
    Verb(
        "suspend_vm",
        {"vm_id": VM_ID, "state_path": F(STATE_PATH)},
        "Save the VM's memory to `state_path` (a name under the state directory) and stop it.",
        timeout="long",
    ),
    Verb(
        "restore_vm",
        {"vm_id": VM_ID, "state_path": F(STATE_PATH), "spec": OPTIONAL_SPEC},
        "Start a suspended VM from its saved state (defining it from `spec` when this host lacks it).",
        timeout="long",
    ),
    Verb("undefine_vm", {"vm_id": VM_ID}, "Forget a stopped VM's definition on this host (stale after a failover)."),
    # Live migration (VDSM-like: start, then poll the status; cancel)
    Verb(
        "migrate_vm",
        {
            "vm_id": VM_ID,
            "dest_uri": F(DEST_URI),
            "migrate_uri": F(Nullable(MIGRATE_URI), None),
            "policy": F(Enum(*MIGRATION_POLICIES), "minimal_downtime"),
            "bandwidth_mibps": F(Int(0, 1_000_000), 0),
            "compression": F(Bool(), False),
            "unsafe": F(Bool(), False),
            "max_downtime_ms": F(Nullable(Int(1, 60_000)), None),
            "timeout": F(Int(10, 86_400), 600),
        },
        "Start a live peer-to-peer migration of the running VM to `dest_uri`; returns at once.",
    ),
    Verb("migration_status", {"vm_id": VM_ID}, "The VM's outgoing migration: state, progress, downtime."),
    Verb("migration_cancel", {"vm_id": VM_ID}, "Abort the VM's running outgoing migration (it stays here)."),
    # Host networks
    Verb(
        "setup_networks",
        {"networks": F(ListOf(HOST_NETWORK, 64))},
        "Make sure a Linux bridge exists and is up for each logical network (idempotent).",
    ),
    # Devices and live changes
    Verb("hotplug_disk", {"vm_id": VM_ID, "disk": F(DISK)}, "Attach a disk (live when the VM runs)."),
    Verb("hotunplug_disk", {"vm_id": VM_ID, "disk_id": F(Uuid())}, "Detach a disk."),
    Verb("hotplug_nic", {"vm_id": VM_ID, "nic": F(NIC)}, "Attach a NIC, or update link state / network of one."),
    Verb("hotunplug_nic", {"vm_id": VM_ID, "mac": F(Mac())}, "Detach the NIC with this MAC."),
    Verb("set_memory", {"vm_id": VM_ID, "memory_mib": F(Int(16, MAX_MEMORY_MIB))}, "Set the memory balloon target."),
    Verb("set_vcpus", {"vm_id": VM_ID, "vcpus": F(Int(1, 512))}, "Set the number of online vCPUs."),
    # Snapshots
    Verb(
        "snapshot_create",
        {"vm_id": VM_ID, "snapshot": F(SNAPSHOT), "spec": OPTIONAL_SPEC},
        "Take an internal snapshot (offline with qemu-img from `spec` when the host lacks the VM).",
        timeout="long",
    ),
    Verb(
        "snapshot_revert",
        {"vm_id": VM_ID, "snapshot_id": F(Uuid()), "spec": OPTIONAL_SPEC},
        "Revert the VM to a snapshot.",
        timeout="long",
    ),
    Verb(
        "snapshot_delete",
        {"vm_id": VM_ID, "snapshot_id": F(Uuid()), "spec": OPTIONAL_SPEC},
        "Delete a snapshot.",
        timeout="long",
    ),
    # Monitoring
    Verb("vm_stats", {"vm_id": F(Nullable(Uuid()), None)}, "CPU, memory, disk and NIC counters of one VM or all."),
    Verb("guest_info", {"vm_id": VM_ID}, "What the qemu-guest-agent reports: OS, hostname, users, addresses."),
    Verb(
        "console_open",
        {"vm_id": VM_ID},
        "Open the VM's serial console; returns a one-time path to upgrade to a byte stream.",
        server_side=True,
    ),
    Verb(
        "vnc_open",
        {"vm_id": VM_ID},
        "Connect to the VM's VNC display; returns a one-time path to upgrade to a raw RFB byte stream.",
        server_side=True,
    ),
    # Images (qemu-img) and storage domains
    Verb(
        "image_create",
        {"image": F(IMAGE)},
        "Create a blank image, an overlay (backing_id) or a copy (copy_from_id).",
        timeout="image",
    ),
    Verb(
        "image_clone",
        {"image": F(IMAGE)},
        "Create a qcow2 overlay on a template disk (backing_id).",
        timeout="image",
        check=_needs_backing,
    ),
    Verb(
        "image_copy",
        {"image": F(IMAGE)},
        "Copy an image in full (copy_from_id) into a new one.",
        timeout="image",
        check=_needs_source,
    ),
    Verb(
        "image_resize", {"image": F(IMAGE_REF), "size": F(Int(1, MAX_IMAGE_BYTES))}, "Grow an image.", timeout="image"
    ),
    Verb("image_remove", {"image": F(IMAGE_REF)}, "Remove an image (refused while another image is based on it)."),
    Verb("image_info", {"image": F(IMAGE_REF)}, "Format, virtual and actual size, backing image, snapshots."),
    Verb("storage_domain_stats", {"domain": F(DOMAIN)}, "Size and free space of a storage domain."),
)
