"""Lab hosts on one machine: network namespaces, each with its own libvirtd (and agent).

Layout (all names fixed, so a second ``up`` finds what the first one made):

- bridge ``olvmbr0`` with 10.213.0.1/24 in the root namespace: the engine side;
- host N is ``hN`` in the network namespace ``olvm-hN`` at 10.213.0.(10+N), joined to the
  bridge by a veth pair (``olvm-hN-br`` in the root namespace, ``eth0`` inside);
- every process of a host runs in ``ip netns exec olvm-hN unshare --mount --uts
  --propagation slave``, with private bind mounts over the libvirt directories and over
  /etc/hosts and /etc/resolv.conf (DNS lookups would otherwise hang on an unreachable
  name server). Each start makes a new mount namespace with the same bind mounts, so every
  process of a host sees the same files; everything else (``state_dir/shared/``, the guest
  images in var/images/) is seen at the same path from every host and from the engine;
- virtlogd and ``libvirtd --listen`` with a distinct ``host_uuid`` (there is no DMI here,
  and equal UUIDs make libvirt refuse migrations "to the same host");
- the host agent, when ``up`` is given an ``agent_command``.

The state (hosts, addresses, pids) is the JSON file ``state_dir/lab.json``; processes are
only ever stopped by the pids recorded there (checked against /proc/PID/cmdline), or, for
leftovers after a lost state file, by the pids the kernel lists in the lab's own
namespaces. This module is plain Python (no Django) and needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import platform
import pwd
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / "var" / "lab"
IMAGES_DIR = REPO_ROOT / "var" / "images"
# libvirt's qemu capabilities cache (the first capabilities call of a fresh libvirtd probes
# the emulator: 4-8 s here). Kept across `down` and copied into every new host; libvirt
# probes again by itself when qemu, libvirt or the kernel changed.
CAPS_CACHE_DIR = REPO_ROOT / "var" / "cache" / "lab-qemu-capabilities"
BUILD_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-guest-image.sh"
PACKAGES_SCRIPT = REPO_ROOT / "scripts" / "lab-packages.sh"

BRIDGE = "olvmbr0"
SUBNET = ipaddress.ip_network("10.213.0.0/24")
BRIDGE_IP = "10.213.0.1"
NAMESPACE_PREFIX = "olvm-"
LIBVIRT_TCP_PORT = 16509
MIGRATION_PORTS = (49152, 49215)
MAX_HOSTS = 50
STATE_FILE = "lab.json"
GLOBAL_LOCK = Path("/run/lock/olvm-lab.lock") if Path("/run/lock").is_dir() else Path("/run/olvm-lab.lock")
KVM_PROBE_FILE = "kvm-probe.json"  # kept by `down`: the answer only changes with the kernel
STATE_VERSION = 1
# Stable per-name host UUIDs: the same host keeps its UUID across down/up.
HOST_UUID_NAMESPACE = uuid.UUID("0b7d1c3e-5a43-4f7e-9d1e-6c1a2b3c4d5e")

CMD_TIMEOUT = 30  # seconds for any one ip/mount/daemon start command
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL
KVM_PROBE_TIMEOUT = 10  # seconds for the tiny guest to print its "up" line under KVM
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "mount": "mount",
    "libvirtd": "libvirt-daemon",
    "virtlogd": "libvirt-daemon",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
}
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}

FailMode = Literal["net", "power"]
FAIL_MODES: tuple[str, ...] = ("net", "power")


class LabError(Exception):
    """An expected failure (not root, a package missing, a bad host name): message for humans."""


@dataclasses.dataclass(frozen=True)
class LabHost:
    """One lab host. Paths are absolute; ``host_dir`` holds everything private to it."""

    name: str  # "h1"
    index: int  # 1
    namespace: str  # "olvm-h1"
    ip: str  # "10.213.0.11"
    libvirt_uri: str  # "qemu+tcp://10.213.0.11/system"
    veth: str  # root-namespace end of the veth pair, "olvm-h1-br"
    host_uuid: str
    host_dir: Path  # state_dir/hosts/h1
    # mount point inside the host -> private directory or file in host_dir
    mounts: dict[str, Path]
    virtlogd_pidfile: Path
    libvirtd_pidfile: Path
    agent_pidfile: Path
    log_dir: Path  # start logs of the daemons and the agent (libvirtd.log, agent.log)
    shared_dir: Path  # state_dir/shared, the same path everywhere

    @property
    def libvirt_dirs(self) -> dict[str, Path]:
        return {k: v for k, v in self.mounts.items() if k.endswith("libvirt")}

    def private_path(self, inside: str) -> Path:
        """Where a path inside the host (under a private mount) lives on the root side."""
        for mount_point, source in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if inside == mount_point or inside.startswith(mount_point + "/"):
                return source / inside[len(mount_point) :].lstrip("/")
        return Path(inside)

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host: its network namespace, a mount and UTS namespace
        with the host's private bind mounts, and the host's name as hostname."""
        lines = ["set -e"]
        for mount_point, source in self.mounts.items():
            target, src = shlex.quote(mount_point), shlex.quote(str(source))
            # Missing mount points (no /run/libvirt on a machine without a libvirtd of its
            # own) are made on the real file system: empty and harmless.
            make = f"touch {target}" if source.is_file() else f"mkdir -p {target}"
            lines.append(f"[ -e {target} ] || {make}")
            lines.append(f"mount --bind {src} {target}")
        lines.append(f"echo {shlex.quote(self.name)} > /proc/sys/kernel/hostname")
        lines.append('exec "$@"')
        script = "\n".join(lines)
        return [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "slave",
            "sh",
            "-c",
            script,
            f"olvm-lab-{self.name}",
            *argv,
        ]


