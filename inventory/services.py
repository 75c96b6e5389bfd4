"""Write operations on data centers, clusters and hosts.

Each function validates, writes in one transaction, records an audit Event and, for
long work, opens a Job and enqueues its Celery task on commit.
"""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .audit import create_job, plain_payload, record_event
from .choices import EventSeverity, HostStatus
from .exceptions import ConflictError
from .models import Cluster, DataCenter, Host, Job, Permission, Quota
from .publish import publish
from .servicekit import apply_changes, check_fields, locked, save_validated
from .statemachine import HOST_STATE_MACHINE

logger = logging.getLogger(__name__)

MANAGEMENT_NETWORK = "ovirtmgmt"

DATA_CENTER_FIELDS = {"name", "description", "storage_type", "compatibility_version"}
CLUSTER_FIELDS = {
    "name",
    "description",
    "cpu_type",
    "memory_overcommit_percent",
    "scheduling_policy",
    "scheduling_properties",
    "migration_policy",
    "migration_max_concurrent",
    "migration_bandwidth_mibps",
    "migration_compression",
    "ha_reservation",
    "fencing_enabled",
    "fencing_skip_if_sd_active",
    "fencing_skip_if_connectivity_broken",
    "fencing_connectivity_threshold",
    "mac_pool",
    "max_vm_vcpus",
    "max_vm_memory_mib",
}
# What a host's agent reports about its hardware (the deploy task copies these too).
CAPABILITY_FIELDS = ("cpu_model", "cpu_sockets", "cpu_cores", "cpu_threads", "memory_mib")
HOST_FIELDS = {
    "name",
    "description",
    "address",
    "agent_port",
    "pm_enabled",
    "pm_type",
    "pm_address",
    "pm_username",
    "pm_password",
}


# Data centers -----------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_data_center(*, user, **fields) -> DataCenter:
    from networking.services import create_management_network

    check_fields(DataCenter, fields, DATA_CENTER_FIELDS)
    dc = save_validated(DataCenter(**fields))
    create_management_network(dc)
    record_event("USER_ADD_STORAGE_POOL", f"Data Center {dc.name} was added by {who(user)}.", user=user, obj=dc)
    return dc


@transaction.atomic(durable=True)
def update_data_center(dc: DataCenter, *, user, **changes) -> DataCenter:
    dc = locked(dc)
    changed = apply_changes(dc, changes, DATA_CENTER_FIELDS)
    if "storage_type" in changed and dc.clusters.exists():
        raise ValidationError({"storage_type": "The storage type cannot change once the data center has clusters."})
    save_validated(dc)
    if changed:
        record_event(
            "USER_UPDATE_STORAGE_POOL", f"Data Center {dc.name} was updated ({', '.join(changed)}).", user=user, obj=dc
        )
    return dc


@transaction.atomic(durable=True)
def remove_data_center(dc: DataCenter, *, user) -> None:
    dc = locked(dc)
    if dc.clusters.exists():
        raise ConflictError(f"Data Center {dc.name} still has clusters; remove them first.")
    if dc.storage_domains.exists():
        raise ConflictError(f"Data Center {dc.name} still has storage domains; detach them first.")
    from networking.models import LogicalNetwork, VnicProfile

    VnicProfile.objects.filter(network__data_center=dc).delete()
    LogicalNetwork.objects.filter(data_center=dc).delete()
    record_event("USER_REMOVE_STORAGE_POOL", f"Data Center {dc.name} was removed by {who(user)}.", user=user, obj=dc)
    remove_permissions_on(dc)
    dc.delete()


