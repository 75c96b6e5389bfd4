"""What the engine does with what host agents push (the contract is docs/ingest.md).

`handle(host_cn, body)` is the handler of the ingest listener (hostagent.ingest_server):
the transport has verified the agent's certificate and passes its common name, which is
the host's inventory id. Each batch is validated as a whole first, so a malformed message
applies nothing; then each message is applied in order, each in its own short transaction:

- every batch, whatever it holds, is a heartbeat: `Host.last_heartbeat` (written at most
  every few seconds per host), and a non-responsive host that speaks again comes back up (a
  `heartbeat` message is for an agent with nothing else to say);
- vm_report / vm_event: the reconciler (compute/reconcile.py);
- stats: the hot cache (Redis) and one message to the host's Channels group `host.<id>`;
- guest_info: the VM's guest facts (consecutive ones in one go).

A restarted agent (a new boot_id) is noted in the audit log; its first report re-syncs
every VM.

What keeps a thousand hosts cheap (bench/ingest.py): nothing is written when nothing
changed. The host row is kept for a few seconds (`HOST_CACHE_SECONDS`); an unchanged
report costs one lean query; guest facts are compared in one query per run of messages;
the stats of a host go to the hot cache and to subscribers (one message per host, not one
per VM) through the publisher thread, which batches them with other hosts' into a few Redis
round trips.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from hostagent.ingest_server import IngestError, validate_batch

from .audit import record_event
from .choices import HostStatus
from .history import record_samples
from .models import Host
from .publish import cache_now, flush, send_now
from .services import set_host_status

log = logging.getLogger(__name__)

HEARTBEAT_WRITE_EVERY = 5.0  # seconds: liveness only needs the heartbeat to the nearest few seconds
HEARTBEAT_FLUSH_EVERY = 1.0  # seconds between the UPDATEs writing every host's heartbeat noted meanwhile
CONNECTION_CHECK_SECONDS = 1.0
# How long a host row is reused. Its status is checked by every heartbeat write (a
# non-responsive host recovers at once), so this bounds only how late a removed host is refused.
HOST_CACHE_SECONDS = 60.0
# A full report equal to the host's previous one is compared with the database at most this
# often: what changes on the host changes the report and is settled at once; what the engine
# changed meanwhile (a VM it believes down that the host still runs) within this time. Agents
# repeat an unchanged report every 10 s: every other one is compared (a thousand hosts' peeks
# were a sixth of the listener's time at 5 s).
REPORT_RECHECK_SECONDS = 20.0
# The same for a run of guest_info messages equal to the host's previous one (they come
# every 10 s and rarely change); a lifecycle event of the host's VMs makes the next compared.
GUEST_RECHECK_SECONDS = 60.0
STATS_TTL = 120  # seconds a stats sample stays in the hot cache
STATS_KEY = "olvm:stats:{kind}:{id}"  # the hot cache's keys: JSON of the newest sample
BOOT_KEY = "olvm:agent-boot:{id}"  # the boot_id a host's agent last pushed with

_boot_ids: dict[str, str] = {}
_heartbeat_written: dict[str, float] = {}
_hosts: dict[str, tuple[float, Host]] = {}  # host id -> (when read, the row with its cluster)
_reports: dict[str, tuple[float, int]] = {}  # host id -> (when compared, digest of the report)
_guests: dict[str, tuple[float, int]] = {}  # host id -> (when compared, digest of the guest facts)
_heartbeats_pending: set[str] = set()  # hosts whose heartbeat the next flush writes
_heartbeats_flushed = float("-inf")  # when heartbeats were last written (monotonic)
_thread_state = threading.local()
_state_lock = threading.Lock()
_redis_lock = threading.Lock()
_redis: redis.Redis | None = None


def forget_state() -> None:
    """Drop what this process remembers of hosts (tests)."""
    global _heartbeats_flushed
    with _state_lock:
        _boot_ids.clear()
        _heartbeat_written.clear()
        _heartbeats_pending.clear()
        _heartbeats_flushed = float("-inf")
        _hosts.clear()
        _reports.clear()
        _guests.clear()


def intervals() -> dict:
    return {
        "heartbeat_interval": settings.OLVM_AGENT_HEARTBEAT_INTERVAL,
        "stats_interval": settings.OLVM_AGENT_STATS_INTERVAL,
        "guest_info_interval": settings.OLVM_AGENT_GUEST_INFO_INTERVAL,
    }


def handle(host_cn: str, body) -> tuple[int, dict]:
    """One request of one agent: (HTTP status, JSON answer)."""
    _tidy_connections()
    try:
        try:
            validate_batch(body)
        except IngestError as exc:
            return exc.status, {"error": exc.message, "field": exc.field}
        try:
            host = _host(host_cn)
            if host is None:
                return 403, {"error": f"The certificate names no host of this engine ({host_cn[:64]})."}
            accepted = apply_batch(host, body)
        except DatabaseError as exc:
            log.warning("ingest from %s: database unavailable: %s", host_cn[:64], exc)
            return 503, {"error": "The engine cannot store reports right now; retry."}
        return 200, {"ok": True, "accepted": accepted, **intervals()}
    except DatabaseError:
        close_old_connections()  # a broken connection is not kept for the next request
        raise
    finally:
        _tidy_connections()


def _tidy_connections() -> None:
    """Django's per-request connection check (CONN_MAX_AGE, a connection an error left
    unusable), at most every CONNECTION_CHECK_SECONDS per handler thread: hundreds of
    requests a second need not each walk the connections twice."""
    now = time.monotonic()
    if now - getattr(_thread_state, "checked", 0.0) >= CONNECTION_CHECK_SECONDS:
        _thread_state.checked = now
        close_old_connections()


def _host(host_cn: str) -> Host | None:
    """The host a certificate names, with its cluster; read again every few seconds."""
    try:
        key = str(uuid.UUID(host_cn))
    except ValueError:
        return None
    now = time.monotonic()
    with _state_lock:
        cached = _hosts.get(key)
    if cached is not None and now - cached[0] < HOST_CACHE_SECONDS:
        return cached[1]
    host = Host.objects.select_related("cluster").filter(pk=key).first()
    with _state_lock:
        if host is None:
            _hosts.pop(key, None)
        else:
            _hosts[key] = (now, host)
    return host


def _forget_host(host: Host) -> None:
    with _state_lock:
        _hosts.pop(str(host.pk), None)


def apply_batch(host: Host, body: dict) -> int:
    from compute.reconcile import apply_vm_event, reconcile_host

    _note_boot(host, body["agent"])
    # Every batch the agent gets through is a sign of life, whatever it carries: an agent that
    # pushes stats more often than heartbeats need not send heartbeats of their own.
    _heartbeat(host)
    accepted = 0
    guest: list[tuple[str, dict]] = []  # a run of guest_info messages, applied together
    for message in body["messages"]:
        kind = message["kind"]
        if kind == "guest_info":
            guest.append((message["vm_id"], message["info"]))
            accepted += 1
            continue
        if guest:
            _guest_infos(host, guest)
            guest = []
        if kind == "vm_report":
            _report(host, message["vms"], reconcile_host)
        elif kind == "vm_event":
            _forget_report(host)
            apply_vm_event(host, message)
        elif kind == "stats":
            _stats(host, message, body["sent_at"])
        accepted += 1
    if guest:
        _guest_infos(host, guest)
    return accepted


def _report(host: Host, vms: list[dict], reconcile) -> None:
    """Reconcile a full report, unless it is the host's previous one, compared moments ago."""
    key = str(host.pk)
    digest = hash(tuple(sorted((str(vm["id"]).lower(), vm["status"]) for vm in vms)))
    now = time.monotonic()
    with _state_lock:
        last = _reports.get(key)
    if last is not None and last[1] == digest and now - last[0] < REPORT_RECHECK_SECONDS:
        return
    deferred: list = []
    changed = reconcile(host, vms, deferred)
    with _state_lock:
        if changed or deferred:  # what was settled, or left to a running Job, shows in the next one
            _reports.pop(key, None)  # compare the next one too: what was settled shows there
            _guests.pop(key, None)  # a VM that went down lost its guest facts
        else:
            _reports[key] = (now, digest)


