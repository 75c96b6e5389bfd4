"""The cluster as the scheduler sees it, read from the database (compute/scheduling.py is
pure: this module is its only reader of the inventory).

`cluster_facts` reads a cluster in a fixed number of queries whatever its size: the hosts,
the running VMs with their pins, networks and affinity groups, and (for the balancer) the
hosts' CPU history. `choose_host` places a VM to start, `choose_migration_target` a VM to
move; both raise a ConflictError whose `details` list every host and the filter that
removed it when nothing fits.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import Avg
from django.utils import timezone

from inventory.choices import SampleResolution
from inventory.exceptions import ConflictError
from inventory.models import Cluster, Host, HostSample, VmSample
from networking.models import ClusterNetwork, VmNic

from .choices import PlacementPolicy
from .models import AffinityGroup, VirtualMachine
from .scheduling import AffinityGroup as GroupFacts
from .scheduling import ClusterFacts, HostFacts, Placement, Snapshot, VmFacts, VmRequest, schedule
from .statemachine import RUNNING

MANUAL = "manual"  # a person asked: user_migratable VMs may move
AUTOMATIC = "automatic"  # maintenance, the balancer, the affinity enforcer: only migratable VMs
RULE_FIELDS = ("vm_rule", "vm_enforcing", "host_rule", "host_enforcing")


def _movable(mode: str) -> set[str]:
    """The placement policies that let a VM be migrated in this mode."""
    if mode == MANUAL:
        return {PlacementPolicy.MIGRATABLE, PlacementPolicy.USER_MIGRATABLE}
    return {PlacementPolicy.MIGRATABLE}


def properties_of(cluster: Cluster) -> dict[str, int]:
    """The cluster's scheduling properties the scheduler knows (ill-typed leftovers dropped)."""
    return {
        key: value
        for key, value in (cluster.scheduling_properties or {}).items()
        if key in Cluster.SCHEDULING_PROPERTY_KEYS and isinstance(value, int) and not isinstance(value, bool)
    }


def _rule(value: str) -> str | None:
    return None if value == "disabled" else value


