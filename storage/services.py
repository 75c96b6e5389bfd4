"""Write operations on storage domains, disks and disk attachments.

Each function validates, writes in one transaction, records an audit Event and, for work
a host must do (images, hot-plug), opens a Job and enqueues its Celery task on commit.
Space is accounted on the storage domain row, locked, with F() updates: `committed_bytes`
is the sum of the provisioned sizes of its disks, preallocated disks also take `free_bytes`.
"""

import os

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from compute.choices import VmStatus
from compute.statemachine import RUNNING
from inventory.audit import create_job, plain_payload, record_event
from inventory.choices import StorageType
from inventory.exceptions import ConflictError
from inventory.models import DataCenter, Job
from inventory.publish import send_now
from inventory.servicekit import apply_changes, check_fields, locked, save_validated
from inventory.services import enqueue, who

from .choices import (
    DiskAllocation,
    DiskFormat,
    DiskInterface,
    DiskStatus,
    StorageDomainRole,
    StorageDomainStatus,
    StorageDomainType,
)
from .models import GIB, Disk, DiskAttachment, StorageDomain

STORAGE_DOMAIN_CREATE_FIELDS = {
    "description",
    "max_overcommit_percent",
    "critical_space_gib",
    "warning_low_space_percent",
}
STORAGE_DOMAIN_FIELDS = STORAGE_DOMAIN_CREATE_FIELDS | {"name", "path", "type", "shared", "data_center"}
# Where the domain's images live: fixed once it holds disks.
STORAGE_DOMAIN_FIELDS_FIXED_WITH_DISKS = {"path", "type", "shared", "data_center"}
DISK_FIELDS = {"alias", "description", "shareable", "provisioned_size"}
DISK_ATTACHMENT_FIELDS = {"interface", "bootable", "active", "read_only"}
HOTPLUG_INTERFACES = frozenset({DiskInterface.VIRTIO, DiskInterface.VIRTIO_SCSI})


# Storage domains --------------------------------------------------------------------------

# What a storage domain's message carries (`storage.<id>` group), as StorageDomainSerializer
# renders those fields (inventory/tests/test_payloads.py).
STORAGE_DOMAIN_LIVE_FIELDS = (
    "id", "name", "data_center", "status", "total_bytes", "free_bytes", "used_bytes", "committed_bytes", "updated_at",
)  # fmt: skip


def storage_domain_payload(sd: StorageDomain) -> dict:
    return plain_payload(sd, STORAGE_DOMAIN_LIVE_FIELDS)


def publish_storage_domain(sd_id) -> None:
    """Once the transaction commits, the domain as it then is to `storage.<id>`: read again
    then, because its space changes through F() updates."""

    def send() -> None:
        sd = StorageDomain.objects.filter(pk=sd_id).first()
        if sd is not None:
            send_now(f"storage.{sd.pk}", "storage.status", storage_domain_payload(sd))

    transaction.on_commit(send)


@transaction.atomic(durable=True)
def create_storage_domain(
    *, user, name, type, role, path, data_center: DataCenter | None = None, shared=True, **fields
) -> tuple[StorageDomain, Job]:
    check_fields(StorageDomain, fields, STORAGE_DOMAIN_CREATE_FIELDS)
    sd = StorageDomain(
        name=name,
        type=type,
        role=role,
        path=path,
        data_center=data_center,
        shared=shared,
        status=StorageDomainStatus.LOCKED,
        **fields,
    )
    _check_storage_domain(sd)
    save_validated(sd)
    where = f"data center {data_center.name}" if data_center else "no data center (unattached)"
    job = create_job(
        "AddStorageDomain",
        f"Adding storage domain {sd.name} ({sd.type} {sd.path})",
        user=user,
        obj=sd,
        steps=["Find a host that is Up", "Read the size of the storage"],
    )
    record_event(
        "USER_ADD_STORAGE_DOMAIN",
        f"Storage domain {sd.name} ({sd.get_role_display()}, {sd.type} {sd.path}) was added to {where} by {who(user)}.",
        user=user,
        obj=sd,
        correlation_id=job.correlation_id,
    )
    enqueue("storage.tasks.create_storage_domain_task", str(job.pk), str(sd.pk))
    return sd, job


