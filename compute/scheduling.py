"""The cluster scheduler: pure functions over plain data, no database and no Django inside.

A cluster runs one scheduling policy (oVirt's `none`, `evenly_distributed`,
`power_saving`, `vm_evenly_distributed`, `cluster_maintenance`). A policy is a list of
filters (a host either passes or is removed, with the reason), weight modules with
factors (each scores the hosts left; lower is better, as in oVirt) and one balancer
(periodically proposes migrations). Its properties keep oVirt's names
(`HighUtilization`, `CpuOverCommitDurationMinutes`, `HighVmCount`, ...).

Use: describe the cluster once as a `ClusterFacts`, build a `Snapshot` from it (the
per-host aggregates are computed there, once), then `schedule(snapshot, request)` for
each placement and `balance(snapshot, now=...)` for a balancing pass. `place_vm` is the
one-call form over a list of hosts. docs/scheduling.md explains the conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

HOST_UP = "up"
VM_UP = "up"
POSITIVE = "positive"
NEGATIVE = "negative"

NONE = "none"
EVENLY_DISTRIBUTED = "evenly_distributed"
POWER_SAVING = "power_saving"
VM_EVENLY_DISTRIBUTED = "vm_evenly_distributed"
CLUSTER_MAINTENANCE = "cluster_maintenance"

DEFAULT_PROPERTIES: dict[str, int] = {
    # CPU, percent of the host: over HighUtilization for the whole CpuOverCommitDurationMinutes
    # window a host is over-utilised; under LowUtilization for the window, under-utilised.
    "HighUtilization": 80,
    "LowUtilization": 20,
    "CpuOverCommitDurationMinutes": 2,
    # Memory, MiB of schedulable memory left (0 = the rule is off).
    "MaxFreeMemoryForOverUtilized": 0,
    "MinFreeMemoryForUnderUtilized": 0,
    "HostsInReserve": 0,
    # vm_evenly_distributed: VM counts.
    "HighVmCount": 10,
    "MigrationThreshold": 5,
    "SpmVmGrace": 5,
    # Hysteresis of every balancer (OLVM's own): a VM migrated less than this ago stays,
    # and a CPU move must lower the source's load by at least this many points.
    "MigrationHoldOffMinutes": 30,
    "BalanceMarginPercent": 5,
}


# Input ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostFacts:
    id: str
    name: str
    status: str
    memory_mib: int
    cpu_threads: int
    committed_memory_mib: int = 0  # guaranteed memory of VMs running there that are not in ClusterFacts.vms
    networks: frozenset[str] = frozenset()
    cpu_samples: tuple[float, ...] = ()  # CPU utilisation % of the host, one a minute, oldest first
    spm: bool = False


@dataclass(frozen=True, slots=True)
class VmRequest:
    """The VM to place: a start (no source host) or a migration (source_host_id set)."""

    vcpus: int
    guaranteed_memory_mib: int
    pinned_host_ids: frozenset[str] = frozenset()
    id: str = ""
    name: str = ""
    highly_available: bool = False
    migratable: bool = True
    networks: frozenset[str] = frozenset()
    preferred_host_ids: frozenset[str] = frozenset()
    cpu_percent: float = 0.0  # expected use of its own vCPUs, percent
    source_host_id: str | None = None


@dataclass(frozen=True, slots=True)
class VmFacts:
    """A VM of the cluster; host_id is where it runs (None when down)."""

    id: str
    name: str
    host_id: str | None
    guaranteed_memory_mib: int
    vcpus: int = 1
    cpu_percent: float = 0.0  # recent use of its own vCPUs, percent
    status: str = VM_UP
    highly_available: bool = False
    migratable: bool = True
    pinned_host_ids: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    preferred_host_ids: frozenset[str] = frozenset()
    last_migrated_at: datetime | None = None

    def as_request(self, *, migrating: bool = False) -> VmRequest:
        return VmRequest(
            vcpus=self.vcpus,
            guaranteed_memory_mib=self.guaranteed_memory_mib,
            pinned_host_ids=self.pinned_host_ids,
            id=self.id,
            name=self.name,
            highly_available=self.highly_available,
            migratable=self.migratable,
            networks=self.networks,
            preferred_host_ids=self.preferred_host_ids,
            cpu_percent=self.cpu_percent,
            source_host_id=self.host_id if migrating else None,
        )


@dataclass(frozen=True, slots=True)
class AffinityGroup:
    """oVirt's affinity group: a VM-to-VM rule and a VM-to-host rule, each positive,
    negative or off (None), each enforcing (a filter) or soft (a weight)."""

    name: str
    vm_ids: frozenset[str]
    host_ids: frozenset[str] = frozenset()
    vm_rule: str | None = None
    vm_enforcing: bool = True
    host_rule: str | None = None
    host_enforcing: bool = False
    priority: int = 1  # the enforcer fixes higher-priority groups first


@dataclass(frozen=True)
class ClusterFacts:
    hosts: Sequence[HostFacts]
    vms: Sequence[VmFacts] = ()
    affinity_groups: Sequence[AffinityGroup] = ()
    policy: str = EVENLY_DISTRIBUTED
    properties: Mapping[str, int] = field(default_factory=dict)
    overcommit_percent: int = 100
    ha_reservation: bool = False


# Snapshot: per-host aggregates, computed once -----------------------------------------------


class HostState:
    """One host with its aggregates; a balancing pass moves VMs on a copy of these."""

    __slots__ = (
        "facts",
        "id",
        "name",
        "status",
        "cpu_threads",
        "networks",
        "spm",
        "memory_limit",
        "committed",
        "ha_committed",
        "vm_count",
        "window_full",
        "cpu_min",
        "cpu_max",
        "cpu_avg",
    )

    def __init__(self, facts: HostFacts, overcommit_percent: int, window: int) -> None:
        self.facts = facts
        self.id = facts.id
        self.name = facts.name
        self.status = facts.status
        self.cpu_threads = facts.cpu_threads
        self.networks = facts.networks
        self.spm = facts.spm
        self.memory_limit = facts.memory_mib * overcommit_percent // 100
        self.committed = facts.committed_memory_mib
        self.ha_committed = 0
        self.vm_count = 0
        recent = facts.cpu_samples[-window:] if window > 0 else ()
        self.window_full = window > 0 and len(recent) >= window
        self.cpu_min = min(recent) if recent else 0.0
        self.cpu_max = max(recent) if recent else 0.0
        self.cpu_avg = sum(recent) / len(recent) if recent else 0.0

    @property
    def free(self) -> int:
        """Schedulable memory left: memory × over-commit % − committed guaranteed memory."""
        return self.memory_limit - self.committed

    def share(self, vcpus: int, cpu_percent: float) -> float:
        """Percent of this host's CPU that a VM with these vCPUs at this use takes."""
        return cpu_percent * vcpus / self.cpu_threads if self.cpu_threads > 0 else 0.0

    def clone(self) -> HostState:
        other = object.__new__(HostState)
        for name in HostState.__slots__:
            setattr(other, name, getattr(self, name))
        return other


