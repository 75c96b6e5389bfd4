"""Write operations on VMs, templates, instance types and snapshots.

Each function validates, writes in one transaction, records an audit Event and, for
long work, opens a Job whose Celery task is enqueued on commit. VM actions set the
transitional status at once (start -> wait_for_launch, shutdown -> powering_down, ...);
the task moves the VM on from what the host agent reports.
"""

import copy
import secrets

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory.audit import create_job, plain_payload, record_event
from inventory.choices import EventSeverity, HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Cluster, Host, Job
from inventory.publish import publish
from inventory.servicekit import apply_changes, check_fields, locked, save_validated
from inventory.services import enqueue, remove_permissions_on, who
from storage.choices import DiskAllocation, DiskFormat, DiskStatus

from .choices import ConsoleType, SnapshotStatus, VmStatus
from .models import BLANK_TEMPLATE_ID, InstanceType, Snapshot, Template, VirtualMachine
from .placement import AUTOMATIC, MANUAL, choose_host, choose_migration_target, cluster_facts
from .statemachine import RUNNING, VM_STATE_MACHINE, check_action

SHAPE_FIELDS = (
    "description",
    "os_type",
    "vcpus",
    "memory_mib",
    "console_type",
    "kernel_path",
    "initrd_path",
    "kernel_params",
)
VM_FIELDS = {
    *SHAPE_FIELDS,
    "name",
    "comment",
    "guaranteed_memory_mib",
    "ha_enabled",
    "ha_priority",
    "resume_behavior",
    "placement_policy",
    "pinned_hosts",
    "instance_type",
    "owner",
}
# What a running VM takes at once; the rest of VM_FIELDS waits for the next run.
LIVE_FIELDS = {
    *("name", "description", "comment", "ha_enabled", "ha_priority", "resume_behavior", "placement_policy"),
    "owner",
}
# What a VM user chooses for a VM of their own (create_own_vm); the rest comes from the template.
OWN_VM_FIELDS = {"description", "comment", "vcpus", "memory_mib", "instance_type"}
TEMPLATE_FIELDS = {*SHAPE_FIELDS, "name", "version_name"}
INSTANCE_TYPE_FIELDS = {"name", "description", "memory_mib", "vcpus"}
VM_ACTION_TYPES = {
    "start": "RunVm",
    "shutdown": "ShutdownVm",
    "stop": "StopVm",
    "reboot": "RebootVm",
    "suspend": "HibernateVm",
    "resume": "ResumeVm",
}
VM_TASK = "compute.tasks.vm_action_task"


# VM status --------------------------------------------------------------------------------


# What a VM's status message carries (`vm.<id>` and `cluster.<id>` groups): what its list row
# and page show, as VmSerializer renders those fields (inventory/tests/test_payloads.py).
VM_LIVE_FIELDS = (
    "id", "name", "status", "status_changed_at", "cluster", "data_center", "run_on_host", "vcpus",
    "memory_mib", "guest_ips", "external", "updated_at",
)  # fmt: skip


def vm_payload(vm: VirtualMachine) -> dict:
    """VM_LIVE_FIELDS and `run_on_host_name` of `vm`, built without the serializer (cheap:
    the host's name is read only when its row is not at hand)."""
    payload = plain_payload(vm, VM_LIVE_FIELDS)
    if vm.run_on_host_id is None:
        payload["run_on_host_name"] = None
    elif VirtualMachine.run_on_host.is_cached(vm):
        payload["run_on_host_name"] = vm.run_on_host.name
    else:
        payload["run_on_host_name"] = Host.objects.filter(pk=vm.run_on_host_id).values_list("name", flat=True).first()
    return payload


def set_vm_status(vm: VirtualMachine, status: str, *, host: Host | None | bool = False) -> bool:
    """Move a (locked) VM through the state machine; `host` (when given) sets run_on_host.
    Subscribers of the VM and of its cluster get its new state after commit, with the status
    and host it had before (`previous`), so that counters follow without reading the database."""
    previous = {"status": vm.status, "run_on_host": str(vm.run_on_host_id) if vm.run_on_host_id else None}
    fields = []
    if vm.status != status:
        VM_STATE_MACHINE.check(vm.status, status)
        vm.status = status
        vm.status_changed_at = timezone.now()
        fields += ["status", "status_changed_at"]
        if status != VmStatus.MIGRATING and vm.migrating_to_host_id is not None:
            vm.migrating_to_host = None  # a migration ends with every move out of migrating
            fields.append("migrating_to_host")
    if host is not False and vm.run_on_host != (host or None):
        vm.run_on_host = host or None
        fields.append("run_on_host")
    if status == VmStatus.DOWN and fields:
        fields += apply_next_run_config(vm)
        vm.guest_ips, vm.guest_users = [], []
        fields += ["guest_ips", "guest_users"]
    if not fields:
        return False
    vm.save(update_fields=[*set(fields), "updated_at"])
    payload = vm_payload(vm)
    publish(f"vm.{vm.pk}", "vm.status", payload, previous=previous)
    publish(f"cluster.{vm.cluster_id}", "vm.status", payload, previous=previous)
    return True


def apply_next_run_config(vm: VirtualMachine) -> list[str]:
    """On the way down, apply what an edit of the running VM saved for the next run."""
    config = vm.next_run_config or {}
    if not config:
        return []
    for name, value in config.items():
        if name == "instance_type":
            vm.instance_type_id = value
        elif name != "pinned_hosts":
            setattr(vm, name, value)
    if "pinned_hosts" in config:
        vm.pinned_hosts.set(config["pinned_hosts"])
    vm.next_run_config = {}
    record_event("VM_NEXT_RUN_APPLIED", f"Changes of VM {vm.name} saved for its next run were applied.", obj=vm)
    return [*(k for k in config if k != "pinned_hosts"), "next_run_config"]