def _guest_infos(host: Host, reports: list[tuple[str, dict]]) -> None:
    """Apply a run of guest_info messages, unless it equals the host's previous one,
    compared less than GUEST_RECHECK_SECONDS ago."""
    from compute.reconcile import apply_guest_facts, guest_facts_of

    facts = guest_facts_of(reports)
    key = str(host.pk)
    digest = hash(
        tuple(
            (vm_id, tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in vm_facts.items()))
            for vm_id, vm_facts in sorted(facts.items())
        )
    )
    now = time.monotonic()
    with _state_lock:
        last = _guests.get(key)
    if last is not None and last[1] == digest and now - last[0] < GUEST_RECHECK_SECONDS:
        return
    apply_guest_facts(host, facts)
    with _state_lock:
        _guests[key] = (now, digest)


def _forget_report(host: Host) -> None:
    with _state_lock:
        _reports.pop(str(host.pk), None)
        _guests.pop(str(host.pk), None)


def _note_boot(host: Host, agent: dict) -> None:
    """An agent that restarted (a new boot_id) is an audit event, once, whichever listener
    process sees it first: the last boot_id of every host is kept in Redis too, so neither
    several processes nor a restarted listener take a known agent for a new one."""
    key = str(host.pk)
    boot_id = str(agent.get("boot_id", ""))
    with _state_lock:
        previous = _boot_ids.get(key)
        _boot_ids[key] = boot_id
        if previous != boot_id:
            _reports.pop(key, None)  # a restarted agent's first report is always compared
            _guests.pop(key, None)
    if previous == boot_id:
        return
    try:
        client = _hot_cache()
        shared = client.set(BOOT_KEY.format(id=key), boot_id, get=True)
        previous = shared.decode() if shared is not None else None
    except Exception as exc:  # Redis is down: this process's memory is all there is
        log.warning("boot id of host %s not shared: %s", host.name, exc)
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
    with _state_lock:
        last = _heartbeat_written.get(key)
        due = last is None or now - last >= HEARTBEAT_WRITE_EVERY
        if due:
            _heartbeat_written[key] = now
    if host.status != HostStatus.NON_RESPONSIVE:
        if due:
            with _state_lock:
                _heartbeats_pending.add(key)
        flush_heartbeats(now - HEARTBEAT_FLUSH_EVERY)
        return
    _recover(host)


