"""The engine's side of the host agent: one client per host, the only way tasks reach hosts.

`client_for(host)` returns the client for a host. Hosts flagged `simulated` are served by
`SimulatedAgentClient`, an in-process stand-in with no hypervisor behind it: it answers
every verb at once and says "simulated" in what it reports. Every other host is reached by
`RemoteAgentClient`: JSON-RPC 2.0 over mutually authenticated TLS to the agent daemon
(`python -m hostagent serve`), with the engine's client certificate; without one configured
it refuses with a clear AgentUnavailable, which ends the Job failed with that reason.

No Django imports here: the client takes plain values (`HostAddress`) so the agent
package stays free of the engine.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import socket
import ssl
import threading
from dataclasses import dataclass


class AgentError(Exception):
    """The agent answered with an error for this call."""

    transient = False


class AgentUnavailable(AgentError):
    """The agent could not be reached (or has no transport yet); retrying may help."""

    transient = True


@dataclass(frozen=True)
class HostAddress:
    id: str
    name: str
    address: str
    port: int
    simulated: bool


class AgentClient:
    """The verbs the engine calls on a host agent (VDSM-like)."""

    host: HostAddress

    def ping(self) -> dict:
        raise NotImplementedError

    def capabilities(self) -> dict:
        raise NotImplementedError

    def create_vm(self, spec: dict) -> dict:
        raise NotImplementedError

    def destroy_vm(self, vm_id: str) -> dict:
        raise NotImplementedError

    def shutdown_vm(self, vm_id: str, timeout: int = 120) -> dict:
        raise NotImplementedError

    def reboot_vm(self, vm_id: str) -> dict:
        raise NotImplementedError

    def pause_vm(self, vm_id: str) -> dict:
        raise NotImplementedError

    def resume_vm(self, vm_id: str) -> dict:
        raise NotImplementedError

    def suspend_vm(self, vm_id: str, state_path: str) -> dict:
        raise NotImplementedError

    def restore_vm(self, vm_id: str, state_path: str, spec: dict) -> dict:
        raise NotImplementedError

    def undefine_vm(self, vm_id: str) -> dict:
        raise NotImplementedError

    def hotplug_disk(self, vm_id: str, disk: dict) -> dict:
        raise NotImplementedError

    def hotunplug_disk(self, vm_id: str, disk_id: str) -> dict:
        raise NotImplementedError

    def hotplug_nic(self, vm_id: str, nic: dict) -> dict:
        raise NotImplementedError

    def hotunplug_nic(self, vm_id: str, mac: str) -> dict:
        raise NotImplementedError

    def snapshot_create(self, vm_id: str, snapshot: dict) -> dict:
        raise NotImplementedError

    def snapshot_revert(self, vm_id: str, snapshot_id: str) -> dict:
        raise NotImplementedError

    def snapshot_delete(self, vm_id: str, snapshot_id: str) -> dict:
        raise NotImplementedError

    def image_create(self, image: dict) -> dict:
        raise NotImplementedError

    def image_remove(self, image: dict) -> dict:
        raise NotImplementedError

    def storage_domain_stats(self, domain: dict) -> dict:
        raise NotImplementedError

    def setup_networks(self, networks: list[dict]) -> dict:
        raise NotImplementedError

    def migrate_vm(
        self,
        vm_id: str,
        dest_uri: str,
        *,
        migrate_uri: str | None = None,
        policy: str = "minimal_downtime",
        bandwidth_mibps: int = 0,
        compression: bool = False,
        unsafe: bool = False,
        max_downtime_ms: int | None = None,
        timeout: int = 600,
    ) -> dict:
        """Start a live migration to `dest_uri`; returns {"vm_id", "state": "running"} at once."""
        raise NotImplementedError

    def migration_status(self, vm_id: str) -> dict:
        raise NotImplementedError

    def migration_cancel(self, vm_id: str) -> dict:
        raise NotImplementedError


class SimulatedAgentClient(AgentClient):
    """A simulated host: no hypervisor, every verb succeeds at once. Labelled everywhere.

    Live migration is deterministic, for the engine's tests. `migrations` (shared by every
    instance, keyed by (source host id, vm id)) holds each VM's last migration:

    - `migrate_vm` records a running migration (Conflict-like AgentError when one runs);
    - each `migration_status` call advances it by 50: the first answers running at 50%,
      the next completed at 100% with `downtime_ms` 42 (and `job_time_ms` 100);
    - a `dest_uri` containing "unreachable" ends failed with the error
      "simulated: destination unreachable" on the first status call;
    - `migration_cancel` on a running migration answers "cancelling" and the next status
      is "cancelled"; with none running it raises AgentError;
    - a VM never migrated reports state "none".

    `reset_migrations()` clears the table between tests.
    """

    SIMULATED = True
    DOWNTIME_MS = 42
    migrations: dict[tuple[str, str], dict] = {}
    _migrations_lock = threading.Lock()

    def __init__(self, host: HostAddress):
        self.host = host

    @classmethod
    def reset_migrations(cls) -> None:
        with cls._migrations_lock:
            cls.migrations.clear()

    def _seed(self) -> int:
        return int(hashlib.sha256(self.host.name.encode()).hexdigest()[:8], 16)

    def ping(self) -> dict:
        return {"ok": True, "simulated": True}

    def capabilities(self) -> dict:
        seed = self._seed()
        sockets = 2
        cores = sockets * (8 + seed % 3 * 4)
        return {
            "simulated": True,
            "hostname": f"{self.host.name}.simulated",
            "cpu_model": "Simulated CPU (no hypervisor)",
            "cpu_sockets": sockets,
            "cpu_cores": cores,
            "cpu_threads": cores * 2,
            "memory_mib": (64 + seed % 4 * 64) * 1024,
            "libvirt_version": "simulated",
            "qemu_version": "simulated",
            "kvm": False,
        }

    def create_vm(self, spec: dict) -> dict:
        return {"vm_id": spec["id"], "status": "up", "simulated": True}

    def destroy_vm(self, vm_id: str) -> dict:
        return {"vm_id": vm_id, "status": "down"}

    def shutdown_vm(self, vm_id: str, timeout: int = 120) -> dict:
        return {"vm_id": vm_id, "status": "down"}

    def reboot_vm(self, vm_id: str) -> dict:
        return {"vm_id": vm_id, "status": "up"}

    def pause_vm(self, vm_id: str) -> dict:
        return {"vm_id": vm_id, "status": "paused"}

    def resume_vm(self, vm_id: str) -> dict:
        return {"vm_id": vm_id, "status": "up"}

    def suspend_vm(self, vm_id: str, state_path: str) -> dict:
        return {"vm_id": vm_id, "status": "suspended"}

    def restore_vm(self, vm_id: str, state_path: str, spec: dict) -> dict:
        return {"vm_id": vm_id, "status": "up"}

    def undefine_vm(self, vm_id: str) -> dict:
        return {"vm_id": vm_id, "undefined": True, "simulated": True}

    def hotplug_disk(self, vm_id: str, disk: dict) -> dict:
        return {"vm_id": vm_id, "plugged": True}

    def hotunplug_disk(self, vm_id: str, disk_id: str) -> dict:
        return {"vm_id": vm_id, "plugged": False}

    def hotplug_nic(self, vm_id: str, nic: dict) -> dict:
        return {"vm_id": vm_id, "plugged": True}

    def hotunplug_nic(self, vm_id: str, mac: str) -> dict:
        return {"vm_id": vm_id, "plugged": False}

    def snapshot_create(self, vm_id: str, snapshot: dict) -> dict:
        return {"vm_id": vm_id, "snapshot_id": snapshot["id"]}

    def snapshot_revert(self, vm_id: str, snapshot_id: str) -> dict:
        return {"vm_id": vm_id, "snapshot_id": snapshot_id}

    def snapshot_delete(self, vm_id: str, snapshot_id: str) -> dict:
        return {"vm_id": vm_id, "snapshot_id": snapshot_id}

    def image_create(self, image: dict) -> dict:
        size = int(image["size"])
        actual = size if image.get("allocation") == "preallocated" else min(size, 196_608)
        return {"image_id": image["id"], "actual_size": actual, "simulated": True}

    def image_remove(self, image: dict) -> dict:
        return {"image_id": image["id"], "removed": True}

    def storage_domain_stats(self, domain: dict) -> dict:
        path = domain.get("path", "")
        if path.startswith("/") and os.path.isdir(path):
            st = os.statvfs(path)
            return {"total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}
        # No such directory on this machine: a simulated 1 TiB domain, half free.
        return {"total_bytes": 1024**4, "free_bytes": 1024**4 // 2, "simulated": True}

    def setup_networks(self, networks: list[dict]) -> dict:
        return {"networks": [{"name": n["name"], "created": False} for n in networks], "simulated": True}

    def migrate_vm(self, vm_id: str, dest_uri: str, *, policy: str = "minimal_downtime", **_options) -> dict:
        key = (self.host.id, vm_id)
        with self._migrations_lock:
            current = self.migrations.get(key)
            if current is not None and current["state"] == "running":
                raise AgentError(f"Host {self.host.name}: migrate_vm: VM {vm_id} is already migrating.")
            self.migrations[key] = {
                "vm_id": vm_id,
                "state": "running",
                "progress": 0,
                "destination": dest_uri,
                "policy": policy,
                "cancel": False,
                "fail": "unreachable" in dest_uri,
            }
        return {"vm_id": vm_id, "state": "running", "simulated": True}

    def migration_status(self, vm_id: str) -> dict:
        with self._migrations_lock:
            m = self.migrations.get((self.host.id, vm_id))
            if m is None:
                return {"vm_id": vm_id, "state": "none", "progress": 0, "simulated": True}
            if m["state"] == "running":
                if m["cancel"]:
                    m["state"] = "cancelled"
                elif m["fail"]:
                    m.update(state="failed", error="simulated: destination unreachable")
                else:
                    m["progress"] += 50
                    if m["progress"] >= 100:
                        m.update(state="completed", progress=100)
            total = 128 * 1024 * 1024
            done = total * m["progress"] // 100
            status = {
                "vm_id": vm_id,
                "state": m["state"],
                "progress": m["progress"],
                "elapsed_ms": m["progress"] * 2,
                "data_total": total,
                "data_processed": done,
                "data_remaining": total - done,
                "memory_bps": total * 5,
                "iteration": 1,
                "max_downtime_ms": 125,
                "post_copy": False,
                "downtime_ms": self.DOWNTIME_MS if m["state"] == "completed" else None,
                "job_time_ms": 100 if m["state"] == "completed" else None,
                "destination": m["destination"],
                "policy": m["policy"],
                "simulated": True,
            }
            if m.get("error"):
                status["error"] = m["error"]
            return status

    def migration_cancel(self, vm_id: str) -> dict:
        with self._migrations_lock:
            m = self.migrations.get((self.host.id, vm_id))
            if m is None or m["state"] != "running":
                raise AgentError(f"Host {self.host.name}: migration_cancel: no migration of VM {vm_id} is running.")
            m["cancel"] = True
        return {"vm_id": vm_id, "state": "cancelling", "simulated": True}


class AgentRpcError(AgentError):
    """The agent answered the call with a JSON-RPC error: `code`, `kind` and `data` say which.

    Codes: -32602 invalid params (`data.field` names the parameter), -32601 unknown verb,
    -32000 failed, -32001 not_found, -32002 conflict, -32003 timeout, -32004 unsupported,
    -32005 busy, -32006 unavailable (the last two, and timeout, are `transient`).
    """

    def __init__(self, message: str, *, code: int, data: dict | None = None):
        super().__init__(message)
        self.code = code
        self.data = data or {}
        self.kind = self.data.get("kind")
        self.transient = bool(self.data.get("transient"))


class AgentRpcUnavailable(AgentRpcError, AgentUnavailable):
    """The agent is up but cannot serve now (too busy, or its libvirtd is unreachable)."""


ENV_CLIENT_CERT = "OLVM_AGENT_CLIENT_CERT"
ENV_CLIENT_KEY = "OLVM_AGENT_CLIENT_KEY"
ENV_CA_CERT = "OLVM_AGENT_CA_CERT"
ENV_CONNECT_TIMEOUT = "OLVM_AGENT_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "OLVM_AGENT_READ_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 70.0
LONG_READ_TIMEOUT = 610.0
IMAGE_READ_TIMEOUT = 3630.0
# The server is told to give up this much before the client stops waiting, so a slow verb
# ends with the agent's own timeout error rather than a dropped connection.
DEADLINE_MARGIN = 5.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
VERB_READ_TIMEOUTS = {
    "suspend_vm": LONG_READ_TIMEOUT,
    "restore_vm": LONG_READ_TIMEOUT,
    "snapshot_create": LONG_READ_TIMEOUT,
    "snapshot_revert": LONG_READ_TIMEOUT,
    "snapshot_delete": LONG_READ_TIMEOUT,
    "image_create": IMAGE_READ_TIMEOUT,
    "image_clone": IMAGE_READ_TIMEOUT,
    "image_copy": IMAGE_READ_TIMEOUT,
    "image_resize": IMAGE_READ_TIMEOUT,
}
_contexts: dict[tuple, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def client_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """The engine's client certificate, trusting only the engine CA for host certificates (cached)."""
    key = tuple((path, os.stat(path).st_mtime_ns) for path in (cert_file, key_file, ca_file))
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_flags |= ssl.VERIFY_X509_STRICT
            ctx.load_verify_locations(cafile=ca_file)
            ctx.load_cert_chain(cert_file, key_file)
            _contexts.clear()
            _contexts[key] = ctx
        return ctx