# Instance types ---------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_instance_type(*, user, **fields) -> InstanceType:
    check_fields(InstanceType, fields, INSTANCE_TYPE_FIELDS)
    itype = save_validated(InstanceType(**fields))
    record_event(
        "USER_ADD_INSTANCE_TYPE", f"Instance type {itype.name} was added by {who(user)}.", user=user, obj=itype
    )
    return itype


@transaction.atomic(durable=True)
def update_instance_type(itype: InstanceType, *, user, **changes) -> InstanceType:
    itype = locked(itype)
    changed = apply_changes(itype, changes, INSTANCE_TYPE_FIELDS)
    save_validated(itype)
    if changed:
        record_event(
            "USER_UPDATE_INSTANCE_TYPE",
            f"Instance type {itype.name} was updated ({', '.join(changed)}).",
            user=user,
            obj=itype,
        )
    return itype


@transaction.atomic(durable=True)
def remove_instance_type(itype: InstanceType, *, user) -> None:
    itype = locked(itype)
    record_event(
        "USER_REMOVE_INSTANCE_TYPE", f"Instance type {itype.name} was removed by {who(user)}.", user=user, obj=itype
    )
    itype.delete()


# Templates --------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_template(
    *,
    user,
    name: str,
    cluster: Cluster | None = None,
    vm: VirtualMachine | None = None,
    base_template: Template | None = None,
    version_name: str = "",
    **shape,
) -> tuple[Template, Job | None]:
    check_fields(Template, shape, SHAPE_FIELDS)
    if vm is not None:
        vm = locked(vm)
        if vm.status != VmStatus.DOWN:
            raise ConflictError(f"VM {vm.name} is '{vm.status}'; a template is made from a VM that is down.")
        cluster = vm.cluster
        shape = {**{f: getattr(vm, f) for f in SHAPE_FIELDS}, **shape}
    if base_template is not None:
        base_template = locked(base_template)
        if base_template.is_blank:
            raise ValidationError({"base_template": "The Blank template has no versions."})
        if base_template.base_template_id:
            base_template = base_template.base_template
        last = base_template.versions.order_by("-version_number").first()
        version = (last.version_number if last else 1) + 1
        if vm is None:
            shape = {**{f: getattr(last or base_template, f) for f in SHAPE_FIELDS}, **shape}
        template = Template(
            name=base_template.name,
            cluster=cluster or base_template.cluster,
            base_template=base_template,
            version_number=version,
            version_name=version_name,
            **shape,
        )
    else:
        template = Template(name=name, cluster=cluster, version_name=version_name, **shape)
    save_validated(template)
    job = None
    if vm is not None:
        from storage.models import Disk

        sources = list(Disk.objects.filter(attachments__vm=vm).order_by("-attachments__bootable", "created_at"))
        if any(d.status != DiskStatus.OK for d in sources):
            raise ConflictError(f"A disk of VM {vm.name} is locked or illegal.")
        set_vm_status(vm, VmStatus.IMAGE_LOCKED)
        copies = []
        for disk in sources:
            copies.append(
                Disk.objects.create(
                    alias=f"{template.name}_{disk.alias}"[:255],
                    storage_domain=disk.storage_domain,
                    provisioned_size=disk.provisioned_size,
                    format=DiskFormat.QCOW2,
                    allocation=DiskAllocation.THIN,
                    template=template,
                    status=DiskStatus.LOCKED,
                    description=f"Copied from {vm.name}",
                )
            )
        _reserve(copies)
        job = create_job(
            "AddVmTemplate",
            f"Creating template {template} from VM {vm.name}",
            user=user,
            obj=template,
            steps=[f"Copy disk {d.alias}" for d in sources] or ["Seal the template"],
        )
        enqueue(
            "compute.tasks.copy_template_disks_task",
            str(job.pk),
            str(template.pk),
            str(vm.pk),
            [[str(s.pk), str(c.pk)] for s, c in zip(sources, copies, strict=True)],
        )
    record_event(
        "USER_ADD_VM_TEMPLATE",
        f"Template {template} was created by {who(user)}" + (f" from VM {vm.name}." if vm else "."),
        user=user,
        obj=template,
        correlation_id=job.correlation_id if job else "",
    )
    return template, job


@transaction.atomic(durable=True)
def update_template(template: Template, *, user, **changes) -> Template:
    template = locked(template)
    if template.is_blank and set(changes) - {"description"}:
        raise ConflictError("Only the description of the Blank template can change.")
    if "name" in changes and template.base_template_id:
        raise ValidationError({"name": "A template version keeps its base template's name."})
    changed = apply_changes(template, changes, TEMPLATE_FIELDS)
    save_validated(template)
    if "name" in changed:
        template.versions.update(name=template.name)
    if changed:
        record_event(
            "USER_UPDATE_VM_TEMPLATE",
            f"Template {template} was updated ({', '.join(changed)}).",
            user=user,
            obj=template,
        )
    return template


@transaction.atomic(durable=True)
def remove_template(template: Template, *, user) -> Job | None:
    template = locked(template)
    if template.is_blank:
        raise ConflictError("The Blank template cannot be removed.")
    if template.vms.exists():
        raise ConflictError(f"Template {template} is used by {template.vms.count()} VM(s); remove them first.")
    if template.versions.exists():
        raise ConflictError(f"Template {template} has versions; remove them first.")
    disks = list(template.disks.all())
    if any(d.overlays.exists() for d in disks):
        raise ConflictError(f"Disks of other VMs are based on template {template}.")
    if any(d.status == DiskStatus.LOCKED for d in disks):
        raise ConflictError(f"Template {template} has locked disks (an operation is running on them).")
    job = _remove_images(disks, user=user, obj=template, description=f"Removing template {template}")
    record_event("USER_REMOVE_VM_TEMPLATE", f"Template {template} was removed by {who(user)}.", user=user, obj=template)
    remove_permissions_on(template)
    template.delete()
    return job


