"""Live migration and host maintenance through the engine, on in-process simulated hosts
(SimulatedAgentClient: a migration answers running at 50 %, then completed with 42 ms of
downtime; "unreachable" in the destination URI fails it). The lab tests do it for real."""

import pytest
from django.core.cache import cache

from compute import services
from compute.choices import PlacementPolicy, VmStatus
from compute.reconcile import reconcile_host
from compute.tasks import _slot, migrate_vm_task
from hostagent.client import SimulatedAgentClient
from inventory import services as host_services
from inventory.choices import EventSeverity, HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event, Host, Job
from inventory.tasks import maintenance_host_task
from olvm_site.celery import tasks_inline
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.OLVM_MIGRATION_POLL = 0
    SimulatedAgentClient.reset_migrations()
    cache.clear()
    yield
    SimulatedAgentClient.reset_migrations()


@pytest.fixture
def sent(monkeypatch):
    calls = []
    from olvm_site.celery import app

    monkeypatch.setattr(app, "send_task", lambda name, args=(), **kw: calls.append((name, list(args))))
    return calls


@pytest.fixture
def pair():
    cluster = make_cluster()
    return cluster, make_host(cluster=cluster, name="src"), make_host(cluster=cluster, name="dst")


def up_vm(cluster, host, **kw):
    kw.setdefault("guaranteed_memory_mib", 1024)
    return make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=host, **kw)


def reload(obj):
    return type(obj).objects.get(pk=obj.pk)


def test_a_migration_moves_the_vm_and_reports_the_downtime(admin_user, pair, sent, django_capture_on_commit_callbacks):
    cluster, src, dst = pair
    vm = up_vm(cluster, src)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.migrate_vm(vm, user=admin_user)
    # Decided at once: the target is reserved, the VM is still up on its source.
    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, src.pk, dst.pk)
    assert job.action_type == "MigrateVm" and job.description == f"Migrating VM {vm.name} from src to dst"
    assert sent == [("compute.tasks.migrate_vm_task", [str(job.pk), str(vm.pk)])]
    start = Event.objects.get(code="VM_MIGRATION_START")
    assert start.message == f"Migration of VM {vm.name} from host src to host dst was initiated by admin."

    migrate_vm_task(str(job.pk), str(vm.pk))

    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, dst.pk, None)
    assert vm.last_migrated_at is not None
    assert reload(job).status == JobStatus.FINISHED
    done = Event.objects.get(code="VM_MIGRATION_DONE")
    assert done.message.startswith(f"Migration of VM {vm.name} from host src to host dst completed in ")
    assert done.message.endswith("(downtime 42 ms).")
    # The agent was asked for a peer-to-peer migration to the target's URI.
    (migration,) = SimulatedAgentClient.migrations.values()
    assert migration["destination"] == f"sim://{dst.address}:{dst.agent_port}"
    assert migration["policy"] == cluster.migration_policy


def test_a_redelivered_migration_task_does_nothing(admin_user, pair, sent, django_capture_on_commit_callbacks):
    cluster, src, _dst = pair
    vm = up_vm(cluster, src)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.migrate_vm(vm, user=admin_user)
    migrate_vm_task(str(job.pk), str(vm.pk))
    before = reload(vm)
    migrate_vm_task(str(job.pk), str(vm.pk))
    assert reload(vm).run_on_host_id == before.run_on_host_id
    assert Event.objects.filter(code="VM_MIGRATION_DONE").count() == 1


def test_a_target_that_fails_a_filter_is_refused_with_the_reason_and_nothing_written(admin_user, pair):
    cluster, src, _dst = pair
    small = make_host(cluster=cluster, name="small", memory_mib=1024)
    vm = up_vm(cluster, src, guaranteed_memory_mib=2048, memory_mib=2048)
    with pytest.raises(ConflictError) as refused:
        services.migrate_vm(vm, user=admin_user, target_host=small)
    error = refused.value
    assert error.code == "no_host"
    assert error.message == (
        f"Cannot migrate VM {vm.name} to host small: small: filtered by memory: needs 2048 MiB guaranteed, "
        "1024 MiB available"
    )
    assert error.details["rejected"] == [
        {
            "host_id": str(small.pk),
            "host": "small",
            "filter": "memory",
            "reason": "needs 2048 MiB guaranteed, 1024 MiB available",
        }
    ]
    assert reload(vm).migrating_to_host_id is None
    assert not Job.objects.filter(action_type="MigrateVm").exists()


