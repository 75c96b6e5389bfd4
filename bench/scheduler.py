"""Bench: the pure scheduler on a generated cluster (no database, no Django).

1,000 hosts, 20,000 VMs and affinity groups (VM-to-VM positive/negative, enforcing and
soft; VM-to-host), generated from a seed. Prints the time to build the snapshot (the
per-host aggregates, once per pass), one placement (p50/p95 over --placements new VMs
that belong to affinity groups) and one full balancing pass for each balancing policy.
Targets: placement p95 under 10 ms, a balancing pass under 1 s.

    .venv/bin/python bench/scheduler.py [--hosts 1000] [--vms 20000] [--seed 1]
"""

import argparse
import random
import sys
import time
from datetime import UTC, datetime

from _setup import ROOT, percentile

sys.path.insert(0, str(ROOT))

from compute.scheduling import (  # noqa: E402
    EVENLY_DISTRIBUTED,
    NEGATIVE,
    POSITIVE,
    POWER_SAVING,
    VM_EVENLY_DISTRIBUTED,
    AffinityGroup,
    ClusterFacts,
    HostFacts,
    Snapshot,
    VmFacts,
    VmRequest,
    balance,
    schedule,
)

NETWORKS = ("ovirtmgmt", "prod", "storage", "backup", "dmz")


def generate(hosts: int, vms: int, seed: int, new_vms: int) -> tuple[list[HostFacts], list[VmFacts], list]:
    rng = random.Random(seed)
    host_facts = []
    for i in range(hosts):
        busy = rng.random() < 0.05  # a few hosts over HighUtilization, a few idle
        idle = not busy and rng.random() < 0.05
        base = rng.uniform(85, 95) if busy else rng.uniform(2, 15) if idle else rng.uniform(25, 70)
        host_facts.append(
            HostFacts(
                id=f"h{i:04d}",
                name=f"host-{i:04d}",
                status="up" if rng.random() < 0.97 else rng.choice(["maintenance", "non_responsive"]),
                memory_mib=rng.choice([256, 384, 512]) * 1024,
                cpu_threads=rng.choice([32, 64, 96]),
                networks=frozenset(NETWORKS[: rng.randint(2, 5)]),
                cpu_samples=tuple(base + rng.uniform(-2, 2) for _ in range(5)),
                spm=i == 0,
            )
        )
    vm_facts = []
    for i in range(vms):
        host = host_facts[rng.randrange(hosts)]
        vm_facts.append(
            VmFacts(
                id=f"v{i:05d}",
                name=f"vm-{i:05d}",
                host_id=host.id,
                guaranteed_memory_mib=rng.choice([1024, 2048, 4096, 8192]),
                vcpus=rng.choice([1, 2, 4, 8]),
                cpu_percent=rng.uniform(5, 90),
                highly_available=rng.random() < 0.2,
                migratable=rng.random() < 0.95,
                networks=frozenset(rng.sample(NETWORKS[:2], 1)),
            )
        )
    by_host: dict[str, list[str]] = {}
    for vm in vm_facts:
        by_host.setdefault(vm.host_id, []).append(vm.id)
    groups = []
    hosts_ids = [h.id for h in host_facts]
    for g in range(vms // 10):  # ~2,000 groups
        kind = g % 4
        new = f"new{g % new_vms:04d}"  # every new VM is in a few groups
        if kind == 0:  # positive enforcing: members already together on one host
            members = by_host.get(rng.choice(hosts_ids), [])[:3]
            groups.append(AffinityGroup(f"pos-{g}", frozenset([*members, new]), vm_rule=POSITIVE))
        elif kind == 1:  # negative enforcing: members on distinct hosts
            members = [by_host[h][0] for h in rng.sample(sorted(by_host), 4)]
            groups.append(AffinityGroup(f"neg-{g}", frozenset([*members, new]), vm_rule=NEGATIVE))
        elif kind == 2:  # soft VM-to-VM
            members = rng.sample(vm_facts, 5)
            rule = rng.choice([POSITIVE, NEGATIVE])
            groups.append(
                AffinityGroup(f"soft-{g}", frozenset([*(m.id for m in members), new]), vm_rule=rule, vm_enforcing=False)
            )
        else:  # VM-to-host, soft or enforcing
            members = rng.sample(vm_facts, 3)
            groups.append(
                AffinityGroup(
                    f"hosts-{g}",
                    frozenset([*(m.id for m in members), new]),
                    host_ids=frozenset(rng.sample(hosts_ids, 200)),
                    host_rule=rng.choice([POSITIVE, NEGATIVE]),
                    host_enforcing=rng.random() < 0.5,
                )
            )
    return host_facts, vm_facts, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=20000)
    parser.add_argument("--placements", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    hosts, vms, groups = generate(args.hosts, args.vms, args.seed, args.placements)
    print(f"cluster: {len(hosts)} hosts, {len(vms)} VMs, {len(groups)} affinity groups (seed {args.seed})")
    now = datetime(2025, 1, 1, tzinfo=UTC)
    for policy in (EVENLY_DISTRIBUTED, POWER_SAVING, VM_EVENLY_DISTRIBUTED):
        cluster = ClusterFacts(
            hosts=hosts,
            vms=vms,
            affinity_groups=groups,
            policy=policy,
            overcommit_percent=150,
            ha_reservation=True,
            properties={"HighVmCount": 24, "MigrationThreshold": 4, "MaxFreeMemoryForOverUtilized": 16384},
        )
        started = time.perf_counter()
        snap = Snapshot(cluster)
        build = time.perf_counter() - started

        rng = random.Random(args.seed)
        timings, placed = [], 0
        for i in range(args.placements):
            request = VmRequest(
                id=f"new{i:04d}",
                name=f"new-{i:04d}",
                vcpus=rng.choice([1, 2, 4]),
                guaranteed_memory_mib=rng.choice([2048, 4096]),
                highly_available=rng.random() < 0.3,
                networks=frozenset({"prod"}),
                preferred_host_ids=frozenset({hosts[rng.randrange(len(hosts))].id}) if i % 5 == 0 else frozenset(),
            )
            started = time.perf_counter()
            placement = schedule(snap, request)
            timings.append(time.perf_counter() - started)
            placed += placement.host_id is not None

        started = time.perf_counter()
        one = balance(snap, now=now, limit=1)
        one_pass = time.perf_counter() - started
        started = time.perf_counter()
        ten = balance(snap, now=now, limit=10)
        ten_pass = time.perf_counter() - started
        print(
            f"{policy:>22}: snapshot {build * 1000:6.1f} ms | placement p50 {percentile(timings, 50) * 1000:5.2f} ms"
            f" p95 {percentile(timings, 95) * 1000:5.2f} ms ({placed}/{args.placements} placed)"
            f" | balancing pass {one_pass * 1000:6.1f} ms ({len(one.migrations)} move),"
            f" {ten_pass * 1000:6.1f} ms for up to 10 ({len(ten.migrations)} moves)"
        )
        for m in one.migrations:
            print(f"{'':>24}{m.vm_name}: {m.source_host_name} -> {m.target_host_name}: {m.reason}")


if __name__ == "__main__":
    main()