# VMs --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_vm(
    *,
    user,
    cluster: Cluster,
    name: str,
    template: Template | None = None,
    instance_type: InstanceType | None = None,
    clone: bool = False,
    **fields,
) -> tuple[VirtualMachine, Job | None]:
    """A VM in `cluster`, shaped by its template (Blank if none) and instance type. The
    template's disks become thin qcow2 overlays on them, or with `clone` independent copies
    (oVirt's Storage Allocation: Clone); either way a Job makes the images."""
    return _create_vm(
        user=user, cluster=cluster, name=name, template=template, instance_type=instance_type, clone=clone, **fields
    )


@transaction.atomic(durable=True)
def create_own_vm(
    *, user, template: Template, name: str, cluster: Cluster | None = None, clone: bool = False, **fields
) -> tuple[VirtualMachine, Job | None]:
    """A VM user's VM (VM portal; the API for users who are not administrators), owned by
    `user`: they need `template.use` on the template and `vm.create` on the cluster (a
    grant on the template itself covers its own cluster), and the VMs they own, this one
    included, must fit their quota (compute.quota). The cluster defaults to the template's.
    `clone` as for create_vm. Refusals: PermissionDenied (403), ConflictError code
    `quota_exceeded` (409)."""
    from inventory import permissions
    from inventory.choices import ActionGroup

    from .quota import Usage, limits_of, refusal, usage_of

    check_fields(VirtualMachine, fields, OWN_VM_FIELDS)
    cluster = cluster or template.cluster
    if cluster is None:
        raise ValidationError({"cluster": f"Template {template} belongs to no cluster: choose the cluster of the VM."})
    permissions.check(user, ActionGroup.TEMPLATE_USE, template)
    permissions.check(user, ActionGroup.VM_CREATE, template if template.cluster_id == cluster.pk else cluster)
    # One user's creations queue here, so two at once cannot both take the last of the quota.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    vm, job = _create_vm(user=user, cluster=cluster, name=name, template=template, clone=clone, owner=user, **fields)
    disks = sum(a.disk.provisioned_size for a in vm.disk_attachments.select_related("disk"))
    why = refusal(limits_of(user), usage_of(user), Usage(vm.vcpus, vm.memory_mib, disks))
    if why:
        raise ConflictError(why, code="quota_exceeded")
    return vm, job


def _create_vm(
    *,
    user,
    cluster: Cluster,
    name: str,
    template: Template | None = None,
    instance_type: InstanceType | None = None,
    clone: bool = False,
    **fields,
) -> tuple[VirtualMachine, Job | None]:
    check_fields(VirtualMachine, fields, VM_FIELDS - {"instance_type"})
    template = template or Template.objects.get(pk=BLANK_TEMPLATE_ID)
    if not template.is_blank and template.cluster_id and template.cluster.data_center_id != cluster.data_center_id:
        raise ValidationError({"template": f"Template {template} belongs to another data center."})
    pinned = list(fields.pop("pinned_hosts", []) or [])
    values = {f: getattr(template, f) for f in SHAPE_FIELDS}
    if template.is_blank:
        values["description"] = ""
    if instance_type is not None:
        for f in ("vcpus", "memory_mib"):
            if f in fields and fields[f] != getattr(instance_type, f):
                raise ValidationError(
                    {f: f"The instance type {instance_type.name} fixes {f}; leave it out or clear it."}
                )
            values[f] = getattr(instance_type, f)
    values.update(fields)
    values.setdefault("guaranteed_memory_mib", values["memory_mib"])
    vm = VirtualMachine(
        name=name,
        cluster=cluster,
        data_center_id=cluster.data_center_id,
        template=template,
        instance_type=instance_type,
        **values,
    )
    _check_unique_name(vm)
    _check_pinned(vm, pinned)
    save_validated(vm)
    if pinned:
        vm.pinned_hosts.set(pinned)
    job = None
    template_disks = list(template.disks.order_by("created_at")) if not template.is_blank else []
    if template_disks:
        job = _create_disks_from_template(vm, template_disks, user=user, clone=clone)
    cloned = ", its disks cloned" if clone and template_disks else ""
    record_event(
        "USER_ADD_VM",
        f"VM {vm.name} was created by {who(user)} from template {template}{cloned}.",
        user=user,
        obj=vm,
        correlation_id=job.correlation_id if job else "",
    )
    return vm, job


def _create_disks_from_template(vm: VirtualMachine, template_disks, *, user, clone: bool) -> Job:
    """One disk per template disk, on its storage domain, locked until the Job made its image:
    a thin qcow2 overlay on it, or (`clone`) an independent qcow2 copy of it. A clone keeps
    the template as the VM's template until its copies are made (the template cannot be
    removed meanwhile); then the task moves it to Blank, as oVirt does: nothing of the VM
    depends on the template any more."""
    from storage.models import Disk, DiskAttachment

    if any(d.status != DiskStatus.OK for d in template_disks):
        raise ConflictError("A disk of the template is locked or illegal.")
    disks = []
    for number, base in enumerate(template_disks):
        disk = Disk.objects.create(
            alias=f"{vm.name}_Disk{number + 1}",
            storage_domain=base.storage_domain,
            provisioned_size=base.provisioned_size,
            format=DiskFormat.QCOW2,
            allocation=DiskAllocation.THIN,
            backing_disk=None if clone else base,
            status=DiskStatus.LOCKED,
            description=f"Cloned from {base.alias} of template {vm.template}"[:255] if clone else "",
        )
        DiskAttachment.objects.create(vm=vm, disk=disk, bootable=number == 0)
        disks.append(disk)
    _reserve(disks)
    set_vm_status(vm, VmStatus.IMAGE_LOCKED)
    if clone:
        description = f"Creating VM {vm.name} from template {vm.template} (disks cloned)"
        steps = [f"Clone disk {d.alias} from template disk" for d in disks]
    else:
        description = f"Creating VM {vm.name} from template {vm.template}"
        steps = [f"Create disk {d.alias} on template disk" for d in disks]
    job = create_job("AddVmFromTemplate", description, user=user, obj=vm, steps=steps)
    args = [str(job.pk), str(vm.pk)]
    if clone:
        args.append([[str(base.pk), str(disk.pk)] for base, disk in zip(template_disks, disks, strict=True)])
    enqueue("compute.tasks.create_vm_disks_task", *args)
    return job


