"""The lab for real: two hosts in network namespaces, each with its own libvirtd, a tiny
guest reaching its qemu-guest-agent, network and power failures, and a clean ``down``."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostagent.lab import core
from hostagent.lab.__main__ import COLUMNS

libvirt = pytest.importorskip("libvirt")
libvirt_qemu = pytest.importorskip("libvirt_qemu")

pytestmark = pytest.mark.lab

AGENT_TIMEOUT = 60  # seconds from create() to a guest-ping answer (about 10 s under TCG here)


@pytest.fixture(autouse=True)
def _quiet_libvirt():
    # libvirt prints every error it raises to stderr by default; the tests check them.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _open(host):
    assert core.tcp_reachable(host.ip), f"{host.name} is not reachable: never libvirt.open a cut host"
    return libvirt.open(host.libvirt_uri)


def _host_uuid(conn) -> str:
    return re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", conn.getCapabilities()).group(1)


def _wait_for_agent(dom, timeout: float) -> float:
    start = time.monotonic()
    while True:
        try:
            reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), 2, 0)
            assert json.loads(reply) == {"return": {}}
            return time.monotonic() - start
        except libvirt.libvirtError:
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.2)


def test_two_hosts_have_their_own_libvirtd_with_distinct_uuids(lab_hosts):
    h1, h2 = lab_hosts
    assert (h1.ip, h2.ip) == ("10.213.0.11", "10.213.0.12")
    assert h1.libvirt_uri == "qemu+tcp://10.213.0.11/system"

    seen = {}
    for host in lab_hosts:
        conn = _open(host)
        try:
            assert conn.getHostname() == host.name
            seen[host.name] = _host_uuid(conn)
        finally:
            conn.close()

    assert seen == {"h1": h1.host_uuid, "h2": h2.host_uuid}
    assert h1.host_uuid != h2.host_uuid


def test_up_again_keeps_the_same_hosts_and_daemons(lab_hosts, lab_state_dir):
    before = {row["name"]: row["pids"] for row in core.status(lab_state_dir)}

    again = core.up(2, lab_state_dir, probe_kvm=False)

    assert [h.name for h in again] == ["h1", "h2"]
    after = core.status(lab_state_dir)
    assert {row["name"]: row["pids"] for row in after} == before
    assert [row["state"] for row in after] == ["up", "up"]
    assert core._namespaces() == ["olvm-h1", "olvm-h2"]


def test_tiny_guest_reaches_its_guest_agent(lab_hosts, lab_state_dir):
    h1 = lab_hosts[0]
    disk = h1.shared_dir / "tiny-test.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(core.IMAGES_DIR / "tiny-disk.qcow2")]
        + [str(disk)],
        check=True,
        timeout=30,
    )
    conn = _open(h1)
    dom = conn.defineXML(core.tiny_guest_xml("tiny-test", disk=disk, user_nic=True))
    try:
        assert "<domain type='qemu'" in dom.XMLDesc(0)
        assert dom.maxMemory() == 128 * 1024

        dom.create()
        boot = _wait_for_agent(dom, AGENT_TIMEOUT)
        print(f"\ntiny guest: boot to guest agent {boot:.1f} s")

        info = dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME)
        assert info["os.id"] == "olvm-tiny"
        assert info["os.name"] == "OLVM tiny guest"
        assert info["hostname"] == "tiny-test"
        assert core.status(lab_state_dir)[0]["domains"] == 1
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()
        disk.unlink(missing_ok=True)


def test_fail_net_cuts_the_host_off_and_heal_brings_it_back(lab_hosts, lab_state_dir):
    h1, h2 = lab_hosts

    core.fail("h1", "net", lab_state_dir)

    start = time.monotonic()
    assert not core.tcp_reachable(h1.ip, timeout=1)
    assert time.monotonic() - start < 2
    assert core.tcp_reachable(h2.ip)
    row = core.status(lab_state_dir)[0]
    assert (row["state"], row["reachable"], row["running"]["libvirtd"]) == ("net-cut", False, True)

    core.heal("h1", lab_state_dir)

    conn = _open(h1)
    try:
        assert conn.getHostname() == "h1"
    finally:
        conn.close()
    assert core.status(lab_state_dir)[0]["state"] == "up"


def test_fail_power_kills_the_daemons_and_heal_restarts_them(lab_hosts, lab_state_dir):
    h2 = lab_hosts[1]
    old = core.status(lab_state_dir)[1]["pids"]

    core.fail("h2", "power", lab_state_dir)

    row = core.status(lab_state_dir)[1]
    assert (row["state"], row["reachable"]) == ("powered-off", False)
    assert not core._alive(old["libvirtd"]) and not core._alive(old["virtlogd"])

    core.heal("h2", lab_state_dir)

    row = core.status(lab_state_dir)[1]
    assert row["state"] == "up"
    assert row["pids"]["libvirtd"] != old["libvirtd"]
    conn = _open(h2)
    try:
        assert _host_uuid(conn) == h2.host_uuid
    finally:
        conn.close()


def test_agent_command_runs_inside_the_host(lab_hosts, lab_state_dir):
    script = 'echo "$(hostname) $OLVM_LAB_IP $(grep -c host_uuid /etc/libvirt/libvirtd.conf)"; exec sleep 600'

    core.up(2, lab_state_dir, agent_command=lambda host: ["sh", "-c", script, host.name], probe_kvm=False)

    rows = core.status(lab_state_dir)
    assert [row["running"]["agent"] for row in rows] == [True, True]
    log = lab_hosts[0].log_dir / "agent.log"
    deadline = time.monotonic() + 5
    while "h1 10.213.0.11 2" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "h1 10.213.0.11 2" in log.read_text()

    agent_pid = rows[0]["pids"]["agent"]
    core.fail("h1", "power", lab_state_dir)
    assert not core._alive(agent_pid)
    core.heal("h1", lab_state_dir)
    assert core.status(lab_state_dir)[0]["running"]["agent"] is True


def test_cli_prints_a_table_and_rejects_bad_input(lab_hosts, lab_state_dir):
    cli = [sys.executable, "-m", "hostagent.lab", "--state-dir", str(lab_state_dir)]
    repo = Path(core.__file__).resolve().parents[2]

    ok = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=30, cwd=repo)
    bad_host = subprocess.run([*cli, "fail", "h9", "net"], capture_output=True, text=True, timeout=30, cwd=repo)
    bad_mode = subprocess.run([*cli, "fail", "h1", "disk"], capture_output=True, text=True, timeout=30, cwd=repo)

    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].split() == list(COLUMNS)
    assert re.search(r"^h1\s+up\s+10\.213\.0\.11\s", ok.stdout, re.M)
    assert (bad_host.returncode, bad_host.stderr.strip()) == (2, "lab: no lab host 'h9' (hosts: h1, h2)")
    assert bad_mode.returncode == 2 and "invalid choice: 'disk'" in bad_mode.stderr
    assert "Traceback" not in bad_host.stderr + bad_mode.stderr


def test_down_removes_namespaces_bridge_and_daemons_but_keeps_the_shared_dir(lab_hosts, lab_state_dir):
    pids = [pid for row in core.status(lab_state_dir) for pid in row["pids"].values() if pid]
    (lab_hosts[0].shared_dir / "keep.txt").write_text("storage domain data")

    removed = core.down(lab_state_dir)

    assert removed == ["h1", "h2"]
    assert core._namespaces() == []
    assert not Path("/sys/class/net", core.BRIDGE).exists()
    assert not any(Path("/sys/class/net", h.veth).exists() for h in lab_hosts)
    assert [pid for pid in pids if core._alive(pid)] == []
    assert core.status(lab_state_dir) == []
    assert (lab_hosts[0].shared_dir / "keep.txt").read_text() == "storage domain data"
    assert core.down(lab_state_dir) == []  # idempotent
