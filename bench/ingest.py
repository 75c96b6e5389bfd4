"""Bench: the engine's ingest at 1,000 simulated hosts x 20 VMs (PostgreSQL, Redis).

Builds its inventory once in its own database (DATABASE_URL, default olvm_bench_ingest),
Redis db (REDIS_URL, default db 13) and var directory (OLVM_VAR_DIR, default
var/bench-ingest: its own engine CA), with the same code as `manage.py simulate`. Then it
runs, as the engine does:

- the ingest listener, `manage.py ingest` in a process of its own on a port of its own,
  answering the stats interval of the step (restarted for each step);
- the simulator, `python -m hostagent simulate` on the manifest: every host with its own
  certificate, JSON-RPC server and push;
- websocket-like subscribers: channels of the Channels layer (what a consumer is; four by
  default, each of its own layer as each daphne process has) sharing out the hosts' groups
  `host.<id>`, where the engine publishes each host's stats.

For each stats interval (15 s, then faster until the engine no longer keeps up) it prints
the VM samples per second the subscriber received (against what the hosts offer), the delay
from the agent's push to the subscriber (receive time - the request's `sent_at`, p50 / p95;
and from the sample's `at`), split at the listener's handling (`handled_at`: push -> handled,
handled -> subscriber, which shows whether the time goes in the listener or in the delivery
through the channel layer), the CPU and RSS of the ingest process and of the simulator, the
simulator's threads, and how busy the machine was. It asserts nothing.

    .venv/bin/python bench/ingest.py [--hosts 1000] [--vms-per-host 20] [--intervals 15,5,2,1.5,1]
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/olvm_bench_ingest")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ.setdefault("OLVM_VAR_DIR", str(ROOT / "var" / "bench-ingest"))

from _setup import django_on_bench_db, percentile  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
KEEPS_UP = 0.95  # received / offered VM samples for a step to count as sustained


# /proc ----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    return {"rss_mib": int(values["VmRSS"].split()[0]) / 1024, "threads": int(values["Threads"])}


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of every process."""
    result = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, _, tail = (entry / "stat").read_text().rpartition(")")
                fields = tail.split()
                result[int(entry.name)] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK)
            except (OSError, IndexError, ValueError):
                continue
    return result


def cpu_shares(before: dict, after: dict, elapsed: float, named: dict[int, str]) -> dict[str, float]:
    """% of one core per group of processes between two `cpu_by_process` snapshots."""
    shares: dict[str, float] = {}
    for pid, (comm, seconds) in after.items():
        used = seconds - before.get(pid, (comm, 0.0))[1]
        group = named.get(pid) or {"postgres": "postgres", "redis-server": "redis"}.get(comm, "other")
        shares[group] = shares.get(group, 0.0) + used / elapsed * 100
    return shares


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# The subscriber -------------------------------------------------------------------------------


class Subscriber(threading.Thread):
    """Websocket-like subscribers: `count` channels, each of its own channel layer (as each
    daphne process has its own), sharing out every host's group `host.<id>`; keeps what
    arrives. One channel in a thousand groups would measure how fast one consumer can read,
    not the engine: a browser watches a page's worth of hosts."""

    def __init__(self, host_ids: list[str], count: int = 4):
        super().__init__(name="subscriber", daemon=True)
        self.host_ids = host_ids
        self.count = max(1, count)
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        # (at receive, VM samples, sent_at, at, handled_at: when the listener handled the push)
        self.received: list[tuple[float, int, float, float, float]] = []

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        layers = [channel_layers.make_backend(DEFAULT_CHANNEL_LAYER) for _ in range(self.count)]
        groups = [f"host.{host_id}" for host_id in self.host_ids]
        members = []
        for i, layer in enumerate(layers):
            channel = await layer.new_channel()
            mine = groups[i :: len(layers)]
            for group in mine:
                await layer.group_add(group, channel)
            members.append((layer, channel))
        self.ready.set()
        receivers = [asyncio.ensure_future(self._receive(layer, channel)) for layer, channel in members]
        # No timeout on a receive: a cancelled one leaves its channel (the publish/subscribe
        # layer unsubscribes it). Stopping cancels them all.
        await asyncio.to_thread(self.stopping.wait)
        for receiver in receivers:
            receiver.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)

    async def _receive(self, layer, channel) -> None:
        while True:
            message = await layer.receive(channel)
            now = time.time()
            if message.get("type") != "host.stats":
                continue
            payload = message["payload"]
            host = payload.get("host", payload)
            sample = (
                now,
                len(payload.get("vms") or ()),
                payload.get("sent_at") or 0.0,
                host.get("at") or 0.0,
                payload.get("handled_at") or 0.0,
            )
            with self.lock:
                self.received.append(sample)

    def since(self, start: float, end: float) -> list[tuple[float, int, float, float]]:
        with self.lock:
            return [r for r in self.received if start <= r[0] < end]

    def forget_before(self, moment: float) -> None:
        with self.lock:
            self.received = [r for r in self.received if r[0] >= moment]