def _reserve(disks) -> None:
    """Count new disks against their domains' space (storage's rule), domains locked in pk order."""
    from storage.models import StorageDomain
    from storage.services import reserve_space

    domains = {
        d.pk: d
        for d in StorageDomain.objects.select_for_update()
        .filter(pk__in={disk.storage_domain_id for disk in disks})
        .order_by("pk")
    }
    for disk in disks:
        reserve_space(domains[disk.storage_domain_id], disk.provisioned_size, disk.allocation)
        domains[disk.storage_domain_id].refresh_from_db()


def _check_unique_name(vm: VirtualMachine) -> None:
    clash = VirtualMachine.objects.filter(data_center_id=vm.data_center_id, name=vm.name).exclude(pk=vm.pk)
    if clash.exists():
        raise ValidationError({"name": f"A VM named {vm.name} already exists in this data center."})


def _check_pinned(vm: VirtualMachine, hosts) -> None:
    stray = [h.name for h in hosts if h.cluster_id != vm.cluster_id]
    if stray:
        raise ValidationError({"pinned_hosts": f"Hosts outside cluster {vm.cluster.name}: {', '.join(stray)}."})


@transaction.atomic(durable=True)
def update_vm(vm: VirtualMachine, *, user, **changes) -> VirtualMachine:
    vm = locked(vm)
    check_fields(VirtualMachine, changes, VM_FIELDS)
    if vm.status == VmStatus.IMAGE_LOCKED:
        raise ConflictError(f"VM {vm.name} is locked by an operation on its disks.")
    running = vm.status in RUNNING
    pinned = changes.pop("pinned_hosts", None)
    if "instance_type" in changes and changes["instance_type"] is not None:
        itype = changes["instance_type"]
        changes.setdefault("vcpus", itype.vcpus)
        changes.setdefault("memory_mib", itype.memory_mib)
    live = {k: v for k, v in changes.items() if not running or k in LIVE_FIELDS}
    later = {k: v for k, v in changes.items() if running and k not in LIVE_FIELDS and not _same_as_now(vm, k, v)}
    # Validate the whole result, as it will be at the next run.
    future = copy.copy(vm)
    apply_changes(future, {**live, **later}, VM_FIELDS)
    future.full_clean(exclude=["data_center"])
    if pinned is not None:
        _check_pinned(vm, pinned)
    changed = apply_changes(vm, live, VM_FIELDS)
    if "name" in changed:
        _check_unique_name(vm)
    if later:
        pending = dict(vm.next_run_config or {})
        for name, value in later.items():
            pending[name] = str(value.pk) if hasattr(value, "pk") else value
        vm.next_run_config = pending
    if pinned is not None:
        if running:
            vm.next_run_config = {**vm.next_run_config, "pinned_hosts": [str(h.pk) for h in pinned]}
            later["pinned_hosts"] = pinned
        elif {h.pk for h in pinned} != set(vm.pinned_hosts.values_list("pk", flat=True)):
            vm.pinned_hosts.set(pinned)
            changed.append("pinned_hosts")
    save_validated(vm, exclude=["data_center"])
    if changed or later:
        parts = []
        if changed:
            parts.append("applied: " + ", ".join(changed))
        if later:
            parts.append("next run: " + ", ".join(sorted(later)))
        record_event(
            "USER_UPDATE_VM",
            f"VM {vm.name} configuration was updated by {who(user)} ({'; '.join(parts)}).",
            user=user,
            obj=vm,
        )
    return vm


def _same_as_now(vm: VirtualMachine, name: str, value) -> bool:
    """True when `value` is what the VM has now and nothing different waits for the next run."""
    if name in (vm.next_run_config or {}):
        return False
    if name == "instance_type":
        return (value.pk if value is not None else None) == vm.instance_type_id
    return getattr(vm, name) == value


@transaction.atomic(durable=True)
def remove_vm(vm: VirtualMachine, *, user, remove_disks: bool = True) -> Job | None:
    vm = locked(vm)
    if vm.status != VmStatus.DOWN:
        raise ConflictError(f"VM {vm.name} is '{vm.status}'; only a VM that is down can be removed.")
    _check_not_locked(vm)
    disks = []
    if remove_disks:
        from storage.models import Disk

        disks = list(
            Disk.objects.filter(attachments__vm=vm)
            .exclude(Q(shareable=True) & Q(attachments__vm__isnull=False) & ~Q(attachments__vm=vm))
            .distinct()
        )
        disks = [d for d in disks if not d.overlays.exists()]
    job = _remove_images(disks, user=user, obj=vm, description=f"Removing VM {vm.name}")
    record_event(
        "USER_REMOVE_VM",
        f"VM {vm.name} was removed by {who(user)}" + (f" with {len(disks)} disk(s)." if disks else "."),
        user=user,
        obj=vm,
        correlation_id=job.correlation_id if job else "",
    )
    remove_permissions_on(vm)
    vm.delete()
    return job


def _remove_images(disks, *, user, obj, description: str) -> Job | None:
    """Delete disk rows now (giving back their space) and their images through a Job."""
    if not disks:
        return None
    from storage.tasks import image_spec

    images = [{**image_spec(d), "data_center_id": str(d.storage_domain.data_center_id or "")} for d in disks]
    from storage.services import release_space

    for disk in sorted(disks, key=lambda d: d.storage_domain_id):
        release_space(disk.storage_domain, disk.provisioned_size, disk.allocation)
    for disk in disks:
        disk.attachments.all().delete()
        disk.delete()
    job = create_job("RemoveDisk", description, user=user, obj=obj, steps=[f"Remove image {i['id']}" for i in images])
    enqueue("compute.tasks.remove_images_task", str(job.pk), images)
    return job


