"""Every verb through the real HTTPS server on 127.0.0.1, once with the libvirt driver on
libvirt's built-in `test:///default` hypervisor and once with the sim driver."""

import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from hostagent.agent.drivers import ConsoleStream
from hostagent.agent.server import AgentHTTPServer, ConsoleRegistry
from hostagent.agent.testing import RawRpc, agent_config, make_pki, remote_client, running_agent, sample_params
from hostagent.agent.verbs import VERBS
from hostagent.client import AgentRpcError, AgentRpcUnavailable, RemoteAgentClient

DRIVERS = ["sim", "libvirt"]
HAVE_QEMU_IMG = shutil.which("qemu-img") is not None


@dataclass
class Agent:
    driver: str
    server: AgentHTTPServer
    client: RemoteAgentClient
    raw: RawRpc
    storage: Path

    @property
    def simulated(self) -> bool:
        return self.driver == "sim"

    def sd(self, name: str = "sd1") -> dict:
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "path": str(self.storage / name)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=DRIVERS)
def agent(request, pki, tmp_path_factory):
    storage = tmp_path_factory.mktemp(f"storage-{request.param}")
    (storage / "sd1").mkdir()
    config = agent_config(
        pki, driver=request.param, libvirt_uri="test:///default", storage_roots=[str(storage)], host_name="sim-h1"
    )
    with running_agent(config) as server:
        yield Agent(request.param, server, remote_client(server, pki), RawRpc(server, pki), storage)


def make_spec(agent: Agent, **overrides) -> dict:
    vm_id = str(uuid.uuid4())
    return {
        "id": vm_id,
        "name": f"vm-{vm_id[:8]}",
        "description": "a test VM",
        "vcpus": 1,
        "max_vcpus": 4,
        "memory_mib": 128,
        "max_memory_mib": 512,
        "guaranteed_memory_mib": 64,
        "console_type": "vnc",
        "disks": [{"id": str(uuid.uuid4()), "storage_domain": agent.sd(), "format": "qcow2", "bootable": True}],
        "nics": [{"name": "nic1", "mac": "56:6f:1a:00:00:01", "model": "virtio", "network": "ovirtmgmt"}],
        **overrides,
    }