def test_the_source_host_is_never_a_target(admin_user, pair):
    cluster, src, _dst = pair
    vm = up_vm(cluster, src)
    with pytest.raises(ConflictError, match="src: filtered by migration: it is the VM's source host"):
        services.migrate_vm(vm, user=admin_user, target_host=src)


def test_pinned_vms_do_not_migrate_and_manual_only_vms_do_only_by_hand(admin_user, pair, sent):
    cluster, src, dst = pair
    pinned = up_vm(cluster, src, placement_policy=PlacementPolicy.PINNED)
    with pytest.raises(ConflictError, match="dst: filtered by migration: the VM is not migratable"):
        services.migrate_vm(pinned, user=admin_user)
    manual = up_vm(cluster, src, placement_policy=PlacementPolicy.USER_MIGRATABLE)
    with pytest.raises(ConflictError, match="not migratable"):
        from django.db import transaction

        with transaction.atomic():
            services.start_migration(manual, user=None, reason="balancing")
    services.migrate_vm(manual, user=admin_user)
    assert reload(manual).migrating_to_host_id == dst.pk


def test_a_vm_that_is_not_up_cannot_migrate(admin_user, pair):
    cluster, src, _dst = pair
    vm = make_vm(cluster=cluster, status=VmStatus.PAUSED, run_on_host=src)
    with pytest.raises(ConflictError, match="its status is 'paused'"):
        services.migrate_vm(vm, user=admin_user)


def test_the_memory_of_a_decided_migration_is_reserved_on_its_target(admin_user):
    cluster = make_cluster()
    src = make_host(cluster=cluster, name="src")
    dst = make_host(cluster=cluster, name="dst", memory_mib=3072)
    first, second = (
        up_vm(cluster, src, memory_mib=2048, guaranteed_memory_mib=2048),
        up_vm(cluster, src, memory_mib=2048, guaranteed_memory_mib=2048),
    )
    services.migrate_vm(first, user=admin_user, target_host=dst)
    with pytest.raises(ConflictError, match="needs 2048 MiB guaranteed, 1024 MiB available"):
        services.migrate_vm(second, user=admin_user, target_host=dst)


def test_a_failed_migration_leaves_the_vm_on_its_source_and_says_why(
    admin_user, pair, sent, django_capture_on_commit_callbacks
):
    cluster, src, dst = pair
    Host.objects.filter(pk=dst.pk).update(address="unreachable.example")
    vm = up_vm(cluster, src)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.migrate_vm(vm, user=admin_user)
    migrate_vm_task(str(job.pk), str(vm.pk))
    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, src.pk, None)
    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert job.error == f"Migration of VM {vm.name} failed: simulated: destination unreachable"
    event = Event.objects.get(code="VM_MIGRATION_FAILED")
    assert event.severity == EventSeverity.ERROR
    assert event.message == (
        f"Migration of VM {vm.name} from host src to host dst failed: simulated: destination unreachable. "
        "The VM keeps running on its source host."
    )


def test_a_cancelled_migration_keeps_the_vm_on_its_source(admin_user, pair, sent, django_capture_on_commit_callbacks):
    cluster, src, _dst = pair
    vm = up_vm(cluster, src)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.migrate_vm(vm, user=admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.cancel_migration(vm, user=admin_user) == job
    migrate_vm_task(str(job.pk), str(vm.pk))
    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, src.pk, None)
    assert reload(job).status == JobStatus.ABORTED
    assert Event.objects.filter(code="VM_MIGRATION_CANCEL", username="admin").exists()
    assert Event.objects.get(code="VM_MIGRATION_ABORTED").message.startswith(
        f"Migration of VM {vm.name} from host src to host dst was cancelled: cancelled."
    )


def test_cancel_without_a_migration_is_a_conflict(admin_user, pair):
    cluster, src, _dst = pair
    with pytest.raises(ConflictError, match="is not migrating"):
        services.cancel_migration(up_vm(cluster, src), user=admin_user)