def _check_not_locked(vm: VirtualMachine) -> None:
    active = Job.objects.filter(vm_id=vm.pk, status=JobStatus.STARTED).exclude(action_type="RemoveDisk").first()
    if active is not None:
        raise ConflictError(f"VM {vm.name} is locked by a running job: {active.description}.", code="locked")


# VM actions -------------------------------------------------------------------------------


def _vm_action(vm: VirtualMachine, action: str, *, user, description: str, steps: list[str]) -> Job:
    vm = locked(vm)
    check_action(action, vm.status)
    _check_not_locked(vm)
    host = False
    transitional = {
        "start": VmStatus.WAIT_FOR_LAUNCH,
        "shutdown": VmStatus.POWERING_DOWN,
        "reboot": VmStatus.REBOOT_IN_PROGRESS,
    }.get(action)
    if action == "start" or (action == "resume" and vm.status == VmStatus.SUSPENDED):
        if vm.disk_attachments.filter(disk__status=DiskStatus.LOCKED).exists():
            raise ConflictError(f"VM {vm.name} has locked disks.")
        host = choose_host(vm)
        transitional = VmStatus.WAIT_FOR_LAUNCH
    elif vm.run_on_host_id and action != "stop":
        host_status = vm.run_on_host.status
        if host_status not in (HostStatus.UP, HostStatus.PREPARING_FOR_MAINTENANCE):
            raise ConflictError(f"Host {vm.run_on_host.name} of VM {vm.name} is '{host_status}'.")
    if transitional:
        set_vm_status(vm, transitional, host=host)
    job = create_job(
        VM_ACTION_TYPES[action],
        description.format(vm=vm.name, host=host.name if host else ""),
        user=user,
        obj=vm,
        steps=steps,
    )
    record_event(
        f"USER_{action.upper()}_VM",
        f"{action.capitalize()} of VM {vm.name} was initiated by {who(user)}"
        + (f" on host {host.name}." if host else "."),
        user=user,
        obj=vm,
        correlation_id=job.correlation_id,
    )
    enqueue(VM_TASK, str(job.pk), str(vm.pk), action)
    return job


@transaction.atomic(durable=True)
def start_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(
        vm,
        "start",
        user=user,
        description="Launching VM {vm} on host {host}",
        steps=["Create the VM on the host", "Wait for the VM to come up"],
    )


@transaction.atomic(durable=True)
def shutdown_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(
        vm,
        "shutdown",
        user=user,
        description="Shutting down VM {vm}",
        steps=["Ask the guest to shut down", "Wait for the VM to go down"],
    )


@transaction.atomic(durable=True)
def stop_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(vm, "stop", user=user, description="Powering off VM {vm}", steps=["Destroy the VM process"])


@transaction.atomic(durable=True)
def reboot_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(vm, "reboot", user=user, description="Rebooting VM {vm}", steps=["Reboot the guest"])


@transaction.atomic(durable=True)
def suspend_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(
        vm,
        "suspend",
        user=user,
        description="Suspending VM {vm}",
        steps=["Save the VM's memory to storage", "Stop the VM process"],
    )


@transaction.atomic(durable=True)
def resume_vm(vm: VirtualMachine, *, user) -> Job:
    return _vm_action(vm, "resume", user=user, description="Resuming VM {vm}", steps=["Resume the VM"])


# Live migration -------------------------------------------------------------------------------

MIGRATE_TASK = "compute.tasks.migrate_vm_task"
MIGRATION_STEPS = ["Wait for a migration slot", "Migrate the VM's memory", "Confirm on the destination"]


def migration_cancel_key(job_id) -> str:
    return f"migration-cancel:{job_id}"


@transaction.atomic(durable=True)
def migrate_vm(vm: VirtualMachine, *, user, target_host: Host | None = None, reason: str = "") -> Job:
    """Live-migrate a running VM to `target_host` or to the host the scheduler picks.

    The target is chosen (or checked against every filter) now and its memory reserved
    (`migrating_to_host`); the task waits for a slot under the cluster's per-host limit,
    drives the agent's peer-to-peer migration and streams its progress into the Job."""
    return start_migration(vm, user=user, target_host=target_host, reason=reason, mode=MANUAL)


def start_migration(
    vm: VirtualMachine,
    *,
    user,
    target_host: Host | None = None,
    reason: str = "",
    mode: str = AUTOMATIC,
) -> Job:
    """`migrate_vm` inside the caller's transaction (maintenance, the balancer, the enforcer)."""
    vm = VirtualMachine.objects.select_for_update(of=("self",)).select_related("cluster", "run_on_host").get(pk=vm.pk)
    if vm.status != VmStatus.UP:
        raise ConflictError(
            f"Cannot migrate VM {vm.name}: its status is '{vm.status}' (only a VM that is up can migrate).",
            code="illegal_state",
        )
    if vm.external:
        raise ConflictError(f"Cannot migrate VM {vm.name}: it is an external VM the engine did not start.")
    _check_not_locked(vm)
    source = vm.run_on_host
    if source is None or source.status not in (HostStatus.UP, HostStatus.PREPARING_FOR_MAINTENANCE):
        raise ConflictError(f"Cannot migrate VM {vm.name}: its host is '{source.status if source else 'unknown'}'.")
    local = (
        vm.disk_attachments.filter(active=True, disk__storage_domain__shared=False)
        .values_list("disk__storage_domain__name", flat=True)
        .first()
    )
    if local:
        raise ConflictError(
            f"Cannot migrate VM {vm.name}: a disk of it is on storage domain {local}, which is not shared "
            "(live migration needs its disks on storage both hosts see)."
        )
    target = choose_migration_target(vm, target_host, mode=mode)
    vm.migrating_to_host = target
    vm.save(update_fields=["migrating_to_host", "updated_at"])
    job = create_job(
        "MigrateVm",
        f"Migrating VM {vm.name} from {source.name} to {target.name}",
        user=user,
        obj=vm,
        steps=MIGRATION_STEPS,
    )
    record_event(
        "VM_MIGRATION_START" if mode == MANUAL else "VM_MIGRATION_START_SYSTEM_INITIATED",
        f"Migration of VM {vm.name} from host {source.name} to host {target.name} was initiated by {who(user)}"
        + (f" ({reason})." if reason else "."),
        user=user,
        obj=vm,
        correlation_id=job.correlation_id,
    )
    enqueue(MIGRATE_TASK, str(job.pk), str(vm.pk))
    return job