@transaction.atomic(durable=True)
def register_storage_domain(
    *, user, name, type, role, path, data_center: DataCenter | None = None, shared=True, **fields
) -> StorageDomain:
    """Add a file domain whose directory the engine itself sees at `path` (the lab's shared
    directory): sized from the engine's own statvfs and active at once, so no host needs to
    be Up and no Job is opened."""
    check_fields(StorageDomain, fields, STORAGE_DOMAIN_CREATE_FIELDS)
    if type not in (StorageDomainType.POSIXFS, StorageDomainType.LOCALFS):
        raise ValidationError({"type": "Only a posixfs or localfs directory can be read by the engine itself."})
    try:
        st = os.statvfs(path)
    except (OSError, TypeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValidationError({"path": f"The engine cannot read {path}: {reason}."}) from None
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    sd = StorageDomain(
        name=name,
        type=type,
        role=role,
        path=path,
        data_center=data_center,
        shared=shared,
        status=StorageDomainStatus.ACTIVE if data_center else StorageDomainStatus.UNATTACHED,
        total_bytes=total,
        free_bytes=min(free, total),
        **fields,
    )
    _check_storage_domain(sd)
    save_validated(sd)
    where = f"data center {data_center.name}" if data_center else "no data center (unattached)"
    record_event(
        "USER_ADD_STORAGE_DOMAIN",
        f"Storage domain {sd.name} ({sd.get_role_display()}, {sd.type} {sd.path}) was added to {where} by "
        f"{who(user)}; read by the engine: {size_text(sd.free_bytes)} free of {size_text(sd.total_bytes)}.",
        user=user,
        obj=sd,
    )
    return sd


@transaction.atomic(durable=True)
def update_storage_domain(sd: StorageDomain, *, user, **changes) -> StorageDomain:
    sd = locked(sd)
    if sd.status == StorageDomainStatus.LOCKED:
        raise ConflictError(f"Storage domain {sd.name} is locked by a running operation; try again when it ends.")
    changed = apply_changes(sd, changes, STORAGE_DOMAIN_FIELDS)
    fixed = sorted(STORAGE_DOMAIN_FIELDS_FIXED_WITH_DISKS & set(changed))
    if fixed:
        disks = sd.disks.count()
        if disks:
            raise ConflictError(
                f"Storage domain {sd.name} holds {disks} disk(s); {', '.join(fixed)} cannot change until they are "
                "removed or moved."
            )
    if "data_center" in changed and sd.status in (StorageDomainStatus.ACTIVE, StorageDomainStatus.UNATTACHED):
        sd.status = StorageDomainStatus.ACTIVE if sd.data_center_id else StorageDomainStatus.UNATTACHED
    _check_storage_domain(sd)
    save_validated(sd)
    if changed:
        record_event(
            "USER_UPDATE_STORAGE_DOMAIN",
            f"Storage domain {sd.name} was updated ({', '.join(changed)}) by {who(user)}.",
            user=user,
            obj=sd,
        )
        publish_storage_domain(sd.pk)
    return sd


@transaction.atomic(durable=True)
def remove_storage_domain(sd: StorageDomain, *, user) -> None:
    sd = locked(sd)
    if sd.status == StorageDomainStatus.LOCKED:
        raise ConflictError(f"Storage domain {sd.name} is locked by a running operation; try again when it ends.")
    disks = sd.disks.count()
    if disks:
        raise ConflictError(f"Storage domain {sd.name} still holds {disks} disk(s); remove or move them first.")
    record_event(
        "USER_REMOVE_STORAGE_DOMAIN", f"Storage domain {sd.name} was removed by {who(user)}.", user=user, obj=sd
    )
    sd.delete()


def _check_storage_domain(sd: StorageDomain) -> None:
    errors = {}
    clash = StorageDomain.objects.filter(path=sd.path, type=sd.type).exclude(pk=sd.pk).first()
    if clash is not None:
        errors["path"] = f"Storage domain {clash.name} already uses {sd.path}."
    dc = sd.data_center
    if dc is not None:
        if dc.storage_type == StorageType.LOCAL and sd.type != StorageDomainType.LOCALFS:
            errors["type"] = f"Data center {dc.name} uses local storage: its domains are localfs."
        elif dc.storage_type == StorageType.SHARED and sd.type == StorageDomainType.LOCALFS:
            errors["type"] = f"Data center {dc.name} uses shared storage: a localfs domain cannot join it."
    if errors:
        raise ValidationError(errors)


def _check_usable_for_disks(sd: StorageDomain) -> None:
    if sd.role != StorageDomainRole.DATA:
        raise ConflictError(f"Storage domain {sd.name} is an {sd.get_role_display()} domain; disks need a data domain.")
    if sd.status != StorageDomainStatus.ACTIVE:
        raise ConflictError(f"Storage domain {sd.name} is {sd.status}; disks can be created only on an active domain.")


# Space ------------------------------------------------------------------------------------


def size_text(n: int) -> str:
    """Bytes for people: 10 GiB, 1.5 GiB, 512 MiB."""
    for unit, factor in (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2)):
        if abs(n) >= factor:
            return f"{n / factor:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"