class Snapshot:
    def __init__(self, cluster: ClusterFacts) -> None:
        if cluster.policy not in POLICIES:
            raise ValueError(f"Unknown scheduling policy '{cluster.policy}'; known: {', '.join(sorted(POLICIES))}.")
        self.policy = POLICIES[cluster.policy]
        self.props = {**DEFAULT_PROPERTIES, **cluster.properties}
        self.overcommit_percent = cluster.overcommit_percent
        self.ha_reservation = cluster.ha_reservation
        window = self.props["CpuOverCommitDurationMinutes"]
        self.hosts = [HostState(h, cluster.overcommit_percent, window) for h in cluster.hosts]
        self.host_by_id = {h.id: h for h in self.hosts}
        self.vms = {vm.id: vm for vm in cluster.vms}
        self.vm_host: dict[str, str | None] = {}
        self.vms_on_host: dict[str, list[str]] = {h.id: [] for h in self.hosts}
        for vm in cluster.vms:
            self.vm_host[vm.id] = vm.host_id
            host = self.host_by_id.get(vm.host_id) if vm.host_id else None
            if host is not None:
                host.committed += vm.guaranteed_memory_mib
                host.vm_count += 1
                if vm.highly_available:
                    host.ha_committed += vm.guaranteed_memory_mib
                self.vms_on_host[host.id].append(vm.id)
        self.groups = list(cluster.affinity_groups)
        self.groups_by_vm: dict[str, list[AffinityGroup]] = {}
        for group in cluster.affinity_groups:
            for vm_id in group.vm_ids:
                self.groups_by_vm.setdefault(vm_id, []).append(group)

    def copy(self) -> Snapshot:
        other = object.__new__(Snapshot)
        other.__dict__.update(self.__dict__)
        other.hosts = [h.clone() for h in self.hosts]
        other.host_by_id = {h.id: h for h in other.hosts}
        other.vm_host = dict(self.vm_host)
        other.vms_on_host = {k: list(v) for k, v in self.vms_on_host.items()}
        return other

    def move(self, vm: VmFacts, target_id: str) -> None:
        """Project a migration: the VM's memory, count and CPU share go to the target."""
        source, target = self.host_by_id[self.vm_host[vm.id]], self.host_by_id[target_id]
        for host, sign in ((source, -1), (target, 1)):
            host.committed += sign * vm.guaranteed_memory_mib
            host.vm_count += sign
            if vm.highly_available:
                host.ha_committed += sign * vm.guaranteed_memory_mib
            shift = sign * host.share(vm.vcpus, vm.cpu_percent)
            host.cpu_min += shift
            host.cpu_max += shift
            host.cpu_avg += shift
        self.vms_on_host[source.id].remove(vm.id)
        self.vms_on_host[target.id].append(vm.id)
        self.vm_host[vm.id] = target.id


