"""The libvirt driver on a real QEMU: libvirt's embedded driver (`qemu:///embed?root=DIR`) runs
the hypervisor inside the test process, so no libvirtd and no network is involved, and the
lab's tiny guest (var/images: direct kernel boot, busybox, the real qemu-guest-agent) boots
in a few seconds under software emulation. Skipped where QEMU or the guest image is missing
(scripts/build-guest-image.sh builds the image)."""

import shutil
import struct
import tempfile
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "var" / "images"
TEMPLATE_ID = "0e7d4b7e-7c3a-4d6e-9a44-5b0f1c2d3e4f"
QEMU_CONF = """\
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
"""

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None
    or shutil.which("qemu-img") is None
    or not all((IMAGES / name).is_file() for name in ("vmlinuz", "initrd.img", "tiny-disk.qcow2")),
    reason="needs qemu-system-x86_64, qemu-img and the tiny guest image in var/images",
)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    # libvirt puts the guest agent's socket under the embed root: a UNIX socket path must stay
    # under 108 bytes, which pytest's deep temporary directories would exceed.
    embed_root = Path(tempfile.mkdtemp(prefix="olvm-", dir="/tmp"))
    (embed_root / "etc").mkdir()
    (embed_root / "etc" / "qemu.conf").write_text(QEMU_CONF)
    images = base / "storage" / "sd1" / "images"
    images.mkdir(parents=True)
    shutil.copy(IMAGES / "tiny-disk.qcow2", images / TEMPLATE_ID)
    pki = make_pki(base / "pki")
    config = agent_config(
        pki,
        driver="libvirt",
        libvirt_uri=f"qemu:///embed?root={embed_root}",
        storage_roots=[str(base / "storage")],
        kvm="no",  # nested KVM hangs guests on these machines (see LAB.md)
        disk_cache="writeback",
        request_timeout=120,
    )
    with running_agent(config) as server:
        try:
            server.driver.connection()
        except Exception as exc:  # noqa: BLE001 - any failure here means: no embedded QEMU on this machine
            pytest.skip(f"libvirt's embedded QEMU driver is not usable here: {exc}")
        client = remote_client(server, pki)
        try:
            yield client, {"path": str(base / "storage" / "sd1")}
        finally:
            conn = server.driver.connection()
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                dom.destroy()
    shutil.rmtree(embed_root, ignore_errors=True)


