"""Celery tasks of the inventory: host deploy, activation, maintenance and sweeps.

Tasks take ids, are idempotent (a redelivered task finds its Job ended and returns) and
reach hosts only through the host agent client.
"""

import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hostagent.client import AgentError
from hostagent.pki import PkiError

from .audit import CONTINUES, JobProgress, record_event, run_job
from .certs import engine_client_cert, host_cert_due, ingest_server_cert, issue_host_certificate
from .choices import EventSeverity, HostStatus, JobStatus
from .deploy import DeployError, deployer_for
from .models import Host, Job
from .servicekit import agent_for
from .services import set_host_status

CAPABILITY_FIELDS = ("cpu_model", "cpu_sockets", "cpu_cores", "cpu_threads", "memory_mib")


def apply_capabilities(host: Host, caps: dict, networks: list[dict] | None = None) -> None:
    """Record what the agent reported of the host (and the bridges set up on it)."""
    for name in CAPABILITY_FIELDS:
        if name in caps:
            setattr(host, name, caps[name])
    host.nics = [
        {
            "name": str(nic.get("name", ""))[:64],
            "addresses": [str(a)[:64] for a in (nic.get("addresses") or [])[:16]],
            "bridge": bool(nic.get("bridge")),
        }
        for nic in (caps.get("nics") or [])[:256]
        if isinstance(nic, dict)
    ]
    if networks is not None:
        host.networks = sorted({n["name"] for n in networks})
    host.last_heartbeat = timezone.now()
    host.save(update_fields=[*CAPABILITY_FIELDS, "nics", "networks", "last_heartbeat", "updated_at"])


def wait_for_agent(agent, timeout: float) -> None:
    """Ping a freshly started agent until it answers (it may still be loading libvirt)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            agent.ping()
            return
        except AgentError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _install_failed(host_id: str, job_id: str, reason: str) -> None:
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host_id)
        if host.status == HostStatus.INSTALLING:
            set_host_status(host, HostStatus.INSTALL_FAILED, detail=reason[:500])
        record_event(
            "VDS_INSTALL_FAILED",
            f"Host {host.name} installation failed: {reason}",
            obj=host,
            severity=EventSeverity.ERROR,
            correlation_id=job_id,
        )


@shared_task(name="inventory.tasks.deploy_host_task")
def deploy_host_task(job_id: str, host_id: str) -> None:
    """Host deploy: certificate, agent installed and started, capabilities, Up."""

    def work(progress: JobProgress) -> None:
        host = Host.objects.select_related("cluster").get(pk=host_id)
        deployer = deployer_for(host)
        try:
            progress.step(1)
            if deployer is not None:
                certs = issue_host_certificate(host)
                progress.step(2)
                deployer.install(host, certs)
                record_event(
                    "VDS_AGENT_INSTALLED",
                    f"The agent of host {host.name} was configured and started ({deployer.describe()}); "
                    f"its certificate expires {host.cert_expires_at:%Y-%m-%d}.",
                    obj=host,
                    correlation_id=job_id,
                )
            else:
                progress.step(2)
            progress.step(3)
            agent = agent_for(host)
            wait_for_agent(agent, settings.OLVM_DEPLOY_AGENT_WAIT if deployer is not None else 0)
            progress.step(4)
            caps = agent.capabilities()
            from networking.tasks import cluster_networks

            networks = cluster_networks(host.cluster_id)
            if networks:
                agent.setup_networks(networks)
        except (AgentError, DeployError, PkiError) as exc:
            _install_failed(host_id, job_id, str(exc))
            raise AgentError(str(exc)) from None
        progress.step(5)
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host_id)
            apply_capabilities(host, caps, networks)
            if host.status == HostStatus.INSTALLING:
                set_host_status(host, HostStatus.UP)
                record_event(
                    "VDS_DETECTED", f"Status of host {host.name} was set to Up.", obj=host, correlation_id=job_id
                )

    run_job(job_id, work)


@shared_task(name="inventory.tasks.renew_host_certificate_task")
def renew_host_certificate_task(job_id: str, host_id: str) -> None:
    """A new certificate for the host's agent, installed and the agent restarted (VMs keep running)."""

    def work(progress: JobProgress) -> None:
        host = Host.objects.select_related("cluster").get(pk=host_id)
        deployer = deployer_for(host)
        if deployer is None:
            return
        old_expiry = host.cert_expires_at
        try:
            progress.step(1)
            certs = issue_host_certificate(host)
            progress.step(2)
            deployer.install(host, certs)
            progress.step(3)
            wait_for_agent(agent_for(host), settings.OLVM_DEPLOY_AGENT_WAIT)
        except (AgentError, DeployError, PkiError) as exc:
            record_event(
                "VDS_CERTIFICATE_RENEWAL_FAILED",
                f"The certificate of host {host.name} (expiring {old_expiry:%Y-%m-%d}) could not be renewed: {exc}",
                obj=host,
                severity=EventSeverity.ERROR,
                correlation_id=job_id,
            )
            raise AgentError(str(exc)) from None
        record_event(
            "VDS_CERTIFICATE_RENEWED",
            f"The certificate of host {host.name} was renewed; it now expires {host.cert_expires_at:%Y-%m-%d}.",
            obj=host,
            correlation_id=job_id,
        )

    run_job(job_id, work)


