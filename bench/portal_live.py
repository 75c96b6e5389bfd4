"""Bench: live VM statuses in 50 portal pages at 1,000 simulated hosts x 20 VMs.

Builds its inventory once in its own database (DATABASE_URL, default olvm_bench_portal),
Redis db (REDIS_URL, default db 11) and var directory (OLVM_VAR_DIR, default
var/bench-portal: its own engine CA), with `manage.py simulate`. Then it runs the engine as
`make run` does, each process of its own:

- web: `daphne olvm_site.asgi:application` (the portal and `/ws/live/`);
- worker: `celery -A olvm_site worker --pool solo -Q default,slow`; beat: `celery beat`;
- the ingest listener(s): `manage.py ingest --reuse-port` (two processes on one port);
- the simulator: `python -m hostagent simulate --manifest ... --send-workers 128`, every
  host a real agent pushing its stats, VM lists and lifecycle events.

50 clients (one asyncio thread of this process, with a small websocket client of its own),
each with a session of its own of a staff user (Django's `force_login`: what signing in
leaves), load the VM list page `/vms/` (its first page, 50 rows) and do what
static/olvm/live.js does there: connect to `/ws/live/`, subscribe to every `data-live` row
and the bottom pane's `events` and `jobs` `since` the page's `renderedAt`, and wait for
`caught_up`.

Then, every second (30 times by default), it changes a watched VM *at its agent*: JSON-RPC
`destroy_vm` (then `create_vm` of the same VM the next second) to the simulated host over
mutual TLS with the engine's client certificate (`inventory.servicekit.agent_for`). The sim
agent emits a `vm_event` -> ingest -> reconciler -> publish -> daphne -> websocket. For each
(client, change) it takes the delay from the RPC call to the client's `vm.status` frame
carrying the new status (missed: none within --timeout), and prints p50 / p95, the CPU (over
the changes) and RSS (at their end) of web + worker + beat (target: under 500 MB together) and
of the ingest listeners and the simulator, and how busy the machine was. Target: p95 under
1 s. It asserts nothing. Logs of every process in the var directory.

    .venv/bin/python bench/portal_live.py [--hosts 1000] [--vms-per-host 20] [--clients 50] [--changes 30]
"""

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/olvm_bench_portal")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/11")
os.environ.setdefault("OLVM_VAR_DIR", str(ROOT / "var" / "bench-portal"))

import httpx  # noqa: E402
from _setup import django_on_bench_db, percentile  # noqa: E402
from ingest import (  # noqa: E402
    _start_listener,
    cpu_by_process,
    cpu_seconds,
    cpu_shares,
    machine_cpu,
    proc_status,
    read_status,
    stop,
    wait_for_port,
)

BENCH_USER = "bench-portal"
MB = 1_000_000 / 2**20  # MiB per MB


# /proc ----------------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# The page and its websocket -------------------------------------------------------------------


def page_subscriptions(html: str) -> tuple[list[str], dict]:
    """What live.js subscribes to on this page (`wanted()`: the panes' streams first, then every
    data-live / data-subscribe element in document order), and the page's live configuration."""
    match = re.search(r'<script id="olvm-live-config" type="application/json">(.*?)</script>', html, re.S)
    if match is None:
        raise SystemExit("the page has no olvm-live-config: not a live page (signed in?)")
    config = json.loads(match.group(1))
    keys = {}
    if 'id="pane-events-body"' in html:
        keys["events"] = True
    if 'id="pane-jobs-body"' in html:
        keys["jobs"] = True
    for key in re.findall(r'data-(?:live|subscribe)="([^"]+)"', html):
        keys[key] = True
    return list(keys), config


