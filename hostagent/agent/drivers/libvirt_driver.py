"""The real driver: libvirt at any URI (`qemu:///system` on a host; `test:///default` in tests).

VMs are persistent libvirt definitions named after the VM and keyed by its UUID; every
`create_vm` redefines the domain from the engine's spec (the engine holds the truth), and
the definition stays after the VM stops so snapshots and the console history survive;
`undefine_vm` drops a stale one. One libvirt connection is shared by all calls (libvirt
connections are thread-safe) and reopened when it dies; with the default event loop
running, remote URIs get keepalive and lifecycle events go to the `EventSink`.

libvirt errors become the agent's errors by code: no such domain/snapshot -> not_found,
operation invalid (wrong state) -> conflict, no support -> unsupported, a dead connection
-> unavailable, anything else -> failed with libvirt's own message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
from xml.etree import ElementTree as ET

import libvirt

from .. import AGENT_VERSION, domxml, kvmprobe
from ..errors import AgentFailure, Busy, Conflict, InvalidParams, NotFound, Timeout, Unavailable, Unsupported
from ..images import ImageStore
from . import ConsoleStream, Driver, check_balloon, check_disk_paths
from .migration import POLL_INTERVAL, MigrationBook, MigrationPlan, MigrationRecord, none_status

COMPLETED_JOB_TIMEOUT = 10.0  # s to read a finished migration's figures from its destination

log = logging.getLogger("hostagent.libvirt")

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
SHUTDOWN_FLAGS = {
    "auto": 0,
    "acpi": libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
    "guest_agent": libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
}
REBOOT_FLAGS = {
    "auto": 0,
    "acpi": libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN,
    "guest_agent": libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT,
}
PROC_NET_DEV = "/proc/net/dev"
SYS_CLASS_NET = "/sys/class/net"
VM_TAP_NAME = re.compile(r"(vnet|macvtap|macvlan)[0-9]+")
EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
# libvirt's detail of each lifecycle event, by name: (STOPPED, 0) -> "shutdown",
# (STARTED, 0) -> "booted"... read from the binding so every detail it knows has its name.
EVENT_DETAILS = {
    (code, getattr(libvirt, constant)): constant[len(f"VIR_DOMAIN_EVENT_{name.upper()}_") :].lower()
    for code, name in EVENTS.items()
    for constant in dir(libvirt)
    if constant.startswith(f"VIR_DOMAIN_EVENT_{name.upper()}_") and not constant.endswith("_LAST")
}
NOT_FOUND_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT}
UNSUPPORTED_CODES = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
}
UNAVAILABLE_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC}
SHUTDOWN_POLL = 0.25
VNC_CONNECT_TIMEOUT = 5.0

_loop_lock = threading.Lock()
_loop_started = False


def _quiet(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default; the agent reports them itself."""


libvirt.registerErrorHandler(_quiet, None)


