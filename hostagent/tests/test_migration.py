"""Live migration verbs: validation, the policy logic, two SimDrivers in one process
migrating through their real servers, and the in-process SimulatedAgentClient."""

import time
import uuid

import pytest

from hostagent.agent.drivers.migration import MigrationPlan, downtime_steps
from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent
from hostagent.agent.verbs import VERBS
from hostagent.client import AgentError, AgentRpcError, HostAddress, SimulatedAgentClient

VM_ID = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"


def rpc_error(call, *args, **kwargs) -> AgentRpcError:
    with pytest.raises(AgentRpcError) as caught:
        call(*args, **kwargs)
    return caught.value


# Validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dest_uri",
    [
        "qemu+tcp://10.213.0.12/system",
        "qemu+tls://host-2.example.com:16514/system",
        "qemu+ssh://root@host-2/system?keyfile=/root/.ssh/id",
        "qemu+tcp://[fd00::12]/system",
        "sim://127.0.0.1:56001",
    ],
)
def test_migrate_vm_accepts_libvirt_and_sim_uris(dest_uri):
    params = VERBS["migrate_vm"].validate({"vm_id": VM_ID, "dest_uri": dest_uri})

    assert params == {
        "vm_id": VM_ID.lower(),
        "dest_uri": dest_uri,
        "migrate_uri": None,
        "policy": "minimal_downtime",
        "bandwidth_mibps": 0,
        "compression": False,
        "unsafe": False,
        "max_downtime_ms": None,
        "timeout": 600,
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"dest_uri": "qemu:///system"}, "params.dest_uri"),
        ({"dest_uri": "qemu+tcp://h2/system; reboot"}, "params.dest_uri"),
        ({"dest_uri": "http://h2/system"}, "params.dest_uri"),
        ({"dest_uri": "sim://127.0.0.1"}, "params.dest_uri"),
        ({"dest_uri": "sim://127.0.0.1:70000"}, "params.dest_uri"),
        ({"dest_uri": 12}, "params.dest_uri"),
        ({"migrate_uri": "udp://10.0.1.2"}, "params.migrate_uri"),
        ({"policy": "fastest"}, "params.policy"),
        ({"bandwidth_mibps": -1}, "params.bandwidth_mibps"),
        ({"compression": "yes"}, "params.compression"),
        ({"max_downtime_ms": 0}, "params.max_downtime_ms"),
        ({"timeout": 1}, "params.timeout"),
        ({"downtime": 100}, "params.downtime"),
    ],
)
def test_migrate_vm_rejects_bad_params_naming_the_field(params, field, agents):
    source, _dest = agents
    error = rpc_error(source.raw_call, "migrate_vm", {"vm_id": VM_ID, "dest_uri": "sim://127.0.0.1:1", **params})

    assert (error.code, error.data["field"]) == (-32602, field)


def test_downtime_steps_rise_from_a_quarter_to_the_cap():
    assert downtime_steps(500) == [125, 218, 312, 406, 500]
    assert downtime_steps(5000) == [1250, 2187, 3125, 4062, 5000]
    assert downtime_steps(2) == [1, 2]


def test_the_plan_steps_the_downtime_up_per_iteration_and_aborts_without_progress():
    plan = MigrationPlan("minimal_downtime", None, timeout=600, started=0.0)
    total = 1000

    first = plan.observe({"data_total": total, "data_remaining": 900, "memory_iteration": 1}, 1.0)
    second = plan.observe({"data_total": total, "data_remaining": 100, "memory_iteration": 2}, 2.0)
    stuck = plan.observe({"data_total": total, "data_remaining": 150, "memory_iteration": 2}, 200.0)

    assert (first, second, plan.downtime_ms) == ([], [("downtime", 218)], 218)
    assert stuck == [("abort", "the migration made no progress for 150 s")]


def test_the_post_copy_plan_switches_when_the_migration_stalls():
    plan = MigrationPlan("post_copy", None, timeout=600, started=0.0)
    plan.observe({"data_total": 1000, "data_remaining": 500, "memory_iteration": 1}, 0.5)

    actions = [
        plan.observe({"data_total": 1000, "data_remaining": 600, "memory_iteration": 1}, 1 + i) for i in range(8)
    ]

    assert actions[-1] == [("post_copy",)] and not any(actions[:-1]) and plan.post_copy


