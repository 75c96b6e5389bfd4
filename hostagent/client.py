"""The engine's side of the host agent: one client per host, the only way tasks reach hosts.

`client_for(host)` returns the client for a host. Hosts flagged `simulated` are served by
`SimulatedAgentClient`, an in-process stand-in with no hypervisor behind it: it answers
every verb at once and says "simulated" in what it reports. The JSON-RPC/mTLS transport to
the real agent daemon is `RemoteAgentClient`; until the daemon lands it refuses with a
clear AgentUnavailable, which ends the Job failed with that reason.

No Django imports here: the client takes plain values (`HostAddress`) so the agent
package stays free of the engine.
"""

from __future__ import annotations

import hashlib
import os
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


class SimulatedAgentClient(AgentClient):
    """A simulated host: no hypervisor, every verb succeeds at once. Labelled everywhere."""

    SIMULATED = True

    def __init__(self, host: HostAddress):
        self.host = host

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


class RemoteAgentClient(AgentClient):
    """JSON-RPC 2.0 over mutually authenticated TLS to the agent daemon on port 54321."""

    def __init__(self, host: HostAddress):
        self.host = host

    def __getattribute__(self, name: str):
        if name in AgentClient.__dict__ and not name.startswith("_"):
            host = object.__getattribute__(self, "host")

            def unavailable(*args, **kwargs):
                raise AgentUnavailable(
                    f"Host {host.name}: the agent transport (JSON-RPC over mTLS to {host.address}:{host.port}) "
                    "is not available in this build; only simulated hosts can run work."
                )

            return unavailable
        return object.__getattribute__(self, name)


def client_for(host: HostAddress) -> AgentClient:
    if host.simulated:
        return SimulatedAgentClient(host)
    return RemoteAgentClient(host)