def rpc_error(call, *args, **kwargs) -> AgentRpcError:
    with pytest.raises(AgentRpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def libvirt_status(vm_id: str) -> int:
    conn = libvirt.open("test:///default")
    try:
        return conn.lookupByUUIDString(vm_id).state()[0]
    finally:
        conn.close()


# Host ---------------------------------------------------------------------------------------


def test_ping(agent):
    result = agent.client.ping()

    assert result["ok"] is True
    assert result["driver"] == agent.driver
    assert result.get("simulated", False) is agent.simulated


def test_capabilities_describe_the_host(agent):
    caps = agent.client.capabilities()

    for key in (
        "hostname",
        "cpu_model",
        "cpu_sockets",
        "cpu_cores",
        "cpu_threads",
        "memory_mib",
        "libvirt_version",
        "qemu_version",
        "kvm",
        "kvm_detail",
        "nics",
        "storage_roots",
    ):
        assert key in caps, key
    assert caps["cpu_threads"] >= caps["cpu_cores"] >= caps["cpu_sockets"] >= 1
    assert caps["kvm"] is False
    assert caps["storage_roots"][0]["path"] == str(agent.storage)
    if agent.simulated:
        assert caps["simulated"] is True and caps["cpu_model"] == "Simulated CPU (no hypervisor)"
        assert caps["hostname"] == "sim-h1.simulated"
    else:
        assert "simulated" not in caps
        assert caps["libvirt_version"] == "9.0.0"
        assert caps["hypervisor"] == "TEST" and caps["qemu_version"] is None
        assert (caps["cpu_sockets"], caps["cpu_cores"], caps["cpu_threads"], caps["memory_mib"]) == (4, 8, 16, 3072)
        assert caps["kvm_detail"] == "libvirt at test:///default offers no KVM domains"
        assert caps["nics"] == [{"name": "eth1", "mac": "aa:bb:cc:dd:ee:ff", "state": "up"}]


def test_host_stats(agent):
    stats = agent.client.host_stats()

    assert set(stats) >= {"time", "cpu", "memory", "vms_running"}
    assert stats["memory"]["total_mib"] > 0


# VM lifecycle ---------------------------------------------------------------------------------


def test_a_vm_goes_through_its_whole_life(agent):
    spec = make_spec(agent)
    vm_id = spec["id"]
    c = agent.client

    assert c.create_vm(spec)["status"] == "up"
    assert {"vm_id": vm_id, "name": spec["name"], "status": "up", "managed": True} in c.vm_list()["vms"]
    assert c.pause_vm(vm_id)["status"] == "paused"
    assert c.pause_vm(vm_id)["already"] is True
    assert c.resume_vm(vm_id)["status"] == "up"
    assert c.reboot_vm(vm_id)["status"] == "up"
    assert c.set_memory(vm_id, 256) == {
        "vm_id": vm_id,
        "memory_mib": 256,
        "max_memory_mib": 512,
        **({"simulated": True} if agent.simulated else {}),
    }
    assert c.set_vcpus(vm_id, 3)["vcpus"] == 3
    [stats] = c.vm_stats(vm_id)["vms"]
    assert (stats["vm_id"], stats["status"], stats["vcpus"], stats["balloon_kib"]) == (vm_id, "up", 3, 256 * 1024)
    assert stats["memory_kib"] == 512 * 1024
    assert c.shutdown_vm(vm_id, timeout=5)["status"] == "down"
    assert c.shutdown_vm(vm_id, timeout=5)["already"] is True
    assert c.create_vm(spec)["status"] == "up"
    suspended = c.suspend_vm(vm_id, f"{vm_id}.state")
    assert suspended["status"] == "suspended"
    assert suspended["state_path"] == str(agent.storage / "states" / f"{vm_id}.state")
    if not agent.simulated:
        assert Path(suspended["state_path"]).is_file()
        assert libvirt_status(vm_id) == libvirt.VIR_DOMAIN_SHUTOFF
    assert c.restore_vm(vm_id, f"{vm_id}.state", spec)["status"] == "up"
    assert not Path(suspended["state_path"]).exists()
    if not agent.simulated:
        assert libvirt_status(vm_id) == libvirt.VIR_DOMAIN_RUNNING
    assert c.destroy_vm(vm_id)["status"] == "down"
    assert c.undefine_vm(vm_id)["existed"] is True
    assert vm_id not in [v["vm_id"] for v in c.vm_list()["vms"]]
    assert c.destroy_vm(vm_id)["existed"] is False
    assert c.undefine_vm(vm_id)["existed"] is False


def test_a_hostile_name_and_description_start_a_vm(agent):
    spec = make_spec(agent, name="<x>&\"'", description="</description><devices><disk/></devices>&amp;]]>")

    assert agent.client.create_vm(spec)["status"] == "up"

    [stats] = agent.client.vm_stats(spec["id"])["vms"]
    assert stats["name"] == "<x>&\"'"
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_starting_a_running_vm_again_is_harmless_and_a_name_clash_is_refused(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    assert agent.client.create_vm(spec)["already"] is True
    clash = rpc_error(agent.client.create_vm, {**spec, "id": str(uuid.uuid4())})
    assert clash.code == -32002 and clash.kind == "conflict"
    assert "Another VM named" in str(clash)
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("shutdown_vm", ()),
        ("reboot_vm", ()),
        ("pause_vm", ()),
        ("resume_vm", ()),
        ("suspend_vm", ("x.state",)),
        ("set_memory", (128,)),
        ("set_vcpus", (1,)),
        ("guest_info", ()),
        ("hotunplug_nic", ("56:6f:1a:00:00:01",)),
        ("snapshot_revert", ("0b8d0d3c-6a0f-4a35-9d5c-42c1b5f3c001",)),
    ],
)
def test_verbs_on_a_vm_this_host_does_not_have_say_not_found(agent, verb, args):
    vm_id = str(uuid.uuid4())

    error = rpc_error(getattr(agent.client, verb), vm_id, *args)

    assert (error.code, error.kind) == (-32001, "not_found")
    assert vm_id in str(error)