def ensure_event_loop() -> None:
    """Start libvirt's default event loop once per process (keepalive, domain events)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def status_of(dom: libvirt.virDomain) -> str:
    state, reason = dom.state()
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return "up"
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return "migrating" if reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION else "paused"
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return "powering_down"
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return "suspended" if reason == libvirt.VIR_DOMAIN_SHUTOFF_SAVED else "down"
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return "down"
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return "suspended"
    return "unknown"


class LibvirtConsole(ConsoleStream):
    """A non-blocking libvirt stream on the VM's console (the server's pump polls it)."""

    WRITE_TIMEOUT = 5.0

    def __init__(self, stream: libvirt.virStream):
        self.stream = stream
        self._closed = False

    def read_nowait(self, size: int = 4096) -> bytes | None:
        if self._closed:
            return b""
        try:
            data = self.stream.recv(size)
        except libvirt.libvirtError:
            return b""
        if data == -2:  # nothing yet (non-blocking stream)
            return None
        return data if isinstance(data, bytes) else b""

    def write(self, data: bytes) -> None:
        deadline = time.monotonic() + self.WRITE_TIMEOUT
        while data and not self._closed:
            try:
                sent = self.stream.send(data)
            except libvirt.libvirtError as exc:
                raise AgentFailure(f"The console stream failed: {exc.get_error_message()}") from None
            if sent == -2:  # would block: the guest is not reading its console
                if time.monotonic() > deadline:
                    raise AgentFailure("The console stream took no data for 5 s.")
                time.sleep(0.01)
                continue
            if sent < 0:
                raise AgentFailure("The console stream refused data.")
            data = data[sent:]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(libvirt.libvirtError):
                self.stream.abort()


class LibvirtDriver(Driver):
    name = "libvirt"

    def __init__(self, config, events=None):
        super().__init__(config, events)
        self.uri = config.libvirt_uri
        parsed = urllib.parse.urlsplit(self.uri)
        self.local = parsed.scheme.split("+")[0] in ("qemu", "kvm") and parsed.hostname in (None, "", "localhost")
        self.store = ImageStore(
            config.storage_roots,
            state_dir=config.effective_state_dir,
            qemu_img=config.qemu_img,
            timeout=config.image_timeout,
        )
        self._conn: libvirt.virConnect | None = None
        self._callback_id: int | None = None
        self._conn_lock = threading.Lock()
        self._vm_locks: dict[str, threading.Lock] = {}
        self._vm_locks_lock = threading.Lock()
        self._kvm: tuple[bool, str] | None = None
        self._migrations = MigrationBook()
        self._last_cpu: tuple[float, dict] | None = None

    # Connection ---------------------------------------------------------------------------------

    def connection(self) -> libvirt.virConnect:
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._drop()
            ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise Unavailable(f"Cannot connect to libvirt at {self.uri}: {exc.get_error_message()}") from None
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)
            with contextlib.suppress(libvirt.libvirtError):
                self._callback_id = conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                )
            self._conn = conn
            return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._callback_id is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(self._callback_id)
            self._callback_id = None
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def close(self) -> None:
        with self._conn_lock:
            self._drop()

    def _on_lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        """A `vm_event` (docs/ingest.md): libvirt's event and detail by name, the VM's status now."""
        try:
            vm_id, name = dom.UUIDString(), dom.name()
        except libvirt.libvirtError:
            return
        try:
            status = status_of(dom)
        except libvirt.libvirtError:  # gone already (an undefined or a stopped transient domain)
            status = (
                "down" if event in (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_STOPPED) else "unknown"
            )
        payload = {
            "vm_id": vm_id,
            "name": name,
            "status": status,
            "event": EVENTS.get(event, str(event)),
            "detail": EVENT_DETAILS.get((event, detail), str(detail)),
        }
        self.events.emit("vm_event", payload)

    @contextlib.contextmanager
    def _libvirt(self, what: str):
        """Turn libvirt errors raised inside into the agent's errors, prefixed with `what`."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: libvirt.libvirtError, what: str) -> AgentFailure:
        code = exc.get_error_code()
        message = f"{what}: {exc.get_error_message() or exc}"
        if code in NOT_FOUND_CODES:
            return NotFound(message, libvirt_code=code)
        if code in UNSUPPORTED_CODES or (code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in str(exc)):
            return Unsupported(message, libvirt_code=code)
        if code == libvirt.VIR_ERR_OPERATION_INVALID:
            return Conflict(message, libvirt_code=code)
        if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
            return Timeout(message, libvirt_code=code)
        if code in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED):
            return Conflict(f"{message} (the guest agent is not answering)", libvirt_code=code)
        if code in UNAVAILABLE_CODES:
            with self._conn_lock:
                self._drop()
            return Unavailable(message, libvirt_code=code)
        return AgentFailure(message, libvirt_code=code)

    def _lookup(self, vm_id: str) -> libvirt.virDomain | None:
        conn = self.connection()
        try:
            return conn.lookupByUUIDString(vm_id)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._translate(exc, f"Looking up VM {vm_id}") from None

    def _dom(self, vm_id: str) -> libvirt.virDomain:
        dom = self._lookup(vm_id)
        if dom is None:
            raise NotFound(f"VM {vm_id} is not on this host.")
        return dom

    @contextlib.contextmanager
    def _vm_lock(self, vm_id: str):
        with self._vm_locks_lock:
            lock = self._vm_locks.setdefault(vm_id, threading.Lock())
        if not lock.acquire(timeout=self.config.request_timeout):
            raise Busy(f"Another operation on VM {vm_id} is still running on this host.")
        try:
            yield
        finally:
            lock.release()

    def kvm(self) -> tuple[bool, str]:
        if self._kvm is None:
            if self.config.kvm == "no":
                self._kvm = (False, "disabled by the agent config (kvm = no)")
            elif self.config.kvm == "yes":
                self._kvm = (True, "forced by the agent config (kvm = yes)")
            elif not self._libvirt_offers_kvm():
                self._kvm = (False, f"libvirt at {self.uri} offers no KVM domains")
            else:
                self._kvm = kvmprobe.probe()
        return self._kvm

    def _libvirt_offers_kvm(self) -> bool:
        with self._libvirt("Reading host capabilities"):
            caps = ET.fromstring(self.connection().getCapabilities())
        return any(d.get("type") == "kvm" for d in caps.findall("guest/arch/domain"))

    # Host -----------------------------------------------------------------------------------------

    def ping(self) -> dict:
        conn = self.connection()
        with self._libvirt("Asking libvirt for its version"):
            version = conn.getLibVersion()
        return {
            "ok": True,
            "agent_version": AGENT_VERSION,
            "driver": self.name,
            "libvirt_version": _version(version),
            "time": _now(),
        }

    def capabilities(self) -> dict:
        conn = self.connection()
        with self._libvirt("Reading host capabilities"):
            arch, memory_mib, _cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
            caps = ET.fromstring(conn.getCapabilities())
            hypervisor = conn.getType()
            hv_version = conn.getVersion()
            lib_version = conn.getLibVersion()
            hostname = conn.getHostname()
        kvm, kvm_detail = self.kvm()
        model = caps.findtext("host/cpu/model") or arch
        if self.local:
            model = _proc_cpu_model() or model
        total_sockets = nodes * sockets
        total_cores = total_sockets * cores
        return {
            "hostname": hostname,
            "cpu_model": model,
            "cpu_arch": arch,
            "cpu_mhz": mhz,
            "cpu_sockets": total_sockets,
            "cpu_cores": total_cores,
            "cpu_threads": total_cores * threads,
            "numa_nodes": nodes,
            "memory_mib": memory_mib,
            "libvirt_version": _version(lib_version),
            "hypervisor": hypervisor,
            "qemu_version": _version(hv_version) if hypervisor.upper() == "QEMU" else None,
            "kvm": kvm,
            "kvm_detail": kvm_detail,
            "nics": self._host_nics(conn),
            "storage_roots": [_root_stats(root) for root in self.config.storage_roots],
            "driver": self.name,
            "libvirt_uri": self.uri,
            "agent_version": AGENT_VERSION,
        }

    def host_stats(self) -> dict:
        conn = self.connection()
        with self._libvirt("Reading host statistics"):
            now, cpu = time.monotonic(), conn.getCPUStats(-1)
            previous = self._last_cpu
            if previous is None or now - previous[0] > 300:
                time.sleep(0.2)
                previous = (now, cpu)
                now, cpu = time.monotonic(), conn.getCPUStats(-1)
            self._last_cpu = (now, cpu)
            try:
                mem = conn.getMemoryStats(-1)
                total_kib, free_kib = mem["total"], mem["free"] + mem.get("buffers", 0) + mem.get("cached", 0)
            except libvirt.libvirtError:
                total_kib, free_kib = conn.getInfo()[1] * 1024, conn.getFreeMemory() // 1024
            running = len(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
        delta = {k: cpu.get(k, 0) - previous[1].get(k, 0) for k in ("user", "kernel", "idle", "iowait")}
        busy_total = sum(delta.values()) or 1
        stats = {
            "time": _now(),
            "cpu": {
                "user_pct": round(100 * delta["user"] / busy_total, 1),
                "system_pct": round(100 * delta["kernel"] / busy_total, 1),
                "idle_pct": round(100 * (delta["idle"] + delta["iowait"]) / busy_total, 1),
            },
            "memory": {
                "total_mib": total_kib // 1024,
                "free_mib": free_kib // 1024,
                "used_mib": (total_kib - free_kib) // 1024,
            },
            "load_avg": list(os.getloadavg()) if self.local else None,
            "vms_running": running,
        }
        # The agent's interfaces are the host's only where libvirt's host is this machine.
        nics = nic_counters(PROC_NET_DEV, SYS_CLASS_NET) if self.local else None
        if nics is not None:
            stats["nics"] = nics
        return stats

    def _host_nics(self, conn) -> list[dict]:
        if self.local and os.path.isdir("/sys/class/net"):
            return _sys_nics()
        try:
            return [
                {"name": i.name(), "mac": i.MACString(), "state": "up" if i.isActive() else "down"}
                for i in conn.listAllInterfaces(0)
            ]
        except libvirt.libvirtError:
            return []

    # VMs --------------------------------------------------------------------------------------------

    def vm_list(self) -> dict:
        conn = self.connection()
        vms = []
        with self._libvirt("Listing VMs"):
            for dom in conn.listAllDomains(0):
                vms.append(
                    {"vm_id": dom.UUIDString(), "name": dom.name(), "status": status_of(dom), "managed": _managed(dom)}
                )
        return {"vms": sorted(vms, key=lambda v: v["vm_id"])}

    def domain_xml(self, spec: dict, field: str = "params.spec") -> str:
        check_disk_paths(self.store, spec, field)
        kvm, _ = self.kvm()
        return domxml.build_domain_xml(
            spec,
            kvm=kvm,
            disk_path=self.store.disk_path,
            graphics_listen=self.config.graphics_listen,
            disk_cache=self.config.disk_cache,
        )

    def create_vm(self, spec: dict) -> dict:
        xml = self.domain_xml(spec)
        conn = self.connection()
        with self._vm_lock(spec["id"]), self._libvirt(f"Starting VM {spec['name']}"):
            dom = self._lookup(spec["id"])
            if dom is not None and dom.isActive():
                return {"vm_id": spec["id"], "status": status_of(dom), "already": True}
            try:
                clash = conn.lookupByName(spec["name"])
            except libvirt.libvirtError:
                clash = None
            if clash is not None and clash.UUIDString() != spec["id"]:
                raise Conflict(f"Another VM named {spec['name']!r} ({clash.UUIDString()}) is defined on this host.")
            new = dom is None
            dom = conn.defineXML(xml)
            try:
                dom.create()
            except libvirt.libvirtError:
                if new:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                raise
            return {"vm_id": spec["id"], "status": status_of(dom), "domain_type": "kvm" if self.kvm()[0] else "qemu"}

    def destroy_vm(self, vm_id: str) -> dict:
        dom = self._lookup(vm_id)
        if dom is None:
            return {"vm_id": vm_id, "status": "down", "existed": False}
        with self._libvirt(f"Powering off VM {vm_id}"):
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            status = status_of(dom) if persistent else "down"
            return {"vm_id": vm_id, "status": status}

    def shutdown_vm(self, vm_id: str, timeout: int = 120, mode: str = "auto") -> dict:
        dom = self._dom(vm_id)
        started = time.monotonic()
        with self._libvirt(f"Shutting down VM {vm_id}"):
            if not dom.isActive():
                return {"vm_id": vm_id, "status": status_of(dom), "already": True}
            # A paused guest cannot see the ACPI button nor run its agent: that would only time out.
            self._require(dom, vm_id, ("up", "powering_down"), "shut down")
            flags = SHUTDOWN_FLAGS[mode]
            if flags:
                dom.shutdownFlags(flags)
            else:
                dom.shutdown()
        while time.monotonic() - started < timeout:
            try:
                if not dom.isActive():
                    return {
                        "vm_id": vm_id,
                        "status": "down",
                        "mode": mode,
                        "seconds": round(time.monotonic() - started, 2),
                    }
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return {"vm_id": vm_id, "status": "down", "mode": mode}
                raise self._translate(exc, f"Waiting for VM {vm_id} to power off") from None
            time.sleep(SHUTDOWN_POLL)
        raise Timeout(
            f"VM {vm_id} did not power off within {timeout} s after the shutdown request ({mode}); it is still running."
        )

    def reboot_vm(self, vm_id: str, mode: str = "auto") -> dict:
        dom = self._dom(vm_id)
        with self._libvirt(f"Rebooting VM {vm_id}"):
            self._require(dom, vm_id, ("up",), "reboot")
            dom.reboot(REBOOT_FLAGS[mode])
            return {"vm_id": vm_id, "status": status_of(dom)}

    def pause_vm(self, vm_id: str) -> dict:
        dom = self._dom(vm_id)
        with self._libvirt(f"Pausing VM {vm_id}"):
            if status_of(dom) == "paused":
                return {"vm_id": vm_id, "status": "paused", "already": True}
            self._require(dom, vm_id, ("up",), "pause")
            dom.suspend()
            return {"vm_id": vm_id, "status": status_of(dom)}

    def resume_vm(self, vm_id: str) -> dict:
        dom = self._dom(vm_id)
        with self._libvirt(f"Resuming VM {vm_id}"):
            if status_of(dom) == "up":
                return {"vm_id": vm_id, "status": "up", "already": True}
            self._require(dom, vm_id, ("paused",), "resume")
            dom.resume()
            return {"vm_id": vm_id, "status": status_of(dom)}

    def suspend_vm(self, vm_id: str, state_path: str) -> dict:
        path = self.store.state_path(state_path, "params.state_path")
        with self._vm_lock(vm_id), self._libvirt(f"Suspending VM {vm_id} to {path}"):
            dom = self._dom(vm_id)
            if not dom.isActive() and os.path.isfile(path):
                return {"vm_id": vm_id, "status": status_of(dom), "state_path": path, "already": True}
            self._require(dom, vm_id, ("up", "paused"), "suspend")
            if os.path.lexists(path):
                raise Conflict(f"A file is already at {path}; remove it or choose another state path.")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            dom.save(path)
            return {"vm_id": vm_id, "status": "suspended", "state_path": path}

    def restore_vm(self, vm_id: str, state_path: str, spec: dict | None = None) -> dict:
        path = self.store.state_path(state_path, "params.state_path")
        if spec is not None and spec["id"] != vm_id:
            raise InvalidParams("params.spec.id", "must be the VM's id")
        conn = self.connection()
        with self._vm_lock(vm_id), self._libvirt(f"Restoring VM {vm_id} from {path}"):
            dom = self._lookup(vm_id)
            if dom is not None and dom.isActive():
                return {"vm_id": vm_id, "status": status_of(dom), "already": True}
            if not os.path.isfile(path):
                raise NotFound(f"No saved state at {path} on this host.")
            saved = ET.fromstring(conn.saveImageGetXMLDesc(path, 0))
            owner = (saved.findtext("uuid") or "").lower()
            if owner != vm_id:
                raise Conflict(f"The state at {path} belongs to VM {owner or 'unknown'}, not {vm_id}.")
            if dom is None:
                conn.defineXML(self.domain_xml(spec) if spec else ET.tostring(saved, encoding="unicode"))
            conn.restoreFlags(path, None, 0)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return {"vm_id": vm_id, "status": status_of(self._dom(vm_id))}

    def undefine_vm(self, vm_id: str) -> dict:
        with self._vm_lock(vm_id):
            dom = self._lookup(vm_id)
            if dom is None:
                return {"vm_id": vm_id, "undefined": True, "existed": False}
            with self._libvirt(f"Undefining VM {vm_id}"):
                if dom.isActive():
                    raise Conflict(f"VM {vm_id} is running; power it off before undefining it.")
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                )
        return {"vm_id": vm_id, "undefined": True, "existed": True}

    def _require(self, dom, vm_id: str, allowed: tuple[str, ...], verb: str) -> None:
        status = status_of(dom)
        if status not in allowed:
            raise Conflict(f"Cannot {verb} VM {vm_id}: it is {status}.", status=status)

    # Devices and live changes ---------------------------------------------------------------------

    def _device_flags(self, dom) -> int:
        flags = LIVE if dom.isActive() else 0
        if dom.isPersistent():
            flags |= CONFIG
        return flags

    def _live_root(self, dom) -> ET.Element:
        return domxml.parse(dom.XMLDesc(0))

    def hotplug_disk(self, vm_id: str, disk: dict) -> dict:
        path = self.store.disk_path(disk)
        with self._vm_lock(vm_id), self._libvirt(f"Plugging disk {disk['id']} into VM {vm_id}"):
            dom = self._dom(vm_id)
            root = self._live_root(dom)
            devices = domxml.disk_devices(root)
            for dev in devices:
                if dev["path"] == path or dev["alias"] == f"ua-{disk['id']}":
                    return {"vm_id": vm_id, "plugged": True, "target": dev["target"], "already": True}
            flags = self._device_flags(dom)
            if disk["interface"] == "virtio_scsi" and root.find("devices/controller[@type='scsi']") is None:
                dom.attachDeviceFlags("<controller type='scsi' model='virtio-scsi'/>", flags)
            target = domxml.next_target({d["target"] for d in devices if d["target"]}, disk["interface"])
            element = domxml.disk_element(disk, target, path, self.config.disk_cache)
            dom.attachDeviceFlags(domxml.to_string(element), flags)
            return {"vm_id": vm_id, "plugged": True, "target": target, "live": bool(flags & LIVE)}

    def hotunplug_disk(self, vm_id: str, disk_id: str) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Unplugging disk {disk_id} from VM {vm_id}"):
            dom = self._dom(vm_id)
            for dev in domxml.disk_devices(self._live_root(dom)):
                if dev["alias"] == f"ua-{disk_id}" or (dev["path"] and os.path.basename(dev["path"]) == disk_id):
                    dom.detachDeviceFlags(domxml.to_string(dev["element"]), self._device_flags(dom))
                    return {"vm_id": vm_id, "plugged": False, "existed": True}
            return {"vm_id": vm_id, "plugged": False, "existed": False}

    def hotplug_nic(self, vm_id: str, nic: dict) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Plugging NIC {nic['mac']} into VM {vm_id}"):
            dom = self._dom(vm_id)
            xml = domxml.to_string(domxml.nic_element(nic))
            flags = self._device_flags(dom)
            if any(dev["mac"] == nic["mac"] for dev in domxml.nic_devices(self._live_root(dom))):
                dom.updateDeviceFlags(xml, flags)
                return {"vm_id": vm_id, "plugged": True, "updated": True}
            dom.attachDeviceFlags(xml, flags)
            return {"vm_id": vm_id, "plugged": True, "live": bool(flags & LIVE)}

    def setup_networks(self, networks: list[dict]) -> dict:
        """A bridge per logical network, as VDSM's setupNetworks makes them. Bridges made here
        have no uplink (the lab's hosts share no physical NIC); an existing bridge is kept."""
        return {"networks": [ensure_bridge(n["name"], n["mtu"]) for n in networks]}

    def hotunplug_nic(self, vm_id: str, mac: str) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Unplugging NIC {mac} from VM {vm_id}"):
            dom = self._dom(vm_id)
            for dev in domxml.nic_devices(self._live_root(dom)):
                if dev["mac"] == mac:
                    dom.detachDeviceFlags(domxml.to_string(dev["element"]), self._device_flags(dom))
                    return {"vm_id": vm_id, "plugged": False, "existed": True}
            return {"vm_id": vm_id, "plugged": False, "existed": False}

    def set_memory(self, vm_id: str, memory_mib: int) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Setting the memory of VM {vm_id}"):
            dom = self._dom(vm_id)
            max_mib = dom.maxMemory() // 1024
            check_balloon(domxml.read_spec(self._live_root(dom)) or {}, memory_mib, max_mib)
            self._each_scope(dom, lambda flags: dom.setMemoryFlags(memory_mib * 1024, flags))
            return {"vm_id": vm_id, "memory_mib": memory_mib, "max_memory_mib": max_mib}

    def set_vcpus(self, vm_id: str, vcpus: int) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Setting the vCPUs of VM {vm_id}"):
            dom = self._dom(vm_id)
            maximum = dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | CONFIG)
            if vcpus > maximum:
                raise InvalidParams("params.vcpus", f"exceeds the VM's maximum of {maximum} vCPUs")
            self._each_scope(dom, lambda flags: dom.setVcpusFlags(vcpus, flags))
            return {"vm_id": vm_id, "vcpus": vcpus, "max_vcpus": maximum}

    def _each_scope(self, dom, apply) -> None:
        """Apply a change to the running VM and to its definition, one scope per call
        (some drivers refuse LIVE|CONFIG together)."""
        if dom.isActive():
            apply(LIVE)
        if dom.isPersistent():
            apply(CONFIG)

    # Snapshots ------------------------------------------------------------------------------------

    def snapshot_create(self, vm_id: str, snapshot: dict, spec: dict | None = None) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Taking snapshot {snapshot['id']} of VM {vm_id}"):
            dom = self._lookup(vm_id)
            if dom is None:
                return self._offline_snapshot("create", vm_id, snapshot["id"], spec)
            if snapshot["id"] in dom.snapshotListNames(0):
                return {"vm_id": vm_id, "snapshot_id": snapshot["id"], "already": True}
            running = bool(dom.isActive())
            dom.snapshotCreateXML(domxml.snapshot_xml(snapshot), 0)
            # A running VM's internal snapshot always holds its memory (a system checkpoint).
            return {"vm_id": vm_id, "snapshot_id": snapshot["id"], "memory": running, "offline": False}

    def snapshot_revert(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Reverting VM {vm_id} to snapshot {snapshot_id}"):
            dom = self._lookup(vm_id)
            if dom is not None and snapshot_id in dom.snapshotListNames(0):
                was_active = dom.isActive()
                dom.revertToSnapshot(dom.snapshotLookupByName(snapshot_id, 0), 0)
                if not was_active and dom.isActive():
                    # A snapshot taken while running holds the memory too, and libvirt
                    # reverts into it running; a VM that was down stays down (as in oVirt).
                    dom.destroy()
                return {"vm_id": vm_id, "snapshot_id": snapshot_id, "status": status_of(dom)}
            if dom is not None and dom.isActive():
                raise NotFound(
                    f"VM {vm_id} has no snapshot {snapshot_id} that libvirt knows; stop the VM to "
                    "revert to a snapshot taken while it was down."
                )
            return self._offline_snapshot("revert", vm_id, snapshot_id, spec, dom)

    def snapshot_delete(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        with self._vm_lock(vm_id), self._libvirt(f"Deleting snapshot {snapshot_id} of VM {vm_id}"):
            dom = self._lookup(vm_id)
            if dom is not None and snapshot_id in dom.snapshotListNames(0):
                dom.snapshotLookupByName(snapshot_id, 0).delete(0)
                return {"vm_id": vm_id, "snapshot_id": snapshot_id, "deleted": True, "existed": True}
            if dom is not None and dom.isActive():
                return {"vm_id": vm_id, "snapshot_id": snapshot_id, "deleted": True, "existed": False}
            try:
                return self._offline_snapshot("delete", vm_id, snapshot_id, spec, dom)
            except NotFound:
                if spec is None and dom is None:
                    raise
                return {"vm_id": vm_id, "snapshot_id": snapshot_id, "deleted": True, "existed": False}

    def _offline_snapshot(self, action: str, vm_id: str, snapshot_id: str, spec: dict | None, dom=None) -> dict:
        """Internal snapshots with qemu-img on the disks of a VM that is not running here."""
        if spec is None and dom is not None:
            spec = domxml.read_spec(domxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        if spec is None:
            raise NotFound(f"VM {vm_id} is not on this host; pass its spec to work on its disks offline.")
        if spec["id"] != vm_id:
            raise InvalidParams("params.spec.id", "must be the VM's id")
        disks = [d for d in spec.get("disks", []) if not d.get("read_only") and not d.get("shareable")]
        raw = [d["id"] for d in disks if d.get("format") != "qcow2"]
        if raw:
            raise Unsupported(f"Disk(s) {', '.join(raw)} are raw: internal snapshots need qcow2.")
        paths = [
            self.store.image_path(
                d["storage_domain"],
                d["id"],
                id_field=f"params.spec.disks[{i}].id",
                domain_field=f"params.spec.disks[{i}].storage_domain",
                must_exist=True,
            )
            for i, d in enumerate(spec.get("disks", []))
            if d in disks
        ]
        if action != "create":
            holders = [p for p in paths if snapshot_id in self.store.snapshot_names(p)]
            if not holders:
                raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id} on its disks.")
            paths = holders
        elif any(snapshot_id in self.store.snapshot_names(p) for p in paths):
            return {"vm_id": vm_id, "snapshot_id": snapshot_id, "already": True, "offline": True}
        self.store.snapshot(action, paths, snapshot_id)
        result = {"vm_id": vm_id, "snapshot_id": snapshot_id, "offline": True, "disks": len(paths)}
        if action == "create":
            result["memory"] = False
        if action == "delete":
            result.update(deleted=True, existed=True)
        if action == "revert":
            result["status"] = "down"
        return result

    # Live migration -------------------------------------------------------------------------------

    def migrate_vm(
        self,
        vm_id: str,
        dest_uri: str,
        migrate_uri: str | None = None,
        policy: str = "minimal_downtime",
        bandwidth_mibps: int = 0,
        compression: bool = False,
        unsafe: bool = False,
        max_downtime_ms: int | None = None,
        timeout: int = 600,
    ) -> dict:
        """Start a peer-to-peer live migration in a thread (this host's libvirtd talks to the
        destination's) and return at once; `migration_status` follows it."""
        if dest_uri.startswith("sim://"):
            raise Unsupported("sim:// is a simulated host; this host runs libvirt", field="params.dest_uri")
        flags, params = migration_flags(policy, migrate_uri, bandwidth_mibps, compression, unsafe)
        with self._vm_lock(vm_id), self._libvirt(f"Migrating VM {vm_id}"):
            dom = self._dom(vm_id)
            self._require(dom, vm_id, ("up", "paused"), "migrate")
            if outgoing_migration(dom) is not None:
                raise Conflict(f"VM {vm_id} is already migrating.", status="migrating")
            plan = MigrationPlan(policy, max_downtime_ms, timeout, time.monotonic())
            record = MigrationRecord(vm_id, dest_uri, policy, max_downtime_ms=plan.downtime_ms)
            if not self._migrations.start(record):
                raise Conflict(f"VM {vm_id} is already migrating.", status="migrating")
        try:  # before the job starts; the monitor applies it again once the job runs
            dom.migrateSetMaxDowntime(plan.downtime_ms, 0)
        except libvirt.libvirtError as exc:
            log.debug("VM %s: setting the max downtime before the migration: %s", vm_id, exc)
        threading.Thread(
            target=self._migrate, args=(dom, record, plan, flags, params), name=f"migrate-{vm_id[:8]}", daemon=True
        ).start()
        return {"vm_id": vm_id, "state": "running"}

    def _migrate(self, dom, record: MigrationRecord, plan: MigrationPlan, flags: int, params: dict) -> None:
        monitor = threading.Thread(
            target=self._watch_migration, args=(dom, record, plan), name=f"migwatch-{record.vm_id[:8]}", daemon=True
        )
        monitor.start()
        try:
            dom.migrateToURI3(record.destination, params, flags)
        except libvirt.libvirtError as exc:
            record.cancel.set()
            monitor.join(5)
            if record.cancel_requested:
                record.finish("cancelled")
            elif record.abort_reason:
                record.finish("failed", f"aborted: {record.abort_reason}")
            else:
                record.finish("failed", exc.get_error_message() or str(exc))
            log.info("VM %s: migration to %s ended %s: %s", record.vm_id, record.destination, record.state, exc)
            return
        except Exception as exc:  # a bug must not leave the record running forever
            record.cancel.set()
            record.finish("failed", f"the agent failed: {exc}")
            log.exception("VM %s: migration thread failed", record.vm_id)
            return
        record.cancel.set()
        monitor.join(5)
        self._read_completed_job(record)
        record.finish("completed")
        log.info("VM %s: migrated to %s, downtime %s ms", record.vm_id, record.destination, record.downtime_ms)

    def _watch_migration(self, dom, record: MigrationRecord, plan: MigrationPlan) -> None:
        """Poll the job every POLL_INTERVAL s, keep its figures and apply the policy's steps."""
        applied = False
        while not record.cancel.wait(POLL_INTERVAL):
            try:
                stats = dom.jobStats(0)
            except libvirt.libvirtError:
                continue  # the domain leaves this host at the very end
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            record.stats = stats
            actions = plan.observe(stats, time.monotonic())
            if not applied:
                actions.insert(0, ("downtime", plan.downtime_ms))
                applied = True
            for action in actions:
                try:
                    if action[0] == "downtime":
                        dom.migrateSetMaxDowntime(action[1], 0)
                        record.max_downtime_ms = action[1]
                    elif action[0] == "post_copy":
                        dom.migrateStartPostCopy(0)
                        record.post_copy = True
                    elif action[0] == "abort":
                        record.abort_reason = action[1]
                        dom.abortJob()
                        return
                except libvirt.libvirtError as exc:  # the job may have ended meanwhile
                    log.info("VM %s: migration step %s failed: %s", record.vm_id, action, exc)

    def _read_completed_job(self, record: MigrationRecord) -> None:
        """The downtime and job time of a finished migration. The source's domain is gone
        (UNDEFINE_SOURCE), so its completed job stats are too: ask the destination's libvirtd
        for the incoming job's completed stats; fall back to the source's last reading. The
        ask has its own thread and COMPLETED_JOB_TIMEOUT: connecting to a destination cut off
        right after the switch-over has no timeout, and the migration is over either way."""
        last = record.stats
        record.downtime_ms = last.get("downtime")
        record.job_time_ms = last.get("time_elapsed")
        found: dict = {}
        reader = threading.Thread(
            target=self._destination_job, args=(record, found), name=f"completed-job-{record.vm_id}", daemon=True
        )
        reader.start()
        reader.join(COMPLETED_JOB_TIMEOUT)
        if reader.is_alive():
            log.warning(
                "VM %s: %s did not answer for its completed job within %g s; the source's figures stand",
                record.vm_id,
                record.destination,
                COMPLETED_JOB_TIMEOUT,
            )
            return
        done = found.get("done") or {}
        if done.get("downtime") is not None:
            record.downtime_ms = done["downtime"]
        if done.get("time_elapsed") is not None:
            record.job_time_ms = done["time_elapsed"]
        for key in ("data_total", "data_processed", "data_remaining", "memory_bps", "memory_iteration"):
            if key in done:
                record.stats = {**record.stats, key: done[key]}

    @staticmethod
    def _destination_job(record: MigrationRecord, found: dict) -> None:
        try:
            conn = libvirt.open(record.destination)
        except libvirt.libvirtError as exc:
            log.info("VM %s: cannot read the completed job at %s: %s", record.vm_id, record.destination, exc)
            return
        try:
            found["done"] = conn.lookupByUUIDString(record.vm_id).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError as exc:
            log.info("VM %s: no completed job at %s: %s", record.vm_id, record.destination, exc)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def migration_status(self, vm_id: str) -> dict:
        record = self._migrations.get(vm_id)
        if record is not None:
            return record.status()
        dom = self._lookup(vm_id)
        if dom is None:
            return none_status(vm_id)
        with self._libvirt(f"Reading the migration job of VM {vm_id}"):
            stats = outgoing_migration(dom)
        if stats is None:
            return none_status(vm_id)
        # Started before the agent restarted: libvirt's figures, no policy or destination known.
        orphan = MigrationRecord(vm_id, None, None, stats=stats)
        orphan.started = time.monotonic() - stats.get("time_elapsed", 0) / 1000
        return orphan.status()

    def migration_cancel(self, vm_id: str) -> dict:
        record = self._migrations.get(vm_id)
        dom = self._lookup(vm_id)
        running = record is not None and record.state == "running"
        with self._libvirt(f"Cancelling the migration of VM {vm_id}"):
            if dom is None or (not running and outgoing_migration(dom) is None):
                raise Conflict(f"No migration of VM {vm_id} is running on this host.")
            if record is not None and record.post_copy:
                raise Conflict(f"VM {vm_id} is in post-copy: the migration can no longer be cancelled.")
            if running:
                record.cancel_requested = True
            dom.abortJob()
        return {"vm_id": vm_id, "state": "cancelling"}

    # Monitoring -----------------------------------------------------------------------------------

    def vm_stats(self, vm_id: str | None = None) -> dict:
        conn = self.connection()
        with self._libvirt("Reading VM statistics"):
            doms = [self._dom(vm_id)] if vm_id else conn.listAllDomains(0)
            records = conn.domainListGetStats(doms, 0) if doms else []
            return {"vms": [self._stats(dom, record) for dom, record in records]}

    def _stats(self, dom, record: dict) -> dict:
        _state, max_kib, mem_kib, vcpus, cpu_ns = dom.info()
        root = self._live_root(dom)
        disks = []
        for i in range(record.get("block.count", 0)):
            p = f"block.{i}."
            disks.append(
                {
                    "target": record.get(p + "name"),
                    "path": record.get(p + "path"),
                    "rd_bytes": record.get(p + "rd.bytes", 0),
                    "wr_bytes": record.get(p + "wr.bytes", 0),
                    "rd_reqs": record.get(p + "rd.reqs", 0),
                    "wr_reqs": record.get(p + "wr.reqs", 0),
                    "capacity": record.get(p + "capacity"),
                    "allocation": record.get(p + "allocation"),
                }
            )
        if not disks:
            disks = [{"target": d["target"], "path": d["path"]} for d in domxml.disk_devices(root)]
        macs = {n["target"]: n["mac"] for n in domxml.nic_devices(root)}
        nics = []
        for i in range(record.get("net.count", 0)):
            p = f"net.{i}."
            nics.append(
                {
                    "name": record.get(p + "name"),
                    "mac": macs.get(record.get(p + "name")),
                    "rx_bytes": record.get(p + "rx.bytes", 0),
                    "tx_bytes": record.get(p + "tx.bytes", 0),
                    "rx_pkts": record.get(p + "rx.pkts", 0),
                    "tx_pkts": record.get(p + "tx.pkts", 0),
                    "rx_drop": record.get(p + "rx.drop", 0),
                    "tx_drop": record.get(p + "tx.drop", 0),
                }
            )
        if not nics:
            nics = [{"name": n["target"], "mac": n["mac"]} for n in domxml.nic_devices(root)]
        return {
            "vm_id": dom.UUIDString(),
            "name": dom.name(),
            "status": status_of(dom),
            "cpu_time_ns": record.get("cpu.time", cpu_ns),
            "vcpus": record.get("vcpu.current", vcpus),
            "memory_kib": record.get("balloon.maximum", max_kib),
            "balloon_kib": record.get("balloon.current", mem_kib),
            "rss_kib": record.get("balloon.rss"),
            "disks": disks,
            "nics": nics,
        }

    def guest_info(self, vm_id: str) -> dict:
        dom = self._dom(vm_id)
        with self._libvirt(f"Reading guest information of VM {vm_id}"):
            self._require(dom, vm_id, ("up",), "read guest information of")
        result: dict = {"vm_id": vm_id, "guest_agent": "ok"}
        try:
            info = dom.guestInfo(0, 0)
        except libvirt.libvirtError as exc:
            info = {}
            result["guest_agent"] = (
                "unsupported" if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT else "unavailable"
            )
            result["guest_agent_detail"] = exc.get_error_message()
        result["os"] = {k[3:]: v for k, v in info.items() if k.startswith("os.")}
        result["hostname"] = info.get("hostname")
        result["timezone"] = info.get("timezone.name")
        result["users"] = [info[f"user.{i}.name"] for i in range(info.get("user.count", 0)) if f"user.{i}.name" in info]
        try:
            addresses = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError as exc:
            addresses = {}
            result.setdefault("guest_agent_detail", exc.get_error_message())
        result["interfaces"] = [
            {
                "name": name,
                "mac": (iface.get("hwaddr") or "").lower(),
                "addresses": [f"{a['addr']}/{a['prefix']}" for a in iface.get("addrs") or []],
            }
            for name, iface in sorted(addresses.items())
        ]
        return result

    def open_console(self, vm_id: str) -> ConsoleStream:
        dom = self._dom(vm_id)
        conn = self.connection()
        with self._libvirt(f"Opening the console of VM {vm_id}"):
            self._require(dom, vm_id, ("up", "paused"), "open the console of")
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            try:
                dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
        return LibvirtConsole(stream)

    def open_vnc(self, vm_id: str) -> socket.socket:
        """Connect to the VNC server QEMU runs for the VM, at the port and address of its live
        definition (autoport: libvirt picks the port when the VM starts)."""
        dom = self._dom(vm_id)
        with self._libvirt(f"Reading the VNC display of VM {vm_id}"):
            self._require(dom, vm_id, ("up", "paused"), "open the VNC display of")
            xml = dom.XMLDesc(0)
        endpoint = vnc_endpoint(xml, self.config.graphics_listen)
        if endpoint is None:
            raise Conflict(f"VM {vm_id} has no VNC display (its console type has no graphics).")
        family, address = endpoint
        if family != socket.AF_UNIX and address[1] <= 0:
            raise Unavailable(f"The VNC display of VM {vm_id} has no port yet.")
        where = address if family == socket.AF_UNIX else f"{address[0]}:{address[1]}"
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(VNC_CONNECT_TIMEOUT)
            sock.connect(address)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            raise Unavailable(f"Cannot reach the VNC display of VM {vm_id} at {where}: {exc}") from None
        return sock

    # Images and storage domains (qemu-img, no libvirt involved) -----------------------------------

    def image_create(self, image: dict) -> dict:
        return self.store.create(image)

    image_clone = image_create
    image_copy = image_create

    def image_info(self, image: dict) -> dict:
        return self.store.info(image)

    def image_resize(self, image: dict, size: int) -> dict:
        return self.store.resize(image, size)

    def image_remove(self, image: dict) -> dict:
        return self.store.remove(image)

    def storage_domain_stats(self, domain: dict) -> dict:
        return self.store.domain_stats(domain)


def migration_flags(
    policy: str, migrate_uri: str | None, bandwidth_mibps: int, compression: bool, unsafe: bool
) -> tuple[int, dict]:
    """migrateToURI3's flags and typed parameters for a migration request."""
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    params: dict = {}
    if unsafe:  # disks on storage the administrator declared shared that libvirt cannot tell is
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if policy == "post_copy":
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if policy == "suspend_workload":
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if compression:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = "xbzrle"
    if bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mibps
    if migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
    return flags, params


def outgoing_migration(dom) -> dict | None:
    """The job stats of the domain's active outgoing migration; None when there is none."""
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN, *UNSUPPORTED_CODES):
            return None  # not running, gone, or a hypervisor without job stats (test:///)
        raise
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    if stats.get("operation") not in (None, libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT):
        return None
    return stats


def vnc_endpoint(xml: str, graphics_listen: str) -> tuple[int, str | tuple[str, int]] | None:
    """Where the VNC server of a running domain listens, from its live XML: (AF_UNIX, path)
    for a socket listen, else (AF_INET or AF_INET6, (address, port)) with port -1 while none
    is assigned; None when the domain has no VNC graphics. A wildcard listen address is
    reached on the loopback address of its family."""
    graphics = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    if graphics is None:
        return None
    listen = graphics.find("listen")
    if listen is not None and listen.get("type") == "socket" and listen.get("socket"):
        return socket.AF_UNIX, listen.get("socket")
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen") or graphics_listen
    address = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)  # noqa: S104
    try:
        port = int(graphics.get("port") or -1)
    except ValueError:
        port = -1
    return (socket.AF_INET6 if ":" in address else socket.AF_INET), (address, port)