def balance_cluster(cluster: Cluster, *, now=None) -> list[Job]:
    """One round of the periodic balancer for a cluster: first the affinity enforcer (a VM
    breaking an enforcing group moves), else one balancing pass of the cluster's policy. At
    most one migration a round, none while one of the cluster's migrations runs; each starts
    with an audit event giving the reason. Hysteresis (hold-off after a move, a minimum
    gain) lives in compute.scheduling."""
    from .scheduling import Snapshot, balance, enforce_affinity

    if VirtualMachine.objects.filter(cluster_id=cluster.pk, migrating_to_host__isnull=False).exists():
        return []
    facts, hosts = cluster_facts(cluster, with_cpu=True)
    snap = Snapshot(facts)
    now = now or timezone.now()
    kind, result = "affinity enforcement", enforce_affinity(snap, now=now, limit=1)
    if not result.migrations:
        kind, result = "load balancing", balance(snap, now=now, limit=1)
    jobs = []
    for move in result.migrations:
        vm = VirtualMachine.objects.filter(pk=move.vm_id).first()
        if vm is None:
            continue
        try:
            with transaction.atomic():
                jobs.append(
                    start_migration(
                        vm, user=None, target_host=hosts[move.target_host_id], reason=f"{kind}: {move.reason}"
                    )
                )
        except ConflictError as exc:
            record_event(
                "VM_BALANCING_MIGRATION_REFUSED",
                f"The {kind} of cluster {cluster.name} wanted to move VM {move.vm_name} to host "
                f"{move.target_host_name} ({move.reason}), but: {exc.message}",
                obj=vm,
                severity=EventSeverity.WARNING,
            )
    return jobs


@transaction.atomic(durable=True)
def cancel_migration(vm: VirtualMachine, *, user) -> Job:
    """Ask the VM's running migration to stop; the VM stays on its source host."""
    vm = locked(vm)
    job = Job.objects.filter(vm_id=vm.pk, action_type="MigrateVm", status=JobStatus.STARTED).first()
    if vm.migrating_to_host_id is None or job is None:
        raise ConflictError(f"VM {vm.name} is not migrating.", code="illegal_state")
    transaction.on_commit(lambda: cache.set(migration_cancel_key(job.pk), who(user), timeout=3600))
    record_event(
        "VM_MIGRATION_CANCEL",
        f"Cancellation of the migration of VM {vm.name} was requested by {who(user)}.",
        user=user,
        obj=vm,
        correlation_id=job.correlation_id,
    )
    return job


# Snapshots --------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_snapshot(vm: VirtualMachine, *, user, description: str, with_memory: bool = False) -> tuple[Snapshot, Job]:
    vm = locked(vm)
    if vm.status not in (VmStatus.DOWN, VmStatus.UP, VmStatus.PAUSED):
        raise ConflictError(f"VM {vm.name} is '{vm.status}'; snapshots are taken of a VM that is down, up or paused.")
    if with_memory and vm.status == VmStatus.DOWN:
        raise ValidationError({"with_memory": "A VM that is down has no memory to save."})
    _check_not_locked(vm)
    snapshot = save_validated(
        Snapshot(vm=vm, description=description, with_memory=with_memory, status=SnapshotStatus.LOCKED)
    )
    job = create_job(
        "CreateSnapshot",
        f"Creating snapshot '{description}' of VM {vm.name}",
        user=user,
        obj=vm,
        steps=["Snapshot the disks" + (" and memory" if with_memory else "")],
    )
    record_event(
        "USER_CREATE_SNAPSHOT",
        f"Snapshot '{description}' creation for VM {vm.name} was initiated by {who(user)}.",
        user=user,
        obj=vm,
        correlation_id=job.correlation_id,
    )
    enqueue("compute.tasks.snapshot_task", str(job.pk), str(snapshot.pk), "create")
    return snapshot, job


def _snapshot_operation(
    snapshot: Snapshot, operation: str, *, user, action_type: str, description: str, step: str, code: str, message: str
) -> Job:
    """Lock an ok snapshot (and its VM) and queue `operation` on it as a Job."""
    snapshot = locked(snapshot)
    vm = locked(snapshot.vm)
    if operation == "revert" and vm.status != VmStatus.DOWN:
        raise ConflictError(f"VM {vm.name} is '{vm.status}'; shut it down before reverting to a snapshot.")
    if snapshot.status != SnapshotStatus.OK:
        raise ConflictError(f"Snapshot '{snapshot.description}' is '{snapshot.status}'.")
    _check_not_locked(vm)
    snapshot.status = SnapshotStatus.LOCKED
    snapshot.save(update_fields=["status", "updated_at"])
    if operation == "revert":
        set_vm_status(vm, VmStatus.IMAGE_LOCKED)
    names = {"vm": vm.name, "snapshot": snapshot.description, "user": who(user)}
    job = create_job(action_type, description.format(**names), user=user, obj=vm, steps=[step])
    record_event(code, message.format(**names), user=user, obj=vm, correlation_id=job.correlation_id)
    enqueue("compute.tasks.snapshot_task", str(job.pk), str(snapshot.pk), operation)
    return job


