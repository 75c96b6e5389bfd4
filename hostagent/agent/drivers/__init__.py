"""Hypervisor drivers: `libvirt` (real, any libvirt URI) and `sim` (in-memory, labelled simulated).

A driver has one method per verb of `verbs.VERBS` (same name, the validated parameters as
keyword arguments) returning a JSON-able dict, and raises `errors.AgentFailure` subclasses
for everything the caller should read. The server marks every answer of a simulated
driver with `"simulated": true`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from ..config import AgentConfig
from ..errors import InvalidParams, Unsupported

log = logging.getLogger("hostagent.events")

VM_STATUSES = (
    "down",
    "up",
    "powering_down",
    "paused",
    "suspended",
    "migrating",
    "unknown",
)


class EventSink:
    """Where drivers report what happens on the host: `emit("vm_event", payload)` with the
    `vm_event` fields of docs/ingest.md (vm_id, name, status, event, detail).

    Every listener (the pusher, `push.Pusher.event`) is called at once in the emitting
    thread, so it must only queue; the last `keep` events stay in `recent` for tests.
    """

    def __init__(self, engine_url: str = "", keep: int = 200):
        self.engine_url = engine_url
        self.keep = keep
        self.recent: list[dict] = []
        self._listeners: list[Callable[[str, dict], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[str, dict], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str, dict], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, kind: str, payload: dict) -> None:
        log.info("event %s %s", kind, payload)
        with self._lock:
            self.recent.append({"kind": kind, **payload})
            del self.recent[: -self.keep]
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(kind, payload)
            except Exception:
                log.exception("an event listener failed on %s %s", kind, payload)


class ConsoleStream:
    """A bidirectional byte stream to a VM's serial console, used from one thread only
    (libvirt streams fail when one thread blocks in recv while another sends)."""

    def read_nowait(self, size: int = 4096) -> bytes | None:
        """The bytes waiting now; None when there are none yet; b"" at the end of the stream."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Driver:
    name = "base"
    simulated = False

    def __init__(self, config: AgentConfig, events: EventSink | None = None):
        self.config = config
        self.events = events or EventSink(config.engine_url)

    def open_console(self, vm_id: str) -> ConsoleStream:
        raise Unsupported(f"The {self.name} driver has no console streams.")

    def open_vnc(self, vm_id: str) -> socket.socket:
        """A connected socket to the VM's VNC server (RFB starts with the server's greeting);
        the server proxies it and closes it."""
        raise Unsupported(f"The {self.name} driver has no VNC displays.")

    def listening_on(self, address: str, port: int) -> None:
        """The server bound its socket here (a listen port of 0 becomes the real one)."""

    def close(self) -> None:
        pass


def check_balloon(spec: dict, memory_mib: int, max_memory_mib: int) -> None:
    if memory_mib > max_memory_mib:
        raise InvalidParams("params.memory_mib", f"exceeds the VM's maximum of {max_memory_mib} MiB")
    guaranteed = spec.get("guaranteed_memory_mib") or 0
    if memory_mib < guaranteed:
        raise InvalidParams("params.memory_mib", f"is below the VM's guaranteed memory of {guaranteed} MiB")


def check_disk_paths(store, spec: dict, field: str = "params.spec") -> None:
    """Every disk of a VM spec resolves under a storage root (the error names the disk)."""
    for i, disk in enumerate(spec["disks"]):
        store.disk_path(disk, field=f"{field}.disks[{i}]")


def make_driver(config: AgentConfig, events: EventSink | None = None) -> Driver:
    if config.driver == "sim":
        from .sim_driver import SimDriver

        return SimDriver(config, events)
    from .libvirt_driver import LibvirtDriver

    return LibvirtDriver(config, events)