def wait_for_guest_agent(client, vm_id, timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.guest_info(vm_id)
        if info["guest_agent"] == "ok" and info.get("hostname"):
            return info
        time.sleep(0.5)
    raise AssertionError(f"the guest agent did not answer within {timeout} s: {info}")


def read_until(sock, marker: bytes, timeout=15.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        data += sock.recv(4096)
    assert marker in data, data[-200:]
    return data


def test_capabilities_and_stats_of_a_real_hypervisor(real):
    client, _ = real

    caps = client.capabilities()
    stats = client.host_stats()

    assert caps["hypervisor"] == "QEMU" and caps["qemu_version"].startswith("7.")
    assert caps["kvm"] is False and caps["kvm_detail"] == "disabled by the agent config (kvm = no)"
    assert caps["cpu_threads"] >= 1 and caps["memory_mib"] > 0 and caps["cpu_model"]
    assert "lo" in [nic["name"] for nic in caps["nics"]]
    assert stats["memory"]["total_mib"] == caps["memory_mib"] or stats["memory"]["total_mib"] > 0
    assert 0 <= stats["cpu"]["idle_pct"] <= 100


def test_a_real_guest_through_every_vm_verb(real):
    client, sd = real
    disk = {"id": str(uuid.uuid4()), "storage_domain": sd, "backing_id": TEMPLATE_ID}
    assert client.image_clone(disk)["backing_id"] == TEMPLATE_ID
    vm_id = str(uuid.uuid4())
    spec = {
        "id": vm_id,
        "name": "tiny <&> \"'",
        "description": "</description><devices><disk/></devices>",
        "vcpus": 1,
        "max_vcpus": 2,
        "memory_mib": 128,
        "max_memory_mib": 192,
        "console_type": "serial",
        "machine": "q35",
        "kernel": str(IMAGES / "vmlinuz"),
        "initrd": str(IMAGES / "initrd.img"),
        "cmdline": "console=ttyS0 quiet olvm.hostname=tiny1",
        "disks": [{"id": disk["id"], "storage_domain": sd, "bootable": True}],
    }

    assert client.create_vm(spec) == {"vm_id": vm_id, "status": "up", "domain_type": "qemu"}
    info = wait_for_guest_agent(client, vm_id)
    assert info["hostname"] == "tiny1" and info["os"]["id"] == "olvm-tiny"

    console = client.open_console(vm_id)
    try:
        console.settimeout(15)
        console.sendall(b"\r")
        read_until(console, b"tiny# ")
        console.sendall(b"echo hel''lo\r")
        assert b"\r\nhello\r\n" in read_until(console, b"\r\nhello\r\n")
    finally:
        console.close()

    # Before the live vCPU change: QEMU 7.2 cannot load a memory snapshot taken after a vCPU
    # hot-plug ("Unknown savevm section or instance 'cpu_common' 1").
    snapshot_id = str(uuid.uuid4())
    assert client.snapshot_create(vm_id, {"id": snapshot_id, "description": "<before>"})["memory"] is True
    assert client.snapshot_revert(vm_id, snapshot_id)["status"] == "up"
    assert client.snapshot_delete(vm_id, snapshot_id)["existed"] is True

    assert client.set_memory(vm_id, 160)["memory_mib"] == 160
    assert client.set_vcpus(vm_id, 2)["vcpus"] == 2
    extra = {"id": str(uuid.uuid4()), "storage_domain": sd, "size": 1024**2}
    client.image_create(extra)
    assert client.hotplug_disk(vm_id, extra) == {"vm_id": vm_id, "plugged": True, "target": "vdb", "live": True}
    nic = {"id": str(uuid.uuid4()), "mac": "56:6f:1a:00:00:09", "network": None, "linked": False}
    assert client.hotplug_nic(vm_id, nic)["live"] is True
    assert client.hotplug_nic(vm_id, {**nic, "linked": True})["updated"] is True
    [stats] = client.vm_stats(vm_id)["vms"]
    assert stats["status"] == "up" and stats["cpu_time_ns"] > 0
    assert {d["target"] for d in stats["disks"]} == {"vda", "vdb"}

    assert client.suspend_vm(vm_id, f"{vm_id}.state")["status"] == "suspended"
    assert client.restore_vm(vm_id, f"{vm_id}.state", spec)["status"] == "up"
    wait_for_guest_agent(client, vm_id)

    assert client.reboot_vm(vm_id)["status"] == "up"
    wait_for_guest_agent(client, vm_id)
    down = client.shutdown_vm(vm_id, timeout=60, mode="guest_agent")
    assert down["status"] == "down" and down["seconds"] < 60

    assert client.undefine_vm(vm_id)["existed"] is True
    assert client.image_remove(extra)["existed"] is True


# VNC through the agent (same embedded driver: libvirt allows one per process) ---------------


def recv_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, data
        data += chunk
    return data


def test_the_vnc_display_of_a_real_guest_through_the_agent(real):
    client, sd = real
    disk = {"id": str(uuid.uuid4()), "storage_domain": sd, "backing_id": TEMPLATE_ID}
    client.image_clone(disk)
    vm_id = str(uuid.uuid4())
    client.create_vm(
        {
            "id": vm_id,
            "name": "tiny-vnc",
            "vcpus": 1,
            "memory_mib": 128,
            "console_type": "vnc",
            "kernel": str(IMAGES / "vmlinuz"),
            "initrd": str(IMAGES / "initrd.img"),
            "cmdline": "console=ttyS0 quiet",
            "disks": [{"id": disk["id"], "storage_domain": sd, "bootable": True}],
        }
    )

    sock = client.open_vnc(vm_id)
    try:
        sock.settimeout(15)
        assert recv_exactly(sock, 12) == b"RFB 003.008\n"
        sock.sendall(b"RFB 003.008\n")
        (count,) = recv_exactly(sock, 1)
        assert 1 in recv_exactly(sock, count)  # security type None: only the engine reaches this port
        sock.sendall(b"\x01")
        assert recv_exactly(sock, 4) == b"\x00\x00\x00\x00"  # SecurityResult OK
        sock.sendall(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", recv_exactly(sock, 4))
        recv_exactly(sock, 16)  # the pixel format
        (name_length,) = struct.unpack(">I", recv_exactly(sock, 4))
        name = recv_exactly(sock, name_length)
    finally:
        sock.close()

    assert width > 0 and height > 0
    assert name == b"QEMU (tiny-vnc)"
    client.destroy_vm(vm_id)
    client.undefine_vm(vm_id)
    client.image_remove(disk)