# Filters: factory(snapshot, request) -> check(host) -> reason or None; None = not applicable.

Check = Callable[[HostState], "str | None"]


def _status_filter(snap: Snapshot, req: VmRequest) -> Check:
    return lambda h: None if h.status == HOST_UP else f"host is {h.status}"


def _pin_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    pinned = req.pinned_host_ids
    if not pinned:
        return None
    return lambda h: None if h.id in pinned else "the VM is pinned to other hosts"


def _migration_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    if req.source_host_id is None:
        return None
    if not req.migratable:
        return lambda h: "the VM is not migratable"
    source = req.source_host_id
    return lambda h: "it is the VM's source host" if h.id == source else None


def _maintenance_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    if req.source_host_id is not None or req.highly_available:
        return None
    return lambda h: "the cluster is in maintenance: only highly available VMs may start"


def _cpu_filter(snap: Snapshot, req: VmRequest) -> Check:
    vcpus = req.vcpus

    def check(h: HostState) -> str | None:
        if h.cpu_threads and vcpus > h.cpu_threads:
            return f"{vcpus} vCPUs > {h.cpu_threads} host threads"
        return None

    return check


def _cpu_overload_filter(snap: Snapshot, req: VmRequest) -> Check:
    high, minutes = snap.props["HighUtilization"], snap.props["CpuOverCommitDurationMinutes"]

    def check(h: HostState) -> str | None:
        if h.window_full and h.cpu_min > high:
            return f"CPU over {high}% for the last {minutes} minutes (at least {h.cpu_min:.0f}%)"
        return None

    return check


def _memory_filter(snap: Snapshot, req: VmRequest) -> Check:
    need = req.guaranteed_memory_mib

    def check(h: HostState) -> str | None:
        free = h.free
        if need > free:
            return f"needs {need} MiB guaranteed, {max(free, 0)} MiB available"
        return None

    return check


def _network_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    required = req.networks
    if not required:
        return None

    def check(h: HostState) -> str | None:
        missing = required - h.networks
        return f"missing networks {', '.join(sorted(missing))}" if missing else None

    return check


def _ha_reservation_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    """With HA reservation on, the HA VMs of every host must fit in the free memory of the
    other up hosts (summed: fragmentation is not modelled). A placement may not break that."""
    if not snap.ha_reservation:
        return None
    need = req.guaranteed_memory_mib
    total = 0
    top: list[tuple[int, HostState]] = []  # the two largest ha + free of hosts with HA VMs
    for h in snap.hosts:
        if h.status != HOST_UP:
            continue
        free = max(h.free, 0)
        total += free
        if h.ha_committed:
            top.append((h.ha_committed + free, h))
            top.sort(key=lambda item: -item[0])
            del top[2:]

    def check(h: HostState) -> str | None:
        if req.highly_available and h.ha_committed + max(h.free, 0) + need > total:
            return f"its HA VMs ({h.ha_committed + need} MiB) could not be restarted on the other hosts"
        other = next((item for item in top if item[1] is not h), None)
        if other is not None and other[0] <= total and other[0] > total - need:
            return f"the HA VMs of host {other[1].name} would no longer fit on the other hosts"
        return None

    return check


def _vm_affinity_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    groups = [g for g in snap.groups_by_vm.get(req.id, ()) if g.vm_rule and g.vm_enforcing]
    if not groups:
        return None
    must: list[tuple[str, str]] = []  # (group, host id)
    must_not: dict[str, str] = {}  # host id -> group
    for group in groups:
        if group.vm_rule == POSITIVE:
            # Where the others run; split over several hosts, where most of them run, so a
            # split group converges (the affinity enforcer moves the others there too).
            majority = majority_host(snap, group, without=req.id)
            if majority is not None:
                must.append((group.name, majority))
        else:
            for m in group.vm_ids:
                host_id = snap.vm_host.get(m) if m != req.id else None
                if host_id is not None:
                    must_not.setdefault(host_id, group.name)
    names = {h.id: h.name for h in snap.hosts} if must else {}

    def check(h: HostState) -> str | None:
        for group, host_id in must:
            if h.id != host_id:
                return f"positive group {group} runs on {names.get(host_id, host_id)}"
        if h.id in must_not:
            return f"negative group {must_not[h.id]} has a VM there"
        return None

    return check


