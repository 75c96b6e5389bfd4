"""libvirt domain XML from a validated VM spec, built with xml.etree so every value is escaped.

Nothing here formats XML by hand: names, descriptions, paths and MACs are element text or
attribute values, so a VM named `<x>&"'` or a description full of markup stays text. The
spec itself (already validated by `verbs.py`, so every string is legal XML text) is kept
as JSON in the domain's `<metadata>` under the OLVM namespace, which lets the agent
rebuild disks and NICs later (offline snapshots, restore on another host).

Layout of what is built:
- `<domain type='kvm'>` only when the host's KVM probe passed, else `type='qemu'`;
- direct kernel boot when the spec gives `kernel` (with optional `initrd` / `cmdline`);
- disks from the storage-domain path + image id (the caller resolves and confines the path);
- NICs on a Linux bridge named after the logical network (the VLAN lives under that bridge
  on the host, so the guest XML does not mention it); a NIC without a network is unplugged
  from any bridge;
- the qemu-guest-agent channel `org.qemu.guest_agent.0` with `<source mode='bind'/>` and no
  path (libvirt picks a per-host path; a path on shared storage breaks migration);
- a serial console on a pty, and VNC (or SPICE) graphics only when the console type says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from xml.etree import ElementTree as ET

NS = "urn:olvm:vm:1"
ET.register_namespace("olvm", NS)

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
Q35_SPARE_ROOT_PORTS = 8
DISK_BUSES = {"virtio": ("virtio", "vd"), "virtio_scsi": ("scsi", "sd"), "sata": ("sata", "sd")}


def build_domain_xml(
    spec: dict,
    *,
    kvm: bool,
    disk_path: Callable[[dict], str],
    graphics_listen: str = "127.0.0.1",
    disk_cache: str = "none",
) -> str:
    return to_string(
        domain_element(spec, kvm=kvm, disk_path=disk_path, graphics_listen=graphics_listen, disk_cache=disk_cache)
    )


def domain_element(spec: dict, *, kvm: bool, disk_path, graphics_listen: str, disk_cache: str) -> ET.Element:
    dom = ET.Element("domain", type="kvm" if kvm else "qemu")
    _text(dom, "name", spec["name"])
    _text(dom, "uuid", spec["id"])
    _text(dom, "title", spec["name"])
    if spec.get("description"):
        _text(dom, "description", spec["description"])
    metadata = ET.SubElement(dom, "metadata")
    olvm = ET.SubElement(metadata, f"{{{NS}}}vm")
    _text(olvm, f"{{{NS}}}id", spec["id"])
    _text(olvm, f"{{{NS}}}spec", json.dumps(spec, sort_keys=True, separators=(",", ":")))

    memory = spec.get("max_memory_mib") or spec["memory_mib"]
    _text(dom, "memory", str(memory), unit="MiB")
    _text(dom, "currentMemory", str(spec["memory_mib"]), unit="MiB")
    vcpus, max_vcpus = spec["vcpus"], spec.get("max_vcpus") or spec["vcpus"]
    vcpu = _text(dom, "vcpu", str(max_vcpus), placement="static")
    if max_vcpus > vcpus:
        vcpu.set("current", str(vcpus))

    os_el = ET.SubElement(dom, "os")
    type_el = _text(os_el, "type", "hvm", arch="x86_64")
    if spec.get("machine"):
        type_el.set("machine", spec["machine"])
    if spec.get("kernel"):
        _text(os_el, "kernel", spec["kernel"])
        if spec.get("initrd"):
            _text(os_el, "initrd", spec["initrd"])
        if spec.get("cmdline"):
            _text(os_el, "cmdline", spec["cmdline"])
    elif not any(d.get("bootable") for d in spec.get("disks", ())):
        ET.SubElement(os_el, "boot", dev="hd")

    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if spec.get("cpu_model"):
        cpu = ET.SubElement(dom, "cpu", mode="custom", match="exact")
        _text(cpu, "model", spec["cpu_model"], fallback="allow")
    elif kvm:
        ET.SubElement(dom, "cpu", mode="host-model")
    windows = str(spec.get("os_type", "")).startswith("windows")
    ET.SubElement(dom, "clock", offset="localtime" if windows else "utc")
    _text(dom, "on_poweroff", "destroy")
    _text(dom, "on_reboot", "restart")
    _text(dom, "on_crash", "destroy")

    devices = ET.SubElement(dom, "devices")
    boot_order = 1
    disks = spec.get("disks", [])
    if any(d.get("interface") == "virtio_scsi" for d in disks):
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    targets = assign_targets(disks)
    for disk in sorted(disks, key=lambda d: not d.get("bootable")):
        order = None
        if disk.get("bootable") and not spec.get("kernel"):
            order, boot_order = boot_order, boot_order + 1
        devices.append(disk_element(disk, targets[disk["id"]], disk_path(disk), disk_cache, boot_order=order))
    for nic in spec.get("nics", []):
        devices.append(nic_element(nic))

    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind")
    ET.SubElement(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")

    console_type = spec.get("console_type", "vnc")
    if console_type in ("vnc", "spice"):
        graphics = ET.SubElement(devices, "graphics", type=console_type, autoport="yes", listen=graphics_listen)
        ET.SubElement(graphics, "listen", type="address", address=graphics_listen)
        video = ET.SubElement(devices, "video")
        ET.SubElement(video, "model", type="qxl" if console_type == "spice" else "vga")
    if _is_q35(spec.get("machine")):
        # On q35 every PCIe device needs a root port and libvirt adds only the ones the
        # defined devices use: spare ports are what NIC and disk hot-plug plug into.
        ET.SubElement(devices, "controller", type="pci", index="0", model="pcie-root")
        for _ in range(Q35_SPARE_ROOT_PORTS):
            ET.SubElement(devices, "controller", type="pci", model="pcie-root-port")
    balloon = ET.SubElement(devices, "memballoon", model="virtio")
    ET.SubElement(balloon, "stats", period="5")
    rng = ET.SubElement(devices, "rng", model="virtio")
    _text(rng, "backend", "/dev/urandom", model="random")
    return dom


def _is_q35(machine: str | None) -> bool:
    return bool(machine) and (machine == "q35" or machine.startswith("pc-q35"))


def disk_element(disk: dict, target: str, path: str, disk_cache: str, *, boot_order: int | None = None) -> ET.Element:
    bus, _ = DISK_BUSES[disk.get("interface", "virtio")]
    el = ET.Element("disk", type="file", device="disk")
    ET.SubElement(el, "driver", name="qemu", type=disk.get("format", "qcow2"), cache=disk.get("cache") or disk_cache)
    ET.SubElement(el, "source", file=path)
    ET.SubElement(el, "target", dev=target, bus=bus)
    if disk.get("read_only"):
        ET.SubElement(el, "readonly")
    if disk.get("shareable"):
        ET.SubElement(el, "shareable")
    _text(el, "serial", disk["id"])
    if boot_order is not None:
        ET.SubElement(el, "boot", order=str(boot_order))
    ET.SubElement(el, "alias", name=f"ua-{disk['id']}")
    return el


def nic_element(nic: dict) -> ET.Element:
    network = nic.get("network")
    el = ET.Element("interface", type="bridge" if network else "ethernet")
    ET.SubElement(el, "mac", address=nic["mac"])
    if network:
        ET.SubElement(el, "source", bridge=network)
    ET.SubElement(el, "model", type=nic.get("model", "virtio"))
    ET.SubElement(el, "link", state="up" if nic.get("linked", True) else "down")
    if nic.get("mtu"):
        ET.SubElement(el, "mtu", size=str(nic["mtu"]))
    if nic.get("id"):
        ET.SubElement(el, "alias", name=f"ua-{nic['id']}")
    return el


def snapshot_xml(snapshot: dict) -> str:
    el = ET.Element("domainsnapshot")
    _text(el, "name", snapshot["id"])
    if snapshot.get("description"):
        _text(el, "description", snapshot["description"])
    return to_string(el)


def to_string(element: ET.Element) -> str:
    # ElementTree leaves a carriage return in text as it is, and every XML parser reads it
    # back as a newline; a character reference keeps it. (Attributes are already escaped.)
    return ET.tostring(element, encoding="unicode").replace("\r", "&#13;")


def assign_targets(disks: list[dict]) -> dict[str, str]:
    """Target device names by disk id: bootable disks first, then the spec's order."""
    used: set[str] = set()
    targets = {}
    for disk in sorted(disks, key=lambda d: not d.get("bootable")):
        targets[disk["id"]] = next_target(used, disk.get("interface", "virtio"))
        used.add(targets[disk["id"]])
    return targets