def ensure_bridge(name: str, mtu: int | None = None, ip: str = "ip") -> dict:
    """Create the Linux bridge `name` unless it exists, set its MTU, bring it up."""
    exists = os.path.isdir(f"/sys/class/net/{name}")
    if exists and not os.path.isdir(f"/sys/class/net/{name}/bridge"):
        raise Conflict(f"Host network device {name} exists and is not a bridge.")
    commands = [] if exists else [[ip, "link", "add", "name", name, "type", "bridge"]]
    if mtu:
        commands.append([ip, "link", "set", "dev", name, "mtu", str(mtu)])
    commands.append([ip, "link", "set", "dev", name, "up"])
    for argv in commands:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentFailure(f"Cannot set up bridge {name}: {exc}") from None
        if proc.returncode != 0:
            raise AgentFailure(f"Cannot set up bridge {name}: {proc.stderr.strip() or proc.returncode}")
    return {"name": name, "created": not exists}


def _managed(dom) -> bool:
    try:
        dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.NS, 0)
        return True
    except libvirt.libvirtError:
        return False


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _proc_cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _sys_nics() -> list[dict]:
    addresses: dict[str, list[str]] = {}
    try:
        out = subprocess.run(  # noqa: S603, S607 - fixed command, no shell
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        for link in json.loads(out or "[]"):
            addresses[link.get("ifname")] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    nics = []
    for name in sorted(os.listdir("/sys/class/net")):
        base = f"/sys/class/net/{name}"
        nics.append(
            {
                "name": name,
                "mac": _read(f"{base}/address"),
                "mtu": int(_read(f"{base}/mtu") or 0),
                "state": _read(f"{base}/operstate"),
                "bridge": os.path.isdir(f"{base}/bridge"),
                "addresses": addresses.get(name, []),
            }
        )
    return nics


def nic_counters(proc_net_dev: str, sys_class_net: str) -> list[dict] | None:
    """Received and sent bytes of the host's network interfaces from `/proc/net/dev` (the agent's
    network namespace: in the lab, the host's): every one but the loopback and the VMs' own
    tap devices (libvirt's vnetN / macvtapN / macvlanN: that traffic is in vm_stats, and their
    names pass from VM to VM). Bridges are flagged, as what the host sends through one also
    crosses its ports. Sorted by name; None when the file cannot be read."""
    try:
        with open(proc_net_dev, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    nics = []
    for line in lines:  # "  eth0: rx bytes packets errs drop fifo frame compressed multicast tx bytes ..."
        name, colon, rest = line.partition(":")  # the two header lines have no colon, names cannot
        name, fields = name.strip(), rest.split()
        if not colon or not name or name == "lo" or VM_TAP_NAME.fullmatch(name) or len(fields) < 9:
            continue
        try:
            rx, tx = int(fields[0]), int(fields[8])
        except ValueError:
            continue
        bridge = os.path.isdir(os.path.join(sys_class_net, name, "bridge"))
        nics.append({"name": name, "rx_bytes": rx, "tx_bytes": tx, "bridge": bridge})
    return sorted(nics, key=lambda nic: nic["name"])


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _root_stats(root: str) -> dict:
    try:
        st = os.statvfs(root)
    except OSError:
        return {"path": root, "exists": False}
    return {
        "path": root,
        "exists": True,
        "total_bytes": st.f_blocks * st.f_frsize,
        "free_bytes": st.f_bavail * st.f_frsize,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