def test_the_plan_aborts_after_the_timeout_and_legacy_keeps_one_downtime():
    legacy = MigrationPlan("legacy", 300, timeout=10, started=0.0)

    assert legacy.steps == [300]
    assert legacy.observe({}, 11.0) == [("abort", "the migration did not finish within its timeout of 10 s")]
    assert MigrationPlan("suspend_workload", None, 600, 0.0).steps[-1] == 5000


# Two simulated hosts in one process -----------------------------------------------------------


class Host:
    def __init__(self, server, client, storage):
        self.server, self.client, self.storage = server, client, storage

    @property
    def uri(self) -> str:
        return f"sim://127.0.0.1:{self.server.port}"

    def raw_call(self, verb, params):
        return self.client.call(verb, params)

    def vm_ids(self) -> list[str]:
        return [vm["vm_id"] for vm in self.client.vm_list()["vms"]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def agents(pki, tmp_path):
    (tmp_path / "sd1").mkdir()
    hosts = []
    with (
        running_agent(agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], host_name="sim-a")) as a,
        running_agent(agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], host_name="sim-b")) as b,
    ):
        for server in (a, b):
            hosts.append(Host(server, remote_client(server, pki), tmp_path))
        yield hosts


def start_vm(host: Host, memory_mib: int = 1024) -> str:
    vm_id = str(uuid.uuid4())
    disk = {"id": str(uuid.uuid4()), "storage_domain": {"path": str(host.storage / "sd1")}}
    spec = {"id": vm_id, "name": f"vm-{vm_id[:8]}", "vcpus": 1, "memory_mib": memory_mib, "disks": [disk]}
    host.client.create_vm(spec)
    return vm_id


def wait_finished(host: Host, vm_id: str, timeout: float = 10) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(host.client.migration_status(vm_id))
        if seen[-1]["state"] != "running":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the migration did not finish: {seen[-1]}")


def test_a_sim_migration_runs_then_moves_the_vm_to_the_destination(agents):
    source, dest = agents
    vm_id = start_vm(source, memory_mib=1024)

    started = source.client.migrate_vm(vm_id, dest.uri)
    seen = wait_finished(source, vm_id)

    assert started == {"vm_id": vm_id, "state": "running", "simulated": True}
    running = [s for s in seen if s["state"] == "running"]
    assert running and all(0 <= s["progress"] < 100 for s in running)
    assert [s["progress"] for s in running] == sorted(s["progress"] for s in running)
    done = seen[-1]
    assert (done["state"], done["progress"], done["downtime_ms"], done["destination"]) == (
        "completed",
        100,
        42,
        dest.uri,
    )
    assert done["data_total"] == 1024 * 2**20 and done["data_remaining"] == 0 and done["simulated"] is True
    assert 450 <= done["elapsed_ms"] < 2000
    assert vm_id not in source.vm_ids() and vm_id in dest.vm_ids()
    assert dest.client.vm_stats(vm_id)["vms"][0]["status"] == "up"
    assert dest.client.migration_status(vm_id)["state"] == "none"


def test_a_cancelled_sim_migration_keeps_the_vm_on_the_source(agents):
    source, dest = agents
    vm_id = start_vm(source)

    source.client.migrate_vm(vm_id, dest.uri, bandwidth_mibps=200)  # 1 GiB at 200 MiB/s: about 5 s
    time.sleep(0.2)
    cancelling = source.client.migration_cancel(vm_id)
    seen = wait_finished(source, vm_id)

    assert cancelling == {"vm_id": vm_id, "state": "cancelling", "simulated": True}
    assert seen[-1]["state"] == "cancelled" and "error" not in seen[-1]
    assert vm_id in source.vm_ids() and vm_id not in dest.vm_ids()
    again = rpc_error(source.client.migration_cancel, vm_id)
    assert (again.kind, str(again).endswith(f"No migration of VM {vm_id} is running on this host.")) == (
        "conflict",
        True,
    )