class RemoteAgentClient(AgentClient):
    """JSON-RPC 2.0 over mutually authenticated TLS to the agent daemon on port 54321.

    The engine presents its client certificate (usage=client, signed by the engine CA) and
    trusts only the engine CA for the host's certificate, whose subject alternative names
    must hold `host.address`. Paths come from the constructor or the environment:
    OLVM_AGENT_CLIENT_CERT, OLVM_AGENT_CLIENT_KEY, OLVM_AGENT_CA_CERT; timeouts likewise
    (OLVM_AGENT_CONNECT_TIMEOUT, OLVM_AGENT_READ_TIMEOUT, seconds). Without certificates
    every call ends in AgentUnavailable saying what is missing.

    Errors: cannot connect, TLS refused, no answer in time -> AgentUnavailable; the agent
    answered with an error -> AgentRpcError (an AgentError), or AgentRpcUnavailable when
    the agent is busy or its libvirtd is unreachable.
    """

    def __init__(
        self,
        host: HostAddress,
        *,
        cert_file: str | None = None,
        key_file: str | None = None,
        ca_file: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ):
        self.host = host
        self.cert_file = cert_file or os.environ.get(ENV_CLIENT_CERT, "")
        self.key_file = key_file or os.environ.get(ENV_CLIENT_KEY, "")
        self.ca_file = ca_file or os.environ.get(ENV_CA_CERT, "")
        self.connect_timeout = float(connect_timeout or os.environ.get(ENV_CONNECT_TIMEOUT) or DEFAULT_CONNECT_TIMEOUT)
        self.read_timeout = float(read_timeout or os.environ.get(ENV_READ_TIMEOUT) or DEFAULT_READ_TIMEOUT)
        self._ids = itertools.count(1)

    # Transport -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"Host {self.host.name} ({self.host.address}:{self.host.port})"

    def _context(self) -> ssl.SSLContext:
        missing = [
            env
            for env, value in (
                (ENV_CLIENT_CERT, self.cert_file),
                (ENV_CLIENT_KEY, self.key_file),
                (ENV_CA_CERT, self.ca_file),
            )
            if not value
        ]
        if missing:
            raise AgentUnavailable(
                f"{self._where()}: the engine has no client certificate for the agent transport "
                f"(set {', '.join(missing)}); only simulated hosts can run work."
            )
        try:
            return client_ssl_context(self.cert_file, self.key_file, self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise AgentUnavailable(f"{self._where()}: cannot load the engine's client certificate: {exc}") from None

    def _read_timeout_for(self, verb: str, params: dict) -> float:
        if verb == "shutdown_vm":
            return max(self.read_timeout, float(params.get("timeout", 120)) + 30.0)
        return max(self.read_timeout, VERB_READ_TIMEOUTS.get(verb, 0.0))

    def _connect(self, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        try:
            raw = socket.create_connection((self.host.address, self.host.port), timeout=self.connect_timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise AgentUnavailable(f"{self._where()}: cannot reach the agent: {exc}") from None
        try:
            return ctx.wrap_socket(raw, server_hostname=self.host.address)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise AgentUnavailable(f"{self._where()}: TLS handshake with the agent failed: {exc}") from None

    def call(self, verb: str, params: dict | None = None, *, timeout: float | None = None) -> dict:
        """One JSON-RPC call; the `result` object, or AgentError / AgentUnavailable."""
        params = params or {}
        ctx = self._context()
        read_timeout = timeout or self._read_timeout_for(verb, params)
        rid = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": verb, "params": params}).encode()
        conn = http.client.HTTPSConnection(self.host.address, self.host.port, context=ctx, timeout=self.connect_timeout)
        try:
            conn.sock = self._connect(ctx)
            conn.sock.settimeout(read_timeout)
            try:
                conn.request(
                    "POST",
                    "/rpc",
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "OLVM-Deadline": f"{max(read_timeout - DEADLINE_MARGIN, 1.0):g}",
                    },
                )
                response = conn.getresponse()
                raw = response.read(MAX_RESPONSE_BYTES + 1)
            except TimeoutError:
                raise AgentUnavailable(
                    f"{self._where()}: the agent did not answer {verb} within {read_timeout:g} s."
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise AgentUnavailable(
                    f"{self._where()}: the connection to the agent failed during {verb}: {exc}"
                ) from None
        finally:
            conn.close()
        try:
            reply = json.loads(raw)
        except ValueError:
            raise AgentError(
                f"{self._where()}: the agent answered {verb} with HTTP {response.status} and no JSON."
            ) from None
        if not isinstance(reply, dict):
            raise AgentError(f"{self._where()}: the agent's answer to {verb} is not a JSON-RPC response.")
        error = reply.get("error")
        if isinstance(error, dict):
            raise self._error(verb, error)
        if reply.get("id") != rid or not isinstance(reply.get("result"), dict):
            raise AgentError(f"{self._where()}: the agent's answer to {verb} is not a JSON-RPC response.")
        return reply["result"]

    def _error(self, verb: str, error: dict) -> AgentRpcError:
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        message = f"{self._where()}: {verb}: {error.get('message') or 'error'}"
        cls = AgentRpcUnavailable if data.get("kind") in ("busy", "unavailable") else AgentRpcError
        code = error.get("code")
        return cls(message, code=code if isinstance(code, int) else -32000, data=data)

    def open_console(self, vm_id: str) -> ssl.SSLSocket:
        """A TLS socket carrying the VM's serial console both ways (the caller closes it)."""
        return self._open_stream("console_open", vm_id, "olvm-console", "console")

    def open_vnc(self, vm_id: str) -> ssl.SSLSocket:
        """A TLS socket carrying the VM's VNC display (raw RFB, the server speaks first) both
        ways (the caller closes it)."""
        return self._open_stream("vnc_open", vm_id, "olvm-vnc", "VNC display")

    def _open_stream(self, verb: str, vm_id: str, upgrade: str, what: str) -> ssl.SSLSocket:
        """Ask for a one-time ticket with `verb`, then upgrade a new connection to its stream."""
        ticket = self.call(verb, {"vm_id": vm_id})
        sock = self._connect(self._context())
        try:
            sock.settimeout(self.read_timeout)
            sock.sendall(
                f"GET {ticket['path']} HTTP/1.1\r\nHost: {self.host.address}\r\n"
                f"Upgrade: {ticket.get('upgrade', upgrade)}\r\nConnection: Upgrade\r\n\r\n".encode()
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = sock.recv(1)
                if not byte or len(head) > 16384:
                    raise AgentUnavailable(f"{self._where()}: the agent closed the {what} connection.")
                head += byte
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            if status.split(" ")[1:2] != ["101"]:
                raise AgentError(f"{self._where()}: the agent refused the {what} of VM {vm_id}: {status}")
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"{self._where()}: the {what} connection failed: {exc}") from None
        except BaseException:
            sock.close()
            raise
        return sock

    # The engine's verbs -------------------------------------------------------------------------

    def ping(self) -> dict:
        return self.call("ping")

    def capabilities(self) -> dict:
        return self.call("capabilities")

    def create_vm(self, spec: dict) -> dict:
        return self.call("create_vm", {"spec": spec})

    def destroy_vm(self, vm_id: str) -> dict:
        return self.call("destroy_vm", {"vm_id": vm_id})

    def shutdown_vm(self, vm_id: str, timeout: int = 120, mode: str = "auto") -> dict:
        return self.call("shutdown_vm", {"vm_id": vm_id, "timeout": timeout, "mode": mode})

    def reboot_vm(self, vm_id: str) -> dict:
        return self.call("reboot_vm", {"vm_id": vm_id})

    def pause_vm(self, vm_id: str) -> dict:
        return self.call("pause_vm", {"vm_id": vm_id})

    def resume_vm(self, vm_id: str) -> dict:
        return self.call("resume_vm", {"vm_id": vm_id})

    def suspend_vm(self, vm_id: str, state_path: str) -> dict:
        return self.call("suspend_vm", {"vm_id": vm_id, "state_path": state_path})

    def restore_vm(self, vm_id: str, state_path: str, spec: dict) -> dict:
        return self.call("restore_vm", {"vm_id": vm_id, "state_path": state_path, "spec": spec})

    def hotplug_disk(self, vm_id: str, disk: dict) -> dict:
        return self.call("hotplug_disk", {"vm_id": vm_id, "disk": disk})

    def hotunplug_disk(self, vm_id: str, disk_id: str) -> dict:
        return self.call("hotunplug_disk", {"vm_id": vm_id, "disk_id": disk_id})

    def hotplug_nic(self, vm_id: str, nic: dict) -> dict:
        return self.call("hotplug_nic", {"vm_id": vm_id, "nic": nic})

    def hotunplug_nic(self, vm_id: str, mac: str) -> dict:
        return self.call("hotunplug_nic", {"vm_id": vm_id, "mac": mac})

    def snapshot_create(self, vm_id: str, snapshot: dict, spec: dict | None = None) -> dict:
        return self.call("snapshot_create", {"vm_id": vm_id, "snapshot": snapshot, "spec": spec})

    def snapshot_revert(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        return self.call("snapshot_revert", {"vm_id": vm_id, "snapshot_id": snapshot_id, "spec": spec})

    def snapshot_delete(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        return self.call("snapshot_delete", {"vm_id": vm_id, "snapshot_id": snapshot_id, "spec": spec})

    def image_create(self, image: dict) -> dict:
        return self.call("image_create", {"image": image})

    def image_remove(self, image: dict) -> dict:
        return self.call("image_remove", {"image": image})

    def storage_domain_stats(self, domain: dict) -> dict:
        return self.call("storage_domain_stats", {"domain": domain})

    def setup_networks(self, networks: list[dict]) -> dict:
        return self.call("setup_networks", {"networks": networks})

    def migrate_vm(
        self,
        vm_id: str,
        dest_uri: str,
        *,
        migrate_uri: str | None = None,
        policy: str = "minimal_downtime",
        bandwidth_mibps: int = 0,
        compression: bool = False,
        unsafe: bool = False,
        max_downtime_ms: int | None = None,
        timeout: int = 600,
    ) -> dict:
        return self.call(
            "migrate_vm",
            {
                "vm_id": vm_id,
                "dest_uri": dest_uri,
                "migrate_uri": migrate_uri,
                "policy": policy,
                "bandwidth_mibps": bandwidth_mibps,
                "compression": compression,
                "unsafe": unsafe,
                "max_downtime_ms": max_downtime_ms,
                "timeout": timeout,
            },
        )

    def migration_status(self, vm_id: str) -> dict:
        return self.call("migration_status", {"vm_id": vm_id})

    def migration_cancel(self, vm_id: str) -> dict:
        return self.call("migration_cancel", {"vm_id": vm_id})

    # Verbs the agent serves that the engine does not call yet --------------------------------

    def host_stats(self) -> dict:
        return self.call("host_stats")

    def vm_list(self) -> dict:
        return self.call("vm_list")

    def vm_stats(self, vm_id: str | None = None) -> dict:
        return self.call("vm_stats", {"vm_id": vm_id})

    def guest_info(self, vm_id: str) -> dict:
        return self.call("guest_info", {"vm_id": vm_id})

    def undefine_vm(self, vm_id: str) -> dict:
        return self.call("undefine_vm", {"vm_id": vm_id})

    def set_memory(self, vm_id: str, memory_mib: int) -> dict:
        return self.call("set_memory", {"vm_id": vm_id, "memory_mib": memory_mib})

    def set_vcpus(self, vm_id: str, vcpus: int) -> dict:
        return self.call("set_vcpus", {"vm_id": vm_id, "vcpus": vcpus})

    def image_clone(self, image: dict) -> dict:
        return self.call("image_clone", {"image": image})

    def image_copy(self, image: dict) -> dict:
        return self.call("image_copy", {"image": image})

    def image_resize(self, image: dict, size: int) -> dict:
        return self.call("image_resize", {"image": image, "size": size})

    def image_info(self, image: dict) -> dict:
        return self.call("image_info", {"image": image})


def client_for(host: HostAddress) -> AgentClient:
    if host.simulated:
        return SimulatedAgentClient(host)
    return RemoteAgentClient(host)
