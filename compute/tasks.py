"""Celery tasks for VMs: lifecycle actions, disks from templates, snapshots, image removal.

Each takes ids (and JSON values), finds its Job and returns at once when the Job already
ended (redelivery), and reaches hosts only through the host agent client.
"""

import logging
import time

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hostagent.client import AgentError
from inventory.audit import JobProgress, record_event, run_job
from inventory.choices import EventSeverity, HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Host
from inventory.servicekit import agent_for
from storage.choices import DiskStatus
from storage.models import Disk
from storage.tasks import disk_device_spec, image_spec, up_host

from .choices import SnapshotStatus, VmStatus
from .models import BLANK_TEMPLATE_ID, Snapshot, Template, VirtualMachine
from .services import set_vm_status
from .statemachine import RUNNING

log = logging.getLogger(__name__)

# The status the host reports after each action, and where the VM goes if it fails.
OUTCOME = {
    "start": (VmStatus.UP, VmStatus.DOWN),
    "shutdown": (VmStatus.DOWN, VmStatus.UP),
    "stop": (VmStatus.DOWN, None),
    "reboot": (VmStatus.UP, VmStatus.UP),
    "suspend": (VmStatus.SUSPENDED, None),
    "resume": (VmStatus.UP, None),
}


def vm_spec(vm: VirtualMachine) -> dict:
    """What a host needs to run the VM: plain JSON, built from the inventory."""
    attachments = vm.disk_attachments.select_related("disk__storage_domain", "disk__backing_disk").filter(active=True)
    nics = vm.nics.select_related("profile__network").filter(plugged=True)
    return {
        "id": str(vm.pk),
        "name": vm.name,
        "description": vm.description,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "guaranteed_memory_mib": vm.guaranteed_memory_mib,
        "os_type": vm.os_type,
        "console_type": vm.console_type,
        # Direct kernel boot: no kernel, no initrd (null); the command line is a string.
        "kernel": vm.kernel_path or None,
        "initrd": vm.initrd_path or None,
        "cmdline": vm.kernel_params,
        "disks": [disk_device_spec(a) for a in attachments],
        "nics": [
            {
                "name": n.name,
                "mac": n.mac,
                "model": n.interface,
                "network": n.profile.network.name if n.profile_id else None,
                "vlan": n.profile.network.vlan_tag if n.profile_id else None,
                "linked": n.linked,
            }
            for n in nics
        ],
    }


def _ensure_networks(agent, spec: dict) -> None:
    """The bridges of the VM's logical networks exist on the host before QEMU needs them."""
    from networking.tasks import host_networks

    networks = host_networks(spec["nics"])
    if networks:
        agent.setup_networks(networks)


def storage_host(data_center_id) -> Host:
    """An up host of the data center to run image operations on."""
    host = up_host(data_center_id)
    if host is None:
        raise AgentError("No host of the data center is up to run the storage operation.")
    return host