@transaction.atomic(durable=True)
def revert_snapshot(snapshot: Snapshot, *, user) -> Job:
    return _snapshot_operation(
        snapshot,
        "revert",
        user=user,
        action_type="RestoreAllSnapshots",
        description="Reverting VM {vm} to snapshot '{snapshot}'",
        step="Revert the disks to the snapshot",
        code="USER_RESTORE_FROM_SNAPSHOT",
        message="VM {vm} is being reverted to snapshot '{snapshot}' by {user}.",
    )


@transaction.atomic(durable=True)
def remove_snapshot(snapshot: Snapshot, *, user) -> Job:
    return _snapshot_operation(
        snapshot,
        "remove",
        user=user,
        action_type="RemoveSnapshot",
        description="Removing snapshot '{snapshot}' of VM {vm}",
        step="Merge and remove the snapshot",
        code="USER_REMOVE_SNAPSHOT",
        message="Snapshot '{snapshot}' deletion for VM {vm} was initiated by {user}.",
    )


# Simulated inventory ------------------------------------------------------------------------


@transaction.atomic(durable=True)
def add_simulated_vms(*, user, hosts: list[Host], per_host: int, vcpus: int = 1, memory_mib: int = 512) -> int:
    """VMs running on hosts served by a simulator (`inventory.services.add_simulated_hosts`),
    in bulk and idempotently: VM `<host>-vm-NN` (NN = 1 .. per_host) of each host is created
    Up on that host unless its data center has a VM of that name already. No Job, disks or
    NICs: the simulator starts with these VMs running (the engine's manifest lists them).
    One audit Event for the whole set; returns how many VMs were created."""
    if per_host < 0:
        raise ValidationError({"per_host": "Give zero or more VMs per host."})
    not_simulated = sorted(h.name for h in hosts if not h.simulated)
    if not_simulated:
        raise ConflictError(f"Host(s) {', '.join(not_simulated[:5])} are not simulated: VMs there start through a Job.")
    clusters = {c.pk: c for c in Cluster.objects.filter(pk__in={h.cluster_id for h in hosts})}
    width = max(2, len(str(per_host)))
    wanted = {
        (clusters[h.cluster_id].data_center_id, f"{h.name}-vm-{j:0{width}d}"): h
        for h in hosts
        for j in range(1, per_host + 1)
    }
    existing = set(
        VirtualMachine.objects.filter(
            data_center_id__in={dc for dc, _ in wanted}, name__in={name for _, name in wanted}
        ).values_list("data_center_id", "name")
    )
    now = timezone.now()
    checked: set = set()
    created = []
    for (dc_id, name), host in wanted.items():
        if (dc_id, name) in existing:
            continue
        vm = VirtualMachine(
            name=name,
            cluster=clusters[host.cluster_id],
            data_center_id=dc_id,
            template_id=BLANK_TEMPLATE_ID,
            description="Simulated VM (no hypervisor)",
            vcpus=vcpus,
            memory_mib=memory_mib,
            guaranteed_memory_mib=memory_mib,
            status=VmStatus.UP,
            status_changed_at=now,
            run_on_host=host,
        )
        if host.cluster_id not in checked:  # the same shape everywhere: one check per cluster
            vm.full_clean(
                exclude=["template", "cluster", "run_on_host"], validate_unique=False, validate_constraints=False
            )
            checked.add(host.cluster_id)
        created.append(vm)
    VirtualMachine.objects.bulk_create(created, batch_size=2000)
    if created:
        record_event(
            "USER_ADD_VM",
            f"{len(created)} simulated VM(s) ({per_host} per host, {vcpus} vCPU, {memory_mib} MiB) were added "
            f"running on {len(hosts)} simulated host(s) by {who(user)}.",
            user=user,
            obj=clusters[hosts[0].cluster_id] if len(clusters) == 1 else None,
        )
    return len(created)


# Consoles -----------------------------------------------------------------------------------

CONSOLE_KINDS = {"serial": "serial console", "vnc": "VNC console"}
CONSOLE_TICKET_TTL = 30  # seconds
# Where the qemu process runs (or is about to): the console can be reached through the host agent.
CONSOLE_STATUSES = RUNNING - {VmStatus.NOT_RESPONDING, VmStatus.UNKNOWN}


def console_ticket_key(ticket: str) -> str:
    return f"console-ticket:{ticket}"


