"""What the engine does with what host agents push (the contract is docs/ingest.md).

`handle(host_cn, body)` is the handler of the ingest listener (hostagent.ingest_server):
the transport has verified the agent's certificate and passes its common name, which is
the host's inventory id. Each batch is validated as a whole first, so a malformed message
applies nothing; then each message is applied in order, each in its own short transaction:

- heartbeat: `Host.last_heartbeat` (written at most every few seconds per host), and a
  non-responsive host that speaks again comes back up;
- vm_report / vm_event: the reconciler (compute/reconcile.py);
- stats: the hot cache (Redis) and the host's and VMs' Channels groups;
- guest_info: the VM's guest facts.

A restarted agent (a new boot_id) is noted in the audit log; its first report re-syncs
every VM.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from hostagent.ingest_server import IngestError, validate_batch

from .audit import record_event
from .choices import HostStatus
from .models import Host
from .publish import send_now
from .services import set_host_status

log = logging.getLogger(__name__)

HEARTBEAT_WRITE_EVERY = 5.0  # seconds: liveness only needs the heartbeat to the nearest few seconds
STATS_TTL = 120  # seconds a stats sample stays in the hot cache

_boot_ids: dict[str, str] = {}
_heartbeat_written: dict[str, float] = {}
_state_lock = threading.Lock()


def intervals() -> dict:
    return {
        "heartbeat_interval": settings.OLVM_AGENT_HEARTBEAT_INTERVAL,
        "stats_interval": settings.OLVM_AGENT_STATS_INTERVAL,
        "guest_info_interval": settings.OLVM_AGENT_GUEST_INFO_INTERVAL,
    }


def handle(host_cn: str, body) -> tuple[int, dict]:
    """One request of one agent: (HTTP status, JSON answer)."""
    close_old_connections()
    try:
        try:
            validate_batch(body)
        except IngestError as exc:
            return exc.status, {"error": exc.message, "field": exc.field}
        try:
            host = Host.objects.select_related("cluster").get(pk=uuid.UUID(host_cn))
        except (ValueError, Host.DoesNotExist):
            return 403, {"error": f"The certificate names no host of this engine ({host_cn[:64]})."}
        try:
            accepted = apply_batch(host, body)
        except DatabaseError as exc:
            log.warning("ingest from %s: database unavailable: %s", host.name, exc)
            return 503, {"error": "The engine cannot store reports right now; retry."}
        return 200, {"ok": True, "accepted": accepted, **intervals()}
    finally:
        close_old_connections()


def apply_batch(host: Host, body: dict) -> int:
    from compute.reconcile import apply_guest_info, apply_vm_event, reconcile_host

    _note_boot(host, body["agent"])
    accepted = 0
    for message in body["messages"]:
        kind = message["kind"]
        if kind == "heartbeat":
            _heartbeat(host)
        elif kind == "vm_report":
            reconcile_host(host, message["vms"])
        elif kind == "vm_event":
            apply_vm_event(host, message)
        elif kind == "stats":
            _stats(host, message)
        elif kind == "guest_info":
            apply_guest_info(host, message["vm_id"], message["info"])
        accepted += 1
    return accepted


def _note_boot(host: Host, agent: dict) -> None:
    key = str(host.pk)
    boot_id = str(agent.get("boot_id", ""))
    with _state_lock:
        previous = _boot_ids.get(key)
        _boot_ids[key] = boot_id
    if previous is not None and previous != boot_id:
        with transaction.atomic():
            record_event(
                "VDS_AGENT_RESTARTED",
                f"The agent on host {host.name} restarted (version {agent.get('version', '?')}); "
                "the engine re-synchronises its VMs from the agent's first report.",
                obj=host,
            )


def _heartbeat(host: Host) -> None:
    key = str(host.pk)
    now = time.monotonic()
    recovering = host.status == HostStatus.NON_RESPONSIVE
    with _state_lock:
        due = recovering or now - _heartbeat_written.get(key, 0.0) >= HEARTBEAT_WRITE_EVERY
        if due:
            _heartbeat_written[key] = now
    if not due:
        return
    with transaction.atomic():
        if recovering:
            locked = Host.objects.select_for_update().get(pk=host.pk)
            locked.last_heartbeat = timezone.now()
            locked.save(update_fields=["last_heartbeat", "updated_at"])
            if locked.status == HostStatus.NON_RESPONSIVE:
                set_host_status(locked, HostStatus.UP)
                record_event("VDS_RECOVERED", f"Host {locked.name} is responding again; it is Up.", obj=locked)
            host.status = locked.status
        else:
            Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now())


def _stats(host: Host, message: dict) -> None:
    at = message["at"]
    host_sample = {"id": str(host.pk), "at": at, **(message.get("host") or {})}
    samples = {f"olvm:stats:host:{host.pk}": host_sample}
    vm_samples = []
    for vm in message.get("vms") or []:
        sample = {"id": vm["vm_id"], "host_id": str(host.pk), "at": at, **vm}
        samples[f"olvm:stats:vm:{vm['vm_id']}"] = sample
        vm_samples.append(sample)
    try:
        cache.set_many(samples, timeout=STATS_TTL)
    except Exception as exc:  # the hot cache is best effort, like the channel layer
        log.warning("stats of host %s not cached: %s", host.name, exc)
    send_now(f"host.{host.pk}", "host.stats", host_sample)
    for sample in vm_samples:
        send_now(f"vm.{sample['id']}", "vm.stats", sample)


def latest_stats(kind: str, object_id) -> dict | None:
    """The newest stats sample of a host or VM from the hot cache (None when none is fresh)."""
    return cache.get(f"olvm:stats:{kind}:{object_id}")
