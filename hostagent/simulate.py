"""`python -m hostagent simulate`: many simulated hosts in one process, for scale work.

Each simulated host is what `python -m hostagent serve` runs with `driver = sim`, nothing
less: its own SimDriver (named after the host, with the manifest's VMs running from the
start), its own JSON-RPC server (`AgentHTTPServer`: mutual TLS with the host's own
certificate, on 127.0.0.1 at the host's port) and its own pusher to the engine's ingest
listener, presenting that certificate (its common name is the host's inventory id). Every
answer says `"simulated": true`, every push says `agent.simulated = true`, and the engine
has the hosts flagged simulated: nothing passes for a real hypervisor.

What lets a thousand of them share one process on a small machine:

- one selector thread accepts on every host's listening socket; a connection gets a
  thread only while it is open (the engine's calls are short), where `serve` gives each
  server a polling thread of its own;
- one `PushScheduler`: a timer thread and two small pools drive every host's collectors
  and requests, where `serve` gives each pusher four threads. The first heartbeats are
  spread over the heartbeat interval, so hosts started together do not push in step;
- each pusher leaves out what the engine knows already (hostagent/agent/push.py): no bare
  heartbeat when the host pushed something else within the interval, a full report when
  the VM list changed and otherwise every 10 s, guest information only when it changed.
  `status()["messages_by_kind"]` counts what was delivered.

The manifest is written by the engine (`manage.py simulate`), which creates the hosts, their
certificates and their VMs; paths are absolute or relative to the manifest:

    {"version": 1, "engine_url": "https://127.0.0.1:54322/ingest", "ca_file": "/.../ca.pem",
     "heartbeat_interval": 2.0, "stats_interval": 5.0, "guest_info_interval": 10.0,
     "hosts": [{"id": "<uuid>", "name": "sim-0001", "port": 56000,
                "cert_file": "/.../cert.pem", "key_file": "/.../key.pem",
                "vms": [{"id": "<uuid>", "name": "sim-0001-vm-01", "vcpus": 1, "memory_mib": 512}]}]}

Port 0 takes any free port (tests: `Simulation.servers[host id].port`). The engine's answers
set the intervals, as for any agent. No Django here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import selectors
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .agent.config import ConfigError, config_from_dict
from .agent.drivers.sim_driver import SimDriver
from .agent.errors import InvalidParams
from .agent.push import DROP_CLASS, INTERVALS, Pusher, PushScheduler, client_ssl_context
from .agent.server import AgentHTTPServer, server_ssl_context
from .agent.verbs import VERBS

log = logging.getLogger("hostagent.simulate")

MANIFEST_VERSION = 1
VM_KEYS = {"id": None, "name": None, "vcpus": 1, "memory_mib": 512}  # and their defaults
STATUS_EVERY = 30.0  # seconds between the status lines of a running simulation


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class SimHost:
    id: str
    name: str
    port: int
    cert_file: str
    key_file: str
    vms: tuple[dict, ...]


@dataclass(frozen=True)
class Manifest:
    engine_url: str
    ca_file: str
    intervals: dict
    hosts: tuple[SimHost, ...]

    @property
    def vm_count(self) -> int:
        return sum(len(h.vms) for h in self.hosts)


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check a manifest; raise ManifestError naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ManifestError(f"{path} is not JSON: {exc}") from None
    return parse_manifest(data, base_dir=path.parent)


def parse_manifest(data, *, base_dir: str | os.PathLike = ".") -> Manifest:
    base = Path(base_dir)

    def need(value, kind, where: str):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ManifestError(f"{where}: missing or not a {kind.__name__}")
        return value

    def path_of(value, where: str) -> str:
        return str(base / need(value, str, where))

    need(data, dict, "the manifest")
    if data.get("version", MANIFEST_VERSION) != MANIFEST_VERSION:
        raise ManifestError(f"version: this simulator reads manifests of version {MANIFEST_VERSION}")
    intervals = {}
    for name in INTERVALS:
        value = data.get(name, 0) or None
        if value is not None:
            intervals[name] = float(need(value, (int, float), name))
    hosts, ports, names, ids = [], set(), set(), set()
    for i, raw in enumerate(need(data.get("hosts"), list, "hosts")):
        where = f"hosts[{i}]"
        need(raw, dict, where)
        port = need(raw.get("port"), int, f"{where}.port")
        if not 0 <= port <= 65535 or (port and port in ports):
            raise ManifestError(f"{where}.port: {port} is not a free port number of this manifest")
        name = need(raw.get("name"), str, f"{where}.name")
        if not name or name in names:
            raise ManifestError(f"{where}.name: empty or given twice")
        host_id = need(raw.get("id"), str, f"{where}.id")
        if not host_id or host_id in ids:
            raise ManifestError(f"{where}.id: empty or given twice")
        ports.add(port)
        names.add(name)
        ids.add(host_id)
        vms, vm_names = [], set()
        for j, vm in enumerate(need(raw.get("vms", []), list, f"{where}.vms")):
            need(vm, dict, f"{where}.vms[{j}]")
            spec = {key: vm.get(key, default) for key, default in VM_KEYS.items()}
            try:
                vms.append(VERBS["create_vm"].validate({"spec": spec})["spec"])
            except InvalidParams as exc:
                raise ManifestError(f"{where}.vms[{j}]: {exc}") from None
            if spec["name"] in vm_names:
                raise ManifestError(f"{where}.vms[{j}].name: {spec['name']} is given twice on this host")
            vm_names.add(spec["name"])
        hosts.append(
            SimHost(
                id=host_id,
                name=name,
                port=port,
                cert_file=path_of(raw.get("cert_file"), f"{where}.cert_file"),
                key_file=path_of(raw.get("key_file"), f"{where}.key_file"),
                vms=tuple(vms),
            )
        )
    return Manifest(
        engine_url=need(data.get("engine_url"), str, "engine_url"),
        ca_file=path_of(data.get("ca_file"), "ca_file"),
        intervals=intervals,
        hosts=tuple(hosts),
    )


class ServerMux:
    """Accepts on many agent servers from one thread; each connection is then served by
    its server as usual (a thread per open connection, TLS handshake in that thread)."""

    def __init__(self, servers: list[AgentHTTPServer], poll: float = 0.5):
        self.servers = servers
        self.poll = poll
        self._selector = selectors.DefaultSelector()
        for server in servers:
            server.socket.setblocking(False)
            self._selector.register(server.socket, selectors.EVENT_READ, server)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="sim-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._selector.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(self.poll):
                self._accept(key.data)

    @staticmethod
    def _accept(server: AgentHTTPServer) -> None:
        try:
            request, address = server.get_request()
        except (BlockingIOError, InterruptedError):
            return  # another wake-up took it, or the client gave up
        except OSError as exc:
            log.warning("accepting on %s failed: %s", server.server_address, exc)
            return
        request.setblocking(True)
        if not server.verify_request(request, address):
            server.shutdown_request(request)
            return
        try:
            server.process_request(request, address)  # the server's own thread per connection
        except Exception:
            server.handle_error(request, address)
            server.shutdown_request(request)


class Simulation:
    """The hosts of a manifest: `start()`, `stop()`, `status()`."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        storage_dir: str | os.PathLike,
        send_workers: int = 32,
        collect_workers: int = 4,
        spread: float | None = None,
        push: bool = True,
    ):
        self.manifest = manifest
        self.storage_dir = Path(storage_dir)
        self.push = push
        heartbeat = manifest.intervals.get("heartbeat_interval", 2.0)
        self.scheduler = PushScheduler(
            send_workers=send_workers,
            collect_workers=collect_workers,
            spread=heartbeat if spread is None else spread,
        )
        self.drivers: dict[str, SimDriver] = {}  # host id -> its driver
        self.servers: dict[str, AgentHTTPServer] = {}
        self.pushers: dict[str, Pusher] = {}
        self.mux: ServerMux | None = None
        self.started_at = 0.0

    def start(self) -> None:
        """Bind every host's port and start pushing; raise OSError/ConfigError/ssl.SSLError
        (after closing what was opened) when a host cannot start."""
        _raise_open_files_limit(2 * len(self.manifest.hosts) + 256)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        try:
            for host in self.manifest.hosts:
                self._start_host(host)
        except BaseException:
            self.stop()
            raise
        self.mux = ServerMux(list(self.servers.values()))
        self.mux.start()
        if self.push:
            for pusher in self.pushers.values():
                pusher.start(self.scheduler)
        self.started_at = time.monotonic()
        ports = sorted(server.port for server in self.servers.values())
        log.info(
            "%d simulated hosts with %d VMs on 127.0.0.1:%s%s",
            len(self.servers),
            self.manifest.vm_count,
            f"{ports[0]}-{ports[-1]}" if ports else "-",
            f", pushing to {self.manifest.engine_url}" if self.push else ", not pushing",
        )

    def _start_host(self, host: SimHost) -> None:
        config = config_from_dict(
            {
                "driver": "sim",
                "host_name": host.name,
                "listen_address": "127.0.0.1",
                "listen_port": host.port,
                "cert_file": host.cert_file,
                "key_file": host.key_file,
                "ca_file": self.manifest.ca_file,
                "storage_roots": [str(self.storage_dir)],
                "engine_url": self.manifest.engine_url if self.push else "",
                **self.manifest.intervals,
            }
        )
        driver = SimDriver(config)
        driver.preload(list(host.vms))
        self.drivers[host.id] = driver
        context = server_ssl_context(host.cert_file, host.key_file, config.ca_file)
        try:
            server = AgentHTTPServer(config, driver, context)
        except OSError as exc:
            where = f"host {host.name} cannot listen on 127.0.0.1:{host.port}"
            raise OSError(exc.errno, f"{where}: {exc.strerror}") from None
        self.servers[host.id] = server
        if self.push:
            context = client_ssl_context(host.cert_file, host.key_file, config.ca_file)
            self.pushers[host.id] = Pusher(config, driver, ssl_context=context)

    def stop(self) -> None:
        for pusher in self.pushers.values():
            pusher.stop(timeout=1.0)
        self.scheduler.stop()
        if self.mux is not None:
            self.mux.stop()
        for server in self.servers.values():
            with contextlib.suppress(OSError):
                server.server_close()
        for driver in self.drivers.values():
            driver.close()

    def status(self) -> dict:
        """What the simulation did so far, and what it costs this process."""
        pushers = list(self.pushers.values())
        return {
            "hosts": len(self.servers),
            "vms": self.manifest.vm_count,
            "requests_accepted": sum(p.accepted for p in pushers),
            "messages_delivered": sum(p.delivered for p in pushers),
            "messages_by_kind": {kind: sum(p.delivered_kinds[kind] for p in pushers) for kind in DROP_CLASS},
            "messages_dropped": sum(p.dropped for p in pushers),
            "hosts_failing": sum(1 for p in pushers if p.last_error),
            "last_error": next((p.last_error for p in pushers if p.last_error), ""),
            "threads": threading.active_count(),
            "rss_mib": round(_rss_bytes() / 2**20, 1),
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
        }


