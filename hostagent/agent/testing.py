"""An agent in-process for tests: a throwaway engine CA and a server on an ephemeral port.

    pki = make_pki(tmp_path)
    with running_agent(agent_config(pki, driver="sim", storage_roots=[str(tmp_path)])) as server:
        client = remote_client(server, pki)
        client.ping()

Used by the agent's own tests; engine-side tests can use it to talk to a real agent too.
The engine's ingest listener, with a host certificate to push to it:

    pki = make_ingest_pki(tmp_path)
    with running_ingest_server(handler, pki) as server:
        ...  # https://127.0.0.1:{server.ports[0]}/ingest, as host pki.host_id
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from hostagent import pki as engine_pki
from hostagent.client import HostAddress, RemoteAgentClient
from hostagent.ingest_server import IngestServer

from .config import AgentConfig, config_from_dict
from .drivers import Driver
from .server import AgentHTTPServer, build_server


@dataclass(frozen=True)
class AgentPki:
    ca_dir: Path
    server: dict  # issue_certificate() of the host (usage=server, SAN 127.0.0.1)
    client: dict  # issue_certificate() of the engine (usage=client)


def make_pki(base_dir, host_address: str = "127.0.0.1") -> AgentPki:
    base = Path(base_dir)
    engine_pki.create_ca(base / "ca", "OLVM Test CA")
    server = engine_pki.issue_certificate(base / "ca", host_address, base / "host", 30, "server")
    client = engine_pki.issue_certificate(base / "ca", "olvm-engine", base / "engine", 30, "client")
    return AgentPki(ca_dir=base / "ca", server=server, client=client)


@dataclass(frozen=True)
class IngestPki:
    ca_dir: Path
    listener: dict  # issue_certificate() of the engine's ingest listener (usage=server, SAN 127.0.0.1)
    host: dict  # issue_certificate() of a host (usage=host: its common name is its inventory id)
    host_id: str


def make_ingest_pki(base_dir, host_id: str | None = None) -> IngestPki:
    import uuid

    base = Path(base_dir)
    host_id = host_id or str(uuid.uuid4())
    engine_pki.create_ca(base / "ca", "OLVM Test CA")
    listener = engine_pki.issue_certificate(base / "ca", "127.0.0.1", base / "ingest", 30, "server")
    host = engine_pki.issue_certificate(base / "ca", host_id, base / "host", 30, "host", addresses=["127.0.0.1"])
    return IngestPki(ca_dir=base / "ca", listener=listener, host=host, host_id=host_id)


@contextlib.contextmanager
def running_ingest_server(handler, test_pki: IngestPki, *, listen=(("127.0.0.1", 0),), **kwargs):
    """An IngestServer, by default on an ephemeral port of 127.0.0.1 (`server.ports[0]`)."""
    server = IngestServer(
        handler,
        listen=list(listen),
        cert_file=test_pki.listener["cert_file"],
        key_file=test_pki.listener["key_file"],
        ca_file=test_pki.listener["ca_file"],
        **kwargs,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def agent_config(test_pki: AgentPki, **overrides) -> AgentConfig:
    values = {
        "listen_address": "127.0.0.1",
        "listen_port": 0,
        "cert_file": test_pki.server["cert_file"],
        "key_file": test_pki.server["key_file"],
        "ca_file": test_pki.server["ca_file"],
        **overrides,
    }
    return config_from_dict(values)


@contextlib.contextmanager
def running_agent(config: AgentConfig, driver: Driver | None = None):
    server = build_server(config, driver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        server.driver.close()


def remote_client(server: AgentHTTPServer, test_pki: AgentPki, **kwargs) -> RemoteAgentClient:
    host = HostAddress(id="test-host", name="test-host", address="127.0.0.1", port=server.port, simulated=False)
    return RemoteAgentClient(
        host,
        cert_file=test_pki.client["cert_file"],
        key_file=test_pki.client["key_file"],
        ca_file=test_pki.client["ca_file"],
        **kwargs,
    )


class RawRpc:
    """Bytes in, (HTTP status, parsed JSON) out: for tests that send what a real client never would."""

    def __init__(self, server: AgentHTTPServer, test_pki: AgentPki, *, timeout: float = 10.0):
        self.port = server.port
        self.timeout = timeout
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.load_verify_locations(cafile=test_pki.client["ca_file"])
        self.context.load_cert_chain(test_pki.client["cert_file"], test_pki.client["key_file"])

        self._conn: http.client.HTTPSConnection | None = None

    def post(self, body: bytes, *, headers: dict | None = None, path: str = "/rpc", method: str = "POST"):
        """One request on a kept-alive connection (a new one when the server closed the last)."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=self.timeout
                )
            try:
                self._conn.request(
                    method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
                )
                response = self._conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLEOFError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, (json.loads(raw) if raw else None)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, params=None, *, rid=1) -> dict:
        """The whole JSON-RPC response object of one call."""
        message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        status, reply = self.post(json.dumps(message).encode())
        assert status == 200, (status, reply)
        return reply