def majority_host(snap: Snapshot, group: AffinityGroup, without: str | None = None) -> str | None:
    """The host running most members of the group (ties: the host's name, then id)."""
    counts: dict[str, int] = {}
    for m in group.vm_ids:
        host_id = snap.vm_host.get(m) if m != without else None
        if host_id is not None and host_id in snap.host_by_id:
            counts[host_id] = counts.get(host_id, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda h: (-counts[h], snap.host_by_id[h].name, h))


def _host_affinity_filter(snap: Snapshot, req: VmRequest) -> Check | None:
    groups = [g for g in snap.groups_by_vm.get(req.id, ()) if g.host_rule and g.host_enforcing]
    if not groups:
        return None
    positive = [g for g in groups if g.host_rule == POSITIVE]
    negative = [g for g in groups if g.host_rule == NEGATIVE]

    def check(h: HostState) -> str | None:
        for g in positive:
            if h.id not in g.host_ids:
                return f"positive group {g.name} excludes this host"
        for g in negative:
            if h.id in g.host_ids:
                return f"negative group {g.name} includes this host"
        return None

    return check


FILTERS: dict[str, tuple[str, Callable[[Snapshot, VmRequest], Check | None]]] = {
    "status": ("status", _status_filter),
    "pin_to_host": ("pinning", _pin_filter),
    "migration": ("migration", _migration_filter),
    "cluster_in_maintenance": ("cluster maintenance", _maintenance_filter),
    "cpu": ("CPU", _cpu_filter),
    "cpu_overload": ("CPU overload", _cpu_overload_filter),
    "memory": ("memory", _memory_filter),
    "network": ("network", _network_filter),
    "ha_reservation": ("HA reservation", _ha_reservation_filter),
    "vm_affinity": ("VM affinity", _vm_affinity_filter),
    "host_affinity": ("host affinity", _host_affinity_filter),
}


# Weights: factory(snapshot, request) -> score(host), lower is better; None = not applicable.

Score = Callable[[HostState], float]


def _cpu_even_weight(snap: Snapshot, req: VmRequest) -> Score:
    return lambda h: h.cpu_avg + h.share(req.vcpus, req.cpu_percent)


def _memory_even_weight(snap: Snapshot, req: VmRequest) -> Score:
    need = req.guaranteed_memory_mib
    return lambda h: float(need - h.free)


def _power_saving_weight(snap: Snapshot, req: VmRequest) -> Score:
    # The busiest host (CPU and memory) that still passes the filters wins.
    return lambda h: -(h.cpu_avg / 100 + (h.committed / h.memory_limit if h.memory_limit > 0 else 1.0))


def _vm_count_weight(snap: Snapshot, req: VmRequest) -> Score:
    grace = snap.props["SpmVmGrace"]
    return lambda h: float(h.vm_count + (grace if h.spm else 0))


def _ha_weight(snap: Snapshot, req: VmRequest) -> Score | None:
    if not req.highly_available:
        return None
    return lambda h: float(h.ha_committed)  # spread HA VMs: less to restart when one host fails


def _vm_affinity_weight(snap: Snapshot, req: VmRequest) -> Score | None:
    groups = [g for g in snap.groups_by_vm.get(req.id, ()) if g.vm_rule and not g.vm_enforcing]
    if not groups:
        return None
    pull: dict[str, float] = {}
    for group in groups:
        sign = -1.0 if group.vm_rule == POSITIVE else 1.0
        for member in group.vm_ids:
            host_id = snap.vm_host.get(member) if member != req.id else None
            if host_id is not None:
                pull[host_id] = pull.get(host_id, 0.0) + sign
    return lambda h: pull.get(h.id, 0.0)


def _host_affinity_weight(snap: Snapshot, req: VmRequest) -> Score | None:
    groups = [g for g in snap.groups_by_vm.get(req.id, ()) if g.host_rule and not g.host_enforcing]
    if not groups:
        return None

    def score(h: HostState) -> float:
        return float(sum((h.id in g.host_ids) != (g.host_rule == POSITIVE) for g in groups))

    return score


def _preferred_hosts_weight(snap: Snapshot, req: VmRequest) -> Score | None:
    preferred = req.preferred_host_ids
    if not preferred:
        return None
    return lambda h: 0.0 if h.id in preferred else 1.0


WEIGHTS: dict[str, Callable[[Snapshot, VmRequest], Score | None]] = {
    "cpu_even": _cpu_even_weight,
    "memory_even": _memory_even_weight,
    "power_saving": _power_saving_weight,
    "vm_count_even": _vm_count_weight,
    "ha": _ha_weight,
    "vm_affinity": _vm_affinity_weight,
    "host_affinity": _host_affinity_weight,
    "preferred_hosts": _preferred_hosts_weight,
}


# Policies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    filters: tuple[str, ...]
    weights: tuple[tuple[str, float], ...]  # (weight module, factor)
    balancer: str