# Clusters ---------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_cluster(*, user, data_center: DataCenter, **fields) -> Cluster:
    from networking.models import ClusterNetwork, LogicalNetwork, MacPool

    check_fields(Cluster, fields, CLUSTER_FIELDS)
    if "mac_pool" not in fields or fields["mac_pool"] is None:
        fields["mac_pool"] = MacPool.objects.filter(name="Default").first()
        if fields["mac_pool"] is None:
            raise ValidationError({"mac_pool": "Choose a MAC pool (there is no Default pool)."})
    cluster = save_validated(Cluster(data_center=data_center, **fields))
    management = LogicalNetwork.objects.filter(data_center=data_center, is_management=True).first()
    if management is not None:
        ClusterNetwork.objects.create(cluster=cluster, network=management, required=True)
    record_event(
        "USER_ADD_CLUSTER",
        f"Cluster {cluster.name} was added to {data_center.name} by {who(user)}.",
        user=user,
        obj=cluster,
    )
    return cluster


@transaction.atomic(durable=True)
def update_cluster(cluster: Cluster, *, user, **changes) -> Cluster:
    cluster = locked(cluster)
    changed = apply_changes(cluster, changes, CLUSTER_FIELDS)
    if {"max_vm_vcpus", "max_vm_memory_mib"} & set(changed):
        too_big = (
            cluster.vms.filter(vcpus__gt=cluster.max_vm_vcpus).count()
            + cluster.vms.filter(memory_mib__gt=cluster.max_vm_memory_mib).count()
        )
        if too_big:
            raise ValidationError({"max_vm_vcpus": "Existing VMs of the cluster exceed the new limits."})
    save_validated(cluster)
    if changed:
        record_event(
            "USER_UPDATE_CLUSTER", f"Cluster {cluster.name} was updated ({', '.join(changed)}).", user=user, obj=cluster
        )
    return cluster


@transaction.atomic(durable=True)
def remove_cluster(cluster: Cluster, *, user) -> None:
    cluster = locked(cluster)
    if cluster.hosts.exists():
        raise ConflictError(f"Cluster {cluster.name} still has hosts; remove them first.")
    if cluster.vms.exists():
        raise ConflictError(f"Cluster {cluster.name} still has VMs; remove them first.")
    if cluster.templates.exists():
        raise ConflictError(f"Cluster {cluster.name} still has templates; remove them first.")
    record_event("USER_REMOVE_CLUSTER", f"Cluster {cluster.name} was removed by {who(user)}.", user=user, obj=cluster)
    remove_permissions_on(cluster)
    cluster.delete()


# Hosts ------------------------------------------------------------------------------------


# What a host's status message carries (`host.<id>` and `cluster.<id>` groups), as
# HostSerializer renders those fields (inventory/tests/test_payloads.py).
HOST_LIVE_FIELDS = (
    "id", "name", "cluster", "status", "status_detail", "cpu_threads", "memory_mib", "is_spm", "updated_at",
)  # fmt: skip


def host_payload(host: Host) -> dict:
    return plain_payload(host, HOST_LIVE_FIELDS)


def set_host_status(host: Host, status: str, *, detail: str = "") -> bool:
    """Move a (locked) host to `status` through the state machine. False if already there.
    Subscribers of the host and of its cluster get its new state after commit, with the
    status it had before (`previous`)."""
    if host.status == status:
        return False
    HOST_STATE_MACHINE.check(host.status, status)
    previous = {"status": host.status}
    host.status = status
    host.status_detail = detail
    host.save(update_fields=["status", "status_detail", "updated_at"])
    payload = host_payload(host)
    publish(f"host.{host.pk}", "host.status", payload, previous=previous)
    publish(f"cluster.{host.cluster_id}", "host.status", payload, previous=previous)
    return True


# The host deploy's steps (deploy_host_task), for adding a host and for reinstalling one.
DEPLOY_STEPS = (
    "Issue the host's certificate",
    "Install and start the host agent",
    "Connect to the host agent",
    "Check host capabilities",
    "Activate the host",
)


