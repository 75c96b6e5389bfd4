"""Many simulated hosts in one process (hostagent/simulate.py) against a real IngestServer."""

import json
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hostagent import pki as engine_pki
from hostagent.agent.testing import IngestPki, running_ingest_server
from hostagent.client import HostAddress, RemoteAgentClient
from hostagent.ingest_server import IngestError, validate_batch
from hostagent.simulate import ManifestError, Simulation, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[2]
INTERVALS = {"heartbeat_interval": 0.2, "stats_interval": 0.3, "guest_info_interval": 0.3}
WAIT = 10.0  # a correctness bound, not a benchmark


class Recorder:
    """The engine's side: checks each batch like inventory.ingest, keeps it, answers 200."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.invalid: list[IngestError] = []
        self.cond = threading.Condition()

    def __call__(self, host_cn: str, body: dict):
        try:
            validate_batch(body)
        except IngestError as exc:
            self.invalid.append(exc)
            raise
        with self.cond:
            self.requests.append((host_cn, body))
            self.cond.notify_all()
        return 200, {"ok": True, "accepted": len(body["messages"]), **INTERVALS}

    def messages(self, host_cn: str, kind: str) -> list[dict]:
        with self.cond:
            return [m for cn, body in self.requests if cn == host_cn for m in body["messages"] if m["kind"] == kind]

    def wait_until(self, predicate, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not within {timeout}s; {len(self.requests)} request(s)")
                self.cond.wait(left)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """An engine CA, the ingest listener's and the engine's certificates, and three hosts'
    certificates (common name: the host id, address 127.0.0.1), as `manage.py simulate` makes them."""
    base = tmp_path_factory.mktemp("pki")
    engine_pki.create_ca(base / "ca", "OLVM Test CA")
    listener = engine_pki.issue_certificate(base / "ca", "127.0.0.1", base / "ingest", 30, "server")
    engine = engine_pki.issue_certificate(base / "ca", "olvm-engine", base / "engine", 30, "client")
    hosts = []
    for number in range(1, 4):
        host_id = str(uuid.uuid4())
        cert = engine_pki.issue_certificate(
            base / "ca", host_id, base / "hosts" / host_id, 30, "host", addresses=["127.0.0.1"]
        )
        hosts.append({"id": host_id, "name": f"sim-{number:04d}", **cert})
    return {"base": base, "listener": listener, "engine": engine, "hosts": hosts}


def manifest_for(pki, ingest_port: int, vms_per_host: int = 2) -> dict:
    return {
        "version": 1,
        "engine_url": f"https://127.0.0.1:{ingest_port}/ingest",
        "ca_file": pki["listener"]["ca_file"],
        **INTERVALS,
        "hosts": [
            {
                "id": host["id"],
                "name": host["name"],
                "port": 0,
                "cert_file": host["cert_file"],
                "key_file": host["key_file"],
                "vms": [
                    {"id": str(uuid.uuid4()), "name": f"{host['name']}-vm-{j:02d}", "vcpus": 1, "memory_mib": 512}
                    for j in range(1, vms_per_host + 1)
                ],
            }
            for host in pki["hosts"]
        ],
    }


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def ingest(recorder, pki):
    listener = pki["listener"]
    test_pki = IngestPki(ca_dir=pki["base"] / "ca", listener=listener, host=pki["hosts"][0], host_id="")
    with running_ingest_server(recorder, test_pki) as server:
        yield server
    assert recorder.invalid == []


@pytest.fixture
def simulation(pki, ingest, tmp_path):
    manifest = parse_manifest(manifest_for(pki, ingest.ports[0]))
    simulation = Simulation(manifest, storage_dir=tmp_path / "storage", send_workers=4, collect_workers=2, spread=0.1)
    simulation.start()
    yield simulation
    simulation.stop()


def engine_client(pki, simulation: Simulation, host: dict) -> RemoteAgentClient:
    address = HostAddress(
        id=host["id"], name=host["name"], address="127.0.0.1", port=simulation.servers[host["id"]].port, simulated=True
    )
    engine = pki["engine"]
    return RemoteAgentClient(
        address, cert_file=engine["cert_file"], key_file=engine["key_file"], ca_file=engine["ca_file"]
    )


def test_each_host_pushes_with_its_own_certificate_and_reports_its_vms(pki, recorder, simulation):
    hosts = pki["hosts"]
    recorder.wait_until(lambda: all(recorder.messages(h["id"], "stats") for h in hosts))

    for host, sim_host in zip(hosts, simulation.manifest.hosts, strict=True):
        vm_ids = [vm["id"] for vm in sim_host.vms]
        with recorder.cond:
            bodies = [body for cn, body in recorder.requests if cn == host["id"]]
        assert {(b["agent"]["hostname"], b["agent"]["driver"], b["agent"]["simulated"]) for b in bodies} == {
            (host["name"], "sim", True)
        }
        [report, *_] = recorder.messages(host["id"], "vm_report")
        assert [(vm["id"], vm["name"], vm["status"]) for vm in report["vms"]] == sorted(
            (vm["id"], vm["name"], "up") for vm in sim_host.vms
        )
        [stats, *_] = recorder.messages(host["id"], "stats")
        assert sorted(vm["vm_id"] for vm in stats["vms"]) == sorted(vm_ids)
        assert stats["host"]["vms_running"] == 2
    assert {cn for cn, _ in recorder.requests} == {h["id"] for h in hosts}
    deadline = time.monotonic() + WAIT  # the recorder sees a request before its pusher reads the answer
    periodic = ("heartbeat", "vm_report", "stats")
    while min((delivered := simulation.status()["messages_by_kind"])[k] for k in periodic) < 3:
        assert time.monotonic() < deadline, delivered
        time.sleep(0.05)
    assert delivered.keys() == {"heartbeat", "vm_report", "vm_event", "stats", "guest_info"}


def test_guest_information_of_a_host_goes_in_one_request_and_only_when_new(pki, recorder, simulation):
    host = pki["hosts"][1]
    recorder.wait_until(lambda: len(recorder.messages(host["id"], "guest_info")) >= 2)
    stats = len(recorder.messages(host["id"], "stats"))
    recorder.wait_until(lambda: len(recorder.messages(host["id"], "stats")) >= stats + 4)  # four more guest runs

    with recorder.cond:
        runs = [
            [m["vm_id"] for m in body["messages"] if m["kind"] == "guest_info"]
            for cn, body in recorder.requests
            if cn == host["id"] and any(m["kind"] == "guest_info" for m in body["messages"])
        ]
    assert all(len(run) == 2 for run in runs), runs  # both VMs of a collection together
    assert len(runs) == 1, runs  # the simulated guests never change: their information went once


def test_each_host_answers_json_rpc_over_mutual_tls_marked_simulated(pki, simulation):
    for host in pki["hosts"]:
        client = engine_client(pki, simulation, host)
        assert client.ping()["simulated"] is True
        caps = client.capabilities()
        assert (caps["hostname"], caps["simulated"]) == (f"{host['name']}.simulated", True)
        assert len(client.vm_list()["vms"]) == 2

    # A caller without an engine-signed certificate never gets an answer.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=pki["engine"]["ca_file"])
    port = simulation.servers[pki["hosts"][0]["id"]].port
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        conn.request("POST", "/rpc", body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
        conn.getresponse().read()


def test_an_engine_call_is_pushed_back_as_a_lifecycle_event(pki, recorder, simulation):
    host = pki["hosts"][2]
    vm = simulation.manifest.hosts[2].vms[0]
    recorder.wait_until(lambda: recorder.messages(host["id"], "vm_report"))

    assert engine_client(pki, simulation, host).pause_vm(vm["id"]) == {
        "vm_id": vm["id"],
        "status": "paused",
        "simulated": True,
    }
    recorder.wait_until(
        lambda: any(
            e["vm_id"] == vm["id"] and e["status"] == "paused" for e in recorder.messages(host["id"], "vm_event")
        )
    )


def test_the_servers_take_no_thread_per_host_while_idle(pki, tmp_path):
    manifest = manifest_for(pki, 9, vms_per_host=1)
    hosts = [{**manifest["hosts"][i % 3], "id": str(uuid.uuid4()), "name": f"sim-{i:04d}"} for i in range(30)]
    many = {**manifest, "hosts": hosts}
    before = set(threading.enumerate())
    simulation = Simulation(parse_manifest(many), storage_dir=tmp_path, push=False)
    simulation.start()
    try:
        # Thirty servers: one accepting thread for all, and the push scheduler's timer.
        assert sorted(t.name for t in set(threading.enumerate()) - before) == ["push-scheduler", "sim-accept"]
        assert engine_client(pki, simulation, hosts[29]).ping()["ok"]
    finally:
        simulation.stop()


def test_a_manifest_is_checked_before_anything_starts(pki, tmp_path):
    good = manifest_for(pki, 54322)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(good))
    assert [h.name for h in load_manifest(path).hosts] == ["sim-0001", "sim-0002", "sim-0003"]

    twice = {**good, "hosts": [good["hosts"][0], {**good["hosts"][1], "name": "sim-0001"}]}
    with pytest.raises(ManifestError, match=r"hosts\[1\].name: empty or given twice"):
        parse_manifest(twice)
    same_id = {**good, "hosts": [good["hosts"][0], {**good["hosts"][1], "id": good["hosts"][0]["id"]}]}
    with pytest.raises(ManifestError, match=r"hosts\[1\].id: empty or given twice"):
        parse_manifest(same_id)
    bad_vm = {**good, "hosts": [{**good["hosts"][0], "vms": [{"id": "not-a-uuid", "name": "x"}]}]}
    with pytest.raises(ManifestError, match=r"hosts\[0\].vms\[0\]: .*must be a UUID"):
        parse_manifest(bad_vm)
    with pytest.raises(ManifestError, match="version"):
        parse_manifest({**good, "version": 2})


def test_the_cli_runs_a_manifest_until_sigterm(pki, recorder, ingest, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest_for(pki, ingest.ports[0], vms_per_host=1)))
    status = tmp_path / "status.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "hostagent", "simulate", "--manifest", str(path), "--status-file", str(status)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        recorder.wait_until(lambda: len({cn for cn, _ in recorder.requests}) == 3)
        deadline = time.monotonic() + WAIT
        while not (status.exists() and json.loads(status.read_text())["requests_accepted"] >= 3):
            assert time.monotonic() < deadline, "no status file"
            time.sleep(0.1)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 0, stderr
    assert json.loads(status.read_text())["hosts"] == 3
    assert "3 simulated hosts with 3 VMs" in stderr


def test_the_cli_needs_a_manifest_or_hosts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hostagent", "simulate"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "give --manifest FILE, or --hosts N" in done.stderr
