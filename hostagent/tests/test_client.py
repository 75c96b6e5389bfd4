"""The engine's RemoteAgentClient against a real agent: verbs, engine-shaped specs, errors, timeouts."""

import http.server
import inspect
import socket
import ssl
import threading
import time
import uuid

import pytest

from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent
from hostagent.agent.verbs import VERBS
from hostagent.client import (
    AgentClient,
    AgentError,
    AgentRpcError,
    AgentRpcUnavailable,
    AgentUnavailable,
    HostAddress,
    RemoteAgentClient,
    SimulatedAgentClient,
    client_for,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    (root / "sd1").mkdir()
    return root


@pytest.fixture(scope="module")
def server(pki, storage):
    with running_agent(agent_config(pki, driver="sim", storage_roots=[str(storage)])) as server:
        yield server


@pytest.fixture
def client(server, pki):
    return remote_client(server, pki)


def test_client_for_keeps_simulated_hosts_in_process_and_sends_the_rest_to_the_agent():
    simulated = HostAddress(id="1", name="s1", address="10.0.0.1", port=54321, simulated=True)
    real = HostAddress(id="2", name="h1", address="10.0.0.2", port=54321, simulated=False)

    assert type(client_for(simulated)) is SimulatedAgentClient
    remote = client_for(real)
    assert type(remote) is RemoteAgentClient and remote.host == real


def test_every_engine_verb_is_a_verb_of_the_agent_with_the_same_arguments():
    engine_verbs = [n for n, f in vars(AgentClient).items() if callable(f) and not n.startswith("_")]

    assert engine_verbs and set(engine_verbs) <= set(VERBS)
    for name in engine_verbs:
        engine_args = list(inspect.signature(getattr(AgentClient, name)).parameters)[1:]
        assert set(engine_args) <= set(VERBS[name].params), name
        remote_args = list(inspect.signature(getattr(RemoteAgentClient, name)).parameters)[1:]
        assert remote_args[: len(engine_args)] == engine_args, name


def engine_vm_spec(storage, vm_id):
    """What compute.tasks.vm_spec sends, keys and all."""
    sd = {"id": str(uuid.uuid4()), "name": "data1", "type": "localfs", "path": str(storage / "sd1")}
    disk_id = str(uuid.uuid4())
    return {
        "id": vm_id,
        "name": "web-1",
        "description": "",
        "vcpus": 2,
        "memory_mib": 1024,
        "guaranteed_memory_mib": 1024,
        "os_type": "other_linux",
        "console_type": "vnc",
        "disks": [
            {
                "id": disk_id,
                "alias": "web-1_Disk1",
                "storage_domain": sd,
                "size": 10 * 1024**3,
                "format": "qcow2",
                "allocation": "thin",
                "backing_id": None,
                "interface": "virtio",
                "bootable": True,
                "read_only": False,
                "shareable": False,
            }
        ],
        "nics": [
            {
                "name": "nic1",
                "mac": "56:6f:1a:00:00:01",
                "model": "virtio",
                "network": "ovirtmgmt",
                "vlan": None,
                "linked": True,
            }
        ],
    }


def test_the_engines_own_call_shapes_are_accepted(client, storage):
    vm_id = str(uuid.uuid4())
    spec = engine_vm_spec(storage, vm_id)
    sd = spec["disks"][0]["storage_domain"]
    image = {
        **{
            k: spec["disks"][0][k]
            for k in ("id", "alias", "storage_domain", "size", "format", "allocation", "backing_id")
        },
        "data_center_id": "",
    }
    nic = {
        "id": str(uuid.uuid4()),
        "name": "nic2",
        "mac": "56:6f:1a:00:00:02",
        "interface": "e1000",
        "linked": True,
        "network": "ovirtmgmt",
        "vlan_tag": None,
        "mtu": 1500,
        "profile": "ovirtmgmt",
        "port_mirroring": False,
        "pass_through": False,
    }

    assert client.ping()["ok"] is True
    assert client.capabilities()["cpu_cores"] > 0
    assert client.storage_domain_stats({"id": sd["id"], "name": "data1", "type": "localfs", "path": sd["path"]})
    assert client.image_create(image)["actual_size"] > 0
    assert client.create_vm(spec)["status"] == "up"
    assert client.hotplug_nic(vm_id, nic)["plugged"] is True
    assert client.hotunplug_nic(vm_id, nic["mac"])["plugged"] is False
    assert client.hotplug_disk(vm_id, {**spec["disks"][0], "id": str(uuid.uuid4())})["plugged"] is True
    assert client.snapshot_create(vm_id, {"id": str(uuid.uuid4()), "description": "s", "with_memory": False})
    assert client.pause_vm(vm_id)["status"] == "paused"
    assert client.resume_vm(vm_id)["status"] == "up"
    assert client.reboot_vm(vm_id)["status"] == "up"
    assert client.suspend_vm(vm_id, state_path=f"{vm_id}.state")["status"] == "suspended"
    assert client.restore_vm(vm_id, state_path=f"{vm_id}.state", spec=spec)["status"] == "up"
    assert client.shutdown_vm(vm_id)["status"] == "down"
    assert client.destroy_vm(vm_id)["status"] == "down"
    assert client.image_remove({"id": image["id"], "storage_domain": sd})["removed"] is True


def test_agent_errors_keep_their_code_kind_and_field(client):
    missing = str(uuid.uuid4())

    with pytest.raises(AgentRpcError) as not_found:
        client.pause_vm(missing)
    with pytest.raises(AgentRpcError) as invalid:
        client.shutdown_vm("not-a-uuid")

    assert not isinstance(not_found.value, AgentUnavailable)
    assert (not_found.value.code, not_found.value.kind, not_found.value.transient) == (-32001, "not_found", False)
    assert (
        str(not_found.value)
        == f"Host test-host (127.0.0.1:{client.host.port}): pause_vm: VM {missing} is not on this host."
    )
    assert (invalid.value.code, invalid.value.data["field"]) == (-32602, "params.vm_id")
    assert isinstance(invalid.value, AgentError)


def test_an_agent_that_is_not_listening_is_unavailable_at_once(pki):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = HostAddress(id="h", name="gone", address="127.0.0.1", port=port, simulated=False)
    client = RemoteAgentClient(
        host, cert_file=pki.client["cert_file"], key_file=pki.client["key_file"], ca_file=pki.client["ca_file"]
    )

    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match=f"Host gone \\(127.0.0.1:{port}\\): cannot reach the agent"):
        client.ping()
    assert time.monotonic() - started < 1