def sample_params(storage_path: str) -> dict[str, dict]:
    """Valid parameters for every verb (on VMs and images that need not exist)."""
    import uuid

    vm_id = str(uuid.uuid4())
    sd = {"id": str(uuid.uuid4()), "path": str(storage_path)}
    image = {"id": str(uuid.uuid4()), "storage_domain": sd, "size": 1024 * 1024}
    spec = {"id": vm_id, "name": f"sample-{vm_id[:8]}", "vcpus": 1, "memory_mib": 64}
    return {
        "ping": {},
        "capabilities": {},
        "host_stats": {},
        "vm_list": {},
        "create_vm": {"spec": spec},
        "destroy_vm": {"vm_id": vm_id},
        "shutdown_vm": {"vm_id": vm_id, "timeout": 5},
        "reboot_vm": {"vm_id": vm_id},
        "pause_vm": {"vm_id": vm_id},
        "resume_vm": {"vm_id": vm_id},
        "suspend_vm": {"vm_id": vm_id, "state_path": f"{vm_id}.state"},
        "restore_vm": {"vm_id": vm_id, "state_path": f"{vm_id}.state", "spec": spec},
        "undefine_vm": {"vm_id": vm_id},
        "hotplug_disk": {"vm_id": vm_id, "disk": {"id": image["id"], "storage_domain": sd}},
        "hotunplug_disk": {"vm_id": vm_id, "disk_id": image["id"]},
        "hotplug_nic": {"vm_id": vm_id, "nic": {"mac": "56:6f:00:00:00:01", "network": "ovirtmgmt"}},
        "hotunplug_nic": {"vm_id": vm_id, "mac": "56:6f:00:00:00:01"},
        "set_memory": {"vm_id": vm_id, "memory_mib": 64},
        "set_vcpus": {"vm_id": vm_id, "vcpus": 1},
        "snapshot_create": {"vm_id": vm_id, "snapshot": {"id": str(uuid.uuid4())}},
        "snapshot_revert": {"vm_id": vm_id, "snapshot_id": str(uuid.uuid4())},
        "snapshot_delete": {"vm_id": vm_id, "snapshot_id": str(uuid.uuid4())},
        "vm_stats": {"vm_id": None},
        "guest_info": {"vm_id": vm_id},
        "console_open": {"vm_id": vm_id},
        "vnc_open": {"vm_id": vm_id},
        "image_create": {"image": image},
        "image_clone": {"image": {**image, "id": str(uuid.uuid4()), "backing_id": image["id"]}},
        "image_copy": {"image": {**image, "id": str(uuid.uuid4()), "copy_from_id": image["id"]}},
        "image_resize": {"image": image, "size": 2 * 1024 * 1024},
        "image_remove": {"image": image},
        "image_info": {"image": image},
        "storage_domain_stats": {"domain": sd},
        "migrate_vm": {"vm_id": vm_id, "dest_uri": "qemu+tcp://10.0.0.12/system"},
        "migration_status": {"vm_id": vm_id},
        "migration_cancel": {"vm_id": vm_id},
        # No bridge: a valid call that changes nothing on the machine running the tests.
        "setup_networks": {"networks": []},
    }
