"""Celery tasks of storage: domain sizing, image create/remove, disk hot-plug.

Tasks take ids, are idempotent (a redelivered task finds its Job ended and returns) and
reach hosts only through the host agent client. Image work runs on a host that is Up in
the storage domain's data center.
"""

import logging

from celery import shared_task
from django.db import transaction

from compute.statemachine import RUNNING
from hostagent.client import AgentError
from inventory.audit import JobProgress, record_event, run_job
from inventory.choices import EventSeverity, HostStatus
from inventory.exceptions import ConflictError
from inventory.history import record_storage_domains
from inventory.models import Host
from inventory.servicekit import agent_for

from .choices import DiskStatus, StorageDomainStatus
from .models import Disk, DiskAttachment, StorageDomain
from .services import publish_storage_domain

log = logging.getLogger(__name__)


def up_host(data_center_id) -> Host | None:
    """A host that is Up in the data center (the SPM first); any Up host when there is no data center."""
    hosts = Host.objects.filter(status=HostStatus.UP)
    if data_center_id is not None:
        hosts = hosts.filter(cluster__data_center_id=data_center_id)
    return hosts.order_by("-is_spm", "name").first()


def _require_up_host(sd: StorageDomain) -> Host:
    host = up_host(sd.data_center_id)
    if host is None:
        where = f"data center {sd.data_center.name}" if sd.data_center_id else "the system"
        raise ConflictError(f"No host is Up in {where} to reach storage domain {sd.name}; activate a host first.")
    return host


def domain_spec(sd: StorageDomain) -> dict:
    return {"id": str(sd.pk), "name": sd.name, "type": sd.type, "path": sd.path}


def image_spec(disk: Disk) -> dict:
    return {
        "id": str(disk.pk),
        "alias": disk.alias,
        "storage_domain": domain_spec(disk.storage_domain),
        "size": disk.provisioned_size,
        "format": disk.format,
        "allocation": disk.allocation,
        "backing_id": str(disk.backing_disk_id) if disk.backing_disk_id else None,
    }


def disk_device_spec(attachment: DiskAttachment) -> dict:
    spec = image_spec(attachment.disk)
    spec.update(
        interface=attachment.interface,
        bootable=attachment.bootable,
        read_only=attachment.read_only,
        shareable=attachment.disk.shareable,
    )
    return spec


# Storage domains --------------------------------------------------------------------------