@transaction.atomic(durable=True)
def add_host(*, user, cluster: Cluster, simulated: bool = False, **fields) -> tuple[Host, Job]:
    check_fields(Host, fields, HOST_FIELDS)
    host = save_validated(Host(cluster=cluster, simulated=simulated, status=HostStatus.INSTALLING, **fields))
    job = create_job(
        "AddVds",
        f"Adding new host {host.name} to cluster {cluster.name}",
        user=user,
        obj=host,
        steps=DEPLOY_STEPS,
    )
    record_event(
        "USER_ADD_VDS",
        f"Host {host.name} was added to cluster {cluster.name} by {who(user)}"
        + (" (simulated host)." if simulated else "."),
        user=user,
        obj=host,
        correlation_id=job.correlation_id,
    )
    _enqueue("inventory.tasks.deploy_host_task", job, host)
    return host, job


@transaction.atomic(durable=True)
def add_simulated_hosts(
    *, user, cluster: Cluster, hosts: list[tuple[str, int]], address: str = "127.0.0.1"
) -> tuple[list[Host], int]:
    """Hosts served by a simulator process (`python -m hostagent simulate`), in bulk and
    idempotently: each (name, agent port) that is missing is created simulated and Up at
    `address`, with the hardware its simulated driver reports; each host without a valid
    certificate gets one from the engine CA (common name its id: it pushes to the ingest
    listener and serves the engine's calls with it, over mutual TLS like any host). Hosts
    that exist keep their cluster, address and port. One audit Event for the whole set.
    Returns the hosts in the order asked and how many were created."""
    from hostagent.agent.drivers.sim_driver import simulated_hardware

    from .certs import host_certificate_valid, issue_host_certificates

    names = [name for name, _ in hosts]
    if len(set(names)) != len(names):
        raise ValidationError({"name": "Each simulated host needs a name of its own."})
    existing = {h.name: h for h in Host.objects.select_for_update().filter(name__in=names).order_by("pk")}
    real = sorted(name for name, host in existing.items() if not host.simulated)
    if real:
        raise ConflictError(f"Host(s) {', '.join(real[:5])} exist and are not simulated; choose other names.")
    wanted_ports = {port: name for name, port in hosts if name not in existing}
    taken = Host.objects.filter(address=address, agent_port__in=list(wanted_ports)).exclude(name__in=names)
    clash = taken.order_by("agent_port").first()
    if clash is not None:
        raise ValidationError(
            {"agent_port": f"Port {clash.agent_port} of {address} is host {clash.name}'s; choose another port base."}
        )
    now = timezone.now()
    created = []
    for name, port in hosts:
        if name in existing:
            continue
        host = Host(
            cluster=cluster,
            name=name,
            address=address,
            agent_port=port,
            simulated=True,
            status=HostStatus.UP,
            description="Simulated host served by `python -m hostagent simulate` (no hypervisor)",
            last_heartbeat=now,
            **{k: v for k, v in simulated_hardware(name).items() if k in CAPABILITY_FIELDS},
        )
        host.full_clean(exclude=["cluster"], validate_unique=False, validate_constraints=False)
        created.append(host)
    Host.objects.bulk_create(created, batch_size=500)
    by_name = {**existing, **{h.name: h for h in created}}
    ordered = [by_name[name] for name in names]
    issue_host_certificates([h for h in ordered if not host_certificate_valid(h)])
    if created:
        record_event(
            "USER_ADD_VDS",
            f"{len(created)} simulated host(s) ({created[0].name} ... {created[-1].name}) were added to cluster "
            f"{cluster.name} by {who(user)}, to be served by a simulator process.",
            user=user,
            obj=cluster,
        )
    return ordered, len(created)