def test_a_sim_migration_to_an_unknown_host_fails_and_the_vm_stays(agents):
    source, _dest = agents
    vm_id = start_vm(source)

    source.client.migrate_vm(vm_id, "sim://127.0.0.1:9")
    done = wait_finished(source, vm_id)[-1]

    assert (done["state"], done["error"]) == (
        "failed",
        "simulated: no simulated host listens at 127.0.0.1:9 in this process",
    )
    assert vm_id in source.vm_ids()


def test_a_destination_without_the_storage_root_refuses_the_vm(agents, pki, tmp_path_factory):
    source, _dest = agents
    other = tmp_path_factory.mktemp("elsewhere")
    vm_id = start_vm(source)
    config = agent_config(pki, driver="sim", storage_roots=[str(other)], host_name="sim-c")
    with running_agent(config) as server:
        source.client.migrate_vm(vm_id, f"sim://127.0.0.1:{server.port}")
        done = wait_finished(source, vm_id)[-1]

    assert done["state"] == "failed"
    assert done["error"].startswith("simulated: the destination refused the VM: host sim-c has no storage root")
    assert vm_id in source.vm_ids()


def test_migrate_vm_refuses_a_missing_vm_a_stopped_vm_and_a_second_migration(agents):
    source, dest = agents
    vm_id = start_vm(source)

    missing = rpc_error(source.client.migrate_vm, str(uuid.uuid4()), dest.uri)
    source.client.migrate_vm(vm_id, dest.uri, bandwidth_mibps=100)
    twice = rpc_error(source.client.migrate_vm, vm_id, dest.uri)
    source.client.migration_cancel(vm_id)
    wait_finished(source, vm_id)
    source.client.destroy_vm(vm_id)
    stopped = rpc_error(source.client.migrate_vm, vm_id, dest.uri)
    libvirt_uri = rpc_error(source.client.migrate_vm, vm_id, "qemu+tcp://10.0.0.2/system")

    assert missing.kind == "not_found"
    assert (twice.kind, twice.data["status"]) == ("conflict", "migrating")
    assert (stopped.kind, stopped.data["status"]) == ("conflict", "down")
    assert (libvirt_uri.kind, libvirt_uri.data["field"]) == ("unsupported", "params.dest_uri")


# The engine's in-process stand-in -------------------------------------------------------------


@pytest.fixture
def sim_client():
    SimulatedAgentClient.reset_migrations()
    yield SimulatedAgentClient(HostAddress(id="h1", name="sim-1", address="10.0.0.1", port=54321, simulated=True))
    SimulatedAgentClient.reset_migrations()


def test_simulated_client_migration_completes_on_the_second_status(sim_client):
    assert sim_client.migration_status(VM_ID)["state"] == "none"

    started = sim_client.migrate_vm(VM_ID, "qemu+tcp://10.0.0.2/system", policy="post_copy")
    first = sim_client.migration_status(VM_ID)
    second = sim_client.migration_status(VM_ID)

    assert started == {"vm_id": VM_ID, "state": "running", "simulated": True}
    assert (first["state"], first["progress"], first["downtime_ms"]) == ("running", 50, None)
    assert (second["state"], second["progress"], second["downtime_ms"]) == ("completed", 100, 42)
    assert second["destination"] == "qemu+tcp://10.0.0.2/system"
    other_host = SimulatedAgentClient(HostAddress(id="h2", name="sim-2", address="10.0.0.2", port=1, simulated=True))
    assert other_host.migration_status(VM_ID)["state"] == "none"


def test_simulated_client_cancel_and_unreachable_destination(sim_client):
    sim_client.migrate_vm(VM_ID, "qemu+tcp://10.0.0.2/system")
    with pytest.raises(AgentError):
        sim_client.migrate_vm(VM_ID, "qemu+tcp://10.0.0.2/system")

    assert sim_client.migration_cancel(VM_ID)["state"] == "cancelling"
    assert sim_client.migration_status(VM_ID)["state"] == "cancelled"
    with pytest.raises(AgentError):
        sim_client.migration_cancel(VM_ID)

    sim_client.migrate_vm(VM_ID, "qemu+tcp://unreachable.example/system")
    failed = sim_client.migration_status(VM_ID)
    assert (failed["state"], failed["error"]) == ("failed", "simulated: destination unreachable")