def test_wrong_states_are_conflicts(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)
    agent.client.shutdown_vm(spec["id"], timeout=5)

    for call in (agent.client.pause_vm, agent.client.resume_vm, agent.client.reboot_vm, agent.client.guest_info):
        error = rpc_error(call, spec["id"])
        assert (error.code, error.kind, error.data["status"]) == (-32002, "conflict", "down"), call
    agent.client.undefine_vm(spec["id"])


def test_a_paused_vm_cannot_be_shut_down_only_destroyed(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)
    agent.client.pause_vm(spec["id"])

    error = rpc_error(agent.client.shutdown_vm, spec["id"], timeout=5)

    assert (error.code, error.data["status"]) == (-32002, "paused")
    assert agent.client.destroy_vm(spec["id"])["status"] == "down"
    agent.client.undefine_vm(spec["id"])


def test_running_vms_cannot_be_undefined(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    assert rpc_error(agent.client.undefine_vm, spec["id"]).code == -32002
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_live_changes_stay_within_the_vm_limits(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    too_much = rpc_error(agent.client.set_memory, spec["id"], 1024)
    too_little = rpc_error(agent.client.set_memory, spec["id"], 32)
    too_many = rpc_error(agent.client.set_vcpus, spec["id"], 5)

    assert (too_much.code, str(too_much).split(": ", 2)[-1]) == (
        -32602,
        "params.memory_mib: exceeds the VM's maximum of 512 MiB",
    )
    assert too_little.data["field"] == "params.memory_mib" and "guaranteed memory of 64 MiB" in str(too_little)
    assert too_many.data["field"] == "params.vcpus" and "maximum of 4 vCPUs" in str(too_many)
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_state_paths_stay_under_the_storage_roots(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    for bad in ("../../etc/cron.d/x", "/etc/passwd", "a/b.state", ".hidden"):
        error = rpc_error(agent.client.suspend_vm, spec["id"], bad)
        assert (error.code, error.data["field"]) == (-32602, "params.state_path"), bad
    assert agent.client.vm_stats(spec["id"])["vms"][0]["status"] == "up"
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_disks_outside_the_storage_roots_are_refused_before_libvirt_sees_them(agent):
    spec = make_spec(agent)
    spec["disks"].append({"id": str(uuid.uuid4()), "storage_domain": {"path": "/etc"}})

    error = rpc_error(agent.client.create_vm, spec)

    assert (error.code, error.data["field"]) == (-32602, "params.spec.disks[1].storage_domain.path")
    assert spec["id"] not in [v["vm_id"] for v in agent.client.vm_list()["vms"]]


# Snapshots ------------------------------------------------------------------------------------


def test_snapshots_of_a_running_vm(agent):
    spec = make_spec(agent)
    vm_id = spec["id"]
    snap = {"id": str(uuid.uuid4()), "description": "before <upgrade> & co", "with_memory": True}
    agent.client.create_vm(spec)

    created = agent.client.snapshot_create(vm_id, snap)
    assert (created["snapshot_id"], created["memory"], created["offline"]) == (snap["id"], True, False)
    assert agent.client.snapshot_create(vm_id, snap)["already"] is True
    assert agent.client.snapshot_revert(vm_id, snap["id"])["status"] == "up"
    assert agent.client.snapshot_delete(vm_id, snap["id"])["existed"] is True
    assert agent.client.snapshot_delete(vm_id, snap["id"])["existed"] is False
    missing = rpc_error(agent.client.snapshot_revert, vm_id, snap["id"])
    assert missing.code == -32001
    agent.client.destroy_vm(vm_id)
    agent.client.undefine_vm(vm_id)


def test_a_snapshot_of_a_vm_this_host_lacks_needs_its_spec(agent):
    error = rpc_error(agent.client.snapshot_create, str(uuid.uuid4()), {"id": str(uuid.uuid4())})

    assert error.code == -32001
    assert "pass its spec" in str(error)


# Devices ------------------------------------------------------------------------------------


def test_disk_and_nic_hotplug(agent):
    spec = make_spec(agent)
    vm_id = spec["id"]
    agent.client.create_vm(spec)
    disk = {"id": str(uuid.uuid4()), "storage_domain": agent.sd(), "interface": "virtio"}
    nic = {"id": str(uuid.uuid4()), "mac": "56:6f:1a:00:00:02", "interface": "e1000", "network": "br1", "linked": True}

    if agent.simulated:
        assert agent.client.hotplug_disk(vm_id, disk) == {
            "vm_id": vm_id,
            "plugged": True,
            "target": "vdb",
            "live": True,
            "simulated": True,
        }
        assert agent.client.hotplug_disk(vm_id, disk)["already"] is True
        assert agent.client.hotunplug_disk(vm_id, disk["id"])["existed"] is True
        assert agent.client.hotplug_nic(vm_id, nic)["live"] is True
        assert agent.client.hotplug_nic(vm_id, {**nic, "linked": False})["updated"] is True
        assert agent.client.hotunplug_nic(vm_id, nic["mac"])["existed"] is True
    else:
        # libvirt's test driver has no device hot-plug: an honest "unsupported", not a crash.
        for call, arg in ((agent.client.hotplug_disk, disk), (agent.client.hotplug_nic, nic)):
            error = rpc_error(call, vm_id, arg)
            assert (error.code, error.kind) == (-32004, "unsupported")
            assert "virDomainAttachDeviceFlags" in str(error)
        assert agent.client.hotunplug_nic(vm_id, "56:6f:1a:00:00:09")["existed"] is False
    assert agent.client.hotunplug_disk(vm_id, disk["id"])["existed"] is False
    agent.client.destroy_vm(vm_id)
    agent.client.undefine_vm(vm_id)


# Monitoring and console ------------------------------------------------------------------------


def test_guest_info_of_a_running_vm(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    info = agent.client.guest_info(spec["id"])

    assert set(info) >= {"vm_id", "guest_agent", "os", "hostname", "users", "interfaces"}
    if agent.simulated:
        assert info["guest_agent"] == "ok" and info["hostname"] == spec["name"]
    else:
        assert info["guest_agent"] == "unsupported"
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_vm_stats_of_every_vm(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    stats = {s["vm_id"]: s for s in agent.client.vm_stats()["vms"]}

    assert stats[spec["id"]]["status"] == "up"
    assert stats[spec["id"]]["disks"][0]["path"] == str(agent.storage / "sd1" / "images" / spec["disks"][0]["id"])
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_serial_console_stream(agent):
    spec = make_spec(agent)
    agent.client.create_vm(spec)

    if agent.simulated:
        sock = agent.client.open_console(spec["id"])
        try:
            sock.settimeout(5)
            banner = b""
            while not banner.endswith(b"\r\n"):
                banner += sock.recv(4096)
            assert banner == f"OLVM simulated serial console of VM {spec['name']} (no hypervisor)\r\n".encode()
            sock.sendall(b"hello\r")
            echo = b""
            while len(echo) < 7:
                echo += sock.recv(4096)
            assert echo == b"hello\r\n"
        finally:
            sock.close()
        ticket = agent.client.call("console_open", {"vm_id": spec["id"]})
        assert ticket["path"].startswith("/console/") and ticket["expires_in"] == 30.0
    else:
        error = rpc_error(agent.client.open_console, spec["id"])
        assert (error.code, error.kind) == (-32004, "unsupported")
        assert "virDomainOpenConsole" in str(error)
    agent.client.destroy_vm(spec["id"])
    agent.client.undefine_vm(spec["id"])


def test_a_console_ticket_is_good_once(small_sim_agent, pki):
    client, raw = remote_client(small_sim_agent, pki), RawRpc(small_sim_agent, pki)
    vm_id = str(uuid.uuid4())
    client.create_vm({"id": vm_id, "name": "console", "vcpus": 1, "memory_mib": 64})
    ticket = client.call("console_open", {"vm_id": vm_id})

    first = raw.post(b"", method="GET", path=ticket["path"], headers={"Upgrade": "nope"})
    second = raw.post(b"", method="GET", path=ticket["path"], headers={"Upgrade": "olvm-console"})

    assert first[0] == 400 and first[1]["error"]["code"] == -32600
    assert second[0] == 404 and "No such console ticket" in second[1]["error"]["message"]


def test_an_unclaimed_console_ticket_closes_its_console():
    closed = threading.Event()

    class Stream(ConsoleStream):
        def close(self):
            closed.set()

    class Driver:
        def open_console(self, vm_id):
            return Stream()

    registry = ConsoleRegistry(ttl=0.1)
    ticket = registry.open(Driver(), "vm")

    assert closed.wait(2)
    assert registry.take(ticket["path"].rsplit("/", 1)[1]) is None


# Images and storage domains --------------------------------------------------------------------


def test_image_verbs(agent):
    if not agent.simulated and not HAVE_QEMU_IMG:
        pytest.skip("qemu-img is not installed")
    sd = agent.sd()
    base = {"id": str(uuid.uuid4()), "storage_domain": sd, "size": 8 * 1024**2, "format": "qcow2"}
    overlay = {"id": str(uuid.uuid4()), "storage_domain": sd, "backing_id": base["id"], "format": "qcow2"}
    copy = {"id": str(uuid.uuid4()), "storage_domain": sd, "copy_from_id": base["id"], "format": "raw"}
    c = agent.client

    created = c.image_create(base)
    assert (created["image_id"], created["format"], created["virtual_size"]) == (base["id"], "qcow2", 8 * 1024**2)
    assert created["path"] == str(agent.storage / "sd1" / "images" / base["id"])
    assert c.image_clone(overlay)["backing_id"] == base["id"]
    assert c.image_copy(copy)["format"] == "raw"
    assert c.image_info(copy)["backing_id"] is None
    assert c.image_resize(copy, 16 * 1024**2)["virtual_size"] == 16 * 1024**2
    shrink = rpc_error(c.image_resize, copy, 1024**2)
    assert (shrink.code, shrink.data["field"]) == (-32602, "params.size")
    again = rpc_error(c.image_create, base)
    assert again.code == -32002
    in_use = rpc_error(c.image_remove, base)
    assert (in_use.code, in_use.kind) == (-32002, "conflict") and overlay["id"] in str(in_use)
    assert c.image_remove(overlay)["existed"] is True
    assert c.image_remove(base)["existed"] is True
    assert c.image_remove(base)["existed"] is False
    assert c.image_remove(copy)["existed"] is True
    assert rpc_error(c.image_info, base).code == -32001


def test_image_ids_and_domains_cannot_escape_the_storage_roots(agent):
    sd = agent.sd()
    cases = [
        ({"id": "../../etc/passwd", "storage_domain": sd, "size": 1}, "params.image.id"),
        ({"id": "/etc/passwd", "storage_domain": sd, "size": 1}, "params.image.id"),
        ({"id": str(uuid.uuid4()), "storage_domain": {"path": "/etc"}, "size": 1}, "params.image.storage_domain.path"),
        (
            {"id": str(uuid.uuid4()), "storage_domain": {"path": f"{agent.storage}/../x"}, "size": 1},
            "params.image.storage_domain.path",
        ),
        ({"id": str(uuid.uuid4()), "storage_domain": {"path": "sd1"}, "size": 1}, "params.image.storage_domain.path"),
    ]
    for image, field in cases:
        error = rpc_error(agent.client.image_create, image)
        assert (error.code, error.data["field"]) == (-32602, field), image


def test_storage_domain_stats(agent):
    stats = agent.client.storage_domain_stats(agent.sd())

    assert stats["path"] == str(agent.storage / "sd1")
    assert stats["total_bytes"] >= stats["free_bytes"] > 0
    outside = rpc_error(agent.client.storage_domain_stats, {"path": "/"})
    assert (outside.code, outside.data["field"]) == (-32602, "params.domain.path")


# The table as a whole ----------------------------------------------------------------------------


def test_every_verb_of_the_table_is_served(agent):
    samples = sample_params(str(agent.storage / "sd1"))
    assert set(samples) == set(VERBS)

    for verb, params in samples.items():
        reply = agent.raw.call(verb, params)
        assert reply["jsonrpc"] == "2.0" and reply["id"] == 1, verb
        if "error" in reply:
            assert reply["error"]["code"] not in (-32600, -32601, -32602, -32603, -32700), (verb, reply)
            assert reply["error"]["data"].get("simulated", False) is agent.simulated, verb
        else:
            assert reply["result"].get("simulated", False) is agent.simulated, verb


def test_positional_params_map_onto_the_parameter_names(agent):
    reply = agent.raw.call("destroy_vm", [str(uuid.uuid4())])

    assert reply["result"]["existed"] is False


# Timeouts and back-pressure ------------------------------------------------------------------------


@pytest.fixture
def small_sim_agent(pki, tmp_path):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], request_timeout=0.5, max_concurrent_calls=1)
    with running_agent(config) as server:
        yield server


def test_a_call_that_overruns_its_time_gets_a_timeout_error_and_the_server_goes_on(small_sim_agent, pki):
    server = small_sim_agent
    release = []
    server.driver.host_stats = lambda: time.sleep(1.5) or release.append(1) or {}
    client = remote_client(server, pki)

    started = time.monotonic()
    error = rpc_error(client.host_stats)

    assert (error.code, error.kind, error.transient) == (-32003, "timeout", True)
    assert "did not finish within 0.5 s" in str(error)
    assert time.monotonic() - started < 1.4
    time.sleep(1.2)  # let the stuck call end and free its slot
    assert client.ping()["ok"] is True


def test_calls_beyond_the_concurrency_limit_are_told_to_retry(small_sim_agent, pki):
    server = small_sim_agent
    server.driver.host_stats = lambda: time.sleep(1.0) or {}
    client = remote_client(server, pki)
    first = rpc_error(client.host_stats)  # times out after 0.5 s, still holding the only slot

    busy = rpc_error(client.ping)

    assert first.kind == "timeout"
    assert isinstance(busy, AgentRpcUnavailable) and (busy.code, busy.kind) == (-32005, "busy")
    time.sleep(0.8)
    assert client.ping()["ok"] is True


def test_the_callers_deadline_header_shortens_the_wait(small_sim_agent, pki):
    small_sim_agent.driver.host_stats = lambda: time.sleep(1.0) or {}

    status, reply = RawRpc(small_sim_agent, pki).post(
        b'{"jsonrpc":"2.0","id":7,"method":"host_stats"}', headers={"OLVM-Deadline": "0.2"}
    )

    assert status == 200 and reply["id"] == 7
    assert reply["error"]["code"] == -32003 and "within 0.2 s" in reply["error"]["message"]
    time.sleep(1.0)


def test_idle_connections_are_closed(pki, tmp_path):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], handshake_timeout=0.3)
    with running_agent(config) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            assert sock.recv(1) == b""  # no ClientHello sent: the server gives up and closes
        finally:
            sock.close()
        assert remote_client(server, pki).ping()["ok"] is True
