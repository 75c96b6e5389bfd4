"""Live migration through the agent on real lab hosts: the agent (its JSON-RPC server and
libvirt driver, in-process here, on h1's libvirtd over qemu+tcp) migrates the tiny guest to
h2 peer-to-peer while the guest keeps running; a cancelled migration leaves it on h1.
Needs root (the lab); runs in CI."""

import subprocess
import time
import uuid

import pytest

from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent
from hostagent.lab import core

from .conftest import active_on, clear_domains, guest_ping, libvirt, wait_for

libvirt_qemu = pytest.importorskip("libvirt_qemu")

pytestmark = pytest.mark.lab

BOOT_TIMEOUT = 90  # TCG guest to a guest agent that answers, under CI load
MIGRATION_TIMEOUT = 120


@pytest.fixture
def lab(lab_hosts, tmp_path):
    """h1's agent (libvirt driver on qemu+tcp://10.213.0.11/system) and a connection to
    each host; every domain cleared afterwards."""
    h1, h2 = lab_hosts
    clear_domains(lab_hosts)
    pki = make_pki(tmp_path / "pki")
    config = agent_config(
        pki,
        driver="libvirt",
        libvirt_uri=h1.libvirt_uri,
        storage_roots=[str(h1.shared_dir)],
        host_name="h1",
    )
    conns = [libvirt.open(h.libvirt_uri) for h in lab_hosts]
    try:
        with running_agent(config) as server:
            yield {"hosts": lab_hosts, "agent": remote_client(server, pki), "conns": conns}
    finally:
        for conn in conns:
            conn.close()
        clear_domains(lab_hosts)
        for disk in h1.shared_dir.glob("migrate-*.qcow2"):
            disk.unlink(missing_ok=True)


def start_tiny_guest(conn, shared_dir, name: str):
    disk = shared_dir / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(core.IMAGES_DIR / "tiny-disk.qcow2")]
        + [str(disk)],
        check=True,
        timeout=30,
    )
    dom = conn.defineXML(core.tiny_guest_xml(name, disk=disk, vm_uuid=str(uuid.uuid4())))
    dom.create()
    wait_for(lambda: guest_ping(dom), BOOT_TIMEOUT, f"the guest agent of {name}", interval=0.3)
    return dom


def wait_migration(agent, vm_id: str, timeout: float = MIGRATION_TIMEOUT) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(agent.migration_status(vm_id))
        if seen[-1]["state"] != "running":
            return seen
        time.sleep(0.2)
    pytest.fail(f"the migration did not end within {timeout} s: {seen[-1]}", pytrace=False)


def test_migrate_vm_moves_the_running_guest_to_h2_without_a_reboot(lab):
    (h1, h2), agent, (c1, c2) = lab["hosts"], lab["agent"], lab["conns"]
    dom = start_tiny_guest(c1, h1.shared_dir, "migrate-live")
    vm_id = dom.UUIDString()
    before = core.guest_uptime(dom)

    started = agent.migrate_vm(vm_id, h2.libvirt_uri, unsafe=True)
    seen = wait_migration(agent, vm_id)

    assert started == {"vm_id": vm_id, "state": "running"}
    done = seen[-1]
    assert done["state"] == "completed", done
    assert (done["progress"], done["destination"], done["post_copy"]) == (100, h2.libvirt_uri, False)
    assert 0 < done["downtime_ms"] < 5000 and done["job_time_ms"] > 0
    assert done["data_total"] > 0 and done["max_downtime_ms"] >= 125
    assert active_on(c2, vm_id) and not active_on(c1, vm_id)
    with pytest.raises(libvirt.libvirtError):
        c1.lookupByUUIDString(vm_id)  # UNDEFINE_SOURCE: no stale definition left on h1
    moved = c2.lookupByUUIDString(vm_id)
    assert moved.isPersistent()  # PERSIST_DEST
    assert guest_ping(moved)
    after = core.guest_uptime(moved)
    assert after > before  # the same boot: the guest went on running
    print(
        f"\nmigration h1->h2: {done['elapsed_ms']} ms wall (agent), job {done['job_time_ms']} ms, "
        f"downtime {done['downtime_ms']} ms, guest uptime {before:.1f} s -> {after:.1f} s"
    )


def test_migration_cancel_stops_a_slow_migration_and_the_guest_stays_on_h1(lab):
    (h1, h2), agent, (c1, c2) = lab["hosts"], lab["agent"], lab["conns"]
    dom = start_tiny_guest(c1, h1.shared_dir, "migrate-cancel")
    vm_id = dom.UUIDString()
    before = core.guest_uptime(dom)

    agent.migrate_vm(vm_id, h2.libvirt_uri, unsafe=True, bandwidth_mibps=1)  # 128 MiB at 1 MiB/s
    copying = wait_for(
        lambda: (s := agent.migration_status(vm_id))["data_processed"] > 0 and s,
        60,
        "the migration to copy memory",
    )
    cancelling = agent.migration_cancel(vm_id)
    done = wait_migration(agent, vm_id, timeout=60)[-1]

    assert copying["state"] == "running" and copying["progress"] < 50
    assert cancelling == {"vm_id": vm_id, "state": "cancelling"}
    assert done["state"] == "cancelled" and "error" not in done, done
    assert active_on(c1, vm_id) and not active_on(c2, vm_id)
    assert c1.lookupByUUIDString(vm_id).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert guest_ping(dom) and core.guest_uptime(dom) > before
    with pytest.raises(Exception, match="No migration of VM .* is running on this host"):
        agent.migration_cancel(vm_id)
    assert agent.migration_status(vm_id)["state"] == "cancelled"  # kept for the engine to read