def _recover(host: Host) -> None:
    """A heartbeat of a host the engine has as non-responsive: it is up again, audited."""
    with transaction.atomic():
        locked = Host.objects.select_for_update().filter(pk=host.pk).first()
        if locked is None:  # removed meanwhile: its next request is refused
            _forget_host(host)
            return
        locked.last_heartbeat = timezone.now()
        locked.save(update_fields=["last_heartbeat", "updated_at"])
        if locked.status == HostStatus.NON_RESPONSIVE:
            set_host_status(locked, HostStatus.UP)
            record_event("VDS_RECOVERED", f"Host {locked.name} is responding again; it is Up.", obj=locked)
    _forget_host(host)


def flush_heartbeats(unless_since: float | None = None) -> int:
    """Write the heartbeats noted since the last flush, every host in one UPDATE (a
    thousand hosts would otherwise be hundreds of statements a second); with `unless_since`
    (a monotonic time), only when the last flush was before it."""
    global _heartbeats_flushed
    with _state_lock:
        if not _heartbeats_pending or (unless_since is not None and _heartbeats_flushed > unless_since):
            return 0
        ids = list(_heartbeats_pending)
        _heartbeats_pending.clear()
        _heartbeats_flushed = time.monotonic()
    written = (
        Host.objects.filter(pk__in=ids).exclude(status=HostStatus.NON_RESPONSIVE).update(last_heartbeat=timezone.now())
    )
    if written < len(ids):
        # Marked non-responsive by the liveness sweep after this process read their rows:
        # the heartbeat just noted proves them alive again.
        for stale in Host.objects.filter(pk__in=ids, status=HostStatus.NON_RESPONSIVE):
            _recover(stale)
    return written


def _stats(host: Host, message: dict, sent_at: float) -> None:
    """The newest samples to the hot cache, and one message to the host's group."""
    host_id = str(host.pk)
    at = message["at"]
    host_sample = {"id": host_id, "at": at, **(message.get("host") or {})}
    vm_samples = [{"id": vm["vm_id"], "host_id": host_id, "at": at, **vm} for vm in message.get("vms") or []]
    # Rates and percentages onto the samples (so the cache and the pages get them), and a
    # row per object buffered for the history tables (inventory/history.py, never raises).
    record_samples(host_sample, vm_samples)
    keys = [STATS_KEY.format(kind="host", id=host_id)] + [STATS_KEY.format(kind="vm", id=s["id"]) for s in vm_samples]
    values = [orjson.dumps(host_sample)] + [orjson.dumps(sample) for sample in vm_samples]
    # Both from the publisher thread, batched with other hosts' (inventory/publish.py): this
    # thread waits for no Redis round trip.
    cache_now(keys, values, STATS_TTL)
    send_now(
        f"host.{host_id}",
        "host.stats",
        {
            "id": host_id,
            "at": at,
            "sent_at": sent_at,
            "handled_at": time.time(),
            "host": host_sample,
            "vms": vm_samples,
        },
    )


def _hot_cache() -> redis.Redis:
    global _redis
    with _redis_lock:
        if _redis is None:
            url = settings.CACHES["default"]["LOCATION"]  # the hot cache: Redis
            _redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return _redis


def latest_stats(kind: str, object_id) -> dict | None:
    """The newest stats sample of a host or VM from the hot cache (None when none is fresh)."""
    flush(1.0)  # what this process handled is read back (samples are cached from the publisher thread)
    client = _hot_cache()
    raw = client.get(STATS_KEY.format(kind=kind, id=object_id))
    return orjson.loads(raw) if raw is not None else None
