"""Live migration and maintenance through the engine on real lab hosts: the engine's
services and tasks (inline), the real agents, libvirt and QEMU, the tiny guest's agent.
Needs root (the lab); runs in CI."""

import threading

import pytest
from django.db import connection

from compute import services as vm_services
from compute.choices import PlacementPolicy, VmStatus
from compute.models import Template, VirtualMachine
from hostagent.lab import core
from inventory import services as host_services
from inventory.choices import HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Cluster, Event, Host, Job
from olvm_site.celery import tasks_inline

from .conftest import active_on, guest_ping, libvirt, wait_for
from .test_engine_lab import BOOT_TIMEOUT, finished, wait_status

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def conns(engine):
    """A libvirt connection to each lab host, by host name."""
    opened = {h.name: libvirt.open(h.libvirt_uri) for h in engine["lab"]}
    try:
        yield opened
    finally:
        for conn in opened.values():
            conn.close()


def run_vm(user, name: str, *, pin_to: Host | None = None) -> VirtualMachine:
    """The tiny template's VM, started (on `pin_to` when given) and up with its guest agent."""
    tiny = Template.objects.get(name="tiny")
    h1 = Host.objects.get(name="h1")
    with tasks_inline():
        vm, job = vm_services.create_vm(
            user=user, cluster=h1.cluster, name=name, template=tiny, kernel_params=f"console=ttyS0 olvm.hostname={name}"
        )
    finished(job)
    if pin_to is not None:
        vm.pinned_hosts.set([pin_to])
    with tasks_inline():
        finished(vm_services.start_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)
    if pin_to is not None:
        vm.pinned_hosts.clear()
    return VirtualMachine.objects.select_related("run_on_host").get(pk=vm.pk)


def domain(conns, vm):
    return conns[VirtualMachine.objects.get(pk=vm.pk).run_on_host.name].lookupByUUIDString(str(vm.pk))


def test_a_vm_migrates_through_the_engine_and_its_guest_keeps_running(engine, conns):
    user = engine["user"]
    vm = run_vm(user, "mig-1")
    source = vm.run_on_host
    target = Host.objects.exclude(pk=source.pk).get(name__in=["h1", "h2"])
    dom = domain(conns, vm)
    wait_for(lambda: guest_ping(dom), BOOT_TIMEOUT, "the guest agent of mig-1", interval=0.3)

    # Refused by a filter, with the explanation: a pinned VM does not move, not even for
    # maintenance, which ends failed with the reason and leaves its host up.
    VirtualMachine.objects.filter(pk=vm.pk).update(placement_policy=PlacementPolicy.PINNED)
    with pytest.raises(ConflictError) as refused:
        vm_services.migrate_vm(VirtualMachine.objects.get(pk=vm.pk), user=user)
    assert refused.value.details["rejected"] == [
        {"host_id": str(h.pk), "host": h.name, "filter": "migration", "reason": "the VM is not migratable"}
        for h in Host.objects.filter(cluster=source.cluster).order_by("name")
    ]
    with tasks_inline():
        job = host_services.deactivate_host(source, user=user)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "VM mig-1: Cannot migrate VM mig-1" in job.error and "the VM is not migratable" in job.error
    assert Host.objects.get(pk=source.pk).status == HostStatus.UP
    VirtualMachine.objects.filter(pk=vm.pk).update(placement_policy=PlacementPolicy.MIGRATABLE)

    # The real thing: the guest's uptime keeps growing across the move (no reboot).
    before = core.guest_uptime(dom)
    with tasks_inline():
        job = vm_services.migrate_vm(VirtualMachine.objects.get(pk=vm.pk), user=user)
    finished(job)
    moved = VirtualMachine.objects.get(pk=vm.pk)
    assert (moved.status, moved.run_on_host_id, moved.migrating_to_host_id) == (VmStatus.UP, target.pk, None)
    assert not active_on(conns[source.name], str(vm.pk))
    with pytest.raises(libvirt.libvirtError):
        conns[source.name].lookupByUUIDString(str(vm.pk))  # not even defined there any more
    after_dom = conns[target.name].lookupByUUIDString(str(vm.pk))
    assert guest_ping(after_dom)
    assert core.guest_uptime(after_dom) > before
    done = Event.objects.get(code="VM_MIGRATION_DONE")
    assert done.message.startswith(f"Migration of VM mig-1 from host {source.name} to host {target.name} completed")
    assert "downtime" in done.message

    # Cancel: a migration slowed to 1 MiB/s is cancelled in flight; the VM stays put.
    Cluster.objects.filter(pk=source.cluster_id).update(migration_bandwidth_mibps=1)
    job = vm_services.migrate_vm(VirtualMachine.objects.get(pk=vm.pk), user=user)
    from compute.tasks import migrate_vm_task

    def run():
        try:
            migrate_vm_task(str(job.pk), str(vm.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for(lambda: vm_status_is(vm, VmStatus.MIGRATING), 30, "the migration to start")
        wait_for(lambda: Job.objects.get(pk=job.pk).progress > 5 or not worker.is_alive(), 30, "migration progress")
        vm_services.cancel_migration(VirtualMachine.objects.get(pk=vm.pk), user=user)
    finally:
        worker.join(120)
    assert Job.objects.get(pk=job.pk).status == JobStatus.ABORTED
    stayed = VirtualMachine.objects.get(pk=vm.pk)
    assert (stayed.status, stayed.run_on_host_id, stayed.migrating_to_host_id) == (VmStatus.UP, target.pk, None)
    assert active_on(conns[target.name], str(vm.pk)) and not active_on(conns[source.name], str(vm.pk))
    assert guest_ping(conns[target.name].lookupByUUIDString(str(vm.pk)))


def vm_status_is(vm, status) -> bool:
    return VirtualMachine.objects.filter(pk=vm.pk, status=status).exists()


def test_maintenance_evacuates_a_host_running_two_vms(engine, conns):
    user = engine["user"]
    h1, h2 = Host.objects.get(name="h1"), Host.objects.get(name="h2")
    vms = [run_vm(user, f"evac-{i}", pin_to=h1) for i in range(2)]
    assert {vm.run_on_host_id for vm in vms} == {h1.pk}
    with tasks_inline():
        job = host_services.deactivate_host(h1, user=user)
    finished(job)
    assert Host.objects.get(pk=h1.pk).status == HostStatus.MAINTENANCE
    for vm in vms:
        moved = VirtualMachine.objects.get(pk=vm.pk)
        assert (moved.status, moved.run_on_host_id) == (VmStatus.UP, h2.pk)
        assert active_on(conns["h2"], str(vm.pk)) and not active_on(conns["h1"], str(vm.pk))
    assert Event.objects.filter(code="VM_MIGRATION_DONE").count() == 2
    with tasks_inline():
        finished(host_services.activate_host(Host.objects.get(pk=h1.pk), user=user))
    assert Host.objects.get(pk=h1.pk).status == HostStatus.UP