def may_open_console(user, vm: VirtualMachine) -> bool:
    """The one check of who may open a VM's console (the ticket, the page, the websocket):
    administrators, and whoever the object permissions grant `vm.console` on the VM
    (`inventory.permissions`, when that module is there)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    try:
        from inventory.permissions import has_permission
    except ModuleNotFoundError as exc:
        if exc.name != "inventory.permissions":
            raise
        return False
    return has_permission(user, "vm.console", vm)


@transaction.atomic(durable=True)
def console_ticket(vm: VirtualMachine, *, user, kind: str = "serial") -> dict:
    """A one-time ticket to open the VM's serial or VNC console (oVirt's ticket action):
    a random token kept in the cache for CONSOLE_TICKET_TTL seconds, bound to the user, the
    VM and the kind, and used up by the first websocket that presents it (portals/console.py).
    The VM must run on a host whose agent the engine reaches; an audit Event records who
    asked."""
    if kind not in CONSOLE_KINDS:
        raise ValidationError({"kind": f"Choose one of: {', '.join(CONSOLE_KINDS)}."})
    if not may_open_console(user, vm):
        raise PermissionDenied("You may not open the console of this VM.")
    vm = VirtualMachine.objects.select_related("run_on_host").get(pk=vm.pk)
    check_console(vm, kind)
    ticket = secrets.token_urlsafe(32)
    record_event(
        "VM_SET_TICKET",
        f"User {who(user)} initiated a {CONSOLE_KINDS[kind]} session for VM {vm.name}.",
        user=user,
        obj=vm,
    )
    grant = {"user_id": user.pk, "vm_id": str(vm.pk), "kind": kind}
    cache.set(console_ticket_key(ticket), grant, timeout=CONSOLE_TICKET_TTL)
    return {"ticket": ticket, "kind": kind, "vm_id": str(vm.pk), "expires_in": CONSOLE_TICKET_TTL}


def check_console(vm: VirtualMachine, kind: str) -> Host:
    """The host whose agent serves the VM's console of this kind now, or ConflictError why
    there is none (`vm.run_on_host` loaded)."""
    host = vm.run_on_host
    if vm.status not in CONSOLE_STATUSES or host is None:
        raise ConflictError(
            f"VM {vm.name} is {vm.get_status_display().lower()}: a console opens only while it runs on a host.",
            code="vm_not_running",
        )
    if kind == "vnc" and vm.console_type != ConsoleType.VNC:
        raise ConflictError(
            f"VM {vm.name} has no VNC display (its console is {vm.get_console_type_display()}); "
            "use its serial console.",
            code="no_vnc",
        )
    if host.simulated and not host.cert_fingerprint:
        raise ConflictError(
            f"VM {vm.name} runs on {host.name}, a host simulated inside the engine with no agent: "
            "it has no console to open.",
            code="no_console",
        )
    return host


def claim_console_ticket(ticket: str) -> dict | None:
    """The grant of a console ticket, used up: None when it is unknown, expired or was
    presented before (by anyone: a ticket seen twice is burnt)."""
    if not ticket or len(ticket) > 128:
        return None
    key = console_ticket_key(ticket)
    grant = cache.get(key)
    if grant is None or not cache.delete(key):  # of two racing claims only one deletes it
        return None
    return grant


# Affinity groups --------------------------------------------------------------------------

AFFINITY_GROUP_FIELDS = {
    *("name", "description", "priority", "vm_rule", "vm_enforcing", "host_rule", "host_enforcing"),
    *("vms", "hosts"),
}


def _check_affinity_group(group, vms: list, hosts: list) -> None:
    """The group's own rules (full_clean) and those across objects, as field errors together: a
    name unique in its cluster, VMs and hosts of its cluster only, hosts for a host rule."""
    from .choices import AffinityRule
    from .models import AffinityGroup

    errors: dict[str, list[str]] = {}
    try:
        group.full_clean(exclude=["cluster"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    cluster = group.cluster
    if group.name and AffinityGroup.objects.filter(cluster=cluster, name=group.name).exclude(pk=group.pk).exists():
        errors.setdefault("name", []).append(
            f"An affinity group named {group.name} already exists in cluster {cluster.name}."
        )
    stray_vms = sorted(vm.name for vm in vms if vm.cluster_id != cluster.pk)
    if stray_vms:
        errors.setdefault("vms", []).append(f"VMs outside cluster {cluster.name}: {', '.join(stray_vms)}.")
    stray_hosts = sorted(host.name for host in hosts if host.cluster_id != cluster.pk)
    if stray_hosts:
        errors.setdefault("hosts", []).append(f"Hosts outside cluster {cluster.name}: {', '.join(stray_hosts)}.")
    if group.host_rule != AffinityRule.DISABLED and not hosts:
        errors.setdefault("hosts", []).append("A group with a host rule needs at least one host.")
    if errors:
        raise ValidationError(errors)


@transaction.atomic(durable=True)
def create_affinity_group(*, user, cluster: Cluster, **fields):
    """oVirt's affinity group in `cluster`: its VMs together or apart (vm_rule), on or off its
    hosts (host_rule). The audit Event is the cluster's, naming the group (as oVirt's)."""
    from .models import AffinityGroup

    check_fields(AffinityGroup, fields, AFFINITY_GROUP_FIELDS)
    vms, hosts = list(fields.pop("vms", ())), list(fields.pop("hosts", ()))
    group = AffinityGroup(cluster=cluster, **fields)
    _check_affinity_group(group, vms, hosts)
    save_validated(group)
    group.vms.set(vms)
    group.hosts.set(hosts)
    record_event(
        "USER_ADDED_AFFINITY_GROUP",
        f"Affinity group {group.name} was added to cluster {cluster.name} by {who(user)}.",
        user=user,
        obj=cluster,
    )
    return group


@transaction.atomic(durable=True)
def update_affinity_group(group, *, user, **changes):
    """Change a group's rules or members (`vms` / `hosts`: the whole new list); its cluster stays."""
    group = locked(group)
    check_fields(type(group), changes, AFFINITY_GROUP_FIELDS)
    vms, hosts = changes.pop("vms", None), changes.pop("hosts", None)
    vms = list(vms) if vms is not None else None
    hosts = list(hosts) if hosts is not None else None
    changed = apply_changes(group, changes, AFFINITY_GROUP_FIELDS)
    _check_affinity_group(
        group,
        vms if vms is not None else list(group.vms.all()),
        hosts if hosts is not None else list(group.hosts.all()),
    )
    save_validated(group)
    for name, members in (("vms", vms), ("hosts", hosts)):
        related = getattr(group, name)
        if members is not None and {m.pk for m in members} != set(related.values_list("pk", flat=True)):
            related.set(members)
            changed.append(name)
    if changed:
        record_event(
            "USER_UPDATED_AFFINITY_GROUP",
            f"Affinity group {group.name} of cluster {group.cluster.name} was updated by {who(user)} "
            f"({', '.join(changed)}).",
            user=user,
            obj=group.cluster,
        )
    return group


@transaction.atomic(durable=True)
def remove_affinity_group(group, *, user) -> None:
    group = locked(group)
    cluster = group.cluster
    record_event(
        "USER_REMOVED_AFFINITY_GROUP",
        f"Affinity group {group.name} was removed from cluster {cluster.name} by {who(user)}.",
        user=user,
        obj=cluster,
    )
    group.delete()