@transaction.atomic(durable=True)
def renew_host_certificate(host: Host, *, user) -> Job:
    """Reissue the host agent's certificate before it expires (the beat calls this too)."""
    host = locked(host)
    if host.simulated:
        raise ConflictError(f"Host {host.name} is simulated in-process: it has no certificate.")
    if host.status in (HostStatus.INSTALLING, HostStatus.INSTALL_FAILED):
        raise ConflictError(f"Host {host.name} is '{host.status}'; reinstall it instead.")
    job = create_job(
        "RenewHostCertificate",
        f"Renewing the certificate of host {host.name}",
        user=user,
        obj=host,
        steps=["Issue a new certificate", "Install it and restart the agent", "Connect to the host agent"],
    )
    record_event(
        "VDS_CERTIFICATE_RENEWAL",
        f"Renewal of the certificate of host {host.name} was started by {who(user)}"
        + (f" (it expires {host.cert_expires_at:%Y-%m-%d})." if host.cert_expires_at else "."),
        user=user,
        obj=host,
        correlation_id=job.correlation_id,
    )
    _enqueue("inventory.tasks.renew_host_certificate_task", job, host)
    return job


@transaction.atomic(durable=True)
def update_host(host: Host, *, user, **changes) -> Host:
    host = locked(host)
    changed = apply_changes(host, changes, HOST_FIELDS)
    if {"address", "agent_port"} & set(changed) and host.status not in (
        HostStatus.MAINTENANCE,
        HostStatus.INSTALL_FAILED,
    ):
        raise ConflictError("Put the host in maintenance before changing its address or agent port.")
    save_validated(host)
    if changed:
        record_event("USER_UPDATE_VDS", f"Host {host.name} was updated ({', '.join(changed)}).", user=user, obj=host)
    return host


REINSTALLABLE = (
    HostStatus.MAINTENANCE,
    HostStatus.INSTALL_FAILED,
    HostStatus.NON_OPERATIONAL,
    HostStatus.NON_RESPONSIVE,
    HostStatus.DOWN,
)


@transaction.atomic(durable=True)
def reinstall_host(host: Host, *, user, agent_gone: str = "") -> Job:
    """oVirt's Reinstall: the host deploy again (a fresh certificate, the agent configured
    and started, capabilities checked) for a host in maintenance, whose install failed, or
    that does not answer. `agent_gone`: whoever calls knows the host's agent is not running
    (the lab tool after `lab down` / `up`) and says so; the host is then reinstalled from any
    status, marked non-responsive with that reason first. The host's VMs keep running: an
    agent restarted re-reports them."""
    host = locked(host)
    if agent_gone and host.status not in REINSTALLABLE and host.status != HostStatus.INSTALLING:
        set_host_status(host, HostStatus.NON_RESPONSIVE, detail=agent_gone)
        record_event(
            "VDS_FAILURE", f"Host {host.name} is non responsive: {agent_gone}.", obj=host, severity=EventSeverity.ALERT
        )
    if host.status not in REINSTALLABLE:
        raise ConflictError(
            f"Host {host.name} is '{host.status}'; put it into maintenance first (or it must have failed to install "
            "or stopped answering) to reinstall it."
        )
    set_host_status(host, HostStatus.INSTALLING, detail="Reinstalling")
    job = create_job(
        "UpdateVds",
        f"Reinstalling host {host.name}",
        user=user,
        obj=host,
        steps=DEPLOY_STEPS,
    )
    record_event(
        "USER_VDS_REINSTALL",
        f"Host {host.name} is being reinstalled by {who(user)}.",
        user=user,
        obj=host,
        correlation_id=job.correlation_id,
    )
    _enqueue("inventory.tasks.deploy_host_task", job, host)
    return job


@transaction.atomic(durable=True)
def activate_host(host: Host, *, user) -> Job:
    host = locked(host)
    if host.status not in (HostStatus.MAINTENANCE, HostStatus.NON_OPERATIONAL, HostStatus.DOWN):
        raise ConflictError(f"Host {host.name} is '{host.status}'; only a host in maintenance can be activated.")
    HOST_STATE_MACHINE.check(host.status, HostStatus.CONNECTING)
    set_host_status(host, HostStatus.CONNECTING, detail="Activating")
    job = create_job(
        "ActivateVds",
        f"Activating host {host.name}",
        user=user,
        obj=host,
        steps=["Connect to the host agent", "Refresh capabilities"],
    )
    record_event(
        "USER_VDS_RESTART",
        f"Host {host.name} was activated by {who(user)}.",
        user=user,
        obj=host,
        correlation_id=job.correlation_id,
    )
    _enqueue("inventory.tasks.activate_host_task", job, host)
    return job