@shared_task(name="inventory.tasks.renew_certificates_task")
def renew_certificates_task() -> int:
    """Beat: the engine's own certificates and every host certificate close to expiry."""
    from .services import renew_host_certificate

    engine_client_cert()
    ingest_server_cert()
    renewed = 0
    due = Host.objects.filter(simulated=False, cert_expires_at__isnull=False).exclude(
        status__in=[HostStatus.INSTALLING, HostStatus.INSTALL_FAILED]
    )
    for host in due:
        if host_cert_due(host):
            renew_host_certificate(host, user=None)
            renewed += 1
    return renewed


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


MAINTENANCE_MIGRATION_TRIES = 2
MAINTENANCE_ROUND_SECONDS = 2.0


@shared_task(name="inventory.tasks.maintenance_host_task")
def maintenance_host_task(job_id: str, host_id: str) -> None:
    """Evacuate the host, then switch it to maintenance; or, when a VM cannot leave (pinned,
    not migratable, no host fits, its migration failed twice) or OLVM_MAINTENANCE_TIMEOUT
    passed, end failed with each VM's reason and put the host back up.

    One round per run: it starts the migrations it can and queues itself again while VMs
    are still on their way, so it never holds a worker the migrations it waits for need."""
    from compute.placement import AUTOMATIC
    from compute.services import start_migration
    from compute.statemachine import RUNNING
    from inventory.exceptions import ConflictError

    def work(progress: JobProgress):
        job = progress.job()
        host = Host.objects.get(pk=host_id)
        if host.status != HostStatus.PREPARING_FOR_MAINTENANCE:
            raise ConflictError(f"Host {host.name} is '{host.status}' now; maintenance was abandoned.")
        migrations = Job.objects.filter(  # this host's, since the maintenance began
            action_type="MigrateVm", started_at__gte=job.started_at, description__contains=f" from {host.name} to "
        )
        vms = list(host.running_vms.filter(status__in=RUNNING).order_by("name"))
        if vms:
            # Every migration of this round's VMs since the maintenance began, in one query.
            tried: dict = {}
            for vm_id, error in (
                migrations.filter(vm_id__in=[vm.pk for vm in vms]).order_by("-started_at").values_list("vm_id", "error")
            ):
                tried.setdefault(vm_id, []).append(error)
            refused: dict[str, str] = {}
            for vm in vms:
                if vm.migrating_to_host_id is not None:
                    continue
                errors = tried.get(vm.pk, [])
                if len(errors) >= MAINTENANCE_MIGRATION_TRIES:
                    refused[vm.name] = f"its migration failed {len(errors)} times (last: {errors[0] or 'no reason'})"
                    continue
                try:
                    with transaction.atomic():
                        start_migration(
                            vm, user=job.owner, mode=AUTOMATIC, reason=f"host {host.name} is moving to maintenance"
                        )
                except ConflictError as exc:
                    refused[vm.name] = exc.message
            still = list(
                host.running_vms.filter(status__in=RUNNING).order_by("name").values_list("name", "migrating_to_host_id")
            )
            left, moving = len(still), sum(1 for _, target in still if target is not None)
            moved = migrations.filter(status=JobStatus.FINISHED).count()
            progress.step(1, progress=moved * 90 // max(moved + left, 1))
            if left and not moving and refused:
                _maintenance_failed(host_id, job_id, "; ".join(f"VM {n}: {r}" for n, r in sorted(refused.items())))
            waited = (timezone.now() - job.started_at).total_seconds()
            if left and waited > settings.OLVM_MAINTENANCE_TIMEOUT:
                names = ", ".join(name for name, _ in still)
                _maintenance_failed(
                    host_id, job_id, f"VM(s) {names} still run on it after {settings.OLVM_MAINTENANCE_TIMEOUT:g} s"
                )
            if left:
                from olvm_site.celery import app

                app.send_task(
                    "inventory.tasks.maintenance_host_task", args=[job_id, host_id], countdown=MAINTENANCE_ROUND_SECONDS
                )
                return CONTINUES
        progress.step(2)
        moved = migrations.filter(status=JobStatus.FINISHED).count()
        with transaction.atomic():
            host = Host.objects.select_for_update().get(pk=host_id)
            if host.status == HostStatus.PREPARING_FOR_MAINTENANCE:
                set_host_status(host, HostStatus.MAINTENANCE)
                record_event(
                    "VDS_MAINTENANCE",
                    f"Host {host.name} was switched to Maintenance mode"
                    + (f" after {moved} VM(s) migrated away." if moved else "."),
                    obj=host,
                    correlation_id=job_id,
                )
        return None

    run_job(job_id, work)


def _maintenance_failed(host_id: str, job_id: str, reason: str) -> None:
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host_id)
        if host.status == HostStatus.PREPARING_FOR_MAINTENANCE:
            set_host_status(host, HostStatus.UP, detail=f"Maintenance failed: {reason}"[:500])
        record_event(
            "VDS_MAINTENANCE_FAILED",
            f"Failed to switch host {host.name} to maintenance: {reason}.",
            obj=host,
            severity=EventSeverity.ERROR,
            correlation_id=job_id,
        )
    raise AgentError(f"Host {host.name} cannot go to maintenance: {reason}.")