BASE_FILTERS = (
    "status",
    "pin_to_host",
    "migration",
    "cpu",
    "memory",
    "network",
    "ha_reservation",
    "vm_affinity",
    "host_affinity",
)
SOFT_WEIGHTS = (("ha", 1.0), ("vm_affinity", 10.0), ("host_affinity", 10.0), ("preferred_hosts", 99.0))
EVEN_WEIGHTS = (("cpu_even", 1.0), ("memory_even", 1.0))

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(NONE, BASE_FILTERS, EVEN_WEIGHTS + SOFT_WEIGHTS, NONE),
        Policy(EVENLY_DISTRIBUTED, BASE_FILTERS + ("cpu_overload",), EVEN_WEIGHTS + SOFT_WEIGHTS, EVENLY_DISTRIBUTED),
        Policy(POWER_SAVING, BASE_FILTERS + ("cpu_overload",), (("power_saving", 1.0),) + SOFT_WEIGHTS, POWER_SAVING),
        Policy(
            VM_EVENLY_DISTRIBUTED,
            BASE_FILTERS,
            (("vm_count_even", 1.0), ("memory_even", 0.1)) + SOFT_WEIGHTS,
            VM_EVENLY_DISTRIBUTED,
        ),
        Policy(CLUSTER_MAINTENANCE, ("cluster_in_maintenance",) + BASE_FILTERS, EVEN_WEIGHTS + SOFT_WEIGHTS, NONE),
    )
}


# Placement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    host_id: str
    host_name: str
    filter: str
    reason: str

    @property
    def message(self) -> str:
        return f"filtered by {FILTERS[self.filter][0] if self.filter in FILTERS else self.filter}: {self.reason}"


@dataclass(frozen=True, slots=True)
class HostScore:
    host_id: str
    host_name: str
    total: float
    parts: dict[str, float]  # weight module -> factor × normalised score


@dataclass
class Placement:
    host_id: str | None
    rejections: list[Rejection] = field(default_factory=list)
    scores: list[HostScore] = field(default_factory=list)  # the best few, best first
    policy: str = EVENLY_DISTRIBUTED

    @property
    def rejected(self) -> dict[str, str]:
        """Host name -> why it was filtered out."""
        return {r.host_name: r.message for r in self.rejections}

    def explain(self) -> str:
        if self.host_id is not None:
            best = self.scores[0]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in best.parts.items() if v) or "all hosts scored equal"
            return f"{best.host_name} scored {best.total:.2f} under policy {self.policy} ({parts})."
        if not self.rejections:
            return "The cluster has no hosts."
        return "; ".join(f"{name}: {message}" for name, message in sorted(self.rejected.items()))

    def as_dict(self) -> dict:
        return {
            "host_id": self.host_id,
            "policy": self.policy,
            "message": self.explain(),
            "rejected": [
                {"host_id": r.host_id, "host": r.host_name, "filter": r.filter, "reason": r.reason}
                for r in self.rejections
            ],
            "scores": [
                {"host_id": s.host_id, "host": s.host_name, "total": s.total, "parts": s.parts} for s in self.scores
            ],
        }


def schedule(
    snap: Snapshot,
    req: VmRequest,
    *,
    extra: tuple[str, Check] | None = None,
    keep_scores: int = 3,
) -> Placement:
    """Run the policy's filters, then its weights, over the snapshot's hosts.

    Total score = Σ factor × (score − min) / (max − min) over the hosts that passed; the
    lowest total wins and ties go to the host name, then the id. `extra` is one more
    named filter, run last (the balancer's own conditions)."""
    policy = snap.policy
    checks = [(name, check) for name in policy.filters if (check := FILTERS[name][1](snap, req)) is not None]
    if extra is not None:
        checks.append(extra)
    rejections: list[Rejection] = []
    candidates: list[HostState] = []
    for host in snap.hosts:
        for name, check in checks:
            reason = check(host)
            if reason is not None:
                rejections.append(Rejection(host.id, host.name, name, reason))
                break
        else:
            candidates.append(host)
    if not candidates:
        return Placement(None, rejections, [], policy.name)
    totals = [0.0] * len(candidates)
    columns: list[tuple[str, float, list[float], float, float]] = []
    for name, factor in policy.weights:
        score = WEIGHTS[name](snap, req)
        if score is None:
            continue
        raw = [score(h) for h in candidates]
        low, high = min(raw), max(raw)
        if high <= low:
            continue
        span = (high - low) / factor
        for i, value in enumerate(raw):
            totals[i] += (value - low) / span
        columns.append((name, factor, raw, low, high - low))
    order = sorted(range(len(candidates)), key=lambda i: (round(totals[i], 9), candidates[i].name, candidates[i].id))
    scores = [
        HostScore(
            candidates[i].id,
            candidates[i].name,
            round(totals[i], 9),
            {name: round(factor * (raw[i] - low) / span, 9) for name, factor, raw, low, span in columns},
        )
        for i in order[:keep_scores]
    ]
    return Placement(candidates[order[0]].id, rejections, scores, policy.name)