@transaction.atomic(durable=True)
def deactivate_host(host: Host, *, user) -> Job:
    """Maintenance: the host's running VMs are live-migrated away (the scheduler picks each
    target, the cluster's per-host limit holds), then the host goes to maintenance. A VM
    that cannot move ends the Job failed with the reason and the host back up, at the latest
    after OLVM_MAINTENANCE_TIMEOUT: never a host left preparing for maintenance."""
    host = locked(host)
    if host.status == HostStatus.MAINTENANCE:
        raise ConflictError(f"Host {host.name} is already in maintenance.")
    HOST_STATE_MACHINE.check(host.status, HostStatus.PREPARING_FOR_MAINTENANCE)
    running = host.running_vms.count()
    set_host_status(host, HostStatus.PREPARING_FOR_MAINTENANCE)
    job = create_job(
        "MaintenanceVds",
        f"Moving host {host.name} to maintenance",
        user=user,
        obj=host,
        steps=[f"Migrate the host's VMs away ({running})", "Move the host to maintenance"],
    )
    record_event(
        "USER_VDS_MAINTENANCE",
        f"Host {host.name} was switched to maintenance mode by {who(user)}"
        + (f"; its {running} running VM(s) are migrated away." if running else "."),
        user=user,
        obj=host,
        correlation_id=job.correlation_id,
    )
    _enqueue("inventory.tasks.maintenance_host_task", job, host)
    return job


@transaction.atomic(durable=True)
def remove_host(host: Host, *, user) -> None:
    host = locked(host)
    if host.status not in (HostStatus.MAINTENANCE, HostStatus.INSTALL_FAILED):
        raise ConflictError(
            f"Host {host.name} is '{host.status}'; a host can be removed only in maintenance "
            "(or after a failed install)."
        )
    if host.running_vms.exists():
        raise ConflictError(f"Host {host.name} still has VMs on it.")
    record_event("USER_REMOVE_VDS", f"Host {host.name} was removed by {who(user)}.", user=user, obj=host)
    host.delete()


# Helpers ----------------------------------------------------------------------------------


def who(user) -> str:
    return user.get_username() if user is not None and getattr(user, "is_authenticated", False) else "the system"


def _enqueue(task_name: str, job: Job, obj) -> None:
    enqueue(task_name, str(job.pk), str(obj.pk))


def enqueue(task_name: str, job_id: str, *args, queue: str = "default") -> None:
    """Send a Celery task by name once the transaction commits (ids and JSON values only).

    When the broker cannot take it, the Job ends failed saying so: the write stands, the
    caller gets its answer, and nothing waits for a task that was never queued.
    """
    transaction.on_commit(lambda: _send(task_name, [job_id, *args], queue))


def _send(task_name: str, args: list, queue: str) -> None:
    from olvm_site.celery import app

    from .audit import JobProgress

    try:
        app.send_task(task_name, args=args, queue=queue)
    except Exception as exc:  # broker down: report it on the Job instead of failing the request
        logger.error("could not queue %s: %s", task_name, exc)
        JobProgress(args[0]).fail(f"The task could not be queued (message broker unavailable: {exc}).")


# Permissions and quotas -------------------------------------------------------------------

QUOTA_FIELDS = {"max_vcpus", "max_memory_mib", "max_disk_gib"}


