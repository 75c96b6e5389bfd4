"""Simple VM placement: pure functions over plain data, no database inside.

The full scheduler (policies, weights, balancing, affinity) comes later; this picks an
up host of the cluster that passes the basic filters, preferring the most free memory,
and explains every host it rejected.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostFacts:
    id: str
    name: str
    status: str
    memory_mib: int
    cpu_threads: int
    committed_memory_mib: int = 0  # guaranteed memory of the VMs running there


@dataclass(frozen=True)
class VmRequest:
    vcpus: int
    guaranteed_memory_mib: int
    pinned_host_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Placement:
    host_id: str | None
    rejected: dict[str, str]

    def explain(self) -> str:
        if not self.rejected:
            return "The cluster has no hosts."
        return "; ".join(f"{name}: {reason}" for name, reason in sorted(self.rejected.items()))


def available_memory_mib(host: HostFacts, overcommit_percent: int) -> int:
    return host.memory_mib * overcommit_percent // 100 - host.committed_memory_mib


def place_vm(vm: VmRequest, hosts: list[HostFacts], *, overcommit_percent: int) -> Placement:
    rejected: dict[str, str] = {}
    best: tuple[int, str] | None = None
    for host in hosts:
        if host.status != "up":
            rejected[host.name] = f"filtered by status: host is {host.status}"
        elif vm.pinned_host_ids and host.id not in vm.pinned_host_ids:
            rejected[host.name] = "filtered by pinning: the VM is pinned to other hosts"
        elif host.cpu_threads and vm.vcpus > host.cpu_threads:
            rejected[host.name] = f"filtered by CPU: {vm.vcpus} vCPUs > {host.cpu_threads} host threads"
        else:
            free = available_memory_mib(host, overcommit_percent)
            if vm.guaranteed_memory_mib > free:
                rejected[host.name] = (
                    f"filtered by memory: needs {vm.guaranteed_memory_mib} MiB guaranteed, {max(free, 0)} MiB available"
                )
            elif best is None or free > best[0]:
                best = (free, host.id)
    return Placement(host_id=best[1] if best else None, rejected=rejected)
