"""Write operations on data centers, clusters and hosts.

Each function validates, writes in one transaction, records an audit Event and, for
long work, opens a Job and enqueues its Celery task on commit.
"""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from .audit import create_job, record_event
from .choices import HostStatus
from .exceptions import ConflictError
from .models import Cluster, DataCenter, Host, Job
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
    "ha_reservation",
    "fencing_enabled",
    "fencing_skip_if_sd_active",
    "fencing_skip_if_connectivity_broken",
    "fencing_connectivity_threshold",
    "mac_pool",
    "max_vm_vcpus",
    "max_vm_memory_mib",
}
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
    cluster.delete()


# Hosts ------------------------------------------------------------------------------------


def set_host_status(host: Host, status: str, *, detail: str = "") -> bool:
    """Move a (locked) host to `status` through the state machine. False if already there."""
    if host.status == status:
        return False
    HOST_STATE_MACHINE.check(host.status, status)
    host.status = status
    host.status_detail = detail
    host.save(update_fields=["status", "status_detail", "updated_at"])
    return True


@transaction.atomic(durable=True)
def add_host(*, user, cluster: Cluster, simulated: bool = False, **fields) -> tuple[Host, Job]:
    check_fields(Host, fields, HOST_FIELDS)
    host = save_validated(Host(cluster=cluster, simulated=simulated, status=HostStatus.INSTALLING, **fields))
    job = create_job(
        "AddVds",
        f"Adding new host {host.name} to cluster {cluster.name}",
        user=user,
        obj=host,
        steps=[
            "Issue the host's certificate",
            "Install and start the host agent",
            "Connect to the host agent",
            "Check host capabilities",
            "Activate the host",
        ],
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
    """Maintenance. VMs still running must move first; live migration comes with the scheduler."""
    host = locked(host)
    if host.status == HostStatus.MAINTENANCE:
        raise ConflictError(f"Host {host.name} is already in maintenance.")
    HOST_STATE_MACHINE.check(host.status, HostStatus.PREPARING_FOR_MAINTENANCE)
    running = host.running_vms.count()
    if running:
        raise ConflictError(f"Host {host.name} still runs {running} VM(s); stop or migrate them before maintenance.")
    set_host_status(host, HostStatus.PREPARING_FOR_MAINTENANCE)
    job = create_job(
        "MaintenanceVds",
        f"Moving host {host.name} to maintenance",
        user=user,
        obj=host,
        steps=["Check that no VM runs on the host", "Move the host to maintenance"],
    )
    record_event(
        "USER_VDS_MAINTENANCE",
        f"Host {host.name} was switched to maintenance mode by {who(user)}.",
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