def place_vm(
    vm: VmRequest,
    hosts: Sequence[HostFacts],
    *,
    overcommit_percent: int,
    policy: str = EVENLY_DISTRIBUTED,
    properties: Mapping[str, int] | None = None,
    vms: Sequence[VmFacts] = (),
    affinity_groups: Sequence[AffinityGroup] = (),
    ha_reservation: bool = False,
) -> Placement:
    """One placement from plain lists (builds the snapshot; use `schedule` to place many)."""
    cluster = ClusterFacts(
        hosts=hosts,
        vms=vms,
        affinity_groups=affinity_groups,
        policy=policy,
        properties=properties or {},
        overcommit_percent=overcommit_percent,
        ha_reservation=ha_reservation,
    )
    return schedule(Snapshot(cluster), vm)


# Balancing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    vm_id: str
    vm_name: str
    source_host_id: str
    source_host_name: str
    target_host_id: str
    target_host_name: str
    reason: str


@dataclass
class Balance:
    migrations: list[Migration]
    note: str = ""  # why nothing (more) moves

    def explain(self) -> str:
        lines = [f"{m.vm_name}: {m.source_host_name} -> {m.target_host_name}: {m.reason}" for m in self.migrations]
        return "\n".join(lines + ([self.note] if self.note else [])) or "Nothing to balance."


MAX_ATTEMPTS = 24  # placements tried in one pass: bounds the pass at ~24 × one placement
CANDIDATES_PER_HOST = 6


class _Pass:
    def __init__(self, snap: Snapshot, now: datetime, limit: int) -> None:
        self.snap, self.now, self.limit = snap, now, limit
        self.props = snap.props
        self.migrations: list[Migration] = []
        self.attempts = 0
        self.moved: set[str] = set()
        self.hold_off = self.props["MigrationHoldOffMinutes"] * 60

    def done(self) -> bool:
        return len(self.migrations) >= self.limit or self.attempts >= MAX_ATTEMPTS

    def movable(self, host: HostState) -> list[VmFacts]:
        vms = []
        for vm_id in self.snap.vms_on_host[host.id]:
            vm = self.snap.vms[vm_id]
            if vm.status != VM_UP or not vm.migratable or vm.id in self.moved:
                continue
            if vm.last_migrated_at is not None and (self.now - vm.last_migrated_at).total_seconds() < self.hold_off:
                continue
            vms.append(vm)
        return vms

    def try_move(self, vm: VmFacts, source: HostState, target_ok: Callable[[HostState], str | None], why: str) -> bool:
        self.attempts += 1
        placement = schedule(self.snap, vm.as_request(migrating=True), extra=("balancing", target_ok), keep_scores=1)
        if placement.host_id is None:
            return False
        target = self.snap.host_by_id[placement.host_id]
        self.migrations.append(Migration(vm.id, vm.name, source.id, source.name, target.id, target.name, why))
        self.moved.add(vm.id)
        self.snap.move(vm, target.id)
        return True


def _cpu_over(props: Mapping[str, int], h: HostState) -> bool:
    return h.window_full and h.cpu_min > props["HighUtilization"]


def _mem_over(props: Mapping[str, int], h: HostState) -> bool:
    limit = props["MaxFreeMemoryForOverUtilized"]
    return limit > 0 and h.free < limit


def _under(props: Mapping[str, int], h: HostState) -> bool:
    limit = props["MinFreeMemoryForUnderUtilized"]
    return (h.window_full and h.cpu_max < props["LowUtilization"]) or (limit > 0 and h.free > limit)


def _not_over_after(props: Mapping[str, int], h: HostState, vm: VmFacts) -> str | None:
    """A target may not become over-utilised by the move (so it never becomes a source)."""
    if h.cpu_max + h.share(vm.vcpus, vm.cpu_percent) > props["HighUtilization"]:
        return f"would pass HighUtilization {props['HighUtilization']}%"
    limit = props["MaxFreeMemoryForOverUtilized"]
    if limit > 0 and h.free - vm.guaranteed_memory_mib < limit:
        return f"would keep less than MaxFreeMemoryForOverUtilized {limit} MiB free"
    return None