def test_a_host_runs_at_most_the_clusters_limit_of_migrations(admin_user, settings, sent):
    cluster = make_cluster(migration_max_concurrent=1)
    src, dst = make_host(cluster=cluster, name="src"), make_host(cluster=cluster, name="dst")
    moving, waiting = up_vm(cluster, src), up_vm(cluster, src)
    first = services.migrate_vm(moving, user=admin_user)
    second = services.migrate_vm(waiting, user=admin_user)
    assert _slot(str(moving.pk)) == "taken"
    assert reload(moving).status == VmStatus.MIGRATING
    assert _slot(str(waiting.pk)) == "wait"
    assert _slot(str(moving.pk)) == "taken"  # a redelivery keeps its slot
    settings.OLVM_MIGRATION_SLOT_WAIT = 0
    migrate_vm_task(str(second.pk), str(waiting.pk))
    waiting = reload(waiting)
    assert (waiting.status, waiting.run_on_host_id, waiting.migrating_to_host_id) == (VmStatus.UP, src.pk, None)
    assert reload(second).status == JobStatus.FAILED
    assert "no migration slot freed up within 0 s" in reload(second).error
    migrate_vm_task(str(first.pk), str(moving.pk))
    assert reload(moving).run_on_host_id == dst.pk


def test_a_migration_that_finished_unwatched_is_settled_from_the_targets_report(admin_user, pair):
    cluster, src, dst = pair
    vm = up_vm(cluster, src)
    job = services.migrate_vm(vm, user=admin_user)
    _slot(str(vm.pk))
    # While its task runs, the target's report of the VM is expected, not an alarm.
    reconcile_host(dst, [{"id": str(vm.pk), "status": "up"}])
    assert reload(vm).run_on_host_id == src.pk
    assert not Event.objects.filter(code="VM_RUNNING_ON_TWO_HOSTS").exists()
    # The worker died; the Job was reaped: the target's next report settles the VM there.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    assert reconcile_host(dst, [{"id": str(vm.pk), "status": "up"}]) == 1
    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, dst.pk, None)


# Maintenance ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_maintenance_migrates_every_vm_away_then_switches_the_host(admin_user, pair):
    cluster, src, dst = pair
    vms = [up_vm(cluster, src, name=f"evac-{i}") for i in range(2)]
    with tasks_inline():
        job = host_services.deactivate_host(src, user=admin_user)
    assert reload(job).status == JobStatus.FINISHED, reload(job).error
    assert reload(src).status == HostStatus.MAINTENANCE
    assert [reload(vm).run_on_host_id for vm in vms] == [dst.pk, dst.pk]
    assert Event.objects.filter(code="VM_MIGRATION_START_SYSTEM_INITIATED").count() == 2
    assert "moving to maintenance" in Event.objects.filter(code="VM_MIGRATION_START_SYSTEM_INITIATED").first().message
    assert Event.objects.get(code="VDS_MAINTENANCE").message == (
        "Host src was switched to Maintenance mode after 2 VM(s) migrated away."
    )


@pytest.mark.django_db(transaction=True)
def test_maintenance_fails_with_the_reason_when_a_vm_cannot_move(admin_user, pair, settings):
    cluster, src, _dst = pair
    up_vm(cluster, src, name="free")
    up_vm(cluster, src, name="stuck", placement_policy=PlacementPolicy.PINNED)
    with tasks_inline():
        job = host_services.deactivate_host(src, user=admin_user)
    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert "VM stuck: Cannot migrate VM stuck within cluster" in job.error
    assert "the VM is not migratable" in job.error
    src = reload(src)
    assert src.status == HostStatus.UP  # never left preparing for maintenance
    assert src.status_detail.startswith("Maintenance failed: VM stuck")
    assert Event.objects.get(code="VDS_MAINTENANCE_FAILED").severity == EventSeverity.ERROR


def test_maintenance_gives_up_after_its_time_limit(admin_user, pair, settings, sent):
    """A migration that never ends (its task never ran here) ends the maintenance in time."""
    cluster, src, _dst = pair
    vm = up_vm(cluster, src, name="slow")
    settings.OLVM_MAINTENANCE_TIMEOUT = 0
    job = host_services.deactivate_host(src, user=admin_user)
    maintenance_host_task(str(job.pk), str(src.pk))
    assert reload(job).status == JobStatus.FAILED
    assert "VM(s) slow still run on it after 0 s" in reload(job).error
    assert reload(src).status == HostStatus.UP
    assert reload(vm).migrating_to_host_id is not None  # its own Job still ends it either way


# The periodic balancer and affinity enforcer ----------------------------------------------------