@shared_task(name="compute.tasks.vm_action_task", acks_late=True)
def vm_action_task(job_id: str, vm_id: str, action: str) -> None:
    success, on_failure = OUTCOME[action]

    def work(progress: JobProgress) -> None:
        # Step 1 started with the Job: nothing is written before the host is asked.
        vm = VirtualMachine.objects.select_related("run_on_host").get(pk=vm_id)
        host = vm.run_on_host
        try:
            if host is None:
                if action == "stop" and vm.status == VmStatus.SUSPENDED:
                    pass  # discarding the saved state needs no host
                else:
                    raise AgentError(f"VM {vm.name} has no host to {action} it on.")
            else:
                agent = agent_for(host)
                vm_key = str(vm.pk)
                if action == "start":
                    spec = vm_spec(vm)
                    _ensure_networks(agent, spec)
                    result = agent.create_vm(spec)
                elif action == "shutdown":
                    result = agent.shutdown_vm(vm_key)
                elif action == "stop":
                    result = agent.destroy_vm(vm_key)
                elif action == "reboot":
                    result = agent.reboot_vm(vm_key)
                elif action == "suspend":
                    result = agent.suspend_vm(vm_key, state_path=f"{vm_key}.state")
                elif action == "resume" and vm.status == VmStatus.WAIT_FOR_LAUNCH:
                    spec = vm_spec(vm)
                    _ensure_networks(agent, spec)
                    result = agent.restore_vm(vm_key, state_path=f"{vm_key}.state", spec=spec)
                else:
                    result = agent.resume_vm(vm_key)
                if result.get("status") not in (None, success):
                    raise AgentError(f"Host {host.name} reported VM {vm.name} as {result.get('status')}.")
        except AgentError as exc:
            with transaction.atomic():
                vm = VirtualMachine.objects.select_for_update().get(pk=vm_id)
                if on_failure is not None and vm.status != on_failure:
                    set_vm_status(vm, on_failure, host=None if on_failure == VmStatus.DOWN else False)
                record_event(
                    f"USER_FAILED_{action.upper()}_VM",
                    f"Failed to {action} VM {vm.name}: {exc}",
                    obj=vm,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        # The outcome first, where the portal and the API look; the Job's steps end after it.
        with transaction.atomic():
            vm = VirtualMachine.objects.select_for_update().get(pk=vm_id)
            keeps_host = success in (VmStatus.UP, VmStatus.PAUSED)
            set_vm_status(vm, success, host=False if keeps_host else None)
            record_event(
                f"VM_{action.upper()}_DONE",
                _done_message(action, vm, host),
                obj=vm,
                correlation_id=job_id,
                host_id=host.pk if host else None,
            )

    run_job(job_id, work)


def _done_message(action: str, vm: VirtualMachine, host: Host | None) -> str:
    where = f" on host {host.name}" if host else ""
    return {
        "start": f"VM {vm.name} started{where}.",
        "shutdown": f"VM {vm.name} is down (shut down by the guest).",
        "stop": f"VM {vm.name} is down (powered off).",
        "reboot": f"VM {vm.name} was rebooted{where}.",
        "suspend": f"VM {vm.name} was suspended to storage.",
        "resume": f"VM {vm.name} was resumed{where}.",
    }[action]


def _create_images(progress: JobProgress, disks: list[Disk], *, source_of=None) -> None:
    """Create each disk's image on a host of its data center; disks end ok or illegal."""
    for number, disk in enumerate(disks, start=1):
        progress.step(number)
        if disk.status == DiskStatus.OK:
            continue  # done before a redelivery
        try:
            host = storage_host(disk.storage_domain.data_center_id)
            image = image_spec(disk)
            if source_of is not None:
                image["copy_from_id"] = source_of[str(disk.pk)]
            result = agent_for(host).image_create(image)
        except AgentError:
            Disk.objects.filter(pk__in=[d.pk for d in disks if d.status != DiskStatus.OK]).update(
                status=DiskStatus.ILLEGAL
            )
            raise
        Disk.objects.filter(pk=disk.pk).update(status=DiskStatus.OK, actual_size=result.get("actual_size", 0))
        disk.status = DiskStatus.OK


@shared_task(name="compute.tasks.create_vm_disks_task", acks_late=True)
def create_vm_disks_task(job_id: str, vm_id: str, pairs: list | None = None) -> None:
    """The images of a VM made from a template: qcow2 overlays on the template's disks (each
    disk row names its backing disk), or, with `pairs` ([template disk id, new disk id] in
    step order), full copies of the template's disks; a cloned VM then no longer depends on
    its template and takes Blank as its template (compute.services.create_vm). Disks already
    ok (a redelivery after a worker died) are not made again."""

    def work(progress: JobProgress) -> None:
        source_of = None
        if pairs:
            source_of = {disk_id: source_id for source_id, disk_id in pairs}
            found = {str(d.pk): d for d in Disk.objects.filter(pk__in=source_of).select_related("storage_domain")}
            disks = [found[disk_id] for _, disk_id in pairs if disk_id in found]
        else:
            disks = list(
                Disk.objects.filter(attachments__vm_id=vm_id).select_related("storage_domain").order_by("alias")
            )
        done = False
        try:
            _create_images(progress, disks, source_of=source_of)
            done = True
        finally:
            with transaction.atomic():
                vm = VirtualMachine.objects.select_for_update().get(pk=vm_id)
                if done and source_of is not None and str(vm.template_id) != BLANK_TEMPLATE_ID:
                    vm.template_id = BLANK_TEMPLATE_ID
                    vm.save(update_fields=["template", "updated_at"])
                if vm.status == VmStatus.IMAGE_LOCKED:
                    set_vm_status(vm, VmStatus.DOWN)
        record_event(
            "USER_ADD_VM_FINISHED_SUCCESS", f"VM {vm.name} creation has been completed.", obj=vm, correlation_id=job_id
        )

    run_job(job_id, work)


@shared_task(name="compute.tasks.copy_template_disks_task", acks_late=True)
def copy_template_disks_task(job_id: str, template_id: str, vm_id: str, pairs: list) -> None:
    def work(progress: JobProgress) -> None:
        source_of = {copy_id: source_id for source_id, copy_id in pairs}
        disks = list(Disk.objects.filter(pk__in=source_of).select_related("storage_domain").order_by("alias"))
        try:
            _create_images(progress, disks, source_of=source_of)
        finally:
            with transaction.atomic():
                vm = VirtualMachine.objects.select_for_update().filter(pk=vm_id).first()
                if vm is not None and vm.status == VmStatus.IMAGE_LOCKED:
                    set_vm_status(vm, VmStatus.DOWN)
        template = Template.objects.get(pk=template_id)
        record_event(
            "USER_ADD_VM_TEMPLATE_FINISHED_SUCCESS",
            f"Creation of template {template} has been completed.",
            obj=template,
            correlation_id=job_id,
        )

    run_job(job_id, work)


@shared_task(name="compute.tasks.remove_images_task", acks_late=True)
def remove_images_task(job_id: str, images: list) -> None:
    def work(progress: JobProgress) -> None:
        for number, image in enumerate(images, start=1):
            progress.step(number)
            host = storage_host(image["data_center_id"] or None)
            agent_for(host).image_remove(image)

    run_job(job_id, work)


@shared_task(name="compute.tasks.snapshot_task", acks_late=True)
def snapshot_task(job_id: str, snapshot_id: str, operation: str) -> None:
    def work(progress: JobProgress) -> None:
        snapshot = Snapshot.objects.select_related("vm__run_on_host").get(pk=snapshot_id)
        vm = snapshot.vm
        progress.step(1)
        try:
            host = vm.run_on_host or storage_host(vm.data_center_id)
            agent = agent_for(host)
            if operation == "create":
                agent.snapshot_create(
                    str(vm.pk),
                    {"id": snapshot_id, "description": snapshot.description, "with_memory": snapshot.with_memory},
                )
            elif operation == "revert":
                agent.snapshot_revert(str(vm.pk), snapshot_id)
            else:
                agent.snapshot_delete(str(vm.pk), snapshot_id)
        except AgentError:
            with transaction.atomic():
                if operation == "create":
                    Snapshot.objects.filter(pk=snapshot_id).delete()
                else:
                    Snapshot.objects.filter(pk=snapshot_id).update(status=SnapshotStatus.OK)
                _unlock(vm.pk)
            raise
        with transaction.atomic():
            if operation == "remove":
                Snapshot.objects.filter(pk=snapshot_id).delete()
            else:
                Snapshot.objects.filter(pk=snapshot_id).update(status=SnapshotStatus.OK)
            _unlock(vm.pk)
            record_event(
                f"USER_{operation.upper()}_SNAPSHOT_FINISHED_SUCCESS",
                f"Snapshot '{snapshot.description}' of VM {vm.name}: {operation} completed.",
                obj=vm,
                correlation_id=job_id,
            )

    run_job(job_id, work)


def _unlock(vm_id) -> None:
    vm = VirtualMachine.objects.select_for_update().get(pk=vm_id)
    if vm.status == VmStatus.IMAGE_LOCKED:
        set_vm_status(vm, VmStatus.DOWN)


# Live migration ------------------------------------------------------------------------------


def migration_address(host: Host) -> tuple[str, str | None]:
    """(address for libvirt's connection, tcp:// URI for the memory stream): the host's IP on
    the cluster's migration network when it has one there, else its management address."""
    from networking.models import ClusterNetwork

    name = (
        ClusterNetwork.objects.filter(cluster_id=host.cluster_id, network__is_migration=True)
        .values_list("network__name", flat=True)
        .first()
    )
    for nic in host.nics or ():
        if name and isinstance(nic, dict) and nic.get("name") == name:
            for address in nic.get("addresses") or ():
                ip = str(address).split("/", 1)[0]
                if ip and ":" not in ip:
                    return ip, f"tcp://{ip}"
    return host.address, None


def destination_uri(host: Host) -> tuple[str, str | None]:
    """(libvirt's peer-to-peer URI of the destination, its tcp:// memory stream or None)."""
    if host.simulated:
        return f"sim://{host.address}:{host.agent_port}", None
    address, stream = migration_address(host)
    return settings.OLVM_MIGRATION_URI.format(address=address), stream


def _slot(vm_id: str) -> str:
    """Take a migration slot for the VM: 'taken' (it may migrate now, or already does),
    'wait' (its source or target is at the cluster's limit), 'gone' (nothing to migrate)."""
    with transaction.atomic():
        vm = VirtualMachine.objects.select_for_update(of=("self",)).select_related("cluster").get(pk=vm_id)
        if vm.migrating_to_host_id is None or vm.run_on_host_id is None:
            return "gone"
        if vm.status == VmStatus.MIGRATING:
            return "taken"  # a redelivery: the migration may be running on the host
        if vm.status != VmStatus.UP:
            return "gone"
        hosts = sorted([vm.run_on_host_id, vm.migrating_to_host_id])
        list(Host.objects.select_for_update().filter(pk__in=hosts).order_by("pk"))  # serialise slot takers
        limit = vm.cluster.migration_max_concurrent
        migrating = VirtualMachine.objects.filter(status=VmStatus.MIGRATING)
        if (
            migrating.filter(run_on_host_id=vm.run_on_host_id).count() >= limit
            or migrating.filter(migrating_to_host_id=vm.migrating_to_host_id).count() >= limit
        ):
            return "wait"
        set_vm_status(vm, VmStatus.MIGRATING)
        return "taken"


@shared_task(name="compute.tasks.migrate_vm_task", acks_late=True)
def migrate_vm_task(job_id: str, vm_id: str) -> None:
    """Wait for a slot, start the peer-to-peer migration on the source's agent, stream its
    progress into the Job and the VM's group, and settle the VM on the target (or back on
    the source, saying why, when it fails or is cancelled)."""
    from django.core.cache import cache

    from .services import migration_cancel_key

    progress = JobProgress(job_id)
    if not progress.is_active():
        return
    # Wait here for a slot (the holders are migrations running in other workers, so they free
    # up): polling keeps the order simple and works the same when tasks run inline.
    deadline = time.monotonic() + settings.OLVM_MIGRATION_SLOT_WAIT
    touched = time.monotonic()
    while (slot := _slot(vm_id)) == "wait":
        if time.monotonic() - touched > 30:
            progress.step(1)  # waiting is progress: the stale-job reaper leaves this Job alone
            touched = time.monotonic()
        if not progress.is_active():
            return
        cancelled_by = cache.get(migration_cancel_key(job_id))
        if cancelled_by or time.monotonic() > deadline:
            reason = (
                f"cancelled by {cancelled_by} while waiting for a slot"
                if cancelled_by
                else f"no migration slot freed up within {settings.OLVM_MIGRATION_SLOT_WAIT:g} s"
            )
            _migration_failed(job_id, vm_id, reason, cancelled=bool(cancelled_by))
            if not cancelled_by:
                progress.fail(f"Migration failed: {reason}")
            return
        time.sleep(min(1.0, settings.OLVM_MIGRATION_POLL * 2))

    def work(progress: JobProgress) -> None:
        if slot == "gone":
            raise ConflictError("The VM is no longer up with a migration decided; nothing to migrate.")
        vm = VirtualMachine.objects.select_related("run_on_host", "migrating_to_host", "cluster").get(pk=vm_id)
        source, target = vm.run_on_host, vm.migrating_to_host
        progress.step(2, progress=5)
        agent = agent_for(source)
        started = time.monotonic()
        try:
            state = agent.migration_status(vm_id)
            if state.get("state") != "running":
                dest, stream = destination_uri(target)
                agent.migrate_vm(
                    vm_id,
                    dest,
                    migrate_uri=stream,
                    policy=vm.cluster.migration_policy,
                    bandwidth_mibps=vm.cluster.migration_bandwidth_mibps,
                    compression=vm.cluster.migration_compression,
                    unsafe=True,  # start_migration refused disks outside shared storage domains
                    timeout=int(settings.OLVM_MIGRATION_TIMEOUT),
                )
            state = _follow(progress, agent, vm, job_id)
        except AgentError as exc:
            _migration_failed(job_id, vm_id, str(exc))
            raise
        if state.get("state") != "completed":
            cancelled = state.get("state") == "cancelled"
            reason = state.get("error") or ("cancelled" if cancelled else f"the migration ended {state.get('state')}")
            _migration_failed(job_id, vm_id, reason, cancelled=cancelled)
            if cancelled:
                return  # the Job ended aborted
            raise AgentError(f"Migration of VM {vm.name} failed: {reason}")
        progress.step(3, progress=98)
        with transaction.atomic():
            vm = VirtualMachine.objects.select_for_update().get(pk=vm_id)
            set_vm_status(vm, VmStatus.UP, host=target)
            vm.last_migrated_at = timezone.now()
            vm.save(update_fields=["last_migrated_at"])
            downtime = state.get("downtime_ms")
            record_event(
                "VM_MIGRATION_DONE",
                f"Migration of VM {vm.name} from host {source.name} to host {target.name} completed "
                f"in {time.monotonic() - started:.1f} s"
                + (f" (downtime {downtime} ms)." if downtime is not None else "."),
                obj=vm,
                correlation_id=job_id,
                host_id=target.pk,
            )

    run_job(job_id, work)


def _follow(progress: JobProgress, agent, vm: VirtualMachine, job_id: str) -> dict:
    """Poll the source agent until the migration ends; cancel it when asked or when it
    overruns OLVM_MIGRATION_TIMEOUT. Each change of progress goes to the Job and `vm.<id>`."""
    from django.core.cache import cache

    from inventory.publish import publish

    from .services import migration_cancel_key

    deadline = time.monotonic() + settings.OLVM_MIGRATION_TIMEOUT
    target_name = vm.migrating_to_host.name if vm.migrating_to_host else ""
    cancel_sent = False
    shown = -1
    while True:
        state = agent.migration_status(str(vm.pk))
        if state.get("state") != "running":
            return state
        percent = int(state.get("progress") or 0)
        if percent != shown:
            shown = percent
            progress.step(2, progress=5 + percent * 90 // 100)
            publish(
                f"vm.{vm.pk}",
                "vm.migration",
                {"id": str(vm.pk), "job": job_id, "target": target_name, **_migration_figures(state)},
            )
        if not cancel_sent and (cache.get(migration_cancel_key(job_id)) or time.monotonic() > deadline):
            try:
                agent.migration_cancel(str(vm.pk))
            except AgentError:
                pass  # it ended meanwhile: the next status says how
            cancel_sent = True
        time.sleep(settings.OLVM_MIGRATION_POLL)


def _migration_figures(state: dict) -> dict:
    keys = ("state", "progress", "elapsed_ms", "data_total", "data_processed", "data_remaining", "memory_bps")
    return {key: state.get(key) for key in keys}


def _migration_failed(job_id: str, vm_id: str, reason: str, *, cancelled: bool = False) -> None:
    """The VM stays (or is back) up on its source host, with an event saying why."""
    with transaction.atomic():
        vm = (
            VirtualMachine.objects.select_for_update(of=("self",))
            .select_related("run_on_host", "migrating_to_host")
            .get(pk=vm_id)
        )
        target = vm.migrating_to_host
        if vm.status == VmStatus.MIGRATING:
            set_vm_status(vm, VmStatus.UP)
        elif vm.migrating_to_host_id is not None:
            vm.migrating_to_host = None
            vm.save(update_fields=["migrating_to_host", "updated_at"])
        where = f" from host {vm.run_on_host.name}" if vm.run_on_host else ""
        to = f" to host {target.name}" if target else ""
        record_event(
            "VM_MIGRATION_ABORTED" if cancelled else "VM_MIGRATION_FAILED",
            f"Migration of VM {vm.name}{where}{to} {'was cancelled' if cancelled else 'failed'}: {reason}. "
            f"The VM keeps running on its source host.",
            obj=vm,
            severity=EventSeverity.NORMAL if cancelled else EventSeverity.ERROR,
            correlation_id=job_id,
        )
    if cancelled:
        JobProgress(job_id).fail(f"Migration cancelled: {reason}", status=JobStatus.ABORTED)


@shared_task(name="compute.tasks.balance_clusters_task")
def balance_clusters_task() -> int:
    """Every OLVM_BALANCE_INTERVAL seconds (beat): the affinity enforcer and the load balancer
    of each cluster with up hosts (compute.services.balance_cluster). Returns the migrations
    started."""
    from inventory.models import Cluster

    from .services import balance_cluster

    clusters = Cluster.objects.filter(hosts__status=HostStatus.UP).distinct().order_by("name")
    return sum(len(balance_cluster(cluster)) for cluster in clusters)


@shared_task(name="compute.tasks.undefine_stale_task")
def undefine_stale_task(host_id: str, vm_id: str) -> None:
    """Remove a VM's stopped definition from a host it no longer runs on (after a migration
    or a failover); checked again here, so a VM that came back meanwhile is left alone."""
    host = Host.objects.filter(pk=host_id).first()
    vm = VirtualMachine.objects.filter(pk=vm_id).first()
    if host is None or vm is None or vm.run_on_host_id in (None, host.pk) or vm.status not in RUNNING:
        return
    try:
        agent_for(host).undefine_vm(vm_id)
    except AgentError as exc:
        log.warning("host %s: could not remove the stale definition of VM %s: %s", host.name, vm.name, exc)
        return
    record_event(
        "VM_STALE_DEFINITION_REMOVED",
        f"The stopped definition of VM {vm.name} left on host {host.name} was removed (the VM runs on another host).",
        obj=vm,
        host_id=host.pk,
    )
