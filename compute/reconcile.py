"""Drive the engine's VM state from what hosts report (the reconciler).

The engine holds desired state, hosts hold what runs. Every heartbeat carries a host's full
list of domains; lifecycle events arrive as they happen. Here each report is compared with
the inventory and the difference is settled:

- a VM the host runs and the engine knows takes the reported status (through the state
  machine), unless a Job of the engine is acting on it right now (its task sets the
  outcome; if that worker died, the Job ends failed and the next report settles it);
- a VM the engine believes runs on this host and the host no longer lists goes down, with
  an event saying so;
- a running VM the engine does not know becomes an *external* VM, never silently ignored;
- guest-agent facts are copied onto the VM when they change.

Called by the ingest handler (inventory/ingest.py) in short transactions, one per host
report, with the VM rows locked.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from inventory.audit import record_event
from inventory.choices import EventSeverity, JobStatus
from inventory.models import Host, Job

from .choices import VmStatus
from .models import BLANK_TEMPLATE_ID, VirtualMachine
from .services import set_vm_status
from .statemachine import RUNNING, VM_STATE_MACHINE

log = logging.getLogger(__name__)

# The agent's VM statuses -> the engine's. None: nothing to settle from it.
REPORTED = {
    "up": VmStatus.UP,
    "paused": VmStatus.PAUSED,
    "powering_down": VmStatus.POWERING_DOWN,
    "down": VmStatus.DOWN,
    "suspended": None,  # a managed save on the host; the engine's suspend is its own Job
    "migrating": None,
    "unknown": None,
}


def _busy_vm_ids(vm_ids) -> set:
    """VMs with a started Job: their task owns the status until it ends."""
    return set(Job.objects.filter(vm_id__in=list(vm_ids), status=JobStatus.STARTED).values_list("vm_id", flat=True))


def _load(host: Host, ids: list[str]) -> tuple[dict, dict]:
    """The reported VMs the engine knows and the VMs it has running on the host, locked."""
    qs = VirtualMachine.objects.select_for_update()
    known = {str(vm.pk): vm for vm in qs.filter(pk__in=ids).order_by("pk")}
    expected = {str(vm.pk): vm for vm in qs.filter(run_on_host=host, status__in=RUNNING).order_by("pk")}
    return known, expected


class _Seen(NamedTuple):
    """What the comparison needs of a VM row."""

    pk: uuid.UUID
    status: str
    run_on_host_id: uuid.UUID | None


def _peek(host: Host, ids: list[str]) -> tuple[dict, dict]:
    """`_load` without locks or model instances, over the few columns compared: one query
    for the VMs the engine has on the host, a second only for reported VMs it has elsewhere
    (a defined but stopped domain, a VM the engine does not know)."""
    columns = ("pk", "status", "run_on_host_id")
    seen = {
        str(row[0]): _Seen(*row)
        for row in VirtualMachine.objects.filter(run_on_host_id=host.pk).order_by().values_list(*columns)
    }
    elsewhere = [vm_id for vm_id in ids if vm_id not in seen]
    if elsewhere:
        rows = VirtualMachine.objects.filter(pk__in=elsewhere).order_by().values_list(*columns)
        seen.update((str(row[0]), _Seen(*row)) for row in rows)
    known = {vm_id: seen[vm_id] for vm_id in ids if vm_id in seen}
    expected = {k: v for k, v in seen.items() if v.run_on_host_id == host.pk and v.status in RUNNING}
    return known, expected


def _candidates(host: Host, by_id: dict, known: dict, expected: dict) -> list[str]:
    return [
        vm_id
        for vm_id, report in by_id.items()
        if (vm_id in known and _differs(host, known[vm_id], report["status"]))
        or (vm_id not in known and report["status"] in ("up", "paused"))
    ] + [vm_id for vm_id in expected if vm_id not in by_id]


def reconcile_host(host: Host, reported: list[dict], deferred: list | None = None) -> int:
    """Settle the host's full report of domains; returns how many VMs changed. The VMs left
    alone because a Job of the engine acts on them are appended to `deferred` (so the caller
    compares the next report again rather than trusting this one as settled)."""
    by_id = {str(r["id"]).lower(): r for r in reported}
    # The usual heartbeat finds everything as the engine has it: one lean read, no locks.
    if not _candidates(host, by_id, *_peek(host, list(by_id))):
        return 0
    changed = 0
    with transaction.atomic():
        known, expected = _load(host, list(by_id))
        if not _candidates(host, by_id, known, expected):
            return 0
        busy = _busy_vm_ids(set(known) | set(expected))
        if deferred is not None:
            deferred.extend(busy)
        for vm_id, report in by_id.items():
            vm = known.get(vm_id)
            if vm is None:
                if report["status"] in ("up", "paused"):
                    changed += _adopt_external(host, vm_id, report)
                continue
            changed += _settle(host, vm, report["status"], busy=vm.pk in busy, reason="reported by its host")
        for vm_id, vm in expected.items():
            if vm_id in by_id or vm.pk in busy:
                continue
            changed += _gone(host, vm)
        stale = [
            vm_id
            for vm_id, report in by_id.items()
            if report["status"] == "down"
            and (vm := known.get(vm_id)) is not None
            and vm.status in RUNNING
            and vm.run_on_host_id not in (None, host.pk)
            and vm.migrating_to_host_id != host.pk
            and vm.pk not in busy
        ]
        if stale:
            transaction.on_commit(lambda: _clean_stale(host, stale))
    return changed


def _clean_stale(host: Host, vm_ids: list[str]) -> None:
    """A stopped definition of a VM that runs on another host (left by a migration or a
    failover) is removed from this host, once per VM and host every few minutes."""
    from django.core.cache import cache

    from olvm_site.celery import app

    for vm_id in vm_ids:
        if cache.add(f"stale-definition:{host.pk}:{vm_id}", 1, timeout=300):
            try:
                app.send_task("compute.tasks.undefine_stale_task", args=[str(host.pk), vm_id])
            except Exception as exc:  # broker down: the next report tries again
                log.warning("could not queue the removal of VM %s's stale definition: %s", vm_id, exc)


def apply_vm_event(host: Host, event: dict) -> bool:
    """A lifecycle event from libvirt: settle that one VM at once."""
    with transaction.atomic():
        vm = VirtualMachine.objects.select_for_update().filter(pk=event["vm_id"]).first()
        if vm is None:
            if event["status"] in ("up", "paused"):
                return bool(_adopt_external(host, str(event["vm_id"]), event))
            return False
        busy = bool(_busy_vm_ids([vm.pk]))
        why = f"{event.get('event') or 'changed'}{'/' + event['detail'] if event.get('detail') else ''}"
        return bool(_settle(host, vm, event["status"], busy=busy, reason=f"libvirt event {why}"))


def _differs(host: Host, vm: VirtualMachine, reported: str) -> bool:
    target = REPORTED.get(reported)
    return target is not None and (vm.status != target or vm.run_on_host_id != host.pk)


def _settle(host: Host, vm: VirtualMachine, reported: str, *, busy: bool, reason: str) -> int:
    target = REPORTED.get(reported)
    if target is None:
        return 0
    on_this_host = vm.run_on_host_id == host.pk
    if target == VmStatus.DOWN:
        # A defined but stopped domain on a host the VM does not run on says nothing.
        if not on_this_host or vm.status in (VmStatus.DOWN, VmStatus.SUSPENDED, VmStatus.IMAGE_LOCKED):
            return 0
    elif not on_this_host and vm.migrating_to_host_id == host.pk:
        if busy:
            return 0  # the migration's task settles it
        # The migration ended while no task watched (its worker died): the target has it.
        before = vm.status
        set_vm_status(vm, target, host=host)
        vm.last_migrated_at = timezone.now()
        vm.save(update_fields=["last_migrated_at"])
        _record_change(host, vm, before, target, f"{reason}: the migration to this host completed")
        return 1
    elif not on_this_host and vm.run_on_host_id is not None and vm.status in RUNNING:
        # Two hosts claim it: keep the engine's host, shout (never two copies silently).
        record_event(
            "VM_RUNNING_ON_TWO_HOSTS",
            f"VM {vm.name} is reported running on host {host.name} while the engine has it on "
            f"{vm.run_on_host.name if vm.run_on_host else 'another host'}.",
            obj=vm,
            severity=EventSeverity.ALERT,
        )
        return 0
    if busy:
        # A Job of the engine is acting on the VM (a start, a suspend saving its memory, a
        # snapshot): its task sets the outcome from the agent's answer. If its worker
        # died, the Job is ended by the reaper and the next report settles the VM.
        return 0
    if vm.status == target and on_this_host:
        return 0
    if vm.status == VmStatus.SUSPENDED:
        return 0  # resumed only through the engine's resume Job
    if vm.status != target and not VM_STATE_MACHINE.allowed(vm.status, target):
        log.info("VM %s: host %s reports %s, engine has %s; not a transition", vm.pk, host.name, reported, vm.status)
        return 0
    before = vm.status
    set_vm_status(vm, target, host=host if target != VmStatus.DOWN else None)
    _record_change(host, vm, before, target, reason)
    return 1


def _record_change(host: Host, vm: VirtualMachine, before: str, after: str, reason: str) -> None:
    if after == VmStatus.DOWN:
        expected = before in (VmStatus.POWERING_DOWN,)
        record_event(
            "VM_DOWN" if expected else "VM_DOWN_ERROR",
            f"VM {vm.name} is down on host {host.name} ({reason}).",
            obj=vm,
            severity=EventSeverity.NORMAL if expected else EventSeverity.WARNING,
            host_id=host.pk,
        )
    elif before in (VmStatus.DOWN, VmStatus.UNKNOWN, VmStatus.NOT_RESPONDING) and after in (
        VmStatus.UP,
        VmStatus.PAUSED,
    ):
        record_event(
            "VM_RECOVERED" if before != VmStatus.DOWN else "VM_STARTED_OUTSIDE_ENGINE",
            f"VM {vm.name} is {after} on host {host.name} ({reason}).",
            obj=vm,
            severity=EventSeverity.NORMAL if before != VmStatus.DOWN else EventSeverity.WARNING,
        )
    else:
        record_event("VM_STATUS_CHANGED", f"VM {vm.name} is {after} (was {before}; {reason}).", obj=vm)


def _gone(host: Host, vm: VirtualMachine) -> int:
    before = vm.status
    set_vm_status(vm, VmStatus.DOWN, host=None)
    record_event(
        "VM_DOWN_ERROR",
        f"VM {vm.name} is down: host {host.name} no longer runs it (it was {before}).",
        obj=vm,
        severity=EventSeverity.WARNING,
        host_id=host.pk,
    )
    return 1


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")


def _external_name(name: str, vm_id: str, data_center_id) -> str:
    base = _NAME_BAD.sub("-", name or "").strip("-")[:48] or "vm"
    candidate = f"external-{base}"
    if VirtualMachine.objects.filter(data_center_id=data_center_id, name=candidate).exists():
        candidate = f"external-{base}-{vm_id[:8]}"
    return candidate


def _adopt_external(host: Host, vm_id: str, report: dict) -> int:
    """A running domain the engine never started: show it as an external VM."""
    try:
        uuid.UUID(vm_id)
    except ValueError:
        return 0
    cluster = host.cluster
    vm = VirtualMachine(
        id=vm_id,
        name=_external_name(report.get("name", ""), vm_id, cluster.data_center_id),
        cluster=cluster,
        data_center_id=cluster.data_center_id,
        template_id=BLANK_TEMPLATE_ID,
        external=True,
        description=f"Found running on host {host.name}; not started by the engine."[:255],
        vcpus=max(1, min(int(report.get("vcpus") or 1), cluster.max_vm_vcpus)),
        memory_mib=max(128, min(int(report.get("memory_mib") or 128), cluster.max_vm_memory_mib)),
        guaranteed_memory_mib=0,
    )
    vm.save()
    set_vm_status(vm, REPORTED[report["status"]], host=host)
    record_event(
        "VM_EXTERNAL_FOUND",
        f"VM {report.get('name') or vm_id} was found running on host {host.name} outside the engine; "
        f"it is shown as the external VM {vm.name}.",
        obj=vm,
        severity=EventSeverity.WARNING,
    )
    return 1


GUEST_FIELDS = ("guest_hostname", "guest_os", "guest_kernel", "guest_ips", "guest_timezone", "guest_users")


def guest_facts(info: dict) -> dict:
    """The VM fields a guest_info report maps to."""
    os_info = info.get("os") or {}
    ips = []
    for iface in info.get("interfaces") or []:
        for address in iface.get("addresses") or []:
            ip = str(address).split("/", 1)[0]
            if ip and not ip.startswith("127.") and ip != "::1" and not ip.lower().startswith("fe80:"):
                ips.append(ip)
    return {
        "guest_hostname": str(info.get("hostname") or "")[:255],
        "guest_os": str(os_info.get("pretty-name") or os_info.get("name") or "")[:255],
        "guest_kernel": str(os_info.get("kernel-release") or "")[:255],
        "guest_ips": ips[:64],
        "guest_timezone": str(info.get("timezone") or "")[:64],
        "guest_users": [str(u)[:64] for u in (info.get("users") or [])][:64],
    }


def apply_guest_info(host: Host, vm_id: str, info: dict) -> bool:
    """Copy the guest agent's facts onto the VM when they changed; publish them."""
    return apply_guest_infos(host, [(vm_id, info)]) == 1