class WebSocket:
    """The client half of RFC 6455 on asyncio streams, as much as this bench needs (text frames,
    pings, close). autobahn's asyncio client cannot share a process with Django here: daphne's
    app imports autobahn for twisted, and txaio serves one framework per process."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict[str, str]) -> "WebSocket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade"]
        lines += [f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        accept = base64.b64encode(hashlib.sha1(key + cls.GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            writer.close()
            raise ConnectionError(f"websocket handshake refused: {head.splitlines()[0] if head else 'no answer'}")
        return cls(reader, writer)

    async def send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big")).to_bytes(
            size, "big"
        )
        self.writer.write(head + mask + masked)
        await self.writer.drain()

    async def receive(self) -> tuple[int, bytes]:
        """The next message: (opcode, payload); pings are answered on the way."""
        parts, first = [], None
        while True:
            b0, b1 = await self.reader.readexactly(2)
            size = b1 & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            mask = await self.reader.readexactly(4) if b1 & 0x80 else b""
            payload = await self.reader.readexactly(size)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                await self.send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode >= 0x8:  # close
                return opcode, payload
            first = opcode if first is None else first
            parts.append(payload)
            if b0 & 0x80:
                return first, b"".join(parts)

    async def close(self) -> None:
        try:
            await self.send(0x8, struct.pack("!H", 1000))
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()


class LiveClient:
    """One portal page: its session, what it subscribed to, and the `vm.status` frames it got."""

    def __init__(self, index: int, port: int, session_key: str, cookie_name: str):
        self.index = index
        self.port = port
        self.cookie = f"{cookie_name}={session_key}"
        self.keys: list[str] = []
        self.page_ms = 0.0
        self.statuses: list[tuple[float, str, str]] = []  # (monotonic time, VM id, status)
        self.frames: Counter = Counter()
        self.errors: list[dict] = []
        self.closed: str | None = None
        self.socket: WebSocket | None = None
        self.caught_up = asyncio.Event()
        self.reading: asyncio.Task | None = None

    async def open(self, page_path: str, http: httpx.AsyncClient) -> None:
        started = time.monotonic()
        response = await http.get(page_path, headers={"Cookie": self.cookie})
        self.page_ms = (time.monotonic() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"client {self.index}: GET {page_path} answered {response.status_code}")
        self.keys, config = page_subscriptions(response.text)
        self.socket = await WebSocket.connect(
            self.port, config["path"], {"Origin": f"http://127.0.0.1:{self.port}", "Cookie": self.cookie}
        )
        self.reading = asyncio.create_task(self.read())
        await self.socket.send(0x1, json.dumps({"subscribe": self.keys, "since": config["renderedAt"]}).encode())
        await asyncio.wait_for(self.caught_up.wait(), 120)

    async def read(self) -> None:
        try:
            while True:
                opcode, payload = await self.socket.receive()
                at = time.monotonic()
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.closed = f"closed by the engine: {code} {payload[2:].decode(errors='replace')}"
                    return
                self.on_frame(at, payload)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.closed = f"connection lost: {exc!r}"

    def on_frame(self, at: float, payload: bytes) -> None:
        frame = json.loads(payload)
        kind = frame.get("type")
        self.frames[kind] += 1
        if kind == "vm.status":
            self.statuses.append((at, frame["vm"]["id"], frame["vm"]["status"]))
        elif kind == "caught_up":
            self.caught_up.set()
        elif kind in ("error", "resync"):
            self.errors.append(frame)

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
        if self.socket is not None:
            await self.socket.close()


class Clients(threading.Thread):
    """Every client in one asyncio loop: the pages load a few at a time (as browsers opened
    together would), then their sockets stay open until `close()`."""

    def __init__(self, clients: list[LiveClient], page_path: str, parallel: int = 8):
        super().__init__(name="clients", daemon=True)
        self.clients = clients
        self.page_path = page_path
        self.parallel = parallel
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the main thread
            self.failure = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        slots = asyncio.Semaphore(self.parallel)
        port = self.clients[0].port

        async def one(client: LiveClient, http) -> None:
            async with slots:
                await client.open(self.page_path, http)

        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
                await asyncio.gather(*(one(client, http) for client in self.clients))
            self.ready.set()
            await self._stopping.wait()
        finally:
            await asyncio.gather(*(client.close() for client in self.clients), return_exceptions=True)

    def close(self) -> None:
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.join(15)


# The changes ----------------------------------------------------------------------------------


@dataclass
class Change:
    vm_id: str
    status: str  # the status the clients should see
    at: float  # monotonic time of the RPC call
    rpc_ms: float
    error: str = ""


def targets_on_page(keys: list[str], host_ids: set[str], wanted: int) -> list[tuple]:
    """(VM, host, spec) of the page's VMs that are up on a simulated host of this run."""
    from compute.models import VirtualMachine
    from compute.tasks import vm_spec

    ids = [key[3:] for key in keys if key.startswith("vm.")]
    vms = {
        str(vm.pk): vm for vm in VirtualMachine.objects.filter(pk__in=ids, status="up").select_related("run_on_host")
    }
    chosen = []
    for vm_id in ids:
        vm = vms.get(vm_id)
        if vm is not None and vm.run_on_host_id and str(vm.run_on_host_id) in host_ids:
            chosen.append((vm, vm.run_on_host, vm_spec(vm)))
        if len(chosen) == wanted:
            break
    return chosen