def next_target(used: set[str], interface: str) -> str:
    """The first free target device name for the bus: vda, vdb, ... vdz, vdaa, ..."""
    _, prefix = DISK_BUSES[interface]
    index = 0
    while True:
        name = prefix + _letters(index)
        if name not in used:
            return name
        index += 1


def _letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


# Reading live domain XML ------------------------------------------------------------------


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def read_spec(root: ET.Element) -> dict | None:
    """The OLVM spec kept in the domain's metadata, or None for a VM the engine did not define."""
    el = root.find(f"metadata/{{{NS}}}vm/{{{NS}}}spec")
    if el is None or not el.text:
        return None
    try:
        spec = json.loads(el.text)
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def disk_devices(root: ET.Element) -> list[dict]:
    disks = []
    for el in root.findall("devices/disk"):
        source = el.find("source")
        target = el.find("target")
        alias = el.find("alias")
        driver = el.find("driver")
        disks.append(
            {
                "element": el,
                "device": el.get("device"),
                "path": source.get("file") if source is not None else None,
                "target": target.get("dev") if target is not None else None,
                "bus": target.get("bus") if target is not None else None,
                "alias": alias.get("name") if alias is not None else None,
                "format": driver.get("type") if driver is not None else None,
            }
        )
    return disks


def nic_devices(root: ET.Element) -> list[dict]:
    nics = []
    for el in root.findall("devices/interface"):
        mac = el.find("mac")
        source = el.find("source")
        target = el.find("target")
        link = el.find("link")
        alias = el.find("alias")
        nics.append(
            {
                "element": el,
                "mac": (mac.get("address") or "").lower() if mac is not None else "",
                "bridge": source.get("bridge") if source is not None else None,
                "target": target.get("dev") if target is not None else None,
                "linked": link is None or link.get("state") != "down",
                "alias": alias.get("name") if alias is not None else None,
            }
        )
    return nics


def _text(parent: ET.Element, tag: str, text: str, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, **attrs)
    el.text = text
    return el