def test_the_enforcer_moves_a_vm_that_breaks_an_enforcing_group_and_says_why(admin_user, pair, sent):
    from compute.models import AffinityGroup

    cluster, src, dst = pair
    a, b = up_vm(cluster, src, name="db-a"), up_vm(cluster, src, name="db-b")
    group = AffinityGroup.objects.create(cluster=cluster, name="db-apart", vm_rule="negative", vm_enforcing=True)
    group.vms.set([a, b])
    (job,) = services.balance_cluster(cluster)
    assert job.description == f"Migrating VM db-b from src to {dst.name}"
    event = Event.objects.get(code="VM_MIGRATION_START_SYSTEM_INITIATED")
    assert event.message == (
        "Migration of VM db-b from host src to host dst was initiated by the system (affinity enforcement: "
        "enforcing negative affinity group db-apart: another of its VMs runs on src)."
    )
    # One migration at a time per cluster: nothing more while it runs.
    assert services.balance_cluster(cluster) == []


def test_the_balancer_evens_out_vm_counts_under_vm_evenly_distributed(admin_user, sent):
    cluster = make_cluster(
        scheduling_policy="vm_evenly_distributed",
        scheduling_properties={"HighVmCount": 2, "MigrationThreshold": 1, "SpmVmGrace": 0},
    )
    busy = make_host(cluster=cluster, name="busy")
    make_host(cluster=cluster, name="idle")
    for i in range(4):
        up_vm(cluster, busy, name=f"guest-{i}")
    (job,) = services.balance_cluster(cluster)
    assert job.description.endswith("from busy to idle")
    assert "load balancing: busy runs 4 VMs, over HighVmCount 2" in (
        Event.objects.get(code="VM_MIGRATION_START_SYSTEM_INITIATED").message
    )


def test_the_balancer_reads_cpu_history_and_relieves_an_overloaded_host(admin_user, sent):
    import datetime as dt

    from django.utils import timezone

    from inventory.models import HostSample, VmSample

    cluster = make_cluster(scheduling_properties={"HighUtilization": 80, "CpuOverCommitDurationMinutes": 2})
    hot, cool = (
        make_host(cluster=cluster, name="hot", cpu_threads=4),
        make_host(cluster=cluster, name="cool", cpu_threads=4),
    )
    vms = [up_vm(cluster, hot, name=f"cruncher-{i}", vcpus=2) for i in range(2)]
    now = timezone.now()
    for minutes in (1.5, 0.5):
        at = now - dt.timedelta(minutes=minutes)
        HostSample.objects.create(host_id=hot.pk, time=at, cpu_pct=95.0)
        HostSample.objects.create(host_id=cool.pk, time=at, cpu_pct=5.0)
        for vm in vms:
            VmSample.objects.create(vm_id=vm.pk, time=at, cpu_pct=90.0)
    (job,) = services.balance_cluster(cluster)
    assert job.description.endswith("from hot to cool")
    message = Event.objects.get(code="VM_MIGRATION_START_SYSTEM_INITIATED").message
    assert "load balancing: hot CPU over HighUtilization 80% for 2 minutes (now 95%)" in message


def test_a_balanced_cluster_is_left_alone(admin_user, pair, sent):
    cluster, src, dst = pair
    up_vm(cluster, src)
    up_vm(cluster, dst)
    assert services.balance_cluster(cluster) == []
    assert not Job.objects.filter(action_type="MigrateVm").exists()


def test_a_stale_definition_on_a_host_the_vm_left_is_removed_once(pair, sent, django_capture_on_commit_callbacks):
    from compute.tasks import undefine_stale_task

    cluster, src, dst = pair
    vm = up_vm(cluster, dst)
    report = [{"id": str(vm.pk), "status": "down"}]
    with django_capture_on_commit_callbacks(execute=True):
        reconcile_host(src, report)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile_host(src, report)  # the next heartbeat: already queued
    assert sent == [("compute.tasks.undefine_stale_task", [str(src.pk), str(vm.pk)])]
    undefine_stale_task(str(src.pk), str(vm.pk))
    assert Event.objects.get(code="VM_STALE_DEFINITION_REMOVED").message == (
        f"The stopped definition of VM {vm.name} left on host src was removed (the VM runs on another host)."
    )
    assert reload(vm).run_on_host_id == dst.pk  # the VM itself is untouched