def run(
    manifest_path: str | os.PathLike,
    *,
    storage_dir: str | os.PathLike | None = None,
    send_workers: int = 32,
    spread: float | None = None,
    status_every: float = STATUS_EVERY,
    status_file: str | os.PathLike | None = None,
) -> int:
    """The CLI: run the manifest's hosts until SIGTERM or SIGINT; the exit status.
    `status_file`: rewritten with `Simulation.status()` as JSON every second (for benches)."""
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as exc:
        log.error("%s", exc)
        return 2
    storage = Path(storage_dir) if storage_dir else Path(manifest_path).resolve().parent / "storage"
    simulation = Simulation(manifest, storage_dir=storage, send_workers=send_workers, spread=spread)
    started = time.monotonic()
    try:
        simulation.start()
    except (OSError, ConfigError, ValueError) as exc:
        log.error("cannot start the simulated hosts: %s", exc)
        return 2
    log.info("started in %.1f s: %s", time.monotonic() - started, json.dumps(simulation.status()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    next_line = time.monotonic() + status_every
    while not stop.wait(1.0 if status_file else status_every):
        if status_file:
            _write_status(Path(status_file), simulation.status())
        if time.monotonic() >= next_line:
            log.info("status: %s", json.dumps(simulation.status()))
            next_line += status_every
    log.info("stopping %d simulated hosts", len(simulation.servers))
    simulation.stop()
    return 0


def _write_status(path: Path, status: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def _raise_open_files_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
