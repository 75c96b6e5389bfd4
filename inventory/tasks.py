"""Celery tasks of the inventory: host deploy, activation, maintenance and sweeps.

Tasks take ids, are idempotent (a redelivered task finds its Job ended and returns) and
reach hosts only through the host agent client.
"""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hostagent.client import AgentError

from .audit import JobProgress, record_event, run_job
from .choices import EventSeverity, HostStatus, JobStatus
from .models import Host, Job
from .servicekit import agent_for
from .services import set_host_status

CAPABILITY_FIELDS = ("cpu_model", "cpu_sockets", "cpu_cores", "cpu_threads", "memory_mib")


def apply_capabilities(host: Host, caps: dict) -> None:
    for name in CAPABILITY_FIELDS:
        if name in caps:
            setattr(host, name, caps[name])
    host.last_heartbeat = timezone.now()
    host.save(update_fields=[*CAPABILITY_FIELDS, "last_heartbeat", "updated_at"])


@shared_task(name="inventory.tasks.deploy_host_task")
def deploy_host_task(job_id: str, host_id: str) -> None:
    def work(progress: JobProgress) -> None:
        host = Host.objects.get(pk=host_id)
        agent = agent_for(host)
        try:
            progress.step(1)
            agent.ping()
            progress.step(2)
            caps = agent.capabilities()
        except AgentError as exc:
            with transaction.atomic():
                host = Host.objects.select_for_update().get(pk=host_id)
                if host.status == HostStatus.INSTALLING:
                    set_host_status(host, HostStatus.INSTALL_FAILED, detail=str(exc)[:500])
                record_event(
                    "VDS_INSTALL_FAILED",
                    f"Host {host.name} installation failed: {exc}",
                    obj=host,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        progress.step(3)
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host_id)
            apply_capabilities(host, caps)
            if host.status == HostStatus.INSTALLING:
                set_host_status(host, HostStatus.UP)
                record_event(
                    "VDS_DETECTED", f"Status of host {host.name} was set to Up.", obj=host, correlation_id=job_id
                )

    run_job(job_id, work)


@shared_task(name="inventory.tasks.activate_host_task")
def activate_host_task(job_id: str, host_id: str) -> None:
    def work(progress: JobProgress) -> None:
        host = Host.objects.get(pk=host_id)
        progress.step(1)
        try:
            agent = agent_for(host)
            agent.ping()
            progress.step(2)
            caps = agent.capabilities()
        except AgentError as exc:
            with transaction.atomic():
                host = Host.objects.select_for_update().get(pk=host_id)
                if host.status == HostStatus.CONNECTING:
                    set_host_status(host, HostStatus.NON_RESPONSIVE, detail=str(exc)[:500])
                record_event(
                    "VDS_FAILURE",
                    f"Host {host.name} could not be activated: {exc}",
                    obj=host,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host_id)
            apply_capabilities(host, caps)
            if host.status == HostStatus.CONNECTING:
                set_host_status(host, HostStatus.UP)
                record_event("VDS_ACTIVATE", f"Host {host.name} is Up.", obj=host, correlation_id=job_id)

    run_job(job_id, work)


@shared_task(name="inventory.tasks.maintenance_host_task")
def maintenance_host_task(job_id: str, host_id: str) -> None:
    def work(progress: JobProgress) -> None:
        progress.step(1)
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host_id)
            running = host.running_vms.count()
            if running:
                set_host_status(host, HostStatus.UP, detail="Maintenance failed: VMs still running")
                record_event(
                    "VDS_MAINTENANCE_FAILED",
                    f"Failed to switch host {host.name} to maintenance: {running} VM(s) still run on it.",
                    obj=host,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
                raise AgentError(f"{running} VM(s) still run on host {host.name}.")
            progress.step(2)
            if host.status == HostStatus.PREPARING_FOR_MAINTENANCE:
                set_host_status(host, HostStatus.MAINTENANCE)
                record_event(
                    "VDS_MAINTENANCE",
                    f"Host {host.name} was switched to Maintenance mode.",
                    obj=host,
                    correlation_id=job_id,
                )

    run_job(job_id, work)


@shared_task(name="inventory.tasks.host_liveness_task")
def host_liveness_task() -> int:
    """Hosts that stopped sending heartbeats go non-responsive (simulated hosts are pinged)."""
    cutoff = timezone.now() - timedelta(seconds=settings.OLVM_HOST_HEARTBEAT_TIMEOUT)
    changed = 0
    for host in Host.objects.filter(status__in=[HostStatus.UP, HostStatus.CONNECTING]).only("pk"):
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host.pk)
            if host.simulated:
                host.last_heartbeat = timezone.now()
                host.save(update_fields=["last_heartbeat"])
                continue
            if host.last_heartbeat is None or host.last_heartbeat < cutoff:
                set_host_status(host, HostStatus.NON_RESPONSIVE, detail="No heartbeat from the host agent")
                record_event(
                    "VDS_FAILURE",
                    f"Host {host.name} is non responsive: no heartbeat since {host.last_heartbeat}.",
                    obj=host,
                    severity=EventSeverity.ALERT,
                )
                changed += 1
    return changed


@shared_task(name="inventory.tasks.reap_stale_jobs_task")
def reap_stale_jobs_task() -> int:
    """A Job whose worker died mid-task ends failed instead of spinning forever."""
    cutoff = timezone.now() - timedelta(seconds=settings.OLVM_JOB_STALE_SECONDS)
    stale = list(Job.objects.filter(status=JobStatus.STARTED, updated_at__lt=cutoff).values_list("pk", flat=True))
    for job_id in stale:
        JobProgress(job_id).fail("The job made no progress for too long (its worker stopped); it was ended.")
    return len(stale)