def _cpu_history(host_ids: list, minutes: int, now: dt.datetime) -> dict[str, tuple[float, ...]]:
    """Per host, its CPU use averaged per minute over the last `minutes` minutes, oldest first."""
    if minutes <= 0 or not host_ids:
        return {}
    since = now - dt.timedelta(minutes=minutes)
    rows = (
        HostSample.objects.filter(
            host_id__in=host_ids, resolution=SampleResolution.RAW, time__gt=since, cpu_pct__isnull=False
        )
        .order_by()
        .values_list("host_id", "time", "cpu_pct")
    )
    buckets: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for host_id, at, cpu in rows:
        buckets[str(host_id)][int((at - since).total_seconds() // 60)].append(cpu)
    return {
        host_id: tuple(sum(values) / len(values) for _, values in sorted(per_minute.items()))
        for host_id, per_minute in buckets.items()
    }


def _vm_cpu(vm_ids: list, minutes: int, now: dt.datetime) -> dict[str, float]:
    """Per VM, its recent CPU use (percent of its own vCPUs)."""
    if not vm_ids:
        return {}
    since = now - dt.timedelta(minutes=max(minutes, 1))
    rows = (
        VmSample.objects.filter(vm_id__in=vm_ids, resolution=SampleResolution.RAW, time__gt=since)
        .order_by()
        .values("vm_id")
        .annotate(cpu=Avg("cpu_pct"))
        .values_list("vm_id", "cpu")
    )
    return {str(vm_id): float(cpu) for vm_id, cpu in rows if cpu is not None}


def cluster_facts(cluster: Cluster, *, mode: str = AUTOMATIC, with_cpu: bool = False) -> tuple[ClusterFacts, dict]:
    """The cluster as plain data, and its Host rows by id (str)."""
    now = timezone.now()
    hosts = list(Host.objects.filter(cluster_id=cluster.pk))
    attached = set(ClusterNetwork.objects.filter(cluster_id=cluster.pk).values_list("network__name", flat=True))
    running = list(
        VirtualMachine.objects.filter(run_on_host__cluster_id=cluster.pk, status__in=RUNNING)
        .order_by()
        .values_list(
            "id",
            "name",
            "run_on_host_id",
            "migrating_to_host_id",
            "guaranteed_memory_mib",
            "vcpus",
            "status",
            "ha_enabled",
            "placement_policy",
            "last_migrated_at",
        )
    )
    vm_ids = [row[0] for row in running]
    pins: dict[str, set[str]] = defaultdict(set)
    for vm_id, host_id in VirtualMachine.pinned_hosts.through.objects.filter(virtualmachine_id__in=vm_ids).values_list(
        "virtualmachine_id", "host_id"
    ):
        pins[str(vm_id)].add(str(host_id))
    networks: dict[str, set[str]] = defaultdict(set)
    for vm_id, name in VmNic.objects.filter(vm_id__in=vm_ids, plugged=True, profile__isnull=False).values_list(
        "vm_id", "profile__network__name"
    ):
        networks[str(vm_id)].add(name)
    props = properties_of(cluster)
    window = props.get("CpuOverCommitDurationMinutes", 2)
    cpu_hosts = _cpu_history([h.pk for h in hosts], window, now) if with_cpu else {}
    cpu_vms = _vm_cpu(vm_ids, window, now) if with_cpu else {}
    movable = _movable(mode)
    incoming: dict[str, int] = defaultdict(int)
    vms = []
    for pk, name, host_id, target_id, memory, vcpus, status, ha, policy, migrated_at in running:
        if target_id is not None:
            # Reserved on its target from the moment the migration is decided.
            incoming[str(target_id)] += memory
        vms.append(
            VmFacts(
                id=str(pk),
                name=name,
                host_id=str(host_id),
                guaranteed_memory_mib=memory,
                vcpus=vcpus,
                cpu_percent=cpu_vms.get(str(pk), 0.0),
                status=status,
                highly_available=ha,
                migratable=policy in movable and target_id is None,
                pinned_host_ids=frozenset(pins.get(str(pk), ())),
                networks=frozenset(networks.get(str(pk), ())),
                last_migrated_at=migrated_at,
            )
        )
    facts = [
        HostFacts(
            id=str(h.pk),
            name=h.name,
            status=h.status,
            memory_mib=h.memory_mib,
            cpu_threads=h.cpu_threads,
            committed_memory_mib=incoming.get(str(h.pk), 0),
            networks=frozenset(h.networks or ()) | attached,
            cpu_samples=cpu_hosts.get(str(h.pk), ()),
            spm=h.is_spm,
        )
        for h in hosts
    ]
    return (
        ClusterFacts(
            hosts=facts,
            vms=vms,
            affinity_groups=affinity_facts(cluster),
            policy=cluster.scheduling_policy,
            properties=props,
            overcommit_percent=cluster.memory_overcommit_percent,
            ha_reservation=cluster.ha_reservation,
        ),
        {str(h.pk): h for h in hosts},
    )


def affinity_facts(cluster: Cluster) -> list[GroupFacts]:
    """The cluster's affinity groups in three queries."""
    groups = list(
        AffinityGroup.objects.filter(cluster_id=cluster.pk).values_list("id", "name", "priority", *RULE_FIELDS)
    )
    if not groups:
        return []
    ids = [g[0] for g in groups]
    members: dict = defaultdict(set)
    for group_id, vm_id in AffinityGroup.vms.through.objects.filter(affinitygroup_id__in=ids).values_list(
        "affinitygroup_id", "virtualmachine_id"
    ):
        members[group_id].add(str(vm_id))
    hosts: dict = defaultdict(set)
    for group_id, host_id in AffinityGroup.hosts.through.objects.filter(affinitygroup_id__in=ids).values_list(
        "affinitygroup_id", "host_id"
    ):
        hosts[group_id].add(str(host_id))
    return [
        GroupFacts(
            name=name,
            vm_ids=frozenset(members[pk]),
            host_ids=frozenset(hosts[pk]),
            vm_rule=_rule(vm_rule),
            vm_enforcing=vm_enforcing,
            host_rule=_rule(host_rule),
            host_enforcing=host_enforcing,
            priority=priority,
        )
        for pk, name, priority, vm_rule, vm_enforcing, host_rule, host_enforcing in groups
    ]


def vm_request(vm: VirtualMachine, *, mode: str = MANUAL, source_host_id=None) -> VmRequest:
    return VmRequest(
        vcpus=vm.vcpus,
        guaranteed_memory_mib=vm.guaranteed_memory_mib,
        pinned_host_ids=frozenset(str(pk) for pk in vm.pinned_hosts.values_list("pk", flat=True)),
        id=str(vm.pk),
        name=vm.name,
        highly_available=vm.ha_enabled,
        migratable=vm.placement_policy in _movable(mode),
        networks=frozenset(
            VmNic.objects.filter(vm_id=vm.pk, plugged=True, profile__isnull=False).values_list(
                "profile__network__name", flat=True
            )
        ),
        source_host_id=str(source_host_id) if source_host_id else None,
    )


def _refused(placement: Placement, message: str) -> ConflictError:
    return ConflictError(f"{message} {placement.explain()}", code="no_host", details=placement.as_dict())


def choose_host(vm: VirtualMachine) -> Host:
    """The host to start `vm` on, under its cluster's scheduling policy and properties."""
    cluster = vm.cluster
    facts, hosts = cluster_facts(cluster)
    placement = schedule(Snapshot(facts), vm_request(vm))
    if placement.host_id is None:
        raise _refused(placement, f"Cannot run VM {vm.name}: no host of cluster {cluster.name} fits.")
    return hosts[placement.host_id]


def choose_migration_target(vm: VirtualMachine, target: Host | None = None, *, mode: str = MANUAL) -> Host:
    """Where a running VM can move: the best host of its cluster, or `target` if it passes
    every filter. Refused with each host and the filter that removed it."""
    cluster = vm.cluster
    facts, hosts = cluster_facts(cluster, mode=mode)
    if target is not None:
        if str(target.pk) not in hosts:
            raise ConflictError(
                f"Cannot migrate VM {vm.name} to host {target.name}: it is not in cluster {cluster.name}.",
                code="no_host",
            )
    request = vm_request(vm, mode=mode, source_host_id=vm.run_on_host_id)
    if target is None:
        placement = schedule(Snapshot(facts), request)
    else:
        # The whole cluster stays in the snapshot (affinity, HA reservation and the like look at
        # every host); the chosen destination is one more filter, run last, and the refusal
        # speaks of that host only.
        chosen = str(target.pk)
        placement = schedule(
            Snapshot(facts), request, extra=("destination", lambda h: None if h.id == chosen else "not chosen")
        )
        placement.rejections = [r for r in placement.rejections if r.host_id == chosen]
    if placement.host_id is None:
        where = f"to host {target.name}" if target is not None else f"within cluster {cluster.name}"
        raise _refused(placement, f"Cannot migrate VM {vm.name} {where}:")
    return hosts[placement.host_id]