def reserve_space(sd: StorageDomain, size: int, allocation: str) -> None:
    """Take `size` bytes on the domain, or raise ValidationError on provisioned_size.

    Call inside the caller's transaction with `sd` freshly locked (`locked(sd)`), so the
    numbers checked are the numbers updated.
    """
    reserve = sd.critical_space_gib * GIB
    if allocation == DiskAllocation.PREALLOCATED:
        room = sd.free_bytes - reserve
        if size > room:
            raise ValidationError(
                {
                    "provisioned_size": f"Storage domain {sd.name} cannot preallocate {size_text(size)}: it has "
                    f"{size_text(sd.free_bytes)} free and keeps {sd.critical_space_gib} GiB in reserve, so at most "
                    f"{size_text(max(0, room))} can be preallocated."
                }
            )
        StorageDomain.objects.filter(pk=sd.pk).update(
            committed_bytes=F("committed_bytes") + size, free_bytes=F("free_bytes") - size
        )
        publish_storage_domain(sd.pk)
        return
    if sd.free_bytes < reserve:
        raise ValidationError(
            {
                "provisioned_size": f"Storage domain {sd.name} has {size_text(sd.free_bytes)} free, below its "
                f"critical space of {sd.critical_space_gib} GiB: no new thin provisioning."
            }
        )
    limit = sd.overcommit_limit_bytes
    if sd.committed_bytes + size > limit:
        raise ValidationError(
            {
                "provisioned_size": f"Storage domain {sd.name} cannot commit {size_text(size)} more: "
                f"{size_text(sd.committed_bytes)} of its {size_text(limit)} limit "
                f"({sd.max_overcommit_percent}% of {size_text(sd.total_bytes)}) are already committed."
            }
        )
    StorageDomain.objects.filter(pk=sd.pk).update(committed_bytes=F("committed_bytes") + size)
    publish_storage_domain(sd.pk)


def release_space(sd: StorageDomain, size: int, allocation: str) -> None:
    """Give back what reserve_space took for a disk of `size` bytes (inside the caller's transaction)."""
    updates = {"committed_bytes": F("committed_bytes") - size}
    if allocation == DiskAllocation.PREALLOCATED:
        updates["free_bytes"] = F("free_bytes") + size
    StorageDomain.objects.filter(pk=sd.pk).update(**updates)
    publish_storage_domain(sd.pk)


# Disks ------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_disk(
    *,
    user,
    storage_domain: StorageDomain,
    alias,
    provisioned_size,
    format,
    allocation,
    description="",
    shareable=False,
    vm=None,
    interface="virtio",
    bootable=False,
) -> tuple[Disk, Job]:
    if vm is not None:
        vm = locked(vm)
    sd = locked(storage_domain)
    _check_usable_for_disks(sd)
    disk = Disk(
        storage_domain=sd,
        alias=alias,
        description=description,
        provisioned_size=provisioned_size,
        format=format,
        allocation=allocation,
        shareable=shareable,
        status=DiskStatus.LOCKED,
    )
    disk.full_clean()
    reserve_space(sd, disk.provisioned_size, disk.allocation)
    save_validated(disk)
    steps = ["Create the image on storage"]
    attachment = None
    if vm is not None:
        attachment = _attach(vm, disk, interface=interface, bootable=bootable, active=True)
        if vm.status in RUNNING:
            steps.append(f"Plug the disk into VM {vm.name}")
    job = create_job(
        "AddDisk", f"Adding disk {disk.alias} to storage domain {sd.name}", user=user, obj=disk, steps=steps
    )
    record_event(
        "USER_ADD_DISK",
        f"Disk {disk.alias} ({size_text(disk.provisioned_size)} {disk.allocation} {disk.format}) was added to "
        f"storage domain {sd.name} by {who(user)}.",
        user=user,
        obj=disk,
        correlation_id=job.correlation_id,
    )
    if attachment is not None:
        _attach_event(attachment, user=user, correlation_id=job.correlation_id)
    enqueue("storage.tasks.create_disk_image_task", str(job.pk), str(disk.pk))
    return disk, job