def guest_facts_of(reports: list[tuple[str, dict]]) -> dict[str, dict]:
    """VM id -> the facts of its guest_info reports (the last one of a VM wins, as if they
    were applied in order); VMs whose guest agent did not answer are left out."""
    facts = {}
    for vm_id, info in reports:
        if info.get("guest_agent", "ok") == "ok":
            facts[str(vm_id).lower()] = guest_facts(info)
        else:
            facts.pop(str(vm_id).lower(), None)
    return facts


def apply_guest_infos(host: Host, reports: list[tuple[str, dict]]) -> int:
    """`apply_guest_info` for several VMs of the host: one read compares them all, and only
    the VMs whose facts changed are locked and written. Returns how many changed."""
    return apply_guest_facts(host, guest_facts_of(reports))


def apply_guest_facts(host: Host, facts: dict[str, dict]) -> int:
    """`apply_guest_infos` from `guest_facts_of`'s result."""
    if not facts:
        return 0
    # Every VM on the host in one simple query (cheaper than picking the reported ones).
    current = VirtualMachine.objects.filter(run_on_host=host).order_by().values_list("pk", *GUEST_FIELDS)
    stale = [
        str(row[0])
        for row in current
        if str(row[0]) in facts and dict(zip(GUEST_FIELDS, row[1:], strict=True)) != facts[str(row[0])]
    ]
    if not stale:
        return 0
    from inventory.publish import publish

    changed = 0
    with transaction.atomic():
        for vm in VirtualMachine.objects.select_for_update().filter(pk__in=stale, run_on_host=host).order_by("pk"):
            new = facts[str(vm.pk)]
            fields = [name for name, value in new.items() if getattr(vm, name) != value]
            if not fields:
                continue
            for name in fields:
                setattr(vm, name, new[name])
            vm.save(update_fields=[*fields, "updated_at"])
            publish(f"vm.{vm.pk}", "vm.guest", {"id": str(vm.pk), **new, "at": timezone.now().isoformat()})
            changed += 1
    return changed
