"""Celery tasks of networking: NIC hot-plug and hot-unplug on running VMs.

Tasks take ids, are idempotent (a redelivered task finds its Job ended and returns) and
reach hosts only through the host agent client.
"""

from celery import shared_task
from django.db import transaction

from compute.statemachine import RUNNING
from hostagent.client import AgentError
from inventory.audit import JobProgress, record_event, run_job
from inventory.choices import EventSeverity
from inventory.exceptions import ConflictError
from inventory.models import Host
from inventory.servicekit import agent_for

from .models import VmNic


def nic_spec(nic: VmNic) -> dict:
    """What the agent needs to plug a NIC (JSON values only)."""
    profile = nic.profile
    network = profile.network if profile else None
    return {
        "id": str(nic.pk),
        "name": nic.name,
        "mac": nic.mac,
        "interface": nic.interface,
        "linked": nic.linked,
        "network": network.name if network else None,
        "vlan_tag": network.vlan_tag if network else None,
        "mtu": network.mtu if network else 0,
        "profile": profile.name if profile else None,
        "port_mirroring": profile.port_mirroring if profile else False,
        "pass_through": profile.pass_through if profile else False,
    }


def host_networks(specs) -> list[dict]:
    """The bridges a host needs for these NIC specs (each logical network once)."""
    seen: dict[str, dict] = {}
    for spec in specs:
        name = spec.get("network")
        if name and name not in seen:
            seen[name] = {"name": name, "vlan": spec.get("vlan_tag", spec.get("vlan")), "mtu": spec.get("mtu") or None}
    return list(seen.values())


def cluster_networks(cluster_id) -> list[dict]:
    """The bridges every host of the cluster carries: its attached logical networks."""
    from .models import ClusterNetwork

    attachments = ClusterNetwork.objects.filter(cluster_id=cluster_id).select_related("network")
    return [
        {"name": a.network.name, "vlan": a.network.vlan_tag, "mtu": a.network.mtu or None}
        for a in attachments.order_by("network__name")
    ]


def _load(nic_id: str) -> VmNic:
    nic = VmNic.objects.select_related("vm__run_on_host", "profile__network").filter(pk=nic_id).first()
    if nic is None:
        raise ConflictError("The NIC was removed before it could be changed on the running VM.")
    return nic


def _running_host(nic: VmNic) -> Host | None:
    """The host running the VM; None when the VM stopped meanwhile (its next start uses the stored NIC)."""
    return nic.vm.run_on_host if nic.vm.status in RUNNING else None


@shared_task(name="networking.tasks.hotplug_nic_task")
def hotplug_nic_task(job_id: str, nic_id: str) -> None:
    """Plug a NIC into its running VM, or bring a plugged one to its stored link state and profile."""

    def work(progress: JobProgress) -> None:
        progress.step(1)
        nic = _load(nic_id)
        vm, host = nic.vm, _running_host(nic)
        if host is None:
            return
        try:
            agent = agent_for(host)
            spec = nic_spec(nic)
            if spec["network"]:
                agent.setup_networks(host_networks([spec]))
            agent.hotplug_nic(str(vm.pk), spec)
        except AgentError as exc:
            with transaction.atomic():
                VmNic.objects.filter(pk=nic_id).update(plugged=False)
                record_event(
                    "NETWORK_ACTIVATE_VM_INTERFACE_FAILURE",
                    f"Failed to plug interface {nic.name} ({nic.mac}) into VM {vm.name}: {exc}",
                    obj=nic,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        record_event(
            "NETWORK_ACTIVATE_VM_INTERFACE_SUCCESS",
            f"Interface {nic.name} ({nic.mac}) is plugged into VM {vm.name} (link {'up' if nic.linked else 'down'}).",
            obj=nic,
            correlation_id=job_id,
        )

    run_job(job_id, work)


@shared_task(name="networking.tasks.hotunplug_nic_task")
def hotunplug_nic_task(job_id: str, nic_id: str) -> None:
    def work(progress: JobProgress) -> None:
        progress.step(1)
        nic = _load(nic_id)
        vm, host = nic.vm, _running_host(nic)
        if host is None:
            return
        try:
            agent_for(host).hotunplug_nic(str(vm.pk), nic.mac)
        except AgentError as exc:
            with transaction.atomic():
                VmNic.objects.filter(pk=nic_id).update(plugged=True)
                record_event(
                    "NETWORK_DEACTIVATE_VM_INTERFACE_FAILURE",
                    f"Failed to unplug interface {nic.name} ({nic.mac}) from VM {vm.name}: {exc}",
                    obj=nic,
                    severity=EventSeverity.ERROR,
                    correlation_id=job_id,
                )
            raise
        record_event(
            "NETWORK_DEACTIVATE_VM_INTERFACE_SUCCESS",
            f"Interface {nic.name} ({nic.mac}) was unplugged from VM {vm.name}.",
            obj=nic,
            correlation_id=job_id,
        )

    run_job(job_id, work)