@shared_task(name="inventory.tasks.host_liveness_task")
def host_liveness_task() -> int:
    """Hosts that stopped sending heartbeats go non-responsive.

    A simulated host without a certificate has no agent anywhere (the engine answers for it
    in-process): it is alive while the engine is. Every other host, a simulator's included
    (it pushes like a real agent), must have pushed within OLVM_HOST_HEARTBEAT_TIMEOUT.
    One statement for the in-process ones and a lock only for the hosts that look late, so
    a thousand hosts cost a few queries."""
    now = timezone.now()
    live = Host.objects.filter(status__in=[HostStatus.UP, HostStatus.CONNECTING])
    live.filter(simulated=True, cert_fingerprint="").update(last_heartbeat=now)
    cutoff = now - timedelta(seconds=settings.OLVM_HOST_HEARTBEAT_TIMEOUT)
    late = (
        live.exclude(simulated=True, cert_fingerprint="")
        .filter(Q(last_heartbeat__isnull=True) | Q(last_heartbeat__lt=cutoff))
        .values_list("pk", flat=True)
    )
    changed = 0
    for host_id in list(late):
        with transaction.atomic():
            host = Host.objects.select_for_update().filter(pk=host_id).first()
            # Read again under the lock: a heartbeat or a status change may have come meanwhile.
            if host is None or host.status not in (HostStatus.UP, HostStatus.CONNECTING):
                continue
            if host.last_heartbeat is not None and host.last_heartbeat >= cutoff:
                continue
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
    """A Job whose worker died mid-task ends failed instead of spinning forever, and what it
    held is let go: a host it was moving to maintenance comes back up (never left preparing
    for maintenance), a migration it had decided but not started frees its target."""
    cutoff = timezone.now() - timedelta(seconds=settings.OLVM_JOB_STALE_SECONDS)
    stale = list(
        Job.objects.filter(status=JobStatus.STARTED, updated_at__lt=cutoff).values_list(
            "pk", "action_type", "host_id", "vm_id"
        )
    )
    for job_id, action_type, host_id, vm_id in stale:
        JobProgress(job_id).fail("The job made no progress for too long (its worker stopped); it was ended.")
        if action_type == "MaintenanceVds" and host_id:
            with transaction.atomic():
                host = Host.objects.select_for_update().filter(pk=host_id).first()
                if host is not None and host.status == HostStatus.PREPARING_FOR_MAINTENANCE:
                    set_host_status(host, HostStatus.UP, detail="Maintenance abandoned: its job stopped.")
                    record_event(
                        "VDS_MAINTENANCE_FAILED",
                        f"Failed to switch host {host.name} to maintenance: its job stopped making progress; "
                        "the host is Up again.",
                        obj=host,
                        severity=EventSeverity.ERROR,
                        correlation_id=str(job_id),
                    )
        elif action_type == "MigrateVm" and vm_id:
            from compute.choices import VmStatus
            from compute.models import VirtualMachine

            # Decided, never started (still up on its source): the target's reservation goes.
            # One that was migrating is settled by the hosts' reports (compute/reconcile.py).
            VirtualMachine.objects.filter(pk=vm_id, status=VmStatus.UP, migrating_to_host__isnull=False).update(
                migrating_to_host=None
            )
    return len(stale)


@shared_task(name="inventory.tasks.history_retention_task")
def history_retention_task() -> dict[str, int]:
    """Monitoring history: samples older than an hour become 5-minute averages, averages older
    than 30 days go (inventory.history.compact)."""
    from .history import compact

    return compact()