# The libvirt driver on libvirt's test:///default (no migration support there) -----------------


def test_the_libvirt_driver_reports_none_refuses_cancel_and_fails_an_unsupported_migration(tmp_path):
    from hostagent.agent.config import config_from_dict
    from hostagent.agent.drivers.libvirt_driver import LibvirtDriver
    from hostagent.agent.errors import Conflict, Unsupported

    driver = LibvirtDriver(
        config_from_dict({"driver": "libvirt", "libvirt_uri": "test:///default", "storage_roots": [str(tmp_path)]})
    )
    vm_id = next(vm["vm_id"] for vm in driver.vm_list()["vms"] if vm["status"] == "up")
    try:
        none = driver.migration_status(vm_id)
        with pytest.raises(Conflict, match="No migration of VM .* is running on this host"):
            driver.migration_cancel(vm_id)
        with pytest.raises(Unsupported):
            driver.migrate_vm(vm_id, "sim://127.0.0.1:1")
        started = driver.migrate_vm(vm_id, "qemu+tcp://127.0.0.1:1/system")
        deadline = time.monotonic() + 10
        while (status := driver.migration_status(vm_id))["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        driver.close()

    assert (none["state"], none["progress"], none["downtime_ms"]) == ("none", 0, None)
    assert started == {"vm_id": vm_id, "state": "running"}
    assert (status["state"], status["error"]) == (
        "failed",
        "argument unsupported: p2p migration is not supported by the source host",
    )


def test_a_destination_that_does_not_answer_leaves_the_sources_figures(tmp_path, monkeypatch):
    """The migration is over when the destination is asked for its completed job: a
    destination cut off right then must not hold the record (libvirt.open has no timeout)."""
    import threading

    from hostagent.agent.config import config_from_dict
    from hostagent.agent.drivers import libvirt_driver
    from hostagent.agent.drivers.migration import MigrationRecord

    driver = libvirt_driver.LibvirtDriver(
        config_from_dict({"driver": "libvirt", "libvirt_uri": "test:///default", "storage_roots": [str(tmp_path)]})
    )
    cut_off = threading.Event()

    def open_that_hangs(uri):
        cut_off.wait(30)
        raise libvirt_driver.libvirt.libvirtError(f"unable to connect to {uri}")

    monkeypatch.setattr(libvirt_driver, "COMPLETED_JOB_TIMEOUT", 0.3, raising=False)
    monkeypatch.setattr(libvirt_driver.libvirt, "open", open_that_hangs)
    record = MigrationRecord(str(uuid.uuid4()), "qemu+tls://10.0.0.9/system", "minimal_downtime")
    record.stats = {"downtime": 55, "time_elapsed": 900, "data_total": 1000}
    try:
        started = time.monotonic()
        driver._read_completed_job(record)
        waited = time.monotonic() - started
    finally:
        cut_off.set()
        driver.close()

    assert waited < 5
    assert (record.downtime_ms, record.job_time_ms) == (55, 900)


def test_the_destinations_completed_job_gives_the_figures(tmp_path, monkeypatch):
    from hostagent.agent.config import config_from_dict
    from hostagent.agent.drivers import libvirt_driver
    from hostagent.agent.drivers.migration import MigrationRecord

    class Destination:
        def lookupByUUIDString(self, vm_id):
            return self

        def jobStats(self, flags):
            return {"downtime": 12, "time_elapsed": 640, "data_total": 2048, "data_remaining": 0}

        def close(self):
            pass

    driver = libvirt_driver.LibvirtDriver(
        config_from_dict({"driver": "libvirt", "libvirt_uri": "test:///default", "storage_roots": [str(tmp_path)]})
    )
    monkeypatch.setattr(libvirt_driver.libvirt, "open", lambda uri: Destination())
    record = MigrationRecord(str(uuid.uuid4()), "qemu+tls://10.0.0.9/system", "minimal_downtime")
    record.stats = {"downtime": 55, "time_elapsed": 900, "data_total": 1000}
    try:
        driver._read_completed_job(record)
    finally:
        driver.close()

    assert (record.downtime_ms, record.job_time_ms) == (12, 640)
    assert (record.stats["data_total"], record.stats["data_remaining"]) == (2048, 0)
