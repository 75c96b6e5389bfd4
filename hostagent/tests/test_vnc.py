"""`vnc_open` and `GET /vnc/<ticket>`: the agent's raw TCP proxy to a VM's VNC server.

Through the real HTTPS server with mutual TLS: the verb's validation, the sim driver's
clear refusal, the libvirt driver on `test:///default` (whose domains never get a VNC
port), the proxy itself against a stand-in VNC server, and the tickets (good once, for
their own kind only). The real QEMU display is in test_vnc_real_qemu.py.
"""

import socket
import threading
import time
import uuid

import pytest

from hostagent.agent.drivers.libvirt_driver import vnc_endpoint
from hostagent.agent.drivers.sim_driver import SimDriver
from hostagent.agent.server import ConsoleRegistry
from hostagent.agent.testing import RawRpc, agent_config, make_pki, remote_client, running_agent
from hostagent.client import AgentRpcError, AgentRpcUnavailable

GREETING = b"RFB 003.008\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


class FakeVncServer:
    """A TCP server on 127.0.0.1 that greets like a VNC server and echoes what it gets."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.ended = threading.Event()  # a connection was closed by the agent's side
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            conn.sendall(GREETING)
            while data := conn.recv(65536):
                conn.sendall(data)
            self.ended.set()
        except OSError:
            self.ended.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


class VncSimDriver(SimDriver):
    """The sim driver with a VNC display: the stand-in server."""

    vnc_port = 0

    def open_vnc(self, vm_id: str) -> socket.socket:
        with self._lock:
            self._require(self._vm(vm_id), ("up", "paused"), "open the VNC display of")
        return socket.create_connection(("127.0.0.1", self.vnc_port), timeout=5)


@pytest.fixture
def vnc_server():
    server = FakeVncServer()
    yield server
    server.close()


@pytest.fixture
def vnc_agent(pki, tmp_path, vnc_server):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], host_name="vnc-h1")
    driver = VncSimDriver(config)
    driver.vnc_port = vnc_server.port
    with running_agent(config, driver) as server:
        yield server


@pytest.fixture(scope="module", params=["sim", "libvirt"])
def agent(request, pki, tmp_path_factory):
    storage = tmp_path_factory.mktemp(f"vnc-{request.param}")
    config = agent_config(pki, driver=request.param, libvirt_uri="test:///default", storage_roots=[str(storage)])
    with running_agent(config) as server:
        yield request.param, remote_client(server, pki), RawRpc(server, pki)


def new_vm(client, console_type: str = "vnc") -> str:
    vm_id = str(uuid.uuid4())
    client.create_vm(
        {"id": vm_id, "name": f"vnc-{vm_id[:8]}", "vcpus": 1, "memory_mib": 64, "console_type": console_type}
    )
    return vm_id


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, data
        data += chunk
    return data


def rpc_error(call, *args) -> AgentRpcError:
    with pytest.raises(AgentRpcError) as caught:
        call(*args)
    return caught.value


# The verb -----------------------------------------------------------------------------------


def test_vnc_open_takes_a_vm_id_and_nothing_else(agent):
    _, _, raw = agent

    missing = raw.call("vnc_open", {})
    bad = raw.call("vnc_open", {"vm_id": "../etc"})
    extra = raw.call("vnc_open", {"vm_id": str(uuid.uuid4()), "port": 5900})

    assert (missing["error"]["code"], missing["error"]["data"]["field"]) == (-32602, "params.vm_id")
    assert (bad["error"]["code"], bad["error"]["data"]["field"]) == (-32602, "params.vm_id")
    assert (extra["error"]["code"], extra["error"]["data"]["field"]) == (-32602, "params.port")


def test_vnc_open_of_a_vm_the_host_lacks_is_not_found(agent):
    _, client, _ = agent

    error = rpc_error(client.open_vnc, str(uuid.uuid4()))

    assert (error.code, error.kind) == (-32001, "not_found")


def test_vnc_open_of_a_stopped_vm_is_a_conflict(agent):
    _, client, _ = agent
    vm_id = new_vm(client)
    client.destroy_vm(vm_id)

    error = rpc_error(client.open_vnc, vm_id)

    assert (error.code, error.kind) == (-32002, "conflict")
    assert "Cannot open the VNC display of VM " in str(error) and str(error).endswith(": it is down.")
    client.undefine_vm(vm_id)


def test_what_each_driver_answers_for_a_running_vm(agent):
    driver, client, _ = agent
    vm_id = new_vm(client, "vnc")
    serial_vm = new_vm(client, "serial")

    error = rpc_error(client.open_vnc, vm_id)
    serial = rpc_error(client.open_vnc, serial_vm)

    if driver == "sim":
        for e, vid in ((error, vm_id), (serial, serial_vm)):
            assert (e.code, e.kind, e.data["simulated"]) == (-32004, "unsupported", True)
            assert f"VM {vid} runs on a simulated host: nothing draws a screen, so there is no VNC display" in str(e)
    else:
        # test:///default never assigns the autoport: a real QEMU does (test_vnc_real_qemu.py).
        assert isinstance(error, AgentRpcUnavailable) and (error.code, error.kind) == (-32006, "unavailable")
        assert f"The VNC display of VM {vm_id} has no port yet." in str(error)
        assert (serial.code, serial.kind) == (-32002, "conflict")
        assert f"VM {serial_vm} has no VNC display (its console type has no graphics)." in str(serial)
    for vid in (vm_id, serial_vm):
        client.destroy_vm(vid)
        client.undefine_vm(vid)


# The proxy ----------------------------------------------------------------------------------


def test_the_vnc_stream_is_proxied_both_ways(vnc_agent, vnc_server, pki):
    client = remote_client(vnc_agent, pki)
    vm_id = new_vm(client)

    sock = client.open_vnc(vm_id)
    try:
        sock.settimeout(5)
        assert recv_exactly(sock, len(GREETING)) == GREETING
        big = bytes(range(256)) * 1024  # more than one TLS record and one socket read
        sock.sendall(GREETING + big)
        assert recv_exactly(sock, len(GREETING) + len(big)) == GREETING + big
    finally:
        sock.close()

    assert vnc_server.ended.wait(5), "the agent did not close the VNC connection after the engine left"


def test_the_engine_side_ends_when_the_vnc_server_closes(vnc_agent, vnc_server, pki):
    client = remote_client(vnc_agent, pki)
    sock = client.open_vnc(new_vm(client))
    try:
        sock.settimeout(5)
        assert recv_exactly(sock, len(GREETING)) == GREETING
        vnc_server.connections[-1].shutdown(socket.SHUT_RDWR)

        assert sock.recv(4096) == b""
    finally:
        sock.close()


def test_an_idle_vnc_stream_is_closed(pki, tmp_path, vnc_server):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path)], console_idle_timeout=0.3)
    driver = VncSimDriver(config)
    driver.vnc_port = vnc_server.port
    with running_agent(config, driver) as server:
        client = remote_client(server, pki)
        sock = client.open_vnc(new_vm(client))
        try:
            sock.settimeout(5)
            assert recv_exactly(sock, len(GREETING)) == GREETING
            started = time.monotonic()
            assert sock.recv(4096) == b""
            assert time.monotonic() - started < 3
        finally:
            sock.close()
        assert vnc_server.ended.wait(5)


def test_a_vnc_ticket_is_good_once_and_only_for_vnc(vnc_agent, vnc_server, pki):
    client, raw = remote_client(vnc_agent, pki), RawRpc(vnc_agent, pki)
    vm_id = new_vm(client)
    ticket = client.call("vnc_open", {"vm_id": vm_id})
    token = ticket["path"].removeprefix("/vnc/")

    assert ticket == {
        "vm_id": vm_id,
        "path": f"/vnc/{token}",
        "upgrade": "olvm-vnc",
        "expires_in": 30.0,
        "simulated": True,
    }
    as_serial = raw.post(b"", method="GET", path=f"/console/{token}", headers={"Upgrade": "olvm-console"})
    wrong_upgrade = raw.post(b"", method="GET", path=ticket["path"], headers={"Upgrade": "olvm-console"})
    again = raw.post(b"", method="GET", path=ticket["path"], headers={"Upgrade": "olvm-vnc"})

    assert as_serial[0] == 404 and "No such console ticket" in as_serial[1]["error"]["message"]
    assert wrong_upgrade[0] == 400 and wrong_upgrade[1]["error"]["message"] == "Send Upgrade: olvm-vnc"
    assert again[0] == 404
    assert vnc_server.ended.wait(5), "a refused ticket must close its VNC connection"


def test_a_serial_ticket_does_not_open_the_vnc_proxy(vnc_agent, pki):
    client, raw = remote_client(vnc_agent, pki), RawRpc(vnc_agent, pki)
    ticket = client.call("console_open", {"vm_id": new_vm(client)})
    token = ticket["path"].removeprefix("/console/")

    status, reply = raw.post(b"", method="GET", path=f"/vnc/{token}", headers={"Upgrade": "olvm-vnc"})

    assert status == 404 and "No such console ticket" in reply["error"]["message"]


def test_an_unclaimed_vnc_ticket_closes_its_connection():
    near, far = socket.socketpair()

    class Driver:
        def open_vnc(self, vm_id):
            return near

    registry = ConsoleRegistry(ttl=0.1)
    ticket = registry.open(Driver(), "vm", "vnc")

    far.settimeout(2)
    assert far.recv(1) == b""
    assert ticket["path"].startswith("/vnc/") and ticket["upgrade"] == "olvm-vnc"
    assert registry.take(ticket["path"].removeprefix("/vnc/"), "vnc") is None
    far.close()


# Where the VNC server listens -----------------------------------------------------------------


def domain(graphics: str) -> str:
    return f"<domain type='kvm'><name>v</name><devices>{graphics}</devices></domain>"


@pytest.mark.parametrize(
    ("graphics", "expected"),
    [
        (
            "<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>"
            "<listen type='address' address='127.0.0.1'/></graphics>",
            (socket.AF_INET, ("127.0.0.1", 5901)),
        ),
        (
            "<graphics type='vnc' port='5902' autoport='yes' listen='0.0.0.0'>"
            "<listen type='address' address='0.0.0.0'/></graphics>",
            (socket.AF_INET, ("127.0.0.1", 5902)),
        ),
        (
            "<graphics type='vnc' port='5903'><listen type='address' address='::'/></graphics>",
            (socket.AF_INET6, ("::1", 5903)),
        ),
        ("<graphics type='vnc' port='5904'/>", (socket.AF_INET, ("10.213.0.11", 5904))),
        ("<graphics type='vnc' port='-1' autoport='yes'/>", (socket.AF_INET, ("10.213.0.11", -1))),
        (
            "<graphics type='vnc'><listen type='socket' socket='/run/libvirt/qemu/vnc.sock'/></graphics>",
            (socket.AF_UNIX, "/run/libvirt/qemu/vnc.sock"),
        ),
        ("<graphics type='spice' port='5905' autoport='yes'/>", None),
        ("", None),
    ],
)
def test_the_vnc_endpoint_comes_from_the_live_domain_xml(graphics, expected):
    assert vnc_endpoint(domain(graphics), "10.213.0.11") == expected