def test_an_agent_that_accepts_but_never_speaks_times_out_on_connect(pki):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    host = HostAddress(id="h", name="mute", address="127.0.0.1", port=listener.getsockname()[1], simulated=False)
    client = RemoteAgentClient(
        host,
        cert_file=pki.client["cert_file"],
        key_file=pki.client["key_file"],
        ca_file=pki.client["ca_file"],
        connect_timeout=0.5,
    )
    try:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable, match="TLS handshake with the agent failed"):
            client.ping()
        assert time.monotonic() - started < 2
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


def test_a_verb_slower_than_the_read_timeout_is_unavailable(server, pki):
    original = server.driver.host_stats
    server.driver.host_stats = lambda: time.sleep(1.5) or original()
    client = remote_client(server, pki, read_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable, match="did not answer host_stats within 0.5 s"):
            client.host_stats()
        assert time.monotonic() - started < 1.4
    finally:
        time.sleep(1.2)
        server.driver.host_stats = original


def test_long_verbs_get_long_read_timeouts(client):
    assert client._read_timeout_for("ping", {}) == 70.0
    assert client._read_timeout_for("shutdown_vm", {"timeout": 300}) == 330.0
    assert client._read_timeout_for("image_create", {}) == 3630.0
    assert client._read_timeout_for("suspend_vm", {}) == 610.0


def test_a_busy_agent_is_an_unavailable_one(pki, tmp_path):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], max_concurrent_calls=1, request_timeout=0.3)
    with running_agent(config) as server:
        server.driver.host_stats = lambda: time.sleep(1.0) or {}
        client = remote_client(server, pki)
        with pytest.raises(AgentRpcError):
            client.host_stats()

        with pytest.raises(AgentRpcUnavailable) as busy:
            client.ping()

        assert isinstance(busy.value, AgentUnavailable) and busy.value.kind == "busy" and busy.value.transient
        time.sleep(0.8)


def test_an_answer_that_is_not_json_rpc_is_an_agent_error(pki):
    class Html(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(502)
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b"<h1>bad</h1>\n")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server["cert_file"], pki.server["key_file"])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        host = HostAddress(id="h", name="proxy", address="127.0.0.1", port=httpd.server_address[1], simulated=False)
        client = RemoteAgentClient(
            host, cert_file=pki.client["cert_file"], key_file=pki.client["key_file"], ca_file=pki.client["ca_file"]
        )

        with pytest.raises(AgentError, match="answered ping with HTTP 502 and no JSON"):
            client.ping()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_console_of_a_vm_the_host_lacks(client):
    with pytest.raises(AgentRpcError) as caught:
        client.open_console(str(uuid.uuid4()))

    assert caught.value.kind == "not_found"
