"""The agent's push to the engine's ingest listener (the contract is docs/ingest.md).

`Pusher(config, driver).start()` when `engine_url` is set:

- a sender thread posts the queued messages (`POST engine_url`, HTTPS with this host's
  certificate, one kept-alive connection, `push_timeout` on every socket operation). A
  lifecycle event wakes it at once (`EventSink` calls `Pusher.event`).
- three collector threads, so that a slow hypervisor call or a guest agent that does not
  answer delays neither a heartbeat nor an event. Every push is proof of life to the engine,
  so the messages that say nothing new are left out:
  - the heartbeat tick (every `heartbeat_interval`) queues a bare `heartbeat` only when
    nothing else was queued since the previous tick and nothing waits to be sent; the
    first tick (the hello) always queues a heartbeat and a full `vm_report`;
  - the same tick queues a full `vm_report` when the VM list differs from the last one
    queued, when the engine may have lost what it had (the first accepted request after a
    failure or a new connection, a report refused or pushed out of the queue), and
    otherwise every `REPORT_REFRESH` seconds;
  - host and VM `stats` every `stats_interval`;
  - every `guest_info_interval`, the `guest_info` of each running VM whose guest agent
    answers, when it differs from the one last pushed for that VM, when none was (a
    lifecycle event of the VM and a re-connection after failures forget it), or when that
    one is `GUEST_REFRESH` seconds old.
  The engine's 200 answer replaces the three intervals.
- the queue is bounded: stats go first, then guest information, then old heartbeats and
  reports; lifecycle events last. A 400 (or 413) drops the batch; anything else (403,
  503, a connection error) keeps it and retries with back-off, 0.5 s doubling to 10 s,
  with what arrived meanwhile.

`Pusher(...).start(scheduler)` instead hands the four loops to a `PushScheduler` shared by
many pushers (the simulator, `hostagent/simulate.py`: a thousand hosts in one process): the
same collections, requests, queue and back-off, from a timer thread and two small pools.

Nothing here raises into the agent: every failure is logged and retried or dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import http.client
import itertools
import json
import logging
import math
import random
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from hostagent.ingest_server import MAX_BODY, MAX_MESSAGES, MAX_NAME, IngestError, validate_message

from . import AGENT_VERSION
from .config import AgentConfig
from .drivers import VM_STATUSES, Driver
from .errors import AgentFailure

log = logging.getLogger("hostagent.push")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
MAX_QUEUE = 5_000  # messages
MAX_QUEUE_BYTES = 32 * 1024 * 1024
MAX_REQUEST_BYTES = MAX_BODY - 64 * 1024  # room for the envelope
INTERVALS = ("heartbeat_interval", "stats_interval", "guest_info_interval")
INTERVAL_RANGE = (0.1, 3600.0)  # what the engine may set
# Which queued messages go first when the queue is full: the lowest class, oldest first.
DROP_CLASS = {"stats": 0, "guest_info": 1, "heartbeat": 2, "vm_report": 2, "vm_event": 3}
EVENT_FIELDS = ("vm_id", "name", "status", "event", "detail")
# An unchanged VM list is reported in full this often (at the heartbeat tick that reaches
# it; TICK_SLACK absorbs the jitter of the timers). A changed one goes at the next tick.
REPORT_REFRESH = 10.0
TICK_SLACK = 0.05
# An unchanged guest_info of a VM is pushed again this often (the engine may have lost it).
GUEST_REFRESH = 300.0


def client_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """This host's certificate for the engine, and the engine CA to check the listener's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


@dataclass(eq=False)
class _Queued:
    kind: str
    data: bytes  # the message as JSON
    vm_id: str | None = None  # of a guest_info: its digest is forgotten when it is lost