@transaction.atomic(durable=True)
def update_disk(disk: Disk, *, user, **changes) -> Disk:
    disk = locked(disk)
    _check_not_locked(disk)
    old_size = disk.provisioned_size
    changed = apply_changes(disk, changes, DISK_FIELDS)
    if "shareable" in changed and disk.attachments.exists():
        raise ConflictError(f"Disk {disk.alias} is attached to a VM; shareable can change only while it is unattached.")
    disk.full_clean()
    if "provisioned_size" in changed:
        if disk.provisioned_size < old_size:
            raise ValidationError(
                {
                    "provisioned_size": f"Disk {disk.alias} cannot shrink from {size_text(old_size)} to "
                    f"{size_text(disk.provisioned_size)}; a disk can only grow."
                }
            )
        sd = locked(disk.storage_domain)
        _check_usable_for_disks(sd)
        reserve_space(sd, disk.provisioned_size - old_size, disk.allocation)
    save_validated(disk)
    if changed:
        grown = (
            f", grown from {size_text(old_size)} to {size_text(disk.provisioned_size)}"
            if "provisioned_size" in changed
            else ""
        )
        record_event(
            "USER_UPDATE_VM_DISK",
            f"Disk {disk.alias} was updated ({', '.join(changed)}{grown}) by {who(user)}.",
            user=user,
            obj=disk,
        )
    return disk


@transaction.atomic(durable=True)
def remove_disk(disk: Disk, *, user) -> Job | None:
    """Drop the disk and give its space back now; a host removes the image afterwards."""
    disk = locked(disk)
    _check_not_locked(disk)
    busy = sorted(disk.attachments.exclude(vm__status=VmStatus.DOWN).values_list("vm__name", flat=True))
    if busy:
        raise ConflictError(f"Disk {disk.alias} is attached to VM(s) {', '.join(busy)} that are not down.")
    overlays = disk.overlays.count()
    if overlays:
        raise ConflictError(f"Disk {disk.alias} is the base of {overlays} disk(s) (VMs made from its template).")
    _check_not_being_cloned(disk)
    sd = locked(disk.storage_domain)
    release_space(sd, disk.provisioned_size, disk.allocation)
    job = create_job(
        "RemoveDisk",
        f"Removing disk {disk.alias} from storage domain {sd.name}",
        user=user,
        obj=disk,
        steps=["Remove the image from storage"],
    )
    record_event(
        "USER_REMOVE_DISK",
        f"Disk {disk.alias} was removed from storage domain {sd.name} by {who(user)}.",
        user=user,
        obj=disk,
        correlation_id=job.correlation_id,
    )
    enqueue("storage.tasks.remove_disk_image_task", str(job.pk), str(disk.pk), str(sd.pk))
    disk.delete()
    return job


@transaction.atomic(durable=True)
def register_disk(
    *,
    user,
    storage_domain: StorageDomain,
    disk_id,
    alias,
    provisioned_size,
    format=DiskFormat.QCOW2,
    allocation=DiskAllocation.THIN,
    actual_size=0,
    description="",
    template=None,
) -> Disk:
    """Add a disk whose image is already on the storage domain, at `sd.image_path(disk_id)`
    (put there by the caller, e.g. the lab copying the tiny guest's disk): status ok at once,
    no Job. With `template`, it is that template's disk."""
    sd = locked(storage_domain)
    _check_usable_for_disks(sd)
    if template is not None:
        template = locked(template)
    image = sd.image_path(disk_id)
    if not image.is_file():
        raise ValidationError({"disk_id": f"Storage domain {sd.name} has no image {image} to register."})
    disk = Disk(
        id=disk_id,
        storage_domain=sd,
        alias=alias,
        description=description,
        provisioned_size=provisioned_size,
        actual_size=actual_size,
        format=format,
        allocation=allocation,
        template=template,
        status=DiskStatus.OK,
    )
    save_validated(disk)
    # The image exists already: it is committed like any disk (never refused), and the space it
    # takes is in the domain's free bytes as last read.
    StorageDomain.objects.filter(pk=sd.pk).update(committed_bytes=F("committed_bytes") + disk.provisioned_size)
    owner = f" as a disk of template {template}" if template is not None else ""
    record_event(
        "USER_REGISTER_DISK",
        f"Disk {disk.alias} ({size_text(disk.provisioned_size)} {disk.allocation} {disk.format}) was registered from "
        f"its image on storage domain {sd.name}{owner} by {who(user)}.",
        user=user,
        obj=disk,
    )
    return disk