# Processes ------------------------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process {process.args} ended with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def start_ingest(
    port: int, intervals: dict, workers: int, max_connections: int, log_dir: Path, listeners: int = 1
) -> list[subprocess.Popen]:
    """`listeners` processes of `manage.py ingest` sharing the port (SO_REUSEPORT: the kernel
    spreads the agents' connections over them), as an engine on several cores runs it."""
    started: list[subprocess.Popen] = []
    try:
        for _ in range(listeners):
            started.append(
                _start_listener(port, intervals, workers, max_connections, log_dir, reuse_port=listeners > 1)
            )
    except BaseException:
        for process in started:  # one failed: the others do not outlive the bench
            stop(process)
        raise
    return started


def _start_listener(
    port: int, intervals: dict, workers: int, max_connections: int, log_dir: Path, *, reuse_port: bool
) -> subprocess.Popen:
    env = {
        **os.environ,
        "OLVM_AGENT_HEARTBEAT_INTERVAL": str(intervals["heartbeat"]),
        "OLVM_AGENT_STATS_INTERVAL": str(intervals["stats"]),
        "OLVM_AGENT_GUEST_INFO_INTERVAL": str(intervals["guest_info"]),
        "OLVM_LOG_LEVEL": "WARNING",
    }
    log = open(log_dir / "ingest.log", "ab")  # noqa: SIM115 - the child keeps it
    command = [sys.executable, str(ROOT / "manage.py"), "ingest", "--listen", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--max-connections", str(max_connections)]
    command += ["--reuse-port"] if reuse_port else []
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if reuse_port:  # the port answers as soon as the first listener binds: wait for this one's log
        wait_for_listening(process, log_dir / "ingest.log")
    else:
        wait_for_port(port, process)
    return process


def wait_for_listening(process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process {process.args} ended with {process.returncode}")
        if any(f"pid {process.pid})" in line for line in _lines(log)):
            return
        time.sleep(0.2)
    raise SystemExit(f"listener {process.pid} did not say it listens after {timeout:g} s")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# The bench ------------------------------------------------------------------------------------


def setup(hosts: int, per_host: int, port_base: int, manifest: Path, engine_url: str) -> list[str]:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command(
        "simulate",
        hosts=hosts,
        vms_per_host=per_host,
        port_base=port_base,
        manifest=str(manifest),
        engine_url=engine_url,
    )
    print(
        f"setup (manage.py simulate --hosts {hosts} --vms-per-host {per_host}): {time.perf_counter() - started:.1f} s"
    )
    return [h["id"] for h in json.loads(manifest.read_text())["hosts"]]


def measure_step(
    args, interval: float, subscriber: Subscriber, sim: subprocess.Popen, status_file: Path, log_dir: Path
):
    intervals = {"heartbeat": args.heartbeat_interval, "stats": interval, "guest_info": args.guest_info_interval}
    listeners = start_ingest(args.ingest_port, intervals, args.workers, 2 * args.hosts + 100, log_dir, args.listeners)
    try:
        warmup = max(args.warmup, 2 * interval)
        time.sleep(warmup)
        window = max(args.window, 3 * interval)
        t0, sim0 = time.time(), read_status(status_file)
        cpu0 = {"ingest": sum(cpu_seconds(p.pid) for p in listeners), "sim": cpu_seconds(sim.pid)}
        busy0, total0 = machine_cpu()
        procs0 = cpu_by_process()
        time.sleep(window)
        t1, sim1 = time.time(), read_status(status_file)
        cpu1 = {"ingest": sum(cpu_seconds(p.pid) for p in listeners), "sim": cpu_seconds(sim.pid)}
        busy1, total1 = machine_cpu()
        procs1 = cpu_by_process()
        got = subscriber.since(t0, t1)
        subscriber.forget_before(t1)
        elapsed = t1 - t0
        push_delays = [(r[0] - r[2]) * 1000 for r in got if r[2]]
        sample_delays = [(r[0] - r[3]) * 1000 for r in got]
        # Where the time goes: push -> the listener's handler, and from there -> the subscriber.
        handle_delays = [(r[4] - r[2]) * 1000 for r in got if r[2] and r[4]]
        deliver_delays = [(r[0] - r[4]) * 1000 for r in got if r[4]]
        offered = args.hosts * args.vms_per_host / interval
        rate = sum(r[1] for r in got) / elapsed
        return {
            "interval": interval,
            "offered": offered,
            "samples_per_s": rate,
            "stats_msgs_per_s": len(got) / elapsed,
            "requests_per_s": (sim1.get("requests_accepted", 0) - sim0.get("requests_accepted", 0)) / elapsed,
            "push_p50": percentile(push_delays, 50) if push_delays else float("nan"),
            "push_p95": percentile(push_delays, 95) if push_delays else float("nan"),
            "sample_p50": percentile(sample_delays, 50) if sample_delays else float("nan"),
            "sample_p95": percentile(sample_delays, 95) if sample_delays else float("nan"),
            "handle_p50": percentile(handle_delays, 50) if handle_delays else float("nan"),
            "handle_p95": percentile(handle_delays, 95) if handle_delays else float("nan"),
            "deliver_p50": percentile(deliver_delays, 50) if deliver_delays else float("nan"),
            "deliver_p95": percentile(deliver_delays, 95) if deliver_delays else float("nan"),
            "ingest_cpu": (cpu1["ingest"] - cpu0["ingest"]) / elapsed * 100,
            "ingest": _summed([proc_status(p.pid) for p in listeners]),
            "listeners": len(listeners),
            "sim_cpu": (cpu1["sim"] - cpu0["sim"]) / elapsed * 100,
            "sim": proc_status(sim.pid),
            "machine_busy": (busy1 - busy0) / max(total1 - total0, 1) * 100,
            "shares": cpu_shares(
                procs0,
                procs1,
                elapsed,
                {**{p.pid: "ingest" for p in listeners}, sim.pid: "simulator", os.getpid(): "bench+subscriber"},
            ),
            "hosts_failing": sim1.get("hosts_failing", 0),
            "last_error": sim1.get("last_error", ""),
            "keeps_up": rate >= KEEPS_UP * offered,
        }
    finally:
        for process in listeners:
            stop(process)


def _summed(statuses: list[dict]) -> dict:
    return {"rss_mib": sum(s["rss_mib"] for s in statuses), "threads": sum(s["threads"] for s in statuses)}


def report(step: dict) -> None:
    print(
        f"stats every {step['interval']:g} s: {step['samples_per_s']:,.0f} VM samples/s received "
        f"(hosts offer {step['offered']:,.0f}/s{'' if step['keeps_up'] else ', NOT kept up'}), "
        f"{step['stats_msgs_per_s']:,.0f} stats messages/s, {step['requests_per_s']:,.0f} pushes/s; "
        f"push->subscriber p50 {step['push_p50']:.0f} ms, p95 {step['push_p95']:.0f} ms "
        f"(sample->subscriber p50 {step['sample_p50']:.0f} ms, p95 {step['sample_p95']:.0f} ms; "
        f"push->handled p50 {step['handle_p50']:.0f} / p95 {step['handle_p95']:.0f} ms, "
        f"handled->subscriber p50 {step['deliver_p50']:.0f} / p95 {step['deliver_p95']:.0f} ms); "
        f"ingest ({step['listeners']} listener(s)) CPU {step['ingest_cpu']:.0f}% of a core, "
        f"RSS {step['ingest']['rss_mib']:.0f} MiB, "
        f"{step['ingest']['threads']} threads; simulator CPU {step['sim_cpu']:.0f}%, RSS {step['sim']['rss_mib']:.0f} "
        f"MiB, {step['sim']['threads']} threads; machine {step['machine_busy']:.0f}% busy ("
        + ", ".join(f"{k} {v:.0f}%" for k, v in sorted(step["shares"].items(), key=lambda kv: -kv[1]))
        + ")"
        + (f"; {step['hosts_failing']} hosts failing: {step['last_error']}" if step["hosts_failing"] else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms-per-host", type=int, default=20)
    parser.add_argument("--intervals", default="15,5,2,1.5,1,0.75", help="stats intervals to step through (s)")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="the engine's default: 2 s")
    parser.add_argument("--guest-info-interval", type=float, default=10.0, help="the engine's default: 10 s")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per step (at least 3 intervals)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds before measuring (at least 2 intervals; the listeners restart per step)",
    )
    parser.add_argument("--workers", type=int, default=4, help="manage.py ingest --workers")
    parser.add_argument(
        "--listeners", type=int, default=os.cpu_count() or 1, help="ingest processes on the port (default: CPUs)"
    )
    parser.add_argument("--send-workers", type=int, default=128, help="the simulator's sending threads (default 128)")
    parser.add_argument("--subscribers", type=int, default=4, help="subscriber channels sharing the hosts' groups")
    parser.add_argument(
        "--sim-nice",
        type=int,
        default=0,
        help="niceness of the simulator (e.g. 10: its thousand hosts stand for other machines, so the "
        "engine's processes take this machine's CPU first; default 0, equal footing)",
    )
    parser.add_argument("--ingest-port", type=int, default=54390)
    parser.add_argument("--port-base", type=int, default=62000, help="agent port of the first simulated host")
    parser.add_argument("--all", action="store_true", help="go on through every interval after the ceiling")
    args = parser.parse_args()
    django_on_bench_db()
    from django.conf import settings

    var = Path(settings.VAR_DIR) / "sim"
    var.mkdir(parents=True, exist_ok=True)
    manifest, status_file = var / "manifest.json", var / "status.json"
    print(f"database {os.environ['DATABASE_URL']}, Redis {os.environ['REDIS_URL']}, var {settings.VAR_DIR}")
    host_ids = setup(
        args.hosts, args.vms_per_host, args.port_base, manifest, f"https://127.0.0.1:{args.ingest_port}/ingest"
    )
    subscriber = Subscriber(host_ids, args.subscribers)
    subscriber.start()
    subscriber.ready.wait(120)
    intervals = [float(x) for x in args.intervals.split(",")]
    first = {"heartbeat": args.heartbeat_interval, "stats": intervals[0], "guest_info": args.guest_info_interval}
    print(
        f"{args.hosts} hosts x {args.vms_per_host} VMs; heartbeat every {args.heartbeat_interval:g} s "
        f"(when nothing else went), full VM report on change or every 10 s, guest information looked at "
        f"every {args.guest_info_interval:g} s (sent on change); {args.listeners} ingest listener(s), "
        f"{args.subscribers} subscriber channels; {os.cpu_count()} CPUs",
        flush=True,
    )
    sim = None
    steps = []
    try:
        # The simulator's first pushes land (and the listener's certificate is issued).
        first_listeners = start_ingest(args.ingest_port, first, args.workers, 2 * args.hosts + 100, var)
        status_file.unlink(missing_ok=True)
        started = time.monotonic()
        sim_log = open(var / "simulate.log", "ab")  # noqa: SIM115 - the child keeps it
        sim = subprocess.Popen(
            [sys.executable, "-m", "hostagent", "simulate", "--manifest", str(manifest)]
            + ["--status-file", str(status_file), "--log-level", "WARNING", "--send-workers", str(args.send_workers)],
            cwd=ROOT,
            preexec_fn=(lambda: os.nice(args.sim_nice)) if args.sim_nice else None,  # noqa: PLW1509 - before exec
            stdout=sim_log,
            stderr=subprocess.STDOUT,
        )
        while read_status(status_file).get("hosts") != args.hosts or read_status(status_file).get("uptime_s") is None:
            if sim.poll() is not None:
                raise SystemExit(f"the simulator ended with {sim.returncode}; see {var / 'simulate.log'}")
            time.sleep(0.5)
        status = read_status(status_file)
        print(
            f"simulator up in {time.monotonic() - started:.1f} s: {status['hosts']} hosts, {status['vms']} VMs, "
            f"{status['threads']} threads, RSS {status['rss_mib']:.0f} MiB (pid {sim.pid})",
            flush=True,
        )
        for process in first_listeners:
            stop(process)
        for interval in intervals:
            step = measure_step(args, interval, subscriber, sim, status_file, var)
            steps.append(step)
            report(step)
            if not step["keeps_up"] and not args.all:
                break
    finally:
        stop(sim)
        subscriber.stopping.set()
        subscriber.join(30)
    sustained = [s for s in steps if s["keeps_up"]]
    if sustained:
        best = max(sustained, key=lambda s: s["samples_per_s"])
        print(
            f"ceiling: {best['samples_per_s']:,.0f} VM samples/s sustained (stats every {best['interval']:g} s), "
            f"push->subscriber p50 {best['push_p50']:.0f} ms / p95 {best['push_p95']:.0f} ms"
        )
    else:
        print("no step was sustained")


if __name__ == "__main__":
    main()