def make_host(index: int, state_dir: Path) -> LabHost:
    name = f"h{index}"
    host_dir = state_dir / "hosts" / name
    ip = str(SUBNET.network_address + 10 + index)
    mounts = {
        "/etc/libvirt": host_dir / "etc-libvirt",
        "/run/libvirt": host_dir / "run-libvirt",
        "/var/lib/libvirt": host_dir / "lib-libvirt",
        "/var/log/libvirt": host_dir / "log-libvirt",
        "/var/cache/libvirt": host_dir / "cache-libvirt",
        "/etc/hosts": host_dir / "hosts",
        "/etc/resolv.conf": host_dir / "resolv.conf",
    }
    return LabHost(
        name=name,
        index=index,
        namespace=NAMESPACE_PREFIX + name,
        ip=ip,
        libvirt_uri=f"qemu+tcp://{ip}/system",
        veth=f"{NAMESPACE_PREFIX}{name}-br",
        host_uuid=str(uuid.uuid5(HOST_UUID_NAMESPACE, name)),
        host_dir=host_dir,
        mounts=mounts,
        virtlogd_pidfile=host_dir / "pids" / "virtlogd.pid",
        libvirtd_pidfile=host_dir / "pids" / "libvirtd.pid",
        agent_pidfile=host_dir / "pids" / "agent.pid",
        log_dir=host_dir / "logs",
        shared_dir=state_dir / "shared",
    )