def _check_not_being_cloned(disk: Disk) -> None:
    """A template's disk is read while VMs are made from the template with cloned disks: such
    a VM keeps the template and stays image_locked until its copies are made."""
    if disk.template_id is None:
        return
    from compute.models import VirtualMachine

    making = sorted(
        VirtualMachine.objects.filter(template_id=disk.template_id, status=VmStatus.IMAGE_LOCKED).values_list(
            "name", flat=True
        )
    )
    if making:
        raise ConflictError(
            f"Disk {disk.alias} of template {disk.template} is being copied for VM(s) {', '.join(making)}; "
            "try again when they are created."
        )


def _check_not_locked(disk: Disk) -> None:
    if disk.status == DiskStatus.LOCKED:
        raise ConflictError(f"Disk {disk.alias} is locked by a running operation; try again when it ends.")


# Disk attachments -------------------------------------------------------------------------


@transaction.atomic(durable=True)
def attach_disk(
    vm, disk: Disk, *, user, interface="virtio", bootable=False, active=True
) -> tuple[DiskAttachment, Job | None]:
    vm = locked(vm)
    disk = locked(disk)
    if disk.status != DiskStatus.OK:
        raise ConflictError(f"Disk {disk.alias} is {disk.status}; only a disk in status ok can be attached.")
    attachment = _attach(vm, disk, interface=interface, bootable=bootable, active=active)
    job = _disk_job(attachment, "plug", user=user) if active and vm.status in RUNNING else None
    _attach_event(attachment, user=user, correlation_id=job.correlation_id if job else "")
    return attachment, job


@transaction.atomic(durable=True)
def update_disk_attachment(attachment: DiskAttachment, *, user, **changes) -> tuple[DiskAttachment, Job | None]:
    vm = locked(attachment.vm)
    attachment = locked(attachment)
    disk = attachment.disk
    was_active = attachment.active
    changed = apply_changes(attachment, changes, DISK_ATTACHMENT_FIELDS)
    running = vm.status in RUNNING
    if running and was_active and {"interface", "read_only"} & set(changed):
        raise ConflictError(
            f"Disk {disk.alias} is plugged into running VM {vm.name}: unplug first to change its interface "
            "or read-only flag."
        )
    if "bootable" in changed and attachment.bootable:
        _check_one_bootable(vm, exclude=attachment)
    job = None
    if running and "active" in changed:
        if attachment.active:
            if disk.status != DiskStatus.OK:
                raise ConflictError(f"Disk {disk.alias} is {disk.status}; it cannot be plugged.")
            _check_hotpluggable(attachment.interface, vm)
        else:
            _check_not_boot_disk(attachment, vm)
    save_validated(attachment)
    if running and "active" in changed:
        job = _disk_job(attachment, "plug" if attachment.active else "unplug", user=user)
    if changed:
        record_event(
            "USER_UPDATE_VM_DISK",
            f"Disk {disk.alias} on VM {vm.name} was updated ({', '.join(changed)}) by {who(user)}"
            + (f" and is being hot-{'plugged' if attachment.active else 'unplugged'}." if job else "."),
            user=user,
            obj=disk,
            vm_id=vm.pk,
            correlation_id=job.correlation_id if job else "",
        )
    return attachment, job