def drive(targets: list[tuple], count: int, spacing: float) -> list[Change]:
    """`count` changes `spacing` s apart: destroy a VM at its agent, create it again the next
    time, then the next VM."""
    from hostagent.client import AgentError
    from inventory.servicekit import agent_for

    agents = {}
    changes = []
    next_at = time.monotonic()
    for i in range(count):
        vm, host, spec = targets[(i // 2) % len(targets)]
        agent = agents.get(host.pk) or agents.setdefault(host.pk, agent_for(host))
        destroy = i % 2 == 0
        error = ""
        started = time.monotonic()
        try:
            if destroy:
                agent.destroy_vm(str(vm.pk))
            else:
                agent.create_vm(spec)
        except AgentError as exc:
            error = str(exc)
        changes.append(
            Change(str(vm.pk), "down" if destroy else "up", started, (time.monotonic() - started) * 1000, error)
        )
        next_at += spacing
        time.sleep(max(0.0, next_at - time.monotonic()))
    if count % 2:  # the last VM runs again, as every other (not measured)
        vm, host, spec = targets[(count // 2) % len(targets)]
        try:
            agents[host.pk].create_vm(spec)
        except AgentError as exc:
            print(f"VM {vm.name} could not be created again: {exc}", flush=True)
    return changes


def delays(changes: list[Change], clients: list[LiveClient], timeout: float) -> tuple[list[list[float]], int]:
    """For each change, the delays (ms) from its RPC to each client's frame with the new status;
    and how many (client, change) pairs saw none within `timeout` (or before the same change
    again)."""
    per_change, missed = [], 0
    for n, change in enumerate(changes):
        got = []
        per_change.append(got)
        until = change.at + timeout
        for later in changes[n + 1 :]:
            if later.vm_id == change.vm_id and later.status == change.status:
                until = min(until, later.at)
                break
        for client in clients:
            seen = [
                at
                for at, vm_id, status in list(client.statuses)
                if vm_id == change.vm_id and status == change.status and change.at <= at < until
            ]
            if seen:
                got.append((min(seen) - change.at) * 1000)
            else:
                missed += 1
    return per_change, missed


def wait_received(changes: list[Change], clients: list[LiveClient], timeout: float) -> None:
    """Until every client saw every change, at most `timeout` s after the last RPC."""
    deadline = changes[-1].at + timeout if changes else time.monotonic()
    while time.monotonic() < deadline:
        _, missed = delays(changes, clients, timeout)
        if not missed:
            return
        time.sleep(0.2)


# Processes ------------------------------------------------------------------------------------


def start(name: str, command: list[str], log_dir: Path) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OLVM_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_engine(args, var: Path, processes: dict[str, subprocess.Popen]) -> None:
    """web, worker and beat into `processes` (stopped by the caller, even when one fails)."""
    celery = [sys.executable, "-m", "celery", "-A", "olvm_site"]
    daphne = str(Path(sys.executable).parent / "daphne")
    processes["web"] = start(
        "daphne", [daphne, "-b", "127.0.0.1", "-p", str(args.web_port), "olvm_site.asgi:application"], var
    )
    processes["worker"] = start(
        "worker", celery + ["worker", "--pool", "solo", "-Q", "default,slow", "-l", "warning"], var
    )
    processes["beat"] = start(
        "beat", celery + ["beat", "-l", "warning", "--schedule", str(var / "celerybeat-schedule")], var
    )
    wait_for_port(args.web_port, processes["web"])


def start_simulator(args, manifest: Path, status_file: Path, var: Path, processes: dict) -> None:
    status_file.unlink(missing_ok=True)
    started = time.monotonic()
    sim = processes["simulator"] = start(
        "simulate",
        [sys.executable, "-m", "hostagent", "simulate", "--manifest", str(manifest), "--status-file", str(status_file)]
        + ["--log-level", "WARNING", "--send-workers", str(args.send_workers)],
        var,
    )
    deadline = started + 300
    while read_status(status_file).get("hosts") != args.hosts or read_status(status_file).get("uptime_s") is None:
        if sim.poll() is not None:
            raise SystemExit(f"the simulator ended with {sim.returncode}; see {var / 'simulate.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the simulator did not start its {args.hosts} hosts within 300 s")
        time.sleep(0.5)
    status = read_status(status_file)
    print(
        f"simulator up in {time.monotonic() - started:.1f} s: {status['hosts']} hosts, {status['vms']} VMs, "
        f"{status['threads']} threads (pid {sim.pid})",
        flush=True,
    )


def wait_pushed(host_ids: set[str], since: dt.datetime, timeout: float) -> None:
    """Until the ingest listener has had a push of every host since `since`."""
    from inventory.models import Host

    started = time.monotonic()
    while True:
        late = Host.objects.filter(pk__in=host_ids).exclude(last_heartbeat__gte=since).count()
        if not late:
            break
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{late} hosts did not push within {timeout:g} s; see ingest.log and simulate.log")
        time.sleep(1.0)
    print(f"every host pushed within {time.monotonic() - started:.1f} s of the engine being up", flush=True)


def session_keys(count: int) -> list[str]:
    """`count` sessions of the bench's staff user, as many sign-ins would leave."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER, defaults={"is_staff": True})
    if not user.is_staff or not user.is_active:
        user.is_staff = user.is_active = True
        user.save(update_fields=["is_staff", "is_active"])
    keys = []
    for _ in range(count):
        client = Client()
        client.force_login(user)
        keys.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
    return keys


# The bench ------------------------------------------------------------------------------------


def setup(args, manifest: Path) -> set[str]:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command(
        "simulate",
        hosts=args.hosts,
        vms_per_host=args.vms_per_host,
        port_base=args.port_base,
        manifest=str(manifest),
        engine_url=f"https://127.0.0.1:{args.ingest_port}/ingest",
    )
    print(
        f"setup (manage.py simulate --hosts {args.hosts} --vms-per-host {args.vms_per_host}): "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return {h["id"] for h in json.loads(manifest.read_text())["hosts"]}


def measure(args, var: Path, manifest: Path, host_ids: set[str]) -> None:
    from django.conf import settings

    engine_intervals = {
        "heartbeat": settings.OLVM_AGENT_HEARTBEAT_INTERVAL,
        "stats": settings.OLVM_AGENT_STATS_INTERVAL,
        "guest_info": settings.OLVM_AGENT_GUEST_INFO_INTERVAL,
    }
    processes: dict[str, subprocess.Popen] = {}  # every process started, by name: all stopped at the end
    clients_thread = None
    try:
        for i in range(args.listeners):
            processes[f"ingest-{i + 1}"] = _start_listener(
                args.ingest_port,
                engine_intervals,
                args.workers,
                2 * args.hosts + 100,
                var,
                reuse_port=args.listeners > 1,
            )
        listeners = list(processes.values())
        sim_started = dt.datetime.now(dt.UTC)
        start_simulator(args, manifest, var / "status.json", var, processes)
        sim = processes["simulator"]
        start_engine(args, var, processes)
        engine = {name: processes[name] for name in ("web", "worker", "beat")}
        pids = ", ".join(str(p.pid) for p in listeners)
        print(
            f"engine up: web (daphne :{args.web_port}) pid {engine['web'].pid}, worker pid {engine['worker'].pid}, "
            f"beat pid {engine['beat'].pid}; ingest :{args.ingest_port} pids {pids}",
            flush=True,
        )
        wait_pushed(host_ids, sim_started, 300)
        time.sleep(args.warmup)  # the first full reports of every host are through

        clients = [
            LiveClient(i, args.web_port, key, settings.SESSION_COOKIE_NAME)
            for i, key in enumerate(session_keys(args.clients))
        ]
        started = time.monotonic()
        clients_thread = Clients(clients, args.page)
        clients_thread.start()
        if not clients_thread.ready.wait(600) or clients_thread.failure:
            raise SystemExit(f"the clients did not all subscribe: {clients_thread.failure!r}")
        keys, page_ms = clients[0].keys, [c.page_ms for c in clients]
        print(
            f"{len(clients)} clients signed in, loaded {args.page} (p50 {percentile(page_ms, 50):.0f} ms, "
            f"p95 {percentile(page_ms, 95):.0f} ms), subscribed to {len(keys)} keys each "
            f"({sum(k.startswith('vm.') for k in keys)} VMs{''.join(', ' + k for k in keys if '.' not in k)}) and "
            f"caught up, all in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        targets = targets_on_page(keys, host_ids, (args.changes + 1) // 2)
        if not targets:
            raise SystemExit("no VM of the page is up on a simulated host of this run")

        named = {**{p.pid: "ingest" for p in listeners}, sim.pid: "simulator", os.getpid(): "bench+clients"}
        named |= {p.pid: name for name, p in engine.items()}
        t0, procs0, machine0 = time.monotonic(), cpu_by_process(), machine_cpu()
        cpu0 = {pid: cpu_seconds(pid) for pid in named}
        changes = drive(targets, args.changes, args.spacing)
        wait_received(changes, clients, args.timeout)
        t1, procs1, machine1 = time.monotonic(), cpu_by_process(), machine_cpu()
        cpu1 = {pid: cpu_seconds(pid) for pid in named}
        elapsed = t1 - t0
        cpu = {pid: (cpu1[pid] - cpu0[pid]) / elapsed * 100 for pid in named}
        memory = {pid: (proc_status(pid)["rss_mib"], peak_rss_mib(pid)) for pid in named}
        per_change, missed = delays(changes, clients, args.timeout)
        report(args, changes, clients, per_change, missed, targets, engine, listeners, sim, cpu, memory)
        shares = cpu_shares(procs0, procs1, elapsed, named)
        print(
            f"machine {(machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1) * 100:.0f}% busy over the "
            f"{elapsed:.0f} s of changes ({os.cpu_count()} CPUs; % of one core: "
            + ", ".join(f"{k} {v:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
            + f"); load average {load_average()}",
            flush=True,
        )
    finally:
        try:
            if clients_thread is not None:
                clients_thread.close()
        finally:
            for process in reversed(processes.values()):
                stop(process)


def report(args, changes, clients, per_change, missed, targets, engine, listeners, sim, cpu, memory) -> None:
    failed = [c for c in changes if c.error]
    got = [delay for delays_of_change in per_change for delay in delays_of_change]
    first = [min(d) for d in per_change if d]  # the engine's path: agent -> ingest -> publish -> daphne
    spread = [max(d) - min(d) for d in per_change if d]  # the fan-out to the pages
    pairs = len(changes) * len(clients)
    print(
        f"{len(changes)} changes ({len(targets)} VMs destroyed, then created again, at their agent; one every "
        f"{args.spacing:g} s), agent RPC p50 {percentile([c.rpc_ms for c in changes], 50):.0f} ms"
        + (f"; {len(failed)} RPCs failed: {failed[0].error}" if failed else ""),
        flush=True,
    )
    if got:
        print(
            f"agent RPC -> vm.status in the page: p50 {percentile(got, 50):.0f} ms, p95 {percentile(got, 95):.0f} ms, "
            f"max {max(got):.0f} ms over {len(got)} of {pairs} (client, change) pairs; missed {missed} "
            f"(none within {args.timeout:g} s) — target p95 < 1000 ms; per change: to its first client p50 "
            f"{percentile(first, 50):.0f} ms, p95 {percentile(first, 95):.0f} ms, first to last client p50 "
            f"{percentile(spread, 50):.0f} ms, p95 {percentile(spread, 95):.0f} ms",
            flush=True,
        )
    else:
        print(f"agent RPC -> vm.status in the page: nothing received; missed {missed} of {pairs}", flush=True)
    closed = [c for c in clients if c.closed is not None]
    errors = sum(len(c.errors) for c in clients)
    frames = Counter()
    for client in clients:
        frames.update(client.frames)
    print(
        "frames per client: "
        + ", ".join(f"{k} {v / len(clients):.0f}" for k, v in sorted(frames.items(), key=lambda kv: -kv[1]))
        + (f"; {len(closed)} clients closed ({closed[0].closed})" if closed else "")
        + (f"; {errors} error/resync frames" if errors else ""),
        flush=True,
    )

    def part(name: str, pids: list[int]) -> str:
        rss = sum(memory[p][0] for p in pids)
        peak = sum(memory[p][1] for p in pids)
        return f"{name} CPU {sum(cpu[p] for p in pids):.0f}%, RSS {rss:.0f} MiB (peak {peak:.0f})"

    engine_pids = [p.pid for p in engine.values()]
    total = sum(memory[p][0] for p in engine_pids)
    print(
        "; ".join(part(name, [p.pid]) for name, p in engine.items())
        + f"; web + worker + beat RSS {total:.0f} MiB = {total / MB:.0f} MB (target < 500 MB)",
        flush=True,
    )
    print(
        part(f"ingest ({len(listeners)} listeners)", [p.pid for p in listeners]) + "; " + part("simulator", [sim.pid]),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms-per-host", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50, help="websocket clients watching the VM list")
    parser.add_argument("--page", default="/vms/", help="the page the clients load and watch (default /vms/)")
    parser.add_argument("--changes", type=int, default=30, help="VM status changes at the agents")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between changes")
    parser.add_argument("--timeout", type=float, default=10.0, help="a change not seen within this is missed (s)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after start before the clients connect")
    parser.add_argument("--listeners", type=int, default=2, help="manage.py ingest processes sharing the port")
    parser.add_argument("--workers", type=int, default=4, help="manage.py ingest --workers")
    parser.add_argument("--send-workers", type=int, default=128, help="the simulator's sending threads")
    parser.add_argument("--ingest-port", type=int, default=54380)
    parser.add_argument("--web-port", type=int, default=8390)
    parser.add_argument("--port-base", type=int, default=64000, help="agent port of the first simulated host")
    args = parser.parse_args()
    if args.changes < 1 or args.clients < 1:
        parser.error("--changes and --clients must be at least 1")
    django_on_bench_db()
    from django.conf import settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per page load
    var = Path(settings.VAR_DIR)
    (var / "sim").mkdir(parents=True, exist_ok=True)
    manifest = var / "sim" / "manifest.json"
    print(
        f"database {os.environ['DATABASE_URL']}, Redis {os.environ['REDIS_URL']}, var {var}; "
        f"{os.cpu_count()} CPUs, load average {load_average()}",
        flush=True,
    )
    host_ids = setup(args, manifest)
    measure(args, var, manifest, host_ids)


if __name__ == "__main__":
    main()