class Pusher:
    def __init__(self, config: AgentConfig, driver: Driver, *, ssl_context: ssl.SSLContext | None = None):
        url = urllib.parse.urlsplit(config.engine_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"engine_url must be an https:// URL, not {config.engine_url!r}")
        self.url = config.engine_url
        self.host, self.port = url.hostname, url.port or 443
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.config = config
        self.driver = driver
        self.ssl_context = ssl_context or client_ssl_context(config.cert_file, config.key_file, config.ca_file)
        self.agent = {
            "version": AGENT_VERSION,
            "driver": driver.name,
            "simulated": driver.simulated,
            "boot_id": secrets.token_hex(16),
            "hostname": (config.host_name or socket.gethostname())[:MAX_NAME],
        }
        self.intervals = {name: getattr(config, name) for name in INTERVALS}
        self.seq = 0
        self.accepted = 0  # requests the engine took
        self.delivered = 0  # messages in them
        self.dropped = 0  # messages refused by the engine or pushed out of a full queue
        self.delivered_kinds = dict.fromkeys(DROP_CLASS, 0)  # messages delivered, per kind
        self.last_error = ""
        self._queue: list[_Queued] = []
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._hello = False  # the first heartbeat is queued: nothing is sent before it
        self._backoff = 0.0
        self._retry_at = 0.0
        self._conn: http.client.HTTPSConnection | None = None
        self._threads: list[threading.Thread] = []
        self._failing: dict[str, bool] = {}  # per collector: its last run failed (logged once)
        self._holding = 0  # collections running under a scheduler: they wake it when done
        self._scheduler: PushScheduler | None = None
        # What the engine was told (under self._cond), so that what it knows already is not repeated:
        self._ticked_at: float | None = None  # the start of the last heartbeat tick (monotonic)
        self._spoke_at = -math.inf  # when a message other than the tick's own was last queued
        self._reported: tuple | None = None  # the VM list of the last full report queued
        self._reported_at = -math.inf
        self._report_due = False  # the engine may have lost state: a full report at the next tick
        self._guest_sent: dict[str, tuple[bytes, float]] = {}  # vm id -> (digest, when) of its last guest_info
        self._resync = False  # a request failed or a new connection replaced one: re-sync on the next 200
        self._connections = 0  # opened so far

    # Life ---------------------------------------------------------------------------------------

    def start(self, scheduler: PushScheduler | None = None) -> None:
        """Push from four threads of its own, or from a `PushScheduler` shared by many
        pushers (the simulator: one process, a thousand hosts)."""
        self.driver.events.subscribe(self.event)
        if scheduler is not None:
            self._scheduler = scheduler
            scheduler.add(self)
            log.debug("pushing to %s from a shared scheduler", self.url)
            return
        self._threads = [threading.Thread(target=self._send_loop, name="push-sender", daemon=True)] + [
            threading.Thread(target=self._every, args=(interval,), name=f"push-{name}", daemon=True)
            for interval, name in zip(INTERVALS, ("heartbeat", "stats", "guest-info"), strict=True)
        ]
        for thread in self._threads:
            thread.start()
        log.info("pushing to %s (heartbeat every %gs)", self.url, self.intervals["heartbeat_interval"])

    def stop(self, timeout: float | None = None) -> None:
        """Stop every thread; a request on the wire is cut short. Queued messages are lost
        (the next agent's first heartbeat and report re-sync the engine)."""
        self.driver.events.unsubscribe(self.event)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._scheduler is not None:
            self._scheduler.remove(self)
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.push_timeout + 1)
        for thread in self._threads:
            # A collector may be stuck in a hypervisor call: it is a daemon and ends with the process.
            thread.join(max(deadline - time.monotonic(), 0.01))
        self._close()
        with self._cond:
            left = len(self._queue)
        # A simulator stops a thousand pushers at once: one line each would be noise there.
        log.log(logging.DEBUG if self._scheduler else logging.INFO, "push stopped (%d message(s) not delivered)", left)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def queued(self) -> list[str]:
        """The kinds of the queued messages, oldest first."""
        with self._cond:
            return [q.kind for q in self._queue]

    # What is pushed -----------------------------------------------------------------------------

    def event(self, kind: str, payload: dict) -> None:
        """The EventSink listener: queue a lifecycle event and wake the sender."""
        if kind != "vm_event":
            log.debug("not pushing %s events", kind)
            return
        with self._cond:
            # It started, stopped, ...: the engine may clear its guest facts, its guest agent
            # restarts. Its next guest_info goes whatever it says.
            self._guest_sent.pop(str(payload.get("vm_id")), None)
        self.enqueue([{"kind": "vm_event", "at": time.time(), **{k: payload.get(k) for k in EVENT_FIELDS}}])

    def enqueue(self, messages: list[dict]) -> int:
        """Queue messages (a malformed one is logged and left out) and wake the sender; how
        many were queued."""
        return self._enqueue(messages, spoke=True)

    def _enqueue(self, messages: list[dict], *, spoke: bool) -> int:
        """`enqueue`; `spoke`: these messages count as activity that makes the next bare
        heartbeat needless (the heartbeat tick's own messages do not)."""
        encoded = []
        for message in messages:
            try:
                validate_message(message)
                # orjson: a simulator encodes hundreds of these a second (a NaN, which a
                # hypervisor statistic could hold, becomes null: valid JSON).
                data = orjson.dumps(message)
            except (IngestError, TypeError, ValueError) as exc:
                log.error("not pushing a malformed %s message: %s", message.get("kind"), exc)
                continue
            if len(data) > MAX_REQUEST_BYTES:
                log.error(
                    "not pushing a %s message of %d bytes (over the limit of a request)", message["kind"], len(data)
                )
                continue
            vm_id = message["vm_id"] if message["kind"] == "guest_info" else None
            encoded.append(_Queued(message["kind"], data, vm_id))
        if not encoded:
            return 0
        with self._cond:
            if self._stopped:
                return 0
            self._queue.extend(encoded)
            self._queued_bytes += sum(len(q.data) for q in encoded)
            if spoke:
                self._spoke_at = time.monotonic()
            self._trim()
            self._cond.notify_all()
        self._poke()
        return len(encoded)

    def _trim(self) -> None:
        dropped: dict[str, int] = {}
        while len(self._queue) > MAX_QUEUE or self._queued_bytes > MAX_QUEUE_BYTES:
            lowest = min(DROP_CLASS[q.kind] for q in self._queue)
            victim = next(q for q in self._queue if DROP_CLASS[q.kind] == lowest)
            self._queue.remove(victim)
            self._queued_bytes -= len(victim.data)
            self._lost([victim])
            dropped[victim.kind] = dropped.get(victim.kind, 0) + 1
        if dropped:
            self.dropped += sum(dropped.values())
            log.warning("push queue full: dropped the oldest %s", ", ".join(f"{n} {k}" for k, n in dropped.items()))

    def _lost(self, messages: list[_Queued]) -> None:
        """Messages that will never reach the engine (refused, or pushed out of the queue):
        what they said is said again (caller holds the lock)."""
        for message in messages:
            if message.kind in ("vm_report", "vm_event"):
                self._report_due = True
            elif message.kind == "guest_info":
                self._guest_sent.pop(message.vm_id, None)

    def _heartbeat(self) -> None:
        """The heartbeat tick: a full report when one is due, else a bare heartbeat when
        nothing else tells the engine this host is alive; the first tick sends both."""
        now = time.monotonic()
        with self._cond:
            hello = self._ticked_at is None
            # Anything queued since the previous tick, or still to be sent, is proof of life.
            quiet = hello or (not self._queue and self._spoke_at < self._ticked_at)
            self._ticked_at = now
        heartbeat = {"kind": "heartbeat", "at": time.time()}
        try:
            vms = self.driver.vm_list()["vms"]
        except AgentFailure:
            if quiet:  # the hypervisor does not answer: the heartbeat goes alone
                self._enqueue([heartbeat], spoke=False)
            raise
        entries = [_report(v) for v in vms]
        state = tuple(sorted((e["id"], e["status"], e["name"], e["olvm"]) for e in entries))
        with self._cond:
            due = self._report_due or state != self._reported or now - self._reported_at >= REPORT_REFRESH - TICK_SLACK
            self._report_due = False
        messages = [heartbeat] if hello or (quiet and not due) else []
        if due:
            messages.append({"kind": "vm_report", "at": time.time(), "full": True, "vms": entries})
        queued = self._enqueue(messages, spoke=False) if messages else 0
        if due:
            with self._cond:
                if queued == len(messages):
                    self._reported, self._reported_at = state, now
                else:  # not queued (stopped, or logged as malformed): try again at the next tick
                    self._report_due = True

    def _stats(self) -> None:
        host = self.driver.host_stats()
        vms = self.driver.vm_stats()["vms"]
        self.enqueue([{"kind": "stats", "at": time.time(), "host": host, "vms": vms}])

    def _guest_info(self) -> None:
        vms = self.driver.vm_list()["vms"]
        up = {vm["vm_id"] for vm in vms if vm["status"] == "up"}
        with self._cond:  # a VM that is not running starts afresh when it runs again
            for vm_id in [vm_id for vm_id in self._guest_sent if vm_id not in up]:
                del self._guest_sent[vm_id]
        for vm in vms:
            vm_id = vm["vm_id"]
            if vm_id not in up or self._stopped:
                continue
            try:
                info = self.driver.guest_info(vm_id)
            except AgentFailure as exc:  # stopped meanwhile, or its guest agent is not answering
                log.debug("no guest information of VM %s: %s", vm_id, exc)
                continue
            if info.get("guest_agent", "ok") != "ok":
                continue
            try:
                digest = _digest(info)
            except (TypeError, ValueError):
                digest = b""  # not JSON: enqueue logs it and leaves it out
            now = time.monotonic()
            with self._cond:
                last = self._guest_sent.get(vm_id)
                if digest and last is not None and last[0] == digest and now - last[1] < GUEST_REFRESH:
                    continue  # the engine has it
                # Noted before it is queued: a lifecycle event of the VM meanwhile forgets it.
                sent = self._guest_sent[vm_id] = (digest, now)
            if not self.enqueue([{"kind": "guest_info", "at": time.time(), "vm_id": vm_id, "info": info}]):
                with self._cond:
                    if self._guest_sent.get(vm_id) is sent:
                        del self._guest_sent[vm_id]

    def _every(self, interval: str) -> None:
        """Run `collect` every `self.intervals[interval]` seconds: the heartbeat at once,
        the others as soon as the first heartbeat is queued."""
        first = interval == "heartbeat_interval"
        last: float | None = None
        while True:
            with self._cond:
                while not self._stopped:
                    if last is None and (first or self._hello):
                        break
                    if last is None:
                        self._cond.wait()
                        continue
                    delay = last + self.intervals[interval] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)  # woken early by a new interval
                if self._stopped:
                    return
            last = time.monotonic()
            self.collect(interval)

    def collect(self, interval: str) -> None:
        """Run the collector of `interval` once (a scheduler calls this on its own timers).
        The first failure of a run is logged; the next ones are not news."""
        collect = self._collectors()[interval]
        what = interval.removesuffix("_interval").replace("_", " ")
        failing = self._failing.get(interval, False)
        with self._cond:
            self._holding += 1  # a scheduler sends once the collection is queued (one request, not twenty)
        try:
            collect()
        except AgentFailure as exc:
            if not failing:
                log.warning("no %s from the hypervisor: %s", what, exc)
            failing = True
        except Exception:
            if not failing:
                log.exception("collecting the %s failed", what)
            failing = True
        else:
            if failing:
                log.info("%s collected again", what)
            failing = False
        finally:
            with self._cond:
                self._holding -= 1
        self._failing[interval] = failing
        if interval == "heartbeat_interval" and not self._hello:
            with self._cond:
                self._hello = True
                self._cond.notify_all()
        self._poke()

    def _collectors(self) -> dict[str, Callable[[], None]]:
        return {
            "heartbeat_interval": self._heartbeat,
            "stats_interval": self._stats,
            "guest_info_interval": self._guest_info,
        }

    @property
    def hello(self) -> bool:
        """The first heartbeat is queued: the other collectors and the sender may start."""
        return self._hello

    def _poke(self) -> None:
        """Something changed (messages queued, the first heartbeat, new intervals): a shared
        scheduler looks at this pusher again. Threads of its own were notified already."""
        if self._scheduler is not None and not self._holding:
            self._scheduler.wake(self)

    # Sending ------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    wait = self._retry_at - time.monotonic()
                    if self._hello and self._queue and wait <= 0:
                        break
                    self._cond.wait(wait if self._hello and self._queue else None)
                if self._stopped:
                    return
                batch = self._take()
            self._send_safely(batch)

    def send_due(self) -> float | None:
        """When the next request may go: None with nothing to send (or stopped), else a
        time.monotonic() (the end of a back-off, or now)."""
        with self._cond:
            if self._stopped or not self._hello or not self._queue:
                return None
            return max(self._retry_at, time.monotonic())

    def send_once(self) -> bool:
        """Send what is queued in one request if it may go now (a scheduler's worker calls
        this); whether a request was made."""
        with self._cond:
            if self._stopped or not self._hello or not self._queue or self._retry_at > time.monotonic():
                return False
            batch = self._take()
        self._send_safely(batch)
        return True

    def _send_safely(self, batch: list[_Queued]) -> None:
        try:
            self._send(batch)
        except Exception as exc:
            log.exception("pushing failed unexpectedly")
            self._failed(f"unexpected error: {exc}")

    def _take(self) -> list[_Queued]:
        batch, size = [], 0
        for queued in self._queue:
            if batch and (size + len(queued.data) + 1 > MAX_REQUEST_BYTES or len(batch) >= MAX_MESSAGES):
                break
            batch.append(queued)
            size += len(queued.data) + 1
        return batch

    def _send(self, batch: list[_Queued]) -> None:
        self.seq += 1
        head = json.dumps({"agent": self.agent, "seq": self.seq, "sent_at": time.time()}, separators=(",", ":"))
        body = head[:-1].encode() + b',"messages":[' + b",".join(q.data for q in batch) + b"]}"
        try:
            status, reply = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(f"cannot reach the engine at {self.url}: {exc or type(exc).__name__}")
            return
        if status == 200:
            self._done(batch)
            self.accepted += 1
            self.delivered += len(batch)
            for queued in batch:
                self.delivered_kinds[queued.kind] += 1
            if self._resync:
                self._resynced()
            self._adopt(reply)
        elif status in (400, 413):
            log.error(
                "the engine refused %d message(s) (seq %d, HTTP %d): %s%s; dropped",
                len(batch),
                self.seq,
                status,
                reply.get("error", "no reason given"),
                f" (field {reply['field']})" if reply.get("field") else "",
            )
            self._done(batch, dropped=True)
        else:
            self._failed(f"the engine answered HTTP {status}: {reply.get('error', 'no reason given')}")

    def _resynced(self) -> None:
        """The first request accepted after failures or over a new connection: the engine
        may have restarted or lost what it had, so the next tick sends a full report and the
        next guest information run every VM's."""
        self._resync = False
        with self._cond:
            self._report_due = True
            self._guest_sent.clear()
        log.debug("re-syncing the engine after failures or a new connection")

    def _post(self, body: bytes) -> tuple[int, dict]:
        """POST on the kept-alive connection; a connection the engine closed while idle is
        reopened once at once."""
        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.ssl_context, timeout=self.config.push_timeout
                )
                if self._connections:
                    self._resync = True  # a listener that restarted closed the previous one
                self._connections += 1
            conn = self._conn
            try:
                conn.request(
                    "POST",
                    self.path,
                    body=body,
                    headers={"Content-Type": "application/json", "User-Agent": f"olvm-agent/{AGENT_VERSION}"},
                )
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._close()
                if fresh or attempt == 2 or self._stopped:
                    raise
                continue
            except BaseException:
                self._close()
                raise
            if response.will_close:
                self._close()
            try:
                reply = json.loads(raw) if raw else {}
            except ValueError:
                reply = {}
            return response.status, reply if isinstance(reply, dict) else {}
        raise AssertionError("unreachable")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _done(self, batch: list[_Queued], *, dropped: bool = False) -> None:
        sent = {id(q) for q in batch}
        with self._cond:
            if dropped:
                self.dropped += len(batch)
                self._lost(batch)
            kept = [q for q in self._queue if id(q) not in sent]
            self._queued_bytes -= sum(len(q.data) for q in self._queue) - sum(len(q.data) for q in kept)
            self._queue = kept
            self._backoff = self._retry_at = 0.0
        if self.last_error:
            log.info("pushing to %s works again", self.url)
            self.last_error = ""

    def _failed(self, reason: str) -> None:
        self._resync = True
        with self._cond:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX) if self._backoff else BACKOFF_FIRST
            self._retry_at = time.monotonic() + self._backoff
            backoff, queued = self._backoff, len(self._queue)
        if self._stopped:
            return
        # The first failure of a run is a warning; the retries that follow are not news.
        level = logging.DEBUG if self.last_error else logging.WARNING
        log.log(level, "push failed: %s; %d message(s) kept, retrying in %gs", reason, queued, backoff)
        self.last_error = reason

    def _adopt(self, reply: dict) -> None:
        changed = {}
        for name in INTERVALS:
            value = reply.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            value = float(min(max(value, INTERVAL_RANGE[0]), INTERVAL_RANGE[1]))
            if value != self.intervals[name]:
                changed[name] = value
        if changed:
            with self._cond:
                self.intervals.update(changed)
                self._cond.notify_all()
            if self._scheduler is not None:
                self._scheduler.reschedule(self)
            log.info("the engine set %s", ", ".join(f"{k} = {v:g}s" for k, v in changed.items()))