def _principal_fields(principal) -> dict:
    """{"user": u} or {"group": g} for a User or a Group."""
    from django.contrib.auth.models import Group

    if isinstance(principal, Group):
        return {"group": principal}
    if principal is None or not hasattr(principal, "get_username"):
        raise ValidationError({"principal": "Give a user or a group."})
    return {"user": principal}


def _principal_label(principal) -> str:
    from django.contrib.auth.models import Group

    return f"Group {principal.name}" if isinstance(principal, Group) else f"User {principal.get_username()}"


@transaction.atomic(durable=True)
def grant_permission(*, user, principal, role, obj=None) -> Permission:
    """Give `principal` (a User or a Group) `role` on `obj`: None (the system), a data
    center, a cluster, a VM or a template; it holds on everything below obj."""
    from .permissions import object_label, object_type_of

    permission = Permission(
        role=role,
        object_type=object_type_of(obj),
        object_id=obj.pk if obj is not None else None,
        **_principal_fields(principal),
    )
    save_validated(permission)
    record_event(
        "USER_ADD_PERMISSION",
        f"{_principal_label(principal)} was granted role {role.name} on {object_label(obj)} by {who(user)}.",
        user=user,
        obj=obj,
    )
    return permission


@transaction.atomic(durable=True)
def revoke_permission(permission: Permission, *, user) -> None:
    from .permissions import object_label, object_of

    permission = (
        Permission.objects.select_for_update(of=("self",)).select_related("user", "group", "role").get(pk=permission.pk)
    )
    obj = object_of(permission.object_type, permission.object_id)
    record_event(
        "USER_REMOVE_PERMISSION",
        f"Role {permission.role.name} on {object_label(obj)} was taken from "
        f"{_principal_label(permission.principal)} by {who(user)}.",
        user=user,
        obj=obj,
    )
    permission.delete()


def remove_permissions_on(obj) -> int:
    """Delete the grants made on `obj`, which is being removed (inside the remove service's
    transaction); returns how many."""
    from .permissions import object_type_of

    deleted, _ = Permission.objects.filter(object_type=object_type_of(obj), object_id=obj.pk).delete()
    return deleted


@transaction.atomic(durable=True)
def set_quota(*, user, principal, **limits) -> Quota:
    """Set the quota of a user or a group (max_vcpus, max_memory_mib, max_disk_gib; None:
    unlimited): creates it, or changes the one it has."""
    check_fields(Quota, limits, QUOTA_FIELDS)
    fields = _principal_fields(principal)
    quota = Quota.objects.select_for_update().filter(**fields).first()
    created = quota is None
    quota = quota or Quota(**fields)
    changed = apply_changes(quota, limits, QUOTA_FIELDS)
    save_validated(quota)
    if created or changed:
        record_event("USER_SET_QUOTA", f"Quota of {_quota_text(quota)} was set by {who(user)}.", user=user)
    return quota


@transaction.atomic(durable=True)
def update_quota(quota: Quota, *, user, **changes) -> Quota:
    quota = locked(quota)
    changed = apply_changes(quota, changes, QUOTA_FIELDS)
    save_validated(quota)
    if changed:
        record_event("USER_SET_QUOTA", f"Quota of {_quota_text(quota)} was set by {who(user)}.", user=user)
    return quota


@transaction.atomic(durable=True)
def remove_quota(quota: Quota, *, user) -> None:
    quota = locked(quota)
    principal = _principal_label(quota.user or quota.group).lower()
    record_event("USER_REMOVE_QUOTA", f"Quota of {principal} was removed by {who(user)}.", user=user)
    quota.delete()


def _quota_text(quota: Quota) -> str:
    def limit(value, unit: str = "") -> str:
        return "unlimited" if value is None else f"{value}{unit}"

    principal = _principal_label(quota.user or quota.group).lower()
    return (
        f"{principal}: {limit(quota.max_vcpus)} vCPUs, {limit(quota.max_memory_mib, ' MiB')} memory, "
        f"{limit(quota.max_disk_gib, ' GiB')} disk"
    )
