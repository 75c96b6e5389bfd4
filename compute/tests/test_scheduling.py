"""The scheduler's filters, weights, policies and balancers, one behaviour per test (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from compute.scheduling import (
    CLUSTER_MAINTENANCE,
    EVENLY_DISTRIBUTED,
    NEGATIVE,
    NONE,
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
    place_vm,
    schedule,
)
from inventory.choices import SchedulingPolicy

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def host(name, *, status="up", memory=8192, threads=8, cpu=(), **kwargs):
    return HostFacts(
        id=name, name=name, status=status, memory_mib=memory, cpu_threads=threads, cpu_samples=tuple(cpu), **kwargs
    )


def vm(name, on, *, memory=1024, **kwargs):
    return VmFacts(id=name, name=name, host_id=on, guaranteed_memory_mib=memory, **kwargs)


def request(name="new", *, vcpus=1, memory=1024, **kwargs):
    return VmRequest(id=name, name=name, vcpus=vcpus, guaranteed_memory_mib=memory, **kwargs)


def snapshot(hosts, vms=(), groups=(), *, policy=EVENLY_DISTRIBUTED, **kwargs):
    return Snapshot(ClusterFacts(hosts=hosts, vms=vms, affinity_groups=groups, policy=policy, **kwargs))


def rejected(placement):
    return {r.host_name: (r.filter, r.reason) for r in placement.rejections}


# Policies ---------------------------------------------------------------------------------


def test_every_cluster_scheduling_policy_choice_has_a_policy():
    assert set(POLICIES) == set(SchedulingPolicy.values)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="Unknown scheduling policy 'random'"):
        snapshot([host("a")], policy="random")


@pytest.mark.parametrize(
    ("policy", "balancer", "weights"),
    [
        (NONE, NONE, {"cpu_even", "memory_even"}),
        (EVENLY_DISTRIBUTED, EVENLY_DISTRIBUTED, {"cpu_even", "memory_even"}),
        (POWER_SAVING, POWER_SAVING, {"power_saving"}),
        (VM_EVENLY_DISTRIBUTED, VM_EVENLY_DISTRIBUTED, {"vm_count_even", "memory_even"}),
        (CLUSTER_MAINTENANCE, NONE, {"cpu_even", "memory_even"}),
    ],
)
def test_each_policy_has_its_weights_and_balancer_and_the_soft_rules(policy, balancer, weights):
    chosen = POLICIES[policy]
    assert chosen.balancer == balancer
    assert {name for name, _ in chosen.weights} == weights | {"ha", "vm_affinity", "host_affinity", "preferred_hosts"}
    assert {"status", "memory", "cpu", "vm_affinity", "host_affinity", "migration"} <= set(chosen.filters)
    assert ("cpu_overload" in chosen.filters) == (policy in (EVENLY_DISTRIBUTED, POWER_SAVING))
    assert ("cluster_in_maintenance" in chosen.filters) == (policy == CLUSTER_MAINTENANCE)


# Filters ----------------------------------------------------------------------------------


def test_only_up_hosts_pass_the_status_filter():
    placement = schedule(snapshot([host("a", status="maintenance"), host("b")]), request())
    assert placement.host_id == "b"
    assert rejected(placement) == {"a": ("status", "host is maintenance")}


def test_a_pinned_vm_goes_only_to_its_pinned_hosts():
    placement = schedule(snapshot([host("a"), host("b")]), request(pinned_host_ids=frozenset({"b"})))
    assert placement.host_id == "b"
    assert rejected(placement) == {"a": ("pin_to_host", "the VM is pinned to other hosts")}


def test_a_migration_excludes_the_source_host():
    snap = snapshot([host("a"), host("b")], [vm("v", "a")])
    placement = schedule(snap, snap.vms["v"].as_request(migrating=True))
    assert placement.host_id == "b"
    assert rejected(placement) == {"a": ("migration", "it is the VM's source host")}


def test_a_non_migratable_vm_cannot_be_moved_anywhere():
    snap = snapshot([host("a"), host("b")], [vm("v", "a", migratable=False)])
    placement = schedule(snap, snap.vms["v"].as_request(migrating=True))
    assert placement.host_id is None
    assert rejected(placement) == {
        "a": ("migration", "the VM is not migratable"),
        "b": ("migration", "the VM is not migratable"),
    }


def test_a_non_migratable_vm_still_starts():
    assert schedule(snapshot([host("a")]), request(migratable=False)).host_id == "a"


def test_a_cluster_in_maintenance_starts_only_highly_available_vms_but_still_migrates():
    snap = snapshot([host("a"), host("b")], [vm("v", "a")], policy=CLUSTER_MAINTENANCE)
    refused = schedule(snap, request())
    assert refused.host_id is None
    assert rejected(refused)["a"] == (
        "cluster_in_maintenance",
        "the cluster is in maintenance: only highly available VMs may start",
    )
    assert schedule(snap, request(highly_available=True)).host_id == "b"
    assert schedule(snap, snap.vms["v"].as_request(migrating=True)).host_id == "b"


def test_a_vm_needs_no_more_vcpus_than_the_host_has_threads():
    placement = schedule(snapshot([host("a", threads=4), host("b", threads=8)]), request(vcpus=6))
    assert placement.host_id == "b"
    assert rejected(placement) == {"a": ("cpu", "6 vCPUs > 4 host threads")}


def test_a_host_over_high_utilization_for_the_whole_duration_is_overloaded():
    hosts = [host("hot", cpu=[50, 91, 95]), host("spike", cpu=[95, 70]), host("b", cpu=[60, 60])]
    placement = schedule(snapshot(hosts, properties={"CpuOverCommitDurationMinutes": 2}), request())
    assert rejected(placement) == {"hot": ("cpu_overload", "CPU over 80% for the last 2 minutes (at least 91%)")}


def test_too_few_samples_never_overload_and_policy_none_does_not_check_overload():
    assert schedule(snapshot([host("a", cpu=[99])]), request()).host_id == "a"
    assert schedule(snapshot([host("a", cpu=[99, 99])], policy=NONE), request()).host_id == "a"


def test_memory_counts_the_guaranteed_memory_of_running_vms_and_the_overcommit():
    hosts = [host("a", memory=4096)]
    running = [vm("v", "a", memory=3072), vm("down", None, memory=4096)]
    placement = schedule(snapshot(hosts, running), request(memory=2048))
    assert rejected(placement) == {"a": ("memory", "needs 2048 MiB guaranteed, 1024 MiB available")}
    assert schedule(snapshot(hosts, running, overcommit_percent=150), request(memory=2048)).host_id == "a"


def test_memory_counts_committed_memory_given_on_the_host():
    placement = schedule(snapshot([host("a", memory=4096, committed_memory_mib=4000)]), request(memory=512))
    assert rejected(placement) == {"a": ("memory", "needs 512 MiB guaranteed, 96 MiB available")}


def test_a_host_must_have_every_network_the_vm_needs():
    hosts = [host("a", networks=frozenset({"ovirtmgmt"})), host("b", networks=frozenset({"ovirtmgmt", "prod"}))]
    placement = schedule(snapshot(hosts), request(networks=frozenset({"prod", "dmz"})))
    assert placement.host_id is None
    assert rejected(placement) == {
        "a": ("network", "missing networks dmz, prod"),
        "b": ("network", "missing networks dmz"),
    }


def test_ha_reservation_keeps_room_to_restart_a_hosts_ha_vms_elsewhere():
    hosts = [host("a", memory=8192), host("b", memory=4096)]
    vms = [vm("ha1", "a", memory=2048, highly_available=True)]
    snap = snapshot(hosts, vms, ha_reservation=True)
    # b has 4096 free: a's 2048 of HA VMs fit there; 6144 would not.
    refused = schedule(snap, request(memory=4096, highly_available=True, pinned_host_ids=frozenset({"a"})))
    assert rejected(refused)["a"] == (
        "ha_reservation",
        "its HA VMs (6144 MiB) could not be restarted on the other hosts",
    )
    # Filling b with 3072 would leave 1024 there, too little for a's 2048.
    refused = schedule(snap, request(memory=3072, pinned_host_ids=frozenset({"b"})))
    assert rejected(refused)["b"] == ("ha_reservation", "the HA VMs of host a would no longer fit on the other hosts")
    assert schedule(snap, request(memory=2048, pinned_host_ids=frozenset({"b"}))).host_id == "b"
    assert schedule(snapshot(hosts, vms), request(memory=3072, pinned_host_ids=frozenset({"b"}))).host_id == "b"


def test_enforcing_positive_vm_affinity_follows_the_group():
    hosts = [host("a"), host("b"), host("c")]
    groups = [AffinityGroup("web", frozenset({"w1", "new"}), vm_rule=POSITIVE)]
    placement = schedule(snapshot(hosts, [vm("w1", "b")], groups), request())
    assert placement.host_id == "b"
    assert rejected(placement) == {
        "a": ("vm_affinity", "positive group web runs on b"),
        "c": ("vm_affinity", "positive group web runs on b"),
    }


def test_an_enforcing_positive_group_already_split_sends_the_vm_where_most_of_it_runs():
    groups = [AffinityGroup("web", frozenset({"w1", "w2", "w3", "new"}), vm_rule=POSITIVE)]
    vms = [vm("w1", "a"), vm("w2", "b"), vm("w3", "b")]
    placement = schedule(snapshot([host("a"), host("b")], vms, groups), request())
    assert placement.host_id == "b"
    assert rejected(placement) == {"a": ("vm_affinity", "positive group web runs on b")}


def test_enforcing_negative_vm_affinity_keeps_the_group_apart():
    groups = [AffinityGroup("db", frozenset({"d1", "d2", "new"}), vm_rule=NEGATIVE)]
    snap = snapshot([host("a"), host("b"), host("c")], [vm("d1", "a"), vm("d2", "b")], groups)
    placement = schedule(snap, request())
    assert placement.host_id == "c"
    assert rejected(placement) == {
        "a": ("vm_affinity", "negative group db has a VM there"),
        "b": ("vm_affinity", "negative group db has a VM there"),
    }


def test_enforcing_vm_to_host_affinity_positive_and_negative():
    hosts = [host("a"), host("b"), host("c")]
    groups = [
        AffinityGroup(
            "lic", frozenset({"new"}), host_ids=frozenset({"a", "b"}), host_rule=POSITIVE, host_enforcing=True
        ),
        AffinityGroup("old", frozenset({"new"}), host_ids=frozenset({"a"}), host_rule=NEGATIVE, host_enforcing=True),
    ]
    placement = schedule(snapshot(hosts, groups=groups), request())
    assert placement.host_id == "b"
    assert rejected(placement) == {
        "a": ("host_affinity", "negative group old includes this host"),
        "c": ("host_affinity", "positive group lic excludes this host"),
    }


def test_the_first_failing_filter_is_the_one_reported():
    placement = schedule(snapshot([host("a", status="down", threads=1)]), request(vcpus=4, memory=10**6))
    assert rejected(placement) == {"a": ("status", "host is down")}


# Weights ----------------------------------------------------------------------------------


def test_evenly_distributed_prefers_the_least_cpu_then_the_most_free_memory():
    hosts = [host("busy", cpu=[60, 60]), host("idle", cpu=[10, 10], memory=4096)]
    placement = schedule(snapshot(hosts), request())
    # cpu_even: busy 1, idle 0; memory_even: busy 0 (8192 free), idle 1 -> a tie broken by name
    assert [(s.host_name, s.total, s.parts) for s in placement.scores] == [
        ("busy", 1.0, {"cpu_even": 1.0, "memory_even": 0.0}),
        ("idle", 1.0, {"cpu_even": 0.0, "memory_even": 1.0}),
    ]
    assert placement.host_id == "busy"
    hosts = [host("busy", cpu=[60, 60]), host("idle", cpu=[10, 10])]
    assert schedule(snapshot(hosts), request()).host_id == "idle"


def test_memory_even_prefers_the_most_free_memory():
    hosts = [host("a", memory=4096), host("b", memory=8192), host("c", memory=8192, committed_memory_mib=6000)]
    placement = schedule(snapshot(hosts), request())
    assert placement.host_id == "b"
    assert placement.scores[0].parts == {"memory_even": 0.0}


def test_power_saving_prefers_the_busiest_host_that_fits():
    hosts = [host("idle", cpu=[5, 5]), host("busy", cpu=[70, 70]), host("hot", cpu=[95, 95])]
    placement = schedule(snapshot(hosts, policy=POWER_SAVING), request())
    assert placement.host_id == "busy"
    assert rejected(placement) == {"hot": ("cpu_overload", "CPU over 80% for the last 2 minutes (at least 95%)")}


def test_vm_evenly_distributed_prefers_fewer_vms_counting_the_spm_grace():
    hosts = [host("spm", spm=True), host("b")]
    vms = [vm("v1", "b"), vm("v2", "b")]
    placement = schedule(snapshot(hosts, vms, policy=VM_EVENLY_DISTRIBUTED), request())
    assert placement.host_id == "b"  # spm counts 0 + SpmVmGrace 5 > 2
    placement = schedule(snapshot(hosts, vms, policy=VM_EVENLY_DISTRIBUTED, properties={"SpmVmGrace": 0}), request())
    assert placement.host_id == "spm"


def test_ha_weight_spreads_highly_available_vms():
    hosts = [host("a"), host("b")]
    vms = [vm("ha1", "a", highly_available=True), vm("plain", "b")]
    snap = snapshot(hosts, vms, policy=NONE)
    ha = schedule(snap, request(highly_available=True))
    assert [(s.host_name, s.parts) for s in ha.scores] == [("b", {"ha": 0.0}), ("a", {"ha": 1.0})]
    assert schedule(snap, request()).host_id == "a"  # all equal: the name decides


def test_soft_vm_affinity_pulls_and_pushes():
    hosts = [host("a"), host("b")]
    vms = [vm("w1", "b"), vm("filler", "b")]
    pull = [AffinityGroup("web", frozenset({"w1", "new"}), vm_rule=POSITIVE, vm_enforcing=False)]
    assert schedule(snapshot(hosts, vms, pull), request()).host_id == "b"
    push = [AffinityGroup("web", frozenset({"w1", "new"}), vm_rule=NEGATIVE, vm_enforcing=False)]
    placement = schedule(snapshot(hosts, vms, push), request())
    assert placement.host_id == "a"
    assert placement.rejections == []


def test_soft_vm_to_host_affinity_prefers_without_excluding():
    hosts = [host("a"), host("b", memory=4096)]
    groups = [AffinityGroup("near", frozenset({"new"}), host_ids=frozenset({"b"}), host_rule=POSITIVE)]
    placement = schedule(snapshot(hosts, groups=groups), request())
    assert placement.host_id == "b"
    assert placement.scores[1].parts == {"memory_even": 0.0, "host_affinity": 10.0}
    groups = [AffinityGroup("far", frozenset({"new"}), host_ids=frozenset({"a"}), host_rule=NEGATIVE)]
    assert schedule(snapshot(hosts, groups=groups), request()).host_id == "b"


def test_preferred_hosts_outweigh_the_distribution():
    hosts = [host("a"), host("b", cpu=[70, 70], memory=2048)]
    assert schedule(snapshot(hosts), request(preferred_host_ids=frozenset({"b"}))).host_id == "b"


def test_equal_scores_go_to_the_host_name_then_the_id():
    hosts = [HostFacts("2", "same", "up", 8192, 8), HostFacts("1", "same", "up", 8192, 8), host("zeta")]
    assert schedule(snapshot(hosts), request()).host_id == "1"


# Explanations -----------------------------------------------------------------------------


def test_a_refusal_lists_every_host_with_its_filter():
    hosts = [host("off", status="maintenance"), host("small", memory=512)]
    placement = place_vm(request(memory=4096), hosts, overcommit_percent=100)
    assert placement.host_id is None
    assert placement.explain() == (
        "off: filtered by status: host is maintenance; "
        "small: filtered by memory: needs 4096 MiB guaranteed, 512 MiB available"
    )
    assert placement.as_dict()["rejected"] == [
        {"host_id": "off", "host": "off", "filter": "status", "reason": "host is maintenance"},
        {
            "host_id": "small",
            "host": "small",
            "filter": "memory",
            "reason": "needs 4096 MiB guaranteed, 512 MiB available",
        },
    ]


def test_a_choice_explains_its_score_and_an_empty_cluster_says_so():
    placement = place_vm(request(), [host("a"), host("b", memory=4096)], overcommit_percent=100)
    assert placement.explain() == "a scored 0.00 under policy evenly_distributed (all hosts scored equal)."
    assert place_vm(request(), [], overcommit_percent=100).explain() == "The cluster has no hosts."


def test_place_vm_keeps_the_legacy_call():
    hosts = [HostFacts("1", "a", "up", 4096, 4, committed_memory_mib=1024), HostFacts("2", "b", "up", 4096, 4)]
    placement = place_vm(VmRequest(vcpus=2, guaranteed_memory_mib=1024), hosts, overcommit_percent=100)
    assert (placement.host_id, placement.rejected) == ("2", {})


# Balancers --------------------------------------------------------------------------------


def balanced(hosts, vms, *, policy=EVENLY_DISTRIBUTED, groups=(), limit=1, **properties):
    return balance(snapshot(hosts, vms, groups, policy=policy, properties=properties), now=NOW, limit=limit)


def moves(result):
    return [(m.vm_id, m.source_host_id, m.target_host_id) for m in result.migrations]


def test_evenly_distributed_moves_the_biggest_cpu_user_off_an_overloaded_host():
    hosts = [host("hot", cpu=[90, 92]), host("cool", cpu=[20, 20]), host("warm", cpu=[60, 60])]
    vms = [vm("small", "hot", vcpus=1, cpu_percent=40), vm("big", "hot", vcpus=4, cpu_percent=50)]
    result = balanced(hosts, vms)
    assert moves(result) == [("big", "hot", "cool")]
    assert result.migrations[0].reason == (
        "hot CPU over HighUtilization 80% for 2 minutes (now 91%); the VM takes 25% of it"
    )


def test_evenly_distributed_never_overloads_the_target():
    hosts = [host("hot", cpu=[90, 92]), host("warm", cpu=[70, 70])]
    vms = [vm("big", "hot", vcpus=4, cpu_percent=50)]  # 25% more would put warm at 95%
    assert moves(balanced(hosts, vms)) == []
    assert moves(balanced(hosts, vms, HighUtilization=96)) == []  # hot is no longer over
    hotter = [host("hot", cpu=[97, 97]), hosts[1]]
    assert moves(balanced(hotter, vms, HighUtilization=95, BalanceMarginPercent=2)) == [("big", "hot", "warm")]


def test_a_move_must_lower_the_cpu_spread_by_the_margin():
    hosts = [host("hot", cpu=[90, 92]), host("cool", cpu=[10, 10])]
    tiny = [vm("tiny", "hot", vcpus=1, cpu_percent=24)]  # 3% of the host, under the 5-point margin
    assert moves(balanced(hosts, tiny)) == []
    assert moves(balanced(hosts, tiny, BalanceMarginPercent=2)) == [("tiny", "hot", "cool")]


def test_a_recently_migrated_vm_stays_put_for_the_hold_off():
    hosts = [host("hot", cpu=[90, 92]), host("cool", cpu=[20, 20])]
    recent = [vm("big", "hot", vcpus=4, cpu_percent=50, last_migrated_at=NOW - timedelta(minutes=10))]
    assert moves(balanced(hosts, recent)) == []
    assert moves(balanced(hosts, recent, MigrationHoldOffMinutes=5)) == [("big", "hot", "cool")]


def test_the_balancer_skips_non_migratable_vms_and_honours_enforcing_affinity():
    hosts = [host("hot", cpu=[90, 92]), host("cool", cpu=[20, 20])]
    vms = [
        vm("pinned", "hot", vcpus=4, cpu_percent=50, migratable=False),
        vm("web1", "hot", vcpus=4, cpu_percent=50),
        vm("web2", "hot", vcpus=1, cpu_percent=10),
    ]
    groups = [AffinityGroup("web", frozenset({"web1", "web2"}), vm_rule=POSITIVE)]
    result = balanced(hosts, vms, groups=groups)
    assert moves(result) == []
    assert result.note == "No host needs relief, or no move passes the filters and the margins."


def test_evenly_distributed_relieves_a_host_short_of_memory():
    hosts = [host("full", memory=8192), host("empty", memory=8192)]
    vms = [vm("a", "full", memory=4096), vm("b", "full", memory=3072)]
    assert moves(balanced(hosts, vms, MaxFreeMemoryForOverUtilized=2048)) == [("a", "full", "empty")]
    assert moves(balanced(hosts, vms)) == []


def test_limit_caps_the_proposals_and_they_are_projected_one_after_another():
    hosts = [host("hot", cpu=[95, 95], threads=10), host("cool", cpu=[10, 10], threads=10)]
    vms = [vm(f"v{i}", "hot", vcpus=1, cpu_percent=100) for i in range(5)]  # 10% each
    assert moves(balanced(hosts, vms, limit=5)) == [("v0", "hot", "cool"), ("v1", "hot", "cool")]


def test_power_saving_empties_an_under_utilized_host_onto_a_normal_one():
    hosts = [host("low", cpu=[5, 5]), host("mid", cpu=[50, 50]), host("empty", cpu=[1, 1])]
    vms = [vm("a", "low", vcpus=1, cpu_percent=20), vm("b", "low", vcpus=1, cpu_percent=10)]
    result = balanced(hosts, vms, policy=POWER_SAVING, limit=5)
    assert moves(result) == [("a", "low", "mid"), ("b", "low", "mid")]
    assert result.migrations[0].reason.startswith("power saving: low is under-utilised")


def test_power_saving_with_every_host_idle_consolidates_onto_the_busiest():
    hosts = [host("a", cpu=[5, 5]), host("b", cpu=[10, 10]), host("c", cpu=[2, 2])]
    vms = [vm("va", "a"), vm("vc", "c")]
    assert moves(balanced(hosts, vms, policy=POWER_SAVING, limit=5)) == [("vc", "c", "b"), ("va", "a", "b")]


def test_vm_evenly_distributed_moves_from_a_crowded_host_past_the_threshold():
    hosts = [host("crowded", memory=10**6), host("light", memory=10**6)]
    vms = [vm(f"v{i:02d}", "crowded") for i in range(12)] + [vm("w", "light")]
    props = {"HighVmCount": 10, "MigrationThreshold": 5}
    result = balanced(hosts, vms, policy=VM_EVENLY_DISTRIBUTED, limit=5, **props)
    assert moves(result) == [("v00", "crowded", "light"), ("v01", "crowded", "light")]
    assert result.migrations[0].reason == "crowded runs 12 VMs, over HighVmCount 10"
    assert moves(balanced(hosts, vms, policy=VM_EVENLY_DISTRIBUTED, **{**props, "MigrationThreshold": 11})) == []


def test_the_spm_counts_its_grace_in_vm_evenly_distributed():
    hosts = [host("spm", memory=10**6, spm=True), host("light", memory=10**6)]
    vms = [vm(f"v{i}", "spm") for i in range(8)]
    props = {"HighVmCount": 10, "MigrationThreshold": 2}
    assert moves(balanced(hosts, vms, policy=VM_EVENLY_DISTRIBUTED, **props)) == [("v0", "spm", "light")]
    assert moves(balanced(hosts, vms, policy=VM_EVENLY_DISTRIBUTED, **props, SpmVmGrace=0)) == []


@pytest.mark.parametrize("policy", [NONE, CLUSTER_MAINTENANCE])
def test_policies_without_a_balancer_propose_nothing(policy):
    result = balanced([host("hot", cpu=[99, 99]), host("cool")], [vm("v", "hot", cpu_percent=100)], policy=policy)
    assert (moves(result), result.note) == ([], f"Policy {policy} does not balance.")


def test_balancing_leaves_the_snapshot_alone_and_apply_migrations_projects_the_move():
    hosts = [host("hot", cpu=[90, 92]), host("cool", cpu=[20, 20])]
    cluster = ClusterFacts(hosts=hosts, vms=[vm("big", "hot", vcpus=4, cpu_percent=50)])
    snap = Snapshot(cluster)
    result = balance(snap, now=NOW)
    assert (snap.vm_host["big"], snap.host_by_id["hot"].vm_count) == ("hot", 1)
    after = apply_migrations(cluster, result.migrations, now=NOW)
    assert after.vms[0].host_id == "cool" and after.vms[0].last_migrated_at == NOW
    assert [h.cpu_samples for h in after.hosts] == [(65.0, 67.0), (45.0, 45.0)]
    assert moves(balance(Snapshot(after), now=NOW)) == []


# Affinity enforcement ------------------------------------------------------------------------


def test_the_enforcer_moves_a_stray_of_a_positive_group_to_where_most_of_it_runs():
    groups = [AffinityGroup("web", frozenset({"w1", "w2", "w3"}), vm_rule=POSITIVE)]
    snap = snapshot([host("a"), host("b")], [vm("w1", "a"), vm("w2", "b"), vm("w3", "b")], groups)
    assert [(v.id, why) for v, why in affinity_violations(snap)] == [
        ("w1", "enforcing positive affinity group web: its other VMs run on b")
    ]
    result = enforce_affinity(snap, now=NOW)
    assert [(m.vm_id, m.source_host_id, m.target_host_id) for m in result.migrations] == [("w1", "a", "b")]
    assert snap.vm_host["w1"] == "a"  # the snapshot itself is not changed


def test_the_enforcer_splits_a_negative_group_and_leaves_soft_groups_alone():
    groups = [
        AffinityGroup("db", frozenset({"d1", "d2"}), vm_rule=NEGATIVE),
        AffinityGroup("soft", frozenset({"s1", "s2"}), vm_rule=NEGATIVE, vm_enforcing=False),
    ]
    vms = [vm("d1", "a"), vm("d2", "a"), vm("s1", "a"), vm("s2", "a")]
    result = enforce_affinity(snapshot([host("a"), host("b")], vms, groups), now=NOW, limit=5)
    assert [(m.vm_id, m.target_host_id) for m in result.migrations] == [("d2", "b")]
    assert "enforcing negative affinity group db" in result.migrations[0].reason


def test_the_enforcer_brings_vms_inside_their_host_group():
    groups = [
        AffinityGroup("gpu", frozenset({"g1"}), host_ids=frozenset({"b"}), host_rule=POSITIVE, host_enforcing=True)
    ]
    result = enforce_affinity(snapshot([host("a"), host("b")], [vm("g1", "a")], groups), now=NOW)
    assert [(m.vm_id, m.target_host_id) for m in result.migrations] == [("g1", "b")]
    assert result.migrations[0].reason == "enforcing host affinity group gpu: it runs outside the group's hosts (a)"


def test_the_enforcer_does_not_move_unmigratable_vms_and_says_so():
    groups = [AffinityGroup("db", frozenset({"d1", "d2"}), vm_rule=NEGATIVE)]
    vms = [vm("d1", "a", migratable=False), vm("d2", "a", migratable=False)]
    result = enforce_affinity(snapshot([host("a"), host("b")], vms, groups), now=NOW)
    assert result.migrations == []
    assert result.note == "No VM breaks an enforcing affinity group, or none of them can move."


def test_the_enforcer_fixes_higher_priority_groups_first():
    groups = [
        AffinityGroup("alpha", frozenset({"a1", "a2"}), vm_rule=NEGATIVE, priority=1),
        AffinityGroup("zeta", frozenset({"z1", "z2"}), vm_rule=NEGATIVE, priority=5),
    ]
    vms = [vm("a1", "a"), vm("a2", "a"), vm("z1", "a"), vm("z2", "a")]
    result = enforce_affinity(snapshot([host("a"), host("b")], vms, groups), now=NOW, limit=1)
    assert [m.vm_id for m in result.migrations] == ["z2"]