def _relieve_over_utilized(run: _Pass, targets: Callable[[HostState], bool] | None = None) -> None:
    """Move VMs off over-utilised hosts (CPU over HighUtilization for the whole window, or
    less free memory than MaxFreeMemoryForOverUtilized): the evenly_distributed balancer."""
    props, snap = run.props, run.snap
    margin = props["BalanceMarginPercent"]
    sources = [h for h in snap.hosts if h.status == HOST_UP and (_cpu_over(props, h) or _mem_over(props, h))]
    sources.sort(key=lambda h: (not _cpu_over(props, h), -h.cpu_avg, h.free, h.name))
    for source in sources:
        if run.done():
            return
        cpu = _cpu_over(props, source)
        vms = run.movable(source)
        if cpu:
            vms.sort(key=lambda vm: (-source.share(vm.vcpus, vm.cpu_percent), vm.name))
        else:
            vms.sort(key=lambda vm: (-vm.guaranteed_memory_mib, vm.name))
        for vm in vms[:CANDIDATES_PER_HOST]:
            if run.done() or not (_cpu_over(props, source) or _mem_over(props, source)):
                break
            give = source.share(vm.vcpus, vm.cpu_percent)
            if cpu and give < margin:
                continue

            def target_ok(h: HostState, vm: VmFacts = vm, cpu: bool = cpu, source: HostState = source) -> str | None:
                if targets is not None and not targets(h):
                    return "not a consolidation target"
                reason = _not_over_after(props, h, vm)
                if reason:
                    return reason
                if cpu and h.cpu_avg + h.share(vm.vcpus, vm.cpu_percent) > source.cpu_avg - margin:
                    return "would not lower the spread of CPU load"
                if not cpu and h.free - vm.guaranteed_memory_mib <= source.free:
                    return "would not lower the spread of free memory"
                return None

            if cpu:
                why = (
                    f"{source.name} CPU over HighUtilization {props['HighUtilization']}% for "
                    f"{props['CpuOverCommitDurationMinutes']} minutes (now {source.cpu_avg:.0f}%); "
                    f"the VM takes {give:.0f}% of it"
                )
            else:
                why = (
                    f"{source.name} has {source.free} MiB free, under MaxFreeMemoryForOverUtilized "
                    f"{props['MaxFreeMemoryForOverUtilized']} MiB"
                )
            run.try_move(vm, source, target_ok, why)


def _balance_evenly(run: _Pass) -> None:
    _relieve_over_utilized(run)


def _balance_power_saving(run: _Pass) -> None:
    """Relieve over-utilised hosts, then empty under-utilised ones onto normally used hosts
    (neither under nor over); when every host is under-utilised, onto the busiest of them."""
    props, snap = run.props, run.snap
    up = [h for h in snap.hosts if h.status == HOST_UP]
    targets = {h.id for h in up if not _under(props, h) and not _cpu_over(props, h) and not _mem_over(props, h)}
    under = [h for h in up if _under(props, h)]
    if not targets:
        # The sink only ever gains load and every other under-utilised host only loses
        # it, so the same host stays the sink from pass to pass: no VM comes back.
        sink = max(under, key=lambda h: (h.cpu_avg, h.committed, h.name), default=None)
        if sink is None:
            return
        targets = {sink.id}
        under = [h for h in under if h is not sink]
    _relieve_over_utilized(run, targets=lambda h: h.id in targets)
    under = [h for h in under if h.vm_count]
    under.sort(key=lambda h: (h.vm_count, h.cpu_avg, h.committed, h.name))
    for source in under:
        for vm in sorted(run.movable(source), key=lambda vm: (-vm.guaranteed_memory_mib, vm.name))[
            :CANDIDATES_PER_HOST
        ]:
            if run.done():
                return

            def target_ok(h: HostState, vm: VmFacts = vm) -> str | None:
                if h.id not in targets:
                    return "not a consolidation target"
                return _not_over_after(props, h, vm)

            why = (
                f"power saving: {source.name} is under-utilised (CPU under LowUtilization "
                f"{props['LowUtilization']}% or much free memory); consolidating its VMs"
            )
            run.try_move(vm, source, target_ok, why)


def _balance_vm_count(run: _Pass) -> None:
    """oVirt's even guest distribution: a host over HighVmCount (the SPM counting SpmVmGrace
    more) gives a VM to a host with more than MigrationThreshold fewer, which stays at or
    under HighVmCount."""
    props, snap = run.props, run.snap
    high, threshold, grace = props["HighVmCount"], props["MigrationThreshold"], props["SpmVmGrace"]

    def count(h: HostState) -> int:
        return h.vm_count + (grace if h.spm else 0)

    sources = sorted(
        (h for h in snap.hosts if h.status == HOST_UP and count(h) > high), key=lambda h: (-count(h), h.name)
    )
    for source in sources:
        for vm in run.movable(source)[:CANDIDATES_PER_HOST]:
            if run.done() or count(source) <= high:
                break

            def target_ok(h: HostState, source: HostState = source) -> str | None:
                if count(h) + 1 > high:
                    return f"would pass HighVmCount {high}"
                if count(source) - count(h) <= threshold:
                    return f"VM counts differ by MigrationThreshold {threshold} or less"
                return None

            why = f"{source.name} runs {source.vm_count} VMs, over HighVmCount {high}"
            run.try_move(vm, source, target_ok, why)


