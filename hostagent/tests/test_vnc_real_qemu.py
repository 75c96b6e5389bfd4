"""`vnc_open` on a real QEMU (libvirt's embedded driver, as in test_real_qemu.py): the port
comes from the live domain XML, and RFB goes through the agent's TLS proxy untouched up
to the server's ServerInit, which names the domain. Skipped where QEMU or the tiny guest
image is missing."""

import shutil
import struct
import tempfile
import uuid
from pathlib import Path

import libvirt
import pytest

from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent
from hostagent.tests.test_real_qemu import IMAGES, QEMU_CONF, TEMPLATE_ID
from hostagent.tests.test_real_qemu import pytestmark as needs_qemu

pytestmark = needs_qemu


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    base = tmp_path_factory.mktemp("real-vnc")
    embed_root = Path(tempfile.mkdtemp(prefix="olvm-", dir="/tmp"))  # short UNIX socket paths
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
        kvm="no",
        disk_cache="writeback",
        request_timeout=120,
    )
    with running_agent(config) as server:
        try:
            server.driver.connection()
        except Exception as exc:  # noqa: BLE001 - any failure here means: no embedded QEMU on this machine
            pytest.skip(f"libvirt's embedded QEMU driver is not usable here: {exc}")
        try:
            yield remote_client(server, pki), {"path": str(base / "storage" / "sd1")}
        finally:
            for dom in server.driver.connection().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                dom.destroy()
    shutil.rmtree(embed_root, ignore_errors=True)


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