def _digest(info: dict) -> bytes:
    """What identifies a guest_info payload (the order of its keys aside)."""
    canonical = json.dumps(info, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def _report(vm: dict) -> dict:
    """A `vm_list` entry of a driver as a `vm_report` entry."""
    status = vm["status"] if vm["status"] in VM_STATUSES else "unknown"
    name = (vm["name"] or vm["vm_id"])[:MAX_NAME]
    return {"id": vm["vm_id"], "name": name, "status": status, "olvm": bool(vm["managed"])}


class PushScheduler:
    """Drives many pushers from a few threads: what lets the simulator run a thousand hosts
    in one process (`hostagent/simulate.py`), where each would otherwise take four threads.

    One timer thread keeps, in a heap, every pusher's next collection (heartbeat tick,
    stats, guest information, each on the pusher's own intervals, which the engine's answers
    change) and every end of a back-off. Collectors run in `collect_workers` threads,
    requests in `send_workers` threads (blocking, each pusher on its own kept-alive
    connection with its own certificate). A pusher never has two requests or two runs of
    the same collector at once, so the pools' queues hold at most a few entries per pusher.
    A pusher that queues messages (a lifecycle event, a collection) wakes the scheduler,
    which sends at once unless that pusher is backing off.

    `spread`: the first heartbeat of each pusher comes at a random moment within that many
    seconds, so a thousand hosts started together do not push in step.
    """

    def __init__(self, *, send_workers: int = 32, collect_workers: int = 4, spread: float = 0.0):
        self.spread = spread
        self._cond = threading.Condition()
        self._heap: list[list] = []  # [when (monotonic), seq, pusher, action, live]
        self._seq = itertools.count()
        self._timers: dict[int, dict[str, list]] = {}  # id(pusher) -> action -> its heap entry
        self._last: dict[int, dict[str, float]] = {}  # id(pusher) -> interval -> start of its last run
        self._sending: set[int] = set()  # pushers with a request submitted or on the wire
        self._stopped = False
        self._random = random.Random()
        self._senders = ThreadPoolExecutor(send_workers, thread_name_prefix="push-send")
        self._collectors = ThreadPoolExecutor(collect_workers, thread_name_prefix="push-collect")
        self._thread = threading.Thread(target=self._run, name="push-scheduler", daemon=True)
        self._thread.start()

    def add(self, pusher: Pusher) -> None:
        delay = self._random.uniform(0.0, self.spread) if self.spread > 0 else 0.0
        with self._cond:
            self._timers[id(pusher)] = {}
            self._last[id(pusher)] = {}
            self._at(pusher, "heartbeat_interval", time.monotonic() + delay)

    def remove(self, pusher: Pusher) -> None:
        with self._cond:
            for entry in self._timers.pop(id(pusher), {}).values():
                entry[4] = False
            self._last.pop(id(pusher), None)

    def stop(self) -> None:
        """Stop the timer thread and the pools (requests on the wire end with their pushers)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(5)
        self._collectors.shutdown(wait=False, cancel_futures=True)
        self._senders.shutdown(wait=False, cancel_futures=True)

    def wake(self, pusher: Pusher) -> None:
        """Send what `pusher` queued: now, or when its back-off ends."""
        key = id(pusher)
        with self._cond:
            if self._stopped or key not in self._timers or key in self._sending:
                return  # a pusher that is sending looks again when its request is done
            due = pusher.send_due()
            if due is None:
                return
            if due > time.monotonic():
                current = self._timers[key].get("send")
                if current is None or not current[4] or current[0] > due:
                    self._at(pusher, "send", due)
                return
            self._sending.add(key)
        self._senders.submit(self._send, pusher)

    def reschedule(self, pusher: Pusher) -> None:
        """The pusher's intervals changed: move its next collections accordingly."""
        with self._cond:
            last = self._last.get(id(pusher), {})
            for interval, entry in list(self._timers.get(id(pusher), {}).items()):
                if interval in last and entry[4]:
                    when = last[interval] + pusher.intervals[interval]
                    if when != entry[0]:
                        self._at(pusher, interval, when)

    # Inside -------------------------------------------------------------------------------------

    def _at(self, pusher: Pusher, action: str, when: float) -> None:
        """(Re)arm the pusher's timer for `action` (caller holds the lock)."""
        timers = self._timers.get(id(pusher))
        if timers is None:
            return
        previous = timers.get(action)
        if previous is not None:
            previous[4] = False
        entry = [when, next(self._seq), pusher, action, True]
        timers[action] = entry
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and not self._heap[0][4]:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        entry = heapq.heappop(self._heap)
                        entry[4] = False
                        break
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
            pusher, action = entry[2], entry[3]
            if action == "send":
                self.wake(pusher)
            else:
                self._collectors.submit(self._collect, pusher, action)

    def _collect(self, pusher: Pusher, interval: str) -> None:
        started = time.monotonic()
        try:
            if not pusher.stopped:
                pusher.collect(interval)
        finally:
            with self._cond:
                last = self._last.get(id(pusher))
                if last is not None and not pusher.stopped:
                    last[interval] = started
                    self._at(pusher, interval, started + pusher.intervals[interval])
                    if pusher.hello:  # the first heartbeat is queued: the other collectors start
                        for other in ("stats_interval", "guest_info_interval"):
                            if other not in last and other not in self._timers[id(pusher)]:
                                self._at(pusher, other, time.monotonic())

    def _send(self, pusher: Pusher) -> None:
        try:
            pusher.send_once()
        finally:
            with self._cond:
                self._sending.discard(id(pusher))
            self.wake(pusher)  # what was queued meanwhile, or the end of a back-off