BALANCERS: dict[str, Callable[[_Pass], None] | None] = {
    NONE: None,
    EVENLY_DISTRIBUTED: _balance_evenly,
    POWER_SAVING: _balance_power_saving,
    VM_EVENLY_DISTRIBUTED: _balance_vm_count,
}


def balance(snap: Snapshot, *, now: datetime, limit: int = 1) -> Balance:
    """One balancing pass of the cluster's policy: at most `limit` migrations, each with its
    reason; the snapshot is not changed (the pass works on a copy)."""
    balancer = BALANCERS[snap.policy.balancer]
    if balancer is None:
        return Balance([], f"Policy {snap.policy.name} does not balance.")
    run = _Pass(snap.copy(), now, limit)
    balancer(run)
    note = "" if run.migrations else "No host needs relief, or no move passes the filters and the margins."
    return Balance(run.migrations, note)


def affinity_violations(snap: Snapshot) -> list[tuple[VmFacts, str]]:
    """Running VMs that break an enforcing affinity rule, each with the rule it breaks."""
    found: list[tuple[VmFacts, str]] = []
    seen: set[str] = set()

    def add(vm_id: str, why: str) -> None:
        vm = snap.vms.get(vm_id)
        if vm is not None and vm.status == VM_UP and vm_id not in seen:
            seen.add(vm_id)
            found.append((vm, why))

    for group in sorted(snap.groups, key=lambda g: (-g.priority, g.name)):
        members = sorted(m for m in group.vm_ids if snap.vm_host.get(m) in snap.host_by_id)
        if group.vm_rule and group.vm_enforcing and len(members) > 1:
            if group.vm_rule == POSITIVE:
                majority = majority_host(snap, group)
                for m in members:
                    if snap.vm_host[m] != majority:
                        name = snap.host_by_id[majority].name
                        add(m, f"enforcing positive affinity group {group.name}: its other VMs run on {name}")
            else:
                by_host: dict[str, list[str]] = {}
                for m in members:
                    by_host.setdefault(snap.vm_host[m], []).append(m)
                for host_id, on_host in by_host.items():
                    for m in sorted(on_host, key=lambda m: snap.vms[m].name)[1:]:
                        name = snap.host_by_id[host_id].name
                        add(m, f"enforcing negative affinity group {group.name}: another of its VMs runs on {name}")
        if group.host_rule and group.host_enforcing:
            for m in members:
                inside = snap.vm_host[m] in group.host_ids
                if inside != (group.host_rule == POSITIVE):
                    side = "outside" if group.host_rule == POSITIVE else "on"
                    name = snap.host_by_id[snap.vm_host[m]].name
                    add(m, f"enforcing host affinity group {group.name}: it runs {side} the group's hosts ({name})")
    return found


def enforce_affinity(snap: Snapshot, *, now: datetime, limit: int = 1) -> Balance:
    """Migrations that fix running VMs breaking an enforcing affinity group (oVirt's affinity
    rules enforcement manager): each violator goes where every filter, the broken rule
    included, lets it; the snapshot is not changed."""
    run = _Pass(snap.copy(), now, limit)
    for vm, why in affinity_violations(run.snap):
        if run.done():
            break
        if not vm.migratable:
            continue
        source = run.snap.host_by_id[run.snap.vm_host[vm.id]]
        run.try_move(vm, source, lambda h: None, why)
    note = "" if run.migrations else "No VM breaks an enforcing affinity group, or none of them can move."
    return Balance(run.migrations, note)


def apply_migrations(cluster: ClusterFacts, migrations: Iterable[Migration], *, now: datetime) -> ClusterFacts:
    """The cluster as it will be once these migrations are done: the VMs on their targets,
    stamped as migrated now, and their CPU share moved in the hosts' recent samples."""
    vms = {vm.id: vm for vm in cluster.vms}
    hosts = {h.id: h for h in cluster.hosts}
    for m in migrations:
        vm = vms[m.vm_id]
        for host_id, sign in ((m.source_host_id, -1), (m.target_host_id, 1)):
            host = hosts[host_id]
            shift = sign * (vm.cpu_percent * vm.vcpus / host.cpu_threads if host.cpu_threads else 0.0)
            hosts[host_id] = replace(host, cpu_samples=tuple(max(0.0, s + shift) for s in host.cpu_samples))
        vms[m.vm_id] = replace(vm, host_id=m.target_host_id, last_migrated_at=now)
    return replace(cluster, hosts=[hosts[h.id] for h in cluster.hosts], vms=[vms[vm.id] for vm in cluster.vms])