def test_a_stopped_definition_of_a_vm_that_is_down_is_kept(pair, sent, django_capture_on_commit_callbacks):
    cluster, src, _dst = pair
    vm = make_vm(cluster=cluster)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile_host(src, [{"id": str(vm.pk), "status": "down"}])
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_maintenance_stops_retrying_a_vm_whose_migration_keeps_failing(admin_user, pair):
    cluster, src, dst = pair
    Host.objects.filter(pk=dst.pk).update(address="unreachable.example")
    up_vm(cluster, src, name="flaky")
    with tasks_inline():
        job = host_services.deactivate_host(src, user=admin_user)
    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert (
        "VM flaky: its migration failed 2 times (last: Migration of VM flaky failed: simulated: destination"
        in job.error
    )
    assert Event.objects.filter(code="VM_MIGRATION_FAILED").count() == 2
    assert reload(src).status == HostStatus.UP


def test_maintenance_queues_its_next_round_while_vms_are_on_their_way(admin_user, pair, sent):
    cluster, src, _dst = pair
    vm = up_vm(cluster, src, name="walking")
    job = host_services.deactivate_host(src, user=admin_user)
    maintenance_host_task(str(job.pk), str(src.pk))
    assert reload(job).status == JobStatus.STARTED
    assert reload(vm).migrating_to_host_id is not None
    assert ("inventory.tasks.maintenance_host_task", [str(job.pk), str(src.pk)]) in sent
    # The migration lands; the next round switches the host.
    migration = Job.objects.get(action_type="MigrateVm")
    migrate_vm_task(str(migration.pk), str(vm.pk))
    maintenance_host_task(str(job.pk), str(src.pk))
    assert reload(job).status == JobStatus.FINISHED
    assert reload(src).status == HostStatus.MAINTENANCE


def test_the_memory_stream_takes_the_migration_network_when_the_host_has_an_address_there(pair):
    from compute.tasks import destination_uri
    from networking.services import create_network

    cluster, _src, dst = pair
    Host.objects.filter(pk=dst.pk).update(simulated=False, address="10.213.0.12")
    dst = reload(dst)
    assert destination_uri(dst) == ("qemu+tcp://10.213.0.12/system", None)  # the management address
    create_network(user=None, data_center=cluster.data_center, name="migr", vlan_tag=30, clusters=[cluster])
    from networking.models import LogicalNetwork

    LogicalNetwork.objects.filter(name="migr").update(is_migration=True)
    dst.nics = [{"name": "migr", "addresses": ["10.99.0.12/24", "fe80::1/64"], "bridge": True}]
    dst.save()
    assert destination_uri(dst) == ("qemu+tcp://10.99.0.12/system", "tcp://10.99.0.12")


def test_the_reaper_lets_go_of_what_a_dead_maintenance_or_migration_held(admin_user, pair, sent, settings):
    from datetime import timedelta

    from django.utils import timezone

    from inventory.tasks import reap_stale_jobs_task

    cluster, src, _dst = pair
    vm = up_vm(cluster, src, name="stranded")
    maintenance = host_services.deactivate_host(src, user=admin_user)
    maintenance_host_task(str(maintenance.pk), str(src.pk))  # the migration is decided ...
    assert reload(vm).migrating_to_host_id is not None
    # ... and every worker dies: nothing moves for longer than the reaper waits.
    Job.objects.update(updated_at=timezone.now() - timedelta(seconds=settings.OLVM_JOB_STALE_SECONDS + 1))
    assert reap_stale_jobs_task() == 2
    assert reload(src).status == HostStatus.UP
    assert reload(src).status_detail == "Maintenance abandoned: its job stopped."
    vm = reload(vm)
    assert (vm.status, vm.run_on_host_id, vm.migrating_to_host_id) == (VmStatus.UP, src.pk, None)
    assert Event.objects.filter(code="VDS_MAINTENANCE_FAILED").exists()


def test_a_chosen_target_is_checked_against_the_whole_clusters_affinity(admin_user):
    from compute.models import AffinityGroup

    cluster = make_cluster()
    a, b, c = (make_host(cluster=cluster, name=n) for n in ("a", "b", "c"))
    web1, web2 = up_vm(cluster, a, name="web-1"), up_vm(cluster, b, name="web-2")
    group = AffinityGroup.objects.create(cluster=cluster, name="web", vm_rule="positive", vm_enforcing=True)
    group.vms.set([web1, web2])
    with pytest.raises(ConflictError, match="c: filtered by VM affinity: positive group web runs on a"):
        services.migrate_vm(web2, user=admin_user, target_host=c)
    services.migrate_vm(web2, user=admin_user, target_host=a)
    assert reload(web2).migrating_to_host_id == a.pk