# --- small helpers --------------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = True, timeout: float = CMD_TIMEOUT, **kwargs: Any) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:.0f} s: {' '.join(argv)}")
    if check and proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise LabError(f"{' '.join(argv[:6])} failed ({proc.returncode}): {detail}")
    return proc.stdout


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _namespaces() -> list[str]:
    netns = Path("/run/netns")
    return sorted(p.name for p in netns.glob(NAMESPACE_PREFIX + "*")) if netns.is_dir() else []


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _proc_start(pid: int | None) -> int | None:
    """The start time of a live (not zombie) process, in clock ticks since boot: with the
    pid, it names one process for good (pids are recycled, start times are not)."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int | None, expect: str | None = None) -> bool:
    """True when ``pid`` runs (and, with ``expect``, its program's base name is that)."""
    if _proc_start(pid) is None:
        return False
    if expect is None:
        return True
    argv = _cmdline(pid)  # type: ignore[arg-type]
    return bool(argv) and os.path.basename(argv[0]) == expect


def _record(hstate: dict[str, Any], key: str, pid: int) -> None:
    hstate.setdefault("pids", {})[key] = pid
    hstate.setdefault("started", {})[key] = _proc_start(pid)


def _running(hstate: dict[str, Any], key: str) -> bool:
    """True when the process recorded under ``key`` is still the one that was started."""
    pid = hstate.get("pids", {}).get(key)
    start = _proc_start(pid)
    return start is not None and start == hstate.get("started", {}).get(key)


def _forget(hstate: dict[str, Any], key: str) -> None:
    hstate.get("pids", {}).pop(key, None)
    hstate.get("started", {}).pop(key, None)


def _stop(pids: list[int], *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (or SIGKILL) the given pids and wait until they are gone."""
    pids = [p for p in pids if _alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # our own child (an agent started in this process)
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tcp_reachable(ip: str, port: int = LIBVIRT_TCP_PORT, timeout: float = 1.0) -> bool:
    """A short TCP connect: never ``libvirt.open`` a cut-off host (it hangs about 72 s)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_reachable(ip: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tcp_reachable(ip, timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def _check_reachable(host: LabHost, timeout: float = 15) -> None:
    if _wait_reachable(host.ip, timeout):
        return
    log = host.private_path("/var/log/libvirt/libvirtd.log")
    errors = []
    with contextlib.suppress(OSError):
        errors = [line.split(" : ", 1)[-1] for line in log.read_text().splitlines() if ": error :" in line][-2:]
    detail = f": {' | '.join(errors)}" if errors else ""
    raise LabError(f"{host.name}: libvirtd does not answer on {host.ip}:{LIBVIRT_TCP_PORT}{detail} (see {log})")


def _write_if_changed(path: Path, text: str) -> bool:
    """Write in place (same inode): some of these files are bind-mounted into hosts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    with open(path, "w") as f:
        f.write(text)
    return True


def check_environment() -> None:
    """Raise LabError unless this process can build a lab (root, tools installed)."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, bind mounts): run it as root")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool, path=DAEMON_ENV["PATH"])})
    if missing:
        raise LabError(f"missing packages: {', '.join(missing)} (qemu/libvirt not installed?): run {PACKAGES_SCRIPT}")
    try:
        pwd.getpwnam("libvirt-qemu")  # libvirt's qemu driver resolves it before reading qemu.conf
    except KeyError:
        raise LabError(f"no libvirt-qemu user (libvirt's qemu driver needs it): run {PACKAGES_SCRIPT}")


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One lab operation at a time on this machine: the bridge and namespace names are
    global, whatever the state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(GLOBAL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load_state(state_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"version": STATE_VERSION, "hosts": {}}
    except (OSError, ValueError) as exc:
        raise LabError(f"unreadable lab state {state_dir / STATE_FILE}: {exc} (run `down` to start over)")
    state.setdefault("hosts", {})
    return state


def _load_kvm_probe(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((state_dir / KVM_PROBE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _host_index(name: str) -> int:
    if not name.startswith("h") or not name[1:].isdigit() or not 1 <= int(name[1:]) <= MAX_HOSTS:
        raise LabError(f"bad host name {name!r}: expected h1 ... h{MAX_HOSTS}")
    return int(name[1:])


# --- configuration files ----------------------------------------------------------------------


def libvirtd_conf(host: LabHost) -> str:
    return f"""# OLVM lab host {host.name}: written by hostagent.lab, overwritten on every `lab up`.
# LAB ONLY: unauthenticated, unencrypted TCP on the lab bridge. A real host uses TLS
# (listen_tls, the engine CA) and never auth_tcp = "none".
listen_tls = 0
listen_tcp = 1
listen_addr = "{host.ip}"
tcp_port = "{LIBVIRT_TCP_PORT}"
auth_tcp = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
# No DMI in the lab: a distinct UUID per host (equal UUIDs break migration).
host_uuid = "{host.host_uuid}"
host_uuid_source = "specified"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
"""


def qemu_conf(host: LabHost) -> str:
    return f"""# OLVM lab host {host.name}: written by hostagent.lab, overwritten on every `lab up`.
# No libvirt-qemu user and no SELinux/AppArmor in the lab: qemu runs as root, unconfined.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# Every lab host shares one cgroup tree and numbers its domains from 1: no cgroups.
cgroup_controllers = [ ]
migration_address = "{host.ip}"
migrate_host = "{host.ip}"
migration_port_min = {MIGRATION_PORTS[0]}
migration_port_max = {MIGRATION_PORTS[1]}
vnc_listen = "{host.ip}"
spice_listen = "{host.ip}"
"""


def hosts_file(hosts: list[LabHost]) -> str:
    lines = ["127.0.0.1 localhost", f"{BRIDGE_IP} engine olvm-engine"]
    lines += [f"{h.ip} {h.name} {h.namespace}" for h in hosts]
    return "\n".join(lines) + "\n"


RESOLV_CONF = (
    "# OLVM lab host: no DNS (a lookup fails at once instead of hanging)\n"
    "nameserver 127.0.0.1\n"
    "options timeout:1 attempts:1\n"
)


def _write_host_files(host: LabHost, all_hosts: list[LabHost]) -> bool:
    """Write the host's private files; True when libvirtd's configuration changed."""
    for mount_point, source in host.mounts.items():
        if mount_point not in ("/etc/hosts", "/etc/resolv.conf"):
            source.mkdir(parents=True, exist_ok=True)
    for sub in ("pids", "logs"):
        (host.host_dir / sub).mkdir(parents=True, exist_ok=True)
    etc = host.mounts["/etc/libvirt"]
    changed = _write_if_changed(etc / "libvirtd.conf", libvirtd_conf(host))
    changed |= _write_if_changed(etc / "qemu.conf", qemu_conf(host))
    _write_if_changed(etc / "virtlogd.conf", "# OLVM lab host: defaults\n")
    _write_if_changed(etc / "libvirt.conf", f'uri_default = "qemu:///system"\n# lab host {host.name}\n')
    _write_if_changed(host.mounts["/etc/hosts"], hosts_file(all_hosts))
    _write_if_changed(host.mounts["/etc/resolv.conf"], RESOLV_CONF)
    caps = host.private_path("/var/cache/libvirt/qemu/capabilities")
    for cached in CAPS_CACHE_DIR.glob("*.xml") if CAPS_CACHE_DIR.is_dir() else []:
        if not (caps / cached.name).exists():
            caps.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached, caps / cached.name)
    return changed


def _save_caps_cache(host: LabHost) -> None:
    for probed in host.private_path("/var/cache/libvirt/qemu/capabilities").glob("*.xml"):
        with contextlib.suppress(OSError):
            CAPS_CACHE_DIR.mkdir(parents=True, exist_ok=True)
            target = CAPS_CACHE_DIR / probed.name
            if not target.exists() or target.stat().st_mtime < probed.stat().st_mtime:
                shutil.copy2(probed, target.with_suffix(".tmp"))
                target.with_suffix(".tmp").replace(target)


# --- network ----------------------------------------------------------------------------------------


def _ensure_bridge() -> None:
    if not _link_exists(BRIDGE):
        _run(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    _run(["ip", "addr", "replace", f"{BRIDGE_IP}/{SUBNET.prefixlen}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def _ensure_host_network(host: LabHost, link_up: bool) -> None:
    if host.namespace not in _namespaces():
        _run(["ip", "netns", "add", host.namespace])
    if not _link_exists(host.veth):
        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace])
    _run(["ip", "link", "set", host.veth, "master", BRIDGE])
    ns = ["ip", "-n", host.namespace]
    _run([*ns, "link", "set", "lo", "up"])
    _run([*ns, "addr", "replace", f"{host.ip}/{SUBNET.prefixlen}", "dev", "eth0"])
    _run([*ns, "link", "set", "eth0", "up"])
    _run([*ns, "route", "replace", "default", "via", BRIDGE_IP])
    _run(["ip", "link", "set", host.veth, "up" if link_up else "down"])


# --- daemons ----------------------------------------------------------------------------------------


def _start_in_host(host: LabHost, argv: list[str], log_name: str) -> None:
    """Run a daemonizing command (``-d``) inside the host and wait for it to return."""
    log = host.log_dir / log_name
    with open(log, "a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                host.exec_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=DAEMON_ENV,
                timeout=CMD_TIMEOUT,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{host.name}: {argv[0]} did not start within {CMD_TIMEOUT} s (see {log})")
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise LabError(f"{host.name}: {argv[0]} failed to start ({proc.returncode}): {' | '.join(tail)} (see {log})")


def _wait_pidfile(pidfile: Path, expect: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(pidfile)
        if _alive(pid, expect):
            return pid  # type: ignore[return-value]
        time.sleep(0.05)
    raise LabError(f"{expect} wrote no live pid to {pidfile} within {timeout:.0f} s")


def _ensure_daemons(host: LabHost, hstate: dict[str, Any]) -> bool:
    """Start virtlogd and libvirtd unless they run. Returns True when something was started."""
    started = False
    if not _running(hstate, "virtlogd"):
        host.virtlogd_pidfile.unlink(missing_ok=True)
        _start_in_host(host, ["virtlogd", "-d", "-p", str(host.virtlogd_pidfile)], "virtlogd.start.log")
        _record(hstate, "virtlogd", _wait_pidfile(host.virtlogd_pidfile, "virtlogd"))
        started = True
    if not _running(hstate, "libvirtd"):
        host.libvirtd_pidfile.unlink(missing_ok=True)
        argv = ["libvirtd", "-d", "--listen", "-f", "/etc/libvirt/libvirtd.conf", "-p", str(host.libvirtd_pidfile)]
        _start_in_host(host, argv, "libvirtd.start.log")
        _record(hstate, "libvirtd", _wait_pidfile(host.libvirtd_pidfile, "libvirtd"))
        started = True
    return started


def _start_agent(host: LabHost, hstate: dict[str, Any], state_dir: Path) -> None:
    argv = hstate.get("agent_argv")
    if not argv or _running(hstate, "agent"):
        return
    env = dict(os.environ)
    env.update(
        OLVM_LAB_HOST=host.name,
        OLVM_LAB_IP=host.ip,
        OLVM_LAB_LIBVIRT_URI=host.libvirt_uri,
        OLVM_LAB_ENGINE_IP=BRIDGE_IP,
        OLVM_LAB_STATE_DIR=str(state_dir),
        OLVM_LAB_SHARED_DIR=str(host.shared_dir),
    )
    with open(host.log_dir / "agent.log", "a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        out.flush()
        # ip netns exec, unshare and sh all exec: the pid is the agent's own.
        proc = subprocess.Popen(
            host.exec_argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    _record(hstate, "agent", proc.pid)
    host.agent_pidfile.write_text(f"{proc.pid}\n")
    # Catch an agent that fails at once (bad command line, import error).
    time.sleep(0.3)
    if proc.poll() is not None:
        _forget(hstate, "agent")
        raise LabError(f"{host.name}: the agent exited at once ({proc.returncode}): see {host.log_dir / 'agent.log'}")


def _qemu_pids(host: LabHost) -> list[int]:
    """The qemu processes of the host's domains, from libvirt's pid files (not driver.pid,
    which is libvirtd itself)."""
    run_qemu = host.private_path("/run/libvirt/qemu")
    pids = []
    for pidfile in sorted(run_qemu.glob("*.pid")) if run_qemu.is_dir() else []:
        if pidfile.name == "driver.pid":
            continue
        pid = _read_pid(pidfile)
        if _alive(pid) and "qemu" in os.path.basename((_cmdline(pid) or [""])[0]):
            pids.append(pid)
    return pids


def _namespace_pids(namespace: str) -> list[int]:
    out = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _stop_host_processes(host: LabHost, hstate: dict[str, Any], *, kill: bool) -> None:
    pids = hstate.get("pids", {})
    if _running(hstate, "agent"):
        _stop([pids["agent"]], kill=kill)
    _stop(_qemu_pids(host), kill=kill, timeout=20)
    for key in ("libvirtd", "virtlogd"):
        if _running(hstate, key):
            _stop([pids[key]], kill=kill)
    for key in ("agent", "libvirtd", "virtlogd"):
        _forget(hstate, key)


# --- KVM probe --------------------------------------------------------------------------------------


class _KvmProbe:
    """Boot the tiny guest under KVM with qemu directly and watch the serial console for
    /init's "up" line. Nested KVM can hang the guest at 100 % CPU: then it is killed at the
    deadline and the answer is no. Runs in the background while the hosts are set up."""

    MARKER = b"olvm: tiny guest kvmprobe is up"

    def __init__(self, images_dir: Path, timeout: float = KVM_PROBE_TIMEOUT) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.reason = ""
        self.deadline = time.monotonic() + timeout
        kernel, initrd = images_dir / "vmlinuz", images_dir / "initrd.img"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            self.reason = "no usable /dev/kvm"
        elif not (kernel.exists() and initrd.exists()):
            self.reason = f"no guest image in {images_dir} (scripts/build-guest-image.sh)"
        else:
            argv = [
                "qemu-system-x86_64",
                "-accel", "kvm", "-m", "128", "-nodefaults", "-no-reboot",
                "-display", "none", "-monitor", "none", "-serial", "stdio",
                "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 quiet panic=-1 olvm.hostname=kvmprobe",
            ]  # fmt: skip
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )

    def result(self) -> tuple[bool, str]:
        if self.proc is None:
            return False, self.reason
        seen = b""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while self.MARKER not in seen and (left := self.deadline - time.monotonic()) > 0:
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen = (seen + chunk)[-4096:]
        exited = self.proc.poll()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        if self.MARKER in seen:
            return True, "a tiny guest booted under KVM"
        if exited is not None:
            last = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return False, f"qemu -accel kvm failed ({exited}): {last[0][:200]}"
        return False, "a tiny guest under KVM did not boot in time (nested KVM hangs here)"


def kvm_works(images_dir: Path = IMAGES_DIR, timeout: float = KVM_PROBE_TIMEOUT) -> bool:
    """True when a tiny guest really boots under KVM on this machine (not just /dev/kvm)."""
    return _KvmProbe(images_dir, timeout).result()[0]


# --- the public operations ------------------------------------------------------------------------


def _hosts_from_state(state: dict[str, Any], state_dir: Path) -> list[LabHost]:
    return [make_host(_host_index(name), state_dir) for name in sorted(state["hosts"], key=_host_index)]


def up(
    hosts: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    agent_command: Callable[[LabHost], list[str]] | None = None,
    images_dir: Path = IMAGES_DIR,
    probe_kvm: bool = True,
) -> list[LabHost]:
    """Make exactly ``hosts`` lab hosts run (h1 ... hN); idempotent.

    Hosts beyond N from an earlier ``up`` are removed; a host cut by ``fail`` stays as it
    is (use ``heal``). With ``agent_command``, its argv for each host is started inside
    the host (and remembered, so ``heal`` can start it again after a power failure);
    without it, an agent started by an earlier ``up`` keeps running. The first ``up`` on a
    kernel boots the tiny guest under KVM once, in the background (``kvm_works``), and keeps
    the answer in ``state_dir/kvm-probe.json`` (``lab_info()["kvm"]``).
    """
    if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, not {hosts!r}")
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        probe = None
        if probe_kvm and _load_kvm_probe(state_dir).get("kernel") != platform.release():
            probe = _KvmProbe(images_dir)
        try:
            wanted = [make_host(i, state_dir) for i in range(1, hosts + 1)]
            for extra in [h for h in _hosts_from_state(state, state_dir) if h.index > hosts]:
                _remove_host(extra, state["hosts"].pop(extra.name))
                _save_state(state_dir, state)
            (state_dir / "shared").mkdir(parents=True, exist_ok=True)
            state.update(
                version=STATE_VERSION,
                bridge=BRIDGE,
                engine_ip=BRIDGE_IP,
                subnet=str(SUBNET),
                shared_dir=str(state_dir / "shared"),
                images_dir=str(images_dir),
            )
            _ensure_bridge()
            for host in wanted:
                hstate = state["hosts"].setdefault(host.name, {})
                hstate.update(
                    ip=host.ip,
                    namespace=host.namespace,
                    veth=host.veth,
                    libvirt_uri=host.libvirt_uri,
                    host_uuid=host.host_uuid,
                )
                hstate.setdefault("failed", None)
                if _write_host_files(host, wanted) and _running(hstate, "libvirtd"):
                    # New configuration (a newer lab tool): restart libvirtd; qemus keep running.
                    _stop([hstate["pids"]["libvirtd"]])
                    _forget(hstate, "libvirtd")
                _ensure_host_network(host, link_up=hstate["failed"] is None)
                if hstate["failed"] != "power":
                    _ensure_daemons(host, hstate)
                if agent_command is not None:
                    argv = list(agent_command(host))
                    if argv != hstate.get("agent_argv") and _running(hstate, "agent"):
                        _stop([hstate["pids"]["agent"]])  # a new agent command: restart it
                        _forget(hstate, "agent")
                    hstate["agent_argv"] = argv
                if hstate["failed"] != "power":
                    _start_agent(host, hstate, state_dir)
                _save_state(state_dir, state)
            for host in wanted:
                if state["hosts"][host.name]["failed"] is None:
                    _check_reachable(host)
        finally:
            if probe is not None:
                works, reason = probe.result()
                # A definite answer is kept; without a guest image yet, probe again next time.
                if probe.proc is not None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
                    result = {"works": works, "reason": reason, "kernel": platform.release()}
                    (state_dir / KVM_PROBE_FILE).write_text(json.dumps(result, indent=2) + "\n")
        return wanted


def _remove_host(host: LabHost, hstate: dict[str, Any]) -> None:
    _stop_host_processes(host, hstate, kill=False)
    _save_caps_cache(host)
    if host.namespace in _namespaces():
        leftovers = _namespace_pids(host.namespace)
        _stop(leftovers)
    if _link_exists(host.veth):
        _run(["ip", "link", "del", host.veth], check=False)
    if host.namespace in _namespaces():
        _run(["ip", "netns", "del", host.namespace], check=False)
    shutil.rmtree(host.host_dir, ignore_errors=True)


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop every lab process, remove namespaces, veths and the bridge. Keeps
    ``state_dir/shared/`` (the storage domain) and the guest images. Returns the names of
    the hosts removed. Safe to run when nothing is up."""
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        removed = []
        for host in _hosts_from_state(state, state_dir):
            _remove_host(host, state["hosts"].pop(host.name))
            removed.append(host.name)
            _save_state(state_dir, state)
        # Leftovers of a lost state file: namespaces and veths named like ours.
        for namespace in _namespaces():
            name = namespace[len(NAMESPACE_PREFIX) :]
            with contextlib.suppress(LabError):
                _host_index(name)
                _remove_host(make_host(_host_index(name), state_dir), {})
                removed.append(name)
        if _link_exists(BRIDGE):
            _run(["ip", "link", "del", BRIDGE])
        shutil.rmtree(state_dir / "hosts", ignore_errors=True)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return sorted(set(removed), key=_host_index)


def _host_status(host: LabHost, hstate: dict[str, Any]) -> dict[str, Any]:
    pids = hstate.get("pids", {})
    running = {
        "virtlogd": _running(hstate, "virtlogd"),
        "libvirtd": _running(hstate, "libvirtd"),
        "agent": _running(hstate, "agent") if hstate.get("agent_argv") else None,
    }
    namespace_ok = host.namespace in _namespaces()
    link_up = _link_exists(host.veth) and "UP" in _run(["ip", "-br", "link", "show", host.veth], check=False)
    reachable = namespace_ok and link_up and tcp_reachable(host.ip)
    failed = hstate.get("failed")
    if failed == "net":
        state = "net-cut"
    elif failed == "power":
        state = "powered-off"
    elif not namespace_ok:
        state = "missing"
    elif reachable and running["libvirtd"] and running["agent"] is not False:
        state = "up"
    else:
        state = "degraded"
    return {
        "name": host.name,
        "state": state,
        "ip": host.ip,
        "namespace": host.namespace,
        "libvirt_uri": host.libvirt_uri,
        "host_uuid": host.host_uuid,
        "reachable": reachable,
        "link_up": link_up,
        "pids": {k: pids.get(k) for k in ("virtlogd", "libvirtd", "agent")},
        "running": running,
        "domains": len(_qemu_pids(host)),
        "failed": failed,
    }


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[dict[str, Any]]:
    """One dict per lab host (an empty list when the lab is down). Never opens libvirt."""
    state_dir = Path(state_dir).resolve()
    state = _load_state(state_dir)
    return [_host_status(host, state["hosts"][host.name]) for host in _hosts_from_state(state, state_dir)]


def lab_info(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """The lab-wide facts: bridge, engine address, shared dir, images, the KVM probe."""
    state_dir = Path(state_dir).resolve()
    info = {k: v for k, v in _load_state(state_dir).items() if k != "hosts"}
    info["kvm"] = _load_kvm_probe(state_dir) or None
    return info


def _get_host(state: dict[str, Any], name: str, state_dir: Path) -> tuple[LabHost, dict[str, Any]]:
    index = _host_index(name)
    if name not in state["hosts"]:
        known = ", ".join(sorted(state["hosts"], key=_host_index)) or "none: run `up` first"
        raise LabError(f"no lab host {name!r} (hosts: {known})")
    return make_host(index, state_dir), state["hosts"][name]


def fail(name: str, mode: FailMode, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Simulate a failure of host ``name``.

    ``net``: its link goes down (the root-namespace veth end); the host keeps running, its
    VMs too, and it no longer answers (connects time out).
    ``power``: SIGKILL its qemus, agent, libvirtd and virtlogd (by recorded pids), and its
    link goes down: like a power cut, nothing answers and the VMs are gone.
    """
    if mode not in FAIL_MODES:
        raise LabError(f"bad failure mode {mode!r}: expected one of {', '.join(FAIL_MODES)}")
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        host, hstate = _get_host(state, name, state_dir)
        _run(["ip", "link", "set", host.veth, "down"])
        if mode == "power":
            _stop_host_processes(host, hstate, kill=True)
        if hstate.get("failed") != "power":
            hstate["failed"] = mode
        _save_state(state_dir, state)


def heal(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> LabHost:
    """Undo ``fail``: link up, and virtlogd, libvirtd and the agent started again where
    they are not running. Domains killed by a power failure stay off (libvirt keeps their
    persistent definitions, like a real host after a reboot)."""
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        host, hstate = _get_host(state, name, state_dir)
        _ensure_host_network(host, link_up=True)
        _ensure_daemons(host, hstate)
        _start_agent(host, hstate, state_dir)
        hstate["failed"] = None
        _save_state(state_dir, state)
        _check_reachable(host)
        return host


def host_by_address(address: str, state_dir: Path = DEFAULT_STATE_DIR) -> LabHost | None:
    """The lab host at ``address`` (10.213.0.1N), or None when no lab host has it."""
    state_dir = Path(state_dir).resolve()
    state = _load_state(state_dir)
    for name, hstate in state["hosts"].items():
        if hstate.get("ip") == address:
            return make_host(_host_index(name), state_dir)
    return None


def start_agent(name: str, argv: list[str], state_dir: Path = DEFAULT_STATE_DIR, *, restart: bool = True) -> int:
    """Start (or restart, with new ``argv``) the agent of lab host ``name``; its pid.

    This is the engine's host-deploy hook for lab hosts: the engine writes the agent's
    certificate and configuration, then calls this. The argv is remembered, so ``heal``
    starts the same agent again after a power failure.
    """
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        host, hstate = _get_host(state, name, state_dir)
        if hstate.get("failed") == "power":
            raise LabError(f"{name} is powered off (fail power): heal it first")
        if _running(hstate, "agent") and (restart or hstate.get("agent_argv") != list(argv)):
            _stop([hstate["pids"]["agent"]])
            _forget(hstate, "agent")
        hstate["agent_argv"] = list(argv)
        _start_agent(host, hstate, state_dir)
        _save_state(state_dir, state)
        return hstate["pids"]["agent"]


def stop_agent(name: str, state_dir: Path = DEFAULT_STATE_DIR, *, kill: bool = False) -> bool:
    """Stop the agent of lab host ``name`` (its VMs keep running); False when none ran."""
    check_environment()
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        _host, hstate = _get_host(state, name, state_dir)
        if not _running(hstate, "agent"):
            return False
        _stop([hstate["pids"]["agent"]], kill=kill)
        _forget(hstate, "agent")
        _save_state(state_dir, state)
        return True


# --- the tiny guest ---------------------------------------------------------------------------------


def tiny_guest_xml(
    name: str,
    *,
    images_dir: Path = IMAGES_DIR,
    memory_mib: int = 128,
    vcpus: int = 1,
    domain_type: str = "qemu",
    disk: Path | None = None,
    user_nic: bool = False,
    static_ip: str | None = None,
    vm_uuid: str | None = None,
) -> str:
    """Domain XML for the tiny guest: direct kernel boot of var/images/vmlinuz + initrd.img,
    the qemu-guest-agent channel, a serial console with a root shell ("tiny# "), an
    optional virtio disk (e.g. a qcow2 overlay of tiny-disk.qcow2 on the shared dir) and an
    optional user-mode NIC (answered by its own DHCP). ``domain_type='qemu'``: nested KVM
    hangs here (see ``kvm_works``)."""
    cmdline = f"console=ttyS0 quiet olvm.hostname={name}"
    if static_ip:
        cmdline += f" olvm.ip={static_ip}"
    devices = [
        "<serial type='pty'><target port='0'/></serial>",
        "<console type='pty'><target type='serial' port='0'/></console>",
        # No source path: libvirt puts the socket in the host's private dir (migration-safe).
        "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
        "<memballoon model='virtio'/>",
    ]
    if disk is not None:
        devices.append(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file='{escape(str(disk))}'/><target dev='vda' bus='virtio'/></disk>"
        )
    if user_nic:
        devices.append("<interface type='user'><model type='virtio'/></interface>")
    uuid_line = f"<uuid>{vm_uuid}</uuid>" if vm_uuid else ""
    body = "\n    ".join(devices)
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>{uuid_line}
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(images_dir / "vmlinuz"))}</kernel>
    <initrd>{escape(str(images_dir / "initrd.img"))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {body}
  </devices>
</domain>
"""


def build_image(images_dir: Path = IMAGES_DIR, timeout: float = 600) -> None:
    """Run scripts/build-guest-image.sh (a no-op when the image is up to date)."""
    env = dict(os.environ, OLVM_IMAGES_DIR=str(images_dir))
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_IMAGE_SCRIPT)], capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{BUILD_IMAGE_SCRIPT.name} took more than {timeout:.0f} s")
    if proc.returncode != 0:
        raise LabError(f"{BUILD_IMAGE_SCRIPT.name} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")


# The tiny guest's agent, through libvirt (lab tests and benches) ------------------------------------


def guest_command(dom, command: str, **arguments) -> dict:
    """One qemu-guest-agent command to a lab guest's domain; its `return` value."""
    import libvirt_qemu

    message = {"execute": command, **({"arguments": arguments} if arguments else {})}
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(message), 5, 0))["return"]


def guest_uptime(dom) -> float:
    """The guest's own /proc/uptime, read through its agent: it only grows while the guest
    keeps running (a migration that rebooted it would start it again from zero)."""
    import base64

    handle = guest_command(dom, "guest-file-open", path="/proc/uptime")
    try:
        data = guest_command(dom, "guest-file-read", handle=handle)
    finally:
        guest_command(dom, "guest-file-close", handle=handle)
    return float(base64.b64decode(data["buf-b64"]).split()[0])
