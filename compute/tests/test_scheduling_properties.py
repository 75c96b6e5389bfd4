"""Properties of the scheduler over generated clusters (hypothesis, no database).

Placement never breaks an enforcing affinity rule nor over-commits a host past the
cluster's limit; balancing converges (its proposals, applied, end in no proposal within
one move per VM) and never sends a VM back to a host it left."""

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.scheduling import (
    EVENLY_DISTRIBUTED,
    NEGATIVE,
    POLICIES,
    POSITIVE,
    POWER_SAVING,
    VM_EVENLY_DISTRIBUTED,
    AffinityGroup,
    ClusterFacts,
    HostFacts,
    Snapshot,
    VmFacts,
    VmRequest,
    affinity_violations,
    apply_migrations,
    balance,
    enforce_affinity,
    schedule,
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
NETWORKS = ("mgmt", "prod", "dmz")
START = datetime(2025, 1, 1, tzinfo=UTC)


def cpu_samples(draw) -> tuple[float, ...]:
    """Mostly a steady load (so hosts are clearly over or under), sometimes a partial window."""
    base = draw(st.integers(0, 100))
    return tuple(max(0, min(100, base + draw(st.integers(-5, 5)))) for _ in range(draw(st.sampled_from([0, 3, 3, 3]))))


@st.composite
def clusters(draw, policies=tuple(POLICIES)):
    n_hosts = draw(st.integers(1, 6))
    hosts = [
        HostFacts(
            id=f"h{i}",
            name=f"host-{i}",
            status=draw(st.sampled_from(["up", "up", "up", "maintenance"])),
            memory_mib=draw(st.sampled_from([2048, 4096, 8192])),
            cpu_threads=draw(st.sampled_from([2, 4, 8])),
            networks=frozenset(draw(st.sets(st.sampled_from(NETWORKS)))),
            cpu_samples=cpu_samples(draw),
            spm=i == 0,
        )
        for i in range(n_hosts)
    ]
    host_ids = [h.id for h in hosts]
    vms = [
        VmFacts(
            id=f"v{i}",
            name=f"vm-{i}",
            host_id=draw(st.sampled_from([*host_ids, None])),
            guaranteed_memory_mib=draw(st.sampled_from([256, 512, 1024, 2048])),
            vcpus=draw(st.integers(1, 4)),
            cpu_percent=draw(st.integers(0, 100)),
            highly_available=draw(st.booleans()),
            migratable=draw(st.sampled_from([True, True, True, False])),
            networks=frozenset(draw(st.sets(st.sampled_from(NETWORKS), max_size=1))),
        )
        for i in range(draw(st.integers(0, 20)))
    ]
    vm_ids = [vm.id for vm in vms] + ["new"]
    groups = [
        AffinityGroup(
            name=f"g{i}",
            vm_ids=frozenset(draw(st.sets(st.sampled_from(vm_ids), min_size=1))),
            host_ids=frozenset(draw(st.sets(st.sampled_from(host_ids)))),
            vm_rule=draw(st.sampled_from([None, POSITIVE, NEGATIVE])),
            vm_enforcing=draw(st.booleans()),
            host_rule=draw(st.sampled_from([None, POSITIVE, NEGATIVE])),
            host_enforcing=draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    low = draw(st.integers(0, 40))
    properties = {
        "LowUtilization": low,
        "HighUtilization": draw(st.integers(max(low + 1, 50), 95)),
        "CpuOverCommitDurationMinutes": draw(st.integers(1, 3)),
        "MaxFreeMemoryForOverUtilized": draw(st.sampled_from([0, 512, 1024])),
        "MinFreeMemoryForUnderUtilized": draw(st.sampled_from([0, 4096, 6144])),
        "HighVmCount": draw(st.integers(0, 5)),
        "MigrationThreshold": draw(st.integers(0, 2)),
        "SpmVmGrace": draw(st.integers(0, 3)),
        "MigrationHoldOffMinutes": draw(st.sampled_from([0, 30])),
        "BalanceMarginPercent": draw(st.integers(0, 10)),
    }
    return ClusterFacts(
        hosts=hosts,
        vms=vms,
        affinity_groups=groups,
        policy=draw(st.sampled_from(policies)),
        properties=properties,
        overcommit_percent=draw(st.sampled_from([100, 150, 200])),
        ha_reservation=draw(st.booleans()),
    )


def where(cluster: ClusterFacts) -> dict[str, str | None]:
    return {vm.id: vm.host_id for vm in cluster.vms}


def broken_enforcing_rules(cluster: ClusterFacts, vm_id: str, host_id: str) -> list[str]:
    located = where(cluster)
    broken = []
    for group in cluster.affinity_groups:
        if vm_id not in group.vm_ids:
            continue
        others = {located.get(m) for m in group.vm_ids if m != vm_id} - {None}
        if group.vm_enforcing and group.vm_rule == POSITIVE and others and host_id != majority(cluster, group, vm_id):
            broken.append(f"{group.name}: most members elsewhere {others}")
        if group.vm_enforcing and group.vm_rule == NEGATIVE and host_id in others:
            broken.append(f"{group.name}: a member on {host_id}")
        if group.host_enforcing and group.host_rule == POSITIVE and host_id not in group.host_ids:
            broken.append(f"{group.name}: host outside {sorted(group.host_ids)}")
        if group.host_enforcing and group.host_rule == NEGATIVE and host_id in group.host_ids:
            broken.append(f"{group.name}: host inside {sorted(group.host_ids)}")
    return broken


def majority(cluster: ClusterFacts, group, vm_id: str) -> str | None:
    """Where a positive group's other members mostly run (ties: the host's name, then id)."""
    located, names = where(cluster), {h.id: h.name for h in cluster.hosts}
    counts: dict[str, int] = {}
    for m in group.vm_ids:
        if m != vm_id and located.get(m) is not None:
            counts[located[m]] = counts.get(located[m], 0) + 1
    return min(counts, key=lambda h: (-counts[h], names[h], h)) if counts else None


def committed(cluster: ClusterFacts, host_id: str) -> int:
    return sum(vm.guaranteed_memory_mib for vm in cluster.vms if vm.host_id == host_id)


def limit(cluster: ClusterFacts, host_id: str) -> int:
    host = next(h for h in cluster.hosts if h.id == host_id)
    return host.memory_mib * cluster.overcommit_percent // 100


@PROPERTY_SETTINGS
@given(
    cluster=clusters(),
    memory=st.sampled_from([256, 1024, 4096]),
    vcpus=st.integers(1, 8),
    ha=st.booleans(),
    networks=st.sets(st.sampled_from(NETWORKS), max_size=2),
)
def test_placement_respects_enforcing_affinity_memory_and_status(cluster, memory, vcpus, ha, networks):
    request = VmRequest(
        id="new",
        name="new",
        vcpus=vcpus,
        guaranteed_memory_mib=memory,
        highly_available=ha,
        networks=frozenset(networks),
    )
    placement = schedule(Snapshot(cluster), request)
    ups = {h.id for h in cluster.hosts if h.status == "up"}
    rejected = {r.host_id for r in placement.rejections}
    assert rejected | ({placement.host_id} if placement.host_id else set()) <= {h.id for h in cluster.hosts}
    if placement.host_id is None:
        assert rejected == {h.id for h in cluster.hosts}  # every host is explained
        return
    target = placement.host_id
    assert target in ups and target not in rejected
    assert broken_enforcing_rules(cluster, "new", target) == []
    assert committed(cluster, target) + memory <= limit(cluster, target)
    assert networks <= next(h for h in cluster.hosts if h.id == target).networks


@PROPERTY_SETTINGS
@given(cluster=clusters(policies=(EVENLY_DISTRIBUTED, POWER_SAVING, VM_EVENLY_DISTRIBUTED)), per_pass=st.integers(1, 3))
def test_balancing_converges_and_never_sends_a_vm_back(cluster, per_pass):
    now = START
    visited = {vm.id: [vm.host_id] for vm in cluster.vms}
    moved = 0
    for _ in range(len(cluster.vms) + 1):
        result = balance(Snapshot(cluster), now=now, limit=per_pass)
        if not result.migrations:
            break
        for migration in result.migrations:
            vm = next(v for v in cluster.vms if v.id == migration.vm_id)
            assert vm.migratable and vm.host_id == migration.source_host_id != migration.target_host_id
            assert migration.target_host_id not in visited[vm.id], f"{vm.id} goes back: {visited[vm.id]}"
            assert broken_enforcing_rules(cluster, vm.id, migration.target_host_id) == []
            cluster = apply_migrations(cluster, [migration], now=now)
            target = migration.target_host_id
            assert committed(cluster, target) <= limit(cluster, target)
            visited[vm.id].append(target)
            moved += 1
        now += timedelta(minutes=1)
    else:
        raise AssertionError(f"still proposing after {moved} moves")
    assert moved <= len(cluster.vms)


@PROPERTY_SETTINGS
@given(cluster=clusters(), per_pass=st.integers(1, 3))
def test_affinity_enforcement_converges_and_each_move_keeps_every_enforcing_rule(cluster, per_pass):
    now = START
    before = len(affinity_violations(Snapshot(cluster)))
    for _ in range(len(cluster.vms) + 1):
        result = enforce_affinity(Snapshot(cluster), now=now, limit=per_pass)
        if not result.migrations:
            break
        for migration in result.migrations:
            vm = next(v for v in cluster.vms if v.id == migration.vm_id)
            assert vm.migratable and vm.host_id == migration.source_host_id != migration.target_host_id
            assert broken_enforcing_rules(cluster, vm.id, migration.target_host_id) == []
            cluster = apply_migrations(cluster, [migration], now=now)
            assert committed(cluster, migration.target_host_id) <= limit(cluster, migration.target_host_id)
        now += timedelta(minutes=1)
    else:
        raise AssertionError("the enforcer still proposes moves after one pass per VM")
    assert len(affinity_violations(Snapshot(cluster))) <= before