@shared_task(name="storage.tasks.create_storage_domain_task")
def create_storage_domain_task(job_id: str, sd_id: str) -> None:
    def work(progress: JobProgress) -> None:
        sd = StorageDomain.objects.select_related("data_center").get(pk=sd_id)
        progress.step(1)
        try:
            host = _require_up_host(sd)
            progress.step(2)
            stats = agent_for(host).storage_domain_stats(domain_spec(sd))
        except (AgentError, ConflictError) as exc:
            with transaction.atomic():
                StorageDomain.objects.filter(pk=sd_id, status=StorageDomainStatus.LOCKED).update(
                    status=StorageDomainStatus.INACTIVE
                )
                record_event(
                    "USER_ADD_STORAGE_DOMAIN_FAILED",
                    f"Storage domain {sd.name} could not be read and is inactive: {getattr(exc, 'message', exc)}",
                    obj=sd,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        total, free = int(stats["total_bytes"]), int(stats["free_bytes"])
        status = StorageDomainStatus.ACTIVE if sd.data_center_id else StorageDomainStatus.UNATTACHED
        with transaction.atomic():
            updated = StorageDomain.objects.filter(pk=sd_id, status=StorageDomainStatus.LOCKED).update(
                total_bytes=total, free_bytes=min(free, total), status=status
            )
            if updated:
                publish_storage_domain(sd_id)
                record_event(
                    "USER_ACTIVATED_STORAGE_DOMAIN" if sd.data_center_id else "STORAGE_DOMAIN_UNATTACHED",
                    f"Storage domain {sd.name} is {status}: {free * 100 // max(total, 1)}% of "
                    f"{total // 1024**3} GiB free (read by host {host.name}).",
                    obj=sd,
                    correlation_id=job_id,
                )

    run_job(job_id, work)


# Images -----------------------------------------------------------------------------------


@shared_task(name="storage.tasks.create_disk_image_task")
def create_disk_image_task(job_id: str, disk_id: str) -> None:
    def work(progress: JobProgress) -> None:
        disk = Disk.objects.select_related("storage_domain__data_center").filter(pk=disk_id).first()
        if disk is None:
            raise ConflictError("The disk was removed before its image could be created.")
        progress.step(1)
        try:
            host = _require_up_host(disk.storage_domain)
            result = agent_for(host).image_create(image_spec(disk))
        except (AgentError, ConflictError) as exc:
            with transaction.atomic():
                Disk.objects.filter(pk=disk_id, status=DiskStatus.LOCKED).update(status=DiskStatus.ILLEGAL)
                record_event(
                    "USER_ADD_DISK_FINISHED_FAILURE",
                    f"Disk {disk.alias} could not be created on storage domain {disk.storage_domain.name}: "
                    f"{getattr(exc, 'message', exc)}",
                    obj=disk,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        with transaction.atomic():
            Disk.objects.filter(pk=disk_id, status=DiskStatus.LOCKED).update(
                status=DiskStatus.OK, actual_size=int(result.get("actual_size", 0))
            )
            record_event(
                "USER_ADD_DISK_FINISHED_SUCCESS",
                f"Disk {disk.alias} was created on storage domain {disk.storage_domain.name} by host {host.name}.",
                obj=disk,
                correlation_id=job_id,
            )
        for attachment in DiskAttachment.objects.filter(disk_id=disk_id, active=True).select_related("vm"):
            if attachment.vm.status in RUNNING:
                progress.step(2)
                _hotplug(attachment, job_id)

    run_job(job_id, work)


@shared_task(name="storage.tasks.remove_disk_image_task")
def remove_disk_image_task(job_id: str, disk_id: str, sd_id: str) -> None:
    """The disk row is gone already (its space given back); remove its image from storage."""

    def work(progress: JobProgress) -> None:
        progress.step(1)
        sd = StorageDomain.objects.select_related("data_center").filter(pk=sd_id).first()
        if sd is None:
            raise ConflictError("The storage domain of the disk was removed; its image cannot be reached.")
        try:
            host = _require_up_host(sd)
            agent_for(host).image_remove({"id": disk_id, "storage_domain": domain_spec(sd)})
        except (AgentError, ConflictError) as exc:
            record_event(
                "USER_FINISHED_FAILED_REMOVE_DISK",
                f"The image of removed disk {disk_id} may remain on storage domain {sd.name}: "
                f"{getattr(exc, 'message', exc)}",
                obj=sd,
                severity=EventSeverity.WARNING,
                correlation_id=job_id,
            )
            raise
        record_event(
            "USER_FINISHED_REMOVE_DISK",
            f"The image of disk {disk_id} was removed from storage domain {sd.name} by host {host.name}.",
            obj=sd,
            correlation_id=job_id,
        )

    run_job(job_id, work)


# Hot-plug ---------------------------------------------------------------------------------


def _load_attachment(attachment_id: str) -> DiskAttachment:
    attachment = (
        DiskAttachment.objects.select_related("vm__run_on_host", "disk__storage_domain")
        .filter(pk=attachment_id)
        .first()
    )
    if attachment is None:
        raise ConflictError("The disk was detached before it could be changed on the running VM.")
    return attachment


def _running_host(attachment: DiskAttachment) -> Host | None:
    """The host running the VM; None when the VM stopped meanwhile (its next start uses the stored state)."""
    vm = attachment.vm
    return vm.run_on_host if vm.status in RUNNING else None


def _hotplug(attachment: DiskAttachment, job_id: str) -> None:
    vm, disk = attachment.vm, attachment.disk
    host = _running_host(attachment)
    if host is None:
        return
    try:
        agent_for(host).hotplug_disk(str(vm.pk), disk_device_spec(attachment))
    except AgentError as exc:
        with transaction.atomic():
            DiskAttachment.objects.filter(pk=attachment.pk).update(active=False)
            record_event(
                "USER_FAILED_HOTPLUG_DISK",
                f"Failed to plug disk {disk.alias} into VM {vm.name}: {exc}",
                obj=disk,
                vm_id=vm.pk,
                severity=EventSeverity.ERROR,
                correlation_id=job_id,
            )
        raise
    record_event(
        "USER_HOTPLUG_DISK",
        f"Disk {disk.alias} was plugged into VM {vm.name}.",
        obj=disk,
        vm_id=vm.pk,
        correlation_id=job_id,
    )


def _hotunplug(attachment: DiskAttachment, job_id: str) -> None:
    vm, disk = attachment.vm, attachment.disk
    host = _running_host(attachment)
    if host is None:
        return
    try:
        agent_for(host).hotunplug_disk(str(vm.pk), str(disk.pk))
    except AgentError as exc:
        with transaction.atomic():
            DiskAttachment.objects.filter(pk=attachment.pk).update(active=True)
            record_event(
                "USER_FAILED_HOTUNPLUG_DISK",
                f"Failed to unplug disk {disk.alias} from VM {vm.name}: {exc}",
                obj=disk,
                vm_id=vm.pk,
                severity=EventSeverity.ERROR,
                correlation_id=job_id,
            )
        raise
    record_event(
        "USER_HOTUNPLUG_DISK",
        f"Disk {disk.alias} was unplugged from VM {vm.name}.",
        obj=disk,
        vm_id=vm.pk,
        correlation_id=job_id,
    )


@shared_task(name="storage.tasks.hotplug_disk_task")
def hotplug_disk_task(job_id: str, attachment_id: str) -> None:
    def work(progress: JobProgress) -> None:
        progress.step(1)
        _hotplug(_load_attachment(attachment_id), job_id)

    run_job(job_id, work)


@shared_task(name="storage.tasks.hotunplug_disk_task")
def hotunplug_disk_task(job_id: str, attachment_id: str) -> None:
    def work(progress: JobProgress) -> None:
        progress.step(1)
        _hotunplug(_load_attachment(attachment_id), job_id)

    run_job(job_id, work)


@shared_task(name="storage.tasks.detach_disk_task")
def detach_disk_task(job_id: str, attachment_id: str) -> None:
    """Unplug the disk from the running VM, then detach it."""

    def work(progress: JobProgress) -> None:
        progress.step(1)
        attachment = _load_attachment(attachment_id)
        vm, disk = attachment.vm, attachment.disk
        _hotunplug(attachment, job_id)
        with transaction.atomic():
            DiskAttachment.objects.filter(pk=attachment_id).delete()
            record_event(
                "USER_DETACH_DISK_FROM_VM",
                f"Disk {disk.alias} was detached from VM {vm.name}.",
                obj=disk,
                vm_id=vm.pk,
                correlation_id=job_id,
            )

    run_job(job_id, work)


# Monitoring -------------------------------------------------------------------------------


@shared_task(name="storage.tasks.monitor_storage_domains_task")
def monitor_storage_domains_task() -> int:
    """The beat's storage monitor (every minute): the size and free space of every active
    domain, read by an Up host of its data center. A changed row is written and published to
    `storage.<id>`, every reading is kept in the monitoring history, and a domain crossing its
    low-space warning or critical threshold gets an event. Returns how many domains were read."""
    hosts: dict = {}
    readings = []
    for sd in StorageDomain.objects.filter(status=StorageDomainStatus.ACTIVE).order_by("name"):
        if sd.data_center_id not in hosts:
            hosts[sd.data_center_id] = up_host(sd.data_center_id)
        host = hosts[sd.data_center_id]
        if host is None:
            continue
        try:
            stats = agent_for(host).storage_domain_stats(domain_spec(sd))
            total, free = int(stats["total_bytes"]), int(stats["free_bytes"])
        except (AgentError, KeyError, TypeError, ValueError) as exc:
            log.warning("storage domain %s not read by host %s: %s", sd.name, host.name, exc)
            continue
        free = max(0, min(free, total))
        readings.append((sd.pk, total, free))
        with transaction.atomic():
            changed = (
                StorageDomain.objects.filter(pk=sd.pk, status=StorageDomainStatus.ACTIVE)
                .exclude(total_bytes=total, free_bytes=free)
                .update(total_bytes=total, free_bytes=free)
            )
            if changed:
                publish_storage_domain(sd.pk)
                _space_event(sd, total, free)
    if readings:
        record_storage_domains(readings)
    return len(readings)


def _space_event(sd: StorageDomain, total: int, free: int) -> None:
    """An event when the domain's free space falls below its warning or critical threshold."""
    critical = sd.critical_space_gib * 1024**3

    def level(free_bytes: int, total_bytes: int) -> int:
        if free_bytes < critical:
            return 2
        return 1 if total_bytes and free_bytes * 100 < total_bytes * sd.warning_low_space_percent else 0

    before, now = level(sd.free_bytes, sd.total_bytes), level(free, total)
    if now > before:
        record_event(
            "IRS_DISK_SPACE_LOW_ERROR" if now == 2 else "IRS_DISK_SPACE_LOW",
            f"Storage domain {sd.name} is low on space: {free // 1024**3} GiB free of {total // 1024**3} GiB.",
            obj=sd,
            severity=EventSeverity.ERROR if now == 2 else EventSeverity.WARNING,
        )