@transaction.atomic(durable=True)
def detach_disk(attachment: DiskAttachment, *, user) -> Job | None:
    """Detach now, or, when plugged into a running VM, hot-unplug first (a Job) then detach."""
    vm = locked(attachment.vm)
    attachment = locked(attachment)
    disk = attachment.disk
    if attachment.active and vm.status in RUNNING:
        _check_not_boot_disk(attachment, vm)
        job = _disk_job(attachment, "detach", user=user)
        record_event(
            "USER_HOTUNPLUG_DISK",
            f"Disk {disk.alias} is being unplugged from running VM {vm.name} to detach it, by {who(user)}.",
            user=user,
            obj=disk,
            vm_id=vm.pk,
            correlation_id=job.correlation_id,
        )
        return job
    record_event(
        "USER_DETACH_DISK_FROM_VM",
        f"Disk {disk.alias} was detached from VM {vm.name} by {who(user)}.",
        user=user,
        obj=disk,
        vm_id=vm.pk,
    )
    attachment.delete()
    return None


def _attach(vm, disk: Disk, *, interface, bootable, active) -> DiskAttachment:
    """The rules of one disk on one VM; the caller holds both rows locked."""
    if disk.template_id:
        raise ConflictError(f"Disk {disk.alias} belongs to a template; VMs use overlays on it, not the disk itself.")
    if disk.storage_domain.data_center_id != vm.data_center_id:
        raise ValidationError(
            {
                "disk": f"Disk {disk.alias} is on storage domain {disk.storage_domain.name}, outside the data center "
                f"of VM {vm.name}."
            }
        )
    if disk.attachments.filter(vm=vm).exists():
        raise ConflictError(f"Disk {disk.alias} is already attached to VM {vm.name}.")
    others = sorted(disk.attachments.exclude(vm=vm).values_list("vm__name", flat=True))
    if others and not disk.shareable:
        raise ConflictError(
            f"Disk {disk.alias} is attached to VM {', '.join(others)}; only a shareable disk can be attached to "
            "more than one VM."
        )
    if bootable:
        _check_one_bootable(vm)
    if active and vm.status in RUNNING:
        _check_hotpluggable(interface, vm)
    return save_validated(DiskAttachment(vm=vm, disk=disk, interface=interface, bootable=bootable, active=active))


def _check_one_bootable(vm, *, exclude: DiskAttachment | None = None) -> None:
    boot = DiskAttachment.objects.filter(vm=vm, bootable=True).select_related("disk")
    if exclude is not None:
        boot = boot.exclude(pk=exclude.pk)
    current = boot.first()
    if current is not None:
        raise ValidationError(
            {"bootable": f"VM {vm.name} already boots from disk {current.disk.alias}; a VM has one bootable disk."}
        )


def _check_hotpluggable(interface: str, vm) -> None:
    if interface not in HOTPLUG_INTERFACES:
        raise ConflictError(
            f"VM {vm.name} is running and a {interface} disk cannot be hot-plugged; use virtio or virtio_scsi, "
            "or plug it while the VM is down."
        )


def _check_not_boot_disk(attachment: DiskAttachment, vm) -> None:
    if attachment.bootable:
        raise ConflictError(f"Disk {attachment.disk.alias} is the boot disk of running VM {vm.name}: it stays plugged.")


def _attach_event(attachment: DiskAttachment, *, user, correlation_id: str) -> None:
    vm, disk = attachment.vm, attachment.disk
    details = [attachment.interface] + (["bootable"] if attachment.bootable else [])
    details.append("plugged" if attachment.active else "not plugged")
    record_event(
        "USER_ATTACH_DISK_TO_VM",
        f"Disk {disk.alias} was attached to VM {vm.name} ({', '.join(details)}) by {who(user)}.",
        user=user,
        obj=disk,
        vm_id=vm.pk,
        correlation_id=correlation_id,
    )


_DISK_JOBS = {
    # what: (action type, description, step, task)
    "plug": ("HotPlugDiskToVm", "Hot-plugging disk {disk} into VM {vm}", "Plug the disk", "hotplug_disk_task"),
    "unplug": (
        "HotUnPlugDiskFromVm",
        "Hot-unplugging disk {disk} from VM {vm}",
        "Unplug the disk",
        "hotunplug_disk_task",
    ),
    "detach": ("DetachDiskFromVm", "Detaching disk {disk} from VM {vm}", "Unplug the disk", "detach_disk_task"),
}


def _disk_job(attachment: DiskAttachment, what: str, *, user) -> Job:
    action, description, step, task = _DISK_JOBS[what]
    vm = attachment.vm
    job = create_job(
        action, description.format(disk=attachment.disk.alias, vm=vm.name), user=user, obj=vm, steps=[step]
    )
    enqueue(f"storage.tasks.{task}", str(job.pk), str(attachment.pk))
    return job
