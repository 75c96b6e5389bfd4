"""The simulated hypervisor: VMs, snapshots and images kept in memory, nothing runs.

It answers every verb the way the libvirt driver does (same validation, same path
confinement, same conflicts and not-found errors), so a scale test of hundreds of hosts
exercises the real protocol; the server marks every answer `"simulated": true`, and the
capabilities say so in the CPU model too. Numbers (CPU counts, memory, stats) are derived
from the host name so a simulated host looks the same each time it starts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import queue
import socket
import threading
import time

from .. import AGENT_VERSION, domxml
from ..errors import AgentFailure, Conflict, InvalidParams, NotFound, Unsupported
from ..images import ImageStore
from . import ConsoleStream, Driver, check_balloon, check_disk_paths
from .migration import MigrationBook, MigrationPlan, MigrationRecord, none_status

SIM_ACTUAL_THIN = 196_608
SIM_MIGRATION_BASE_S = 0.3  # a simulated migration takes this plus SIM_MIGRATION_PER_GIB_S per GiB
SIM_MIGRATION_PER_GIB_S = 0.2
SIM_MIGRATION_TICK = 0.05
SIM_DOWNTIME_MS = 42

# Every SimDriver of the process by its agent's listen address and port: where a simulated
# migration to sim://ADDRESS:PORT finds its destination.
_sim_hosts: dict[tuple[str, int], SimDriver] = {}
_sim_hosts_lock = threading.Lock()


def sim_host(address: str, port: int) -> SimDriver | None:
    """The SimDriver listening at address:port in this process (or on every address at port)."""
    with _sim_hosts_lock:
        return _sim_hosts.get((address, port)) or _sim_hosts.get(("0.0.0.0", port))  # noqa: S104


class SimConsole(ConsoleStream):
    """A serial console that greets and echoes what it is sent, like a shell at a prompt."""

    def __init__(self, banner: bytes):
        self._queue: queue.Queue = queue.Queue()
        self._queue.put(banner)
        self._closed = False

    def read_nowait(self, size: int = 4096) -> bytes | None:
        try:
            data = self._queue.get_nowait()
        except queue.Empty:
            return None
        return data or b""

    def write(self, data: bytes) -> None:
        if not self._closed:
            self._queue.put(data.replace(b"\r", b"\r\n"))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)


class SimDriver(Driver):
    name = "sim"
    simulated = True

    def __init__(self, config, events=None):
        super().__init__(config, events)
        self.host_name = config.host_name or socket.gethostname()
        self.seed = int(hashlib.sha256(self.host_name.encode()).hexdigest()[:8], 16)
        self.hardware = simulated_hardware(self.host_name)
        self.store = ImageStore(
            config.storage_roots,
            state_dir=config.effective_state_dir,
            qemu_img=config.qemu_img,
            timeout=config.image_timeout,
        )
        self._lock = threading.RLock()
        self._vms: dict[str, dict] = {}
        self._snapshots: dict[str, dict[str, dict]] = {}
        self._images: dict[tuple[str, str], dict] = {}
        self._states: dict[str, dict] = {}
        self._bridges: set[str] = set()
        self._started = time.monotonic()
        # eth0's byte counters and when they last grew (host_stats): they start from a seeded level.
        self._net = [self._started, self.seed % 10**9 * 64, self.seed % 10**9 * 16]
        self._migrations = MigrationBook()
        self._address: tuple[str, int] | None = None
        if config.listen_port:
            self.listening_on(config.listen_address, config.listen_port)

    def listening_on(self, address: str, port: int) -> None:
        with _sim_hosts_lock:
            if self._address is not None and _sim_hosts.get(self._address) is self:
                del _sim_hosts[self._address]
            self._address = (address, port)
            _sim_hosts[self._address] = self

    def close(self) -> None:
        with _sim_hosts_lock:
            if self._address is not None and _sim_hosts.get(self._address) is self:
                del _sim_hosts[self._address]

    def preload(self, specs: list[dict]) -> None:
        """Domains already running when the agent starts (a simulated host brought up with
        its VMs, `hostagent/simulate.py`): validated `create_vm` specs, no lifecycle events."""
        for spec in specs:
            xml = self._domain_xml(spec)
            with self._lock:
                self._check_name(spec)
                self._vms[spec["id"]] = self._new_vm(spec, xml, "up")

    # Host -------------------------------------------------------------------------------------

    def ping(self) -> dict:
        return {"ok": True, "agent_version": AGENT_VERSION, "driver": self.name, "time": _now()}

    def capabilities(self) -> dict:
        return {
            "hostname": f"{self.host_name}.simulated",
            **self.hardware,
            "cpu_arch": "x86_64",
            "libvirt_version": "simulated",
            "qemu_version": "simulated",
            "hypervisor": "simulated",
            "kvm": False,
            "kvm_detail": "simulated host: no hypervisor",
            "nics": [{"name": "eth0", "mac": self._mac(0), "mtu": 1500, "state": "up", "addresses": []}],
            "storage_roots": [self._root_stats(root) for root in self.config.storage_roots],
            "driver": self.name,
            "agent_version": AGENT_VERSION,
        }

    def host_stats(self) -> dict:
        with self._lock:
            running = [v for v in self._vms.values() if v["status"] in ("up", "paused")]
            used = sum(v["memory_mib"] for v in running)
            rx, tx = self._count_traffic(time.monotonic(), len(running))
        total = self.hardware["memory_mib"]
        return {
            "time": _now(),
            "cpu": {"user_pct": 2.0 + len(running), "system_pct": 1.0, "idle_pct": 97.0 - len(running)},
            "memory": {"total_mib": total, "free_mib": max(total - used - 2048, 0), "used_mib": used + 2048},
            "load_avg": [0.1 * len(running)] * 3,
            "vms_running": len(running),
            "uptime_s": int(time.monotonic() - self._started),
            "nics": [{"name": "eth0", "rx_bytes": rx, "tx_bytes": tx, "bridge": False}],
        }

    def _count_traffic(self, now: float, running: int) -> tuple[int, int]:
        """eth0's counters grown since the last reading (under the lock): a few KiB/s of the
        host's own, 24 KiB/s received and 8 KiB/s sent per running VM, swaying by a fifth over
        a few minutes, so the charts look alive. Never going back."""
        last, rx, tx = self._net
        elapsed = max(0.0, now - last)
        sway = 1.0 + 0.2 * math.sin(now / 90.0 + self.seed % 628 / 100.0)
        rx += int(elapsed * sway * (3072 + self.seed % 2048 + 24576 * running))
        tx += int(elapsed * sway * (1024 + self.seed % 1024 + 8192 * running))
        self._net = [now, rx, tx]
        return rx, tx

    # VMs ---------------------------------------------------------------------------------------

    def vm_list(self) -> dict:
        with self._lock:
            vms = [
                {"vm_id": vid, "name": v["spec"]["name"], "status": v["status"], "managed": True}
                for vid, v in sorted(self._vms.items())
            ]
        return {"vms": vms}

    def _domain_xml(self, spec: dict) -> str:
        """The domain XML the libvirt driver would define (TCG: no hypervisor here)."""
        return domxml.build_domain_xml(
            spec,
            kvm=False,
            disk_path=self.store.disk_path,
            graphics_listen=self.config.graphics_listen,
            disk_cache=self.config.disk_cache,
        )

    def create_vm(self, spec: dict) -> dict:
        check_disk_paths(self.store, spec)
        xml = self._domain_xml(spec)
        with self._lock:
            vm = self._vms.get(spec["id"])
            if vm and vm["status"] in ("up", "paused"):
                return {"vm_id": spec["id"], "status": vm["status"], "already": True}
            self._check_name(spec)
            self._vms[spec["id"]] = self._new_vm(spec, xml, "up")
        self._event(spec["id"], "up", "started", "booted")
        return {"vm_id": spec["id"], "status": "up", "domain_type": "qemu"}

    def destroy_vm(self, vm_id: str) -> dict:
        with self._lock:
            vm = self._vms.get(vm_id)
            if vm is None:
                return {"vm_id": vm_id, "status": "down", "existed": False}
            vm["status"] = "down"
        self._event(vm_id, "down", "stopped", "destroyed")
        return {"vm_id": vm_id, "status": "down"}

    def shutdown_vm(self, vm_id: str, timeout: int = 120, mode: str = "auto") -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            if vm["status"] in ("down", "suspended"):
                return {"vm_id": vm_id, "status": vm["status"], "already": True}
            self._require(vm, ("up",), "shut down")
            vm["status"] = "down"
        self._event(vm_id, "down", "stopped", "shutdown")
        return {"vm_id": vm_id, "status": "down", "mode": "guest_agent" if mode == "auto" else mode}

    def reboot_vm(self, vm_id: str, mode: str = "auto") -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            self._require(vm, ("up",), "reboot")
            vm["started"] = time.monotonic()
        return {"vm_id": vm_id, "status": "up"}

    def pause_vm(self, vm_id: str) -> dict:
        return self._set_status(vm_id, "paused", allowed=("up",), verb="pause", event=("suspended", "paused"))

    def resume_vm(self, vm_id: str) -> dict:
        return self._set_status(vm_id, "up", allowed=("paused",), verb="resume", event=("resumed", "unpaused"))

    def suspend_vm(self, vm_id: str, state_path: str) -> dict:
        path = self.store.state_path(state_path, "params.state_path")
        with self._lock:
            vm = self._vm(vm_id)
            if vm["status"] == "suspended" and path in self._states:
                return {"vm_id": vm_id, "status": "suspended", "state_path": path, "already": True}
            self._require(vm, ("up", "paused"), "suspend")
            self._states[path] = {"vm_id": vm_id, "spec": vm["spec"]}
            vm["status"] = "suspended"
        self._event(vm_id, "suspended", "stopped", "saved")
        return {"vm_id": vm_id, "status": "suspended", "state_path": path}

    def restore_vm(self, vm_id: str, state_path: str, spec: dict | None = None) -> dict:
        path = self.store.state_path(state_path, "params.state_path")
        with self._lock:
            vm = self._vms.get(vm_id)
            if vm and vm["status"] in ("up", "paused"):
                return {"vm_id": vm_id, "status": vm["status"], "already": True}
            state = self._states.get(path)
            if state is None:
                raise NotFound(f"No saved state at {path} on this host.")
            if state["vm_id"] != vm_id:
                raise Conflict(f"The state at {path} belongs to VM {state['vm_id']}, not {vm_id}.")
            if vm is None:
                definition = spec or state["spec"]
                xml = domxml.build_domain_xml(definition, kvm=False, disk_path=self.store.disk_path)
                vm = self._vms[vm_id] = self._new_vm(definition, xml, "down")
            vm["status"] = "up"
            del self._states[path]
        self._event(vm_id, "up", "started", "restored")
        return {"vm_id": vm_id, "status": "up"}

    def undefine_vm(self, vm_id: str) -> dict:
        with self._lock:
            vm = self._vms.get(vm_id)
            if vm is None:
                return {"vm_id": vm_id, "undefined": True, "existed": False}
            self._require(vm, ("down", "suspended"), "undefine")
            del self._vms[vm_id]
            self._snapshots.pop(vm_id, None)
        return {"vm_id": vm_id, "undefined": True, "existed": True}

    # Live migration (simulated) ----------------------------------------------------------------

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
        """Move the VM to the SimDriver at sim://ADDRESS:PORT after 0.3 s + 0.2 s per GiB of
        memory (longer when `bandwidth_mibps` cannot carry the memory in that time)."""
        if not dest_uri.startswith("sim://"):
            raise Unsupported(
                "simulated: a simulated host migrates only to sim://ADDRESS:PORT", field="params.dest_uri"
            )
        with self._lock:
            vm = self._vm(vm_id)
            self._require(vm, ("up", "paused"), "migrate")
            memory_mib = vm["max_memory_mib"]
            plan = MigrationPlan(policy, max_downtime_ms, timeout, time.monotonic())
            record = MigrationRecord(vm_id, dest_uri, policy, max_downtime_ms=plan.downtime_ms)
            if not self._migrations.start(record):
                raise Conflict(f"VM {vm_id} is already migrating.", status="migrating")
        duration = SIM_MIGRATION_BASE_S + SIM_MIGRATION_PER_GIB_S * memory_mib / 1024
        if bandwidth_mibps:
            duration = max(duration, memory_mib / bandwidth_mibps)
        threading.Thread(
            target=self._sim_migrate,
            args=(record, memory_mib, duration, timeout),
            name=f"sim-migrate-{vm_id[:8]}",
            daemon=True,
        ).start()
        return {"vm_id": vm_id, "state": "running"}

    def _sim_migrate(self, record: MigrationRecord, memory_mib: int, duration: float, timeout: int) -> None:
        address, _, port = record.destination[len("sim://") :].rpartition(":")
        dest = sim_host(address.strip("[]"), int(port))
        if dest is None:
            record.finish("failed", f"simulated: no simulated host listens at {address}:{port} in this process")
            return
        if dest is self:
            record.finish("failed", "simulated: the destination is this host")
            return
        total = memory_mib * 1024 * 1024
        while True:
            elapsed = time.monotonic() - record.started
            if elapsed >= duration:
                break
            if elapsed > timeout:
                record.finish("failed", f"aborted: the migration did not finish within its timeout of {timeout} s")
                return
            done = int(total * elapsed / duration)
            record.stats = {
                "data_total": total,
                "data_processed": done,
                "data_remaining": total - done,
                "memory_bps": int(total / duration),
                "memory_iteration": 1,
                "time_elapsed": int(elapsed * 1000),
            }
            if record.cancel.wait(SIM_MIGRATION_TICK):
                record.finish("cancelled")
                return
        with self._lock:
            vm = self._vms.get(record.vm_id)
            if record.cancel.is_set():
                record.finish("cancelled")
                return
            if vm is None or vm["status"] not in ("up", "paused"):
                record.finish("failed", "simulated: the VM stopped during the migration")
                return
            del self._vms[record.vm_id]
            snapshots = self._snapshots.pop(record.vm_id, {})
        try:
            dest.accept_migration(record.vm_id, vm, snapshots)
        except AgentFailure as exc:
            with self._lock:  # the VM goes on here, as libvirt leaves it on the source
                self._vms[record.vm_id] = vm
                self._snapshots[record.vm_id] = snapshots
            record.finish("failed", f"simulated: the destination refused the VM: {exc.message}")
            return
        record.stats = {**record.stats, "data_processed": total, "data_remaining": 0}
        record.downtime_ms = SIM_DOWNTIME_MS
        record.job_time_ms = int((time.monotonic() - record.started) * 1000)
        record.finish("completed")
        payload = {"vm_id": record.vm_id, "name": vm["spec"]["name"], "status": "down", "event": "stopped"}
        self.events.emit("vm_event", {**payload, "detail": "migrated"})

    def accept_migration(self, vm_id: str, vm: dict, snapshots: dict) -> None:
        """The incoming side of a simulated migration: the VM runs here from now on."""
        for i, disk in enumerate(vm["spec"]["disks"]):
            try:
                self.store.disk_path(disk)
            except InvalidParams:
                raise AgentFailure(
                    f"host {self.host_name} has no storage root for disk {i} ({disk['storage_domain']['path']})"
                ) from None
        with self._lock:
            here = self._vms.get(vm_id)
            if here is not None and here["status"] in ("up", "paused"):
                raise Conflict(f"VM {vm_id} already runs on host {self.host_name}")
            self._check_name(vm["spec"])
            self._vms[vm_id] = vm
            self._snapshots[vm_id] = snapshots
        self._event(vm_id, vm["status"], "started", "migrated")

    def migration_status(self, vm_id: str) -> dict:
        record = self._migrations.get(vm_id)
        return record.status() if record is not None else none_status(vm_id)

    def migration_cancel(self, vm_id: str) -> dict:
        record = self._migrations.get(vm_id)
        if record is None or record.state != "running":
            raise Conflict(f"No migration of VM {vm_id} is running on this host.")
        record.cancel_requested = True
        record.cancel.set()
        return {"vm_id": vm_id, "state": "cancelling"}

    # Devices -------------------------------------------------------------------------------------

    def hotplug_disk(self, vm_id: str, disk: dict) -> dict:
        path = self.store.disk_path(disk)
        with self._lock:
            vm = self._vm(vm_id)
            for existing in vm["disks"]:
                if existing["id"] == disk["id"]:
                    return {"vm_id": vm_id, "plugged": True, "target": existing["target"], "already": True}
            target = domxml.next_target({d["target"] for d in vm["disks"]}, disk["interface"])
            vm["disks"].append({**disk, "target": target, "path": path})
        return {"vm_id": vm_id, "plugged": True, "target": target, "live": vm["status"] in ("up", "paused")}

    def hotunplug_disk(self, vm_id: str, disk_id: str) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            before = len(vm["disks"])
            vm["disks"] = [d for d in vm["disks"] if d["id"] != disk_id]
        return {"vm_id": vm_id, "plugged": False, "existed": len(vm["disks"]) < before}

    def hotplug_nic(self, vm_id: str, nic: dict) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            for existing in vm["nics"]:
                if existing["mac"] == nic["mac"]:
                    existing.update(nic)
                    return {"vm_id": vm_id, "plugged": True, "updated": True}
            vm["nics"].append(dict(nic))
        return {"vm_id": vm_id, "plugged": True, "live": vm["status"] in ("up", "paused")}

    def setup_networks(self, networks: list[dict]) -> dict:
        with self._lock:
            result = [{"name": n["name"], "created": n["name"] not in self._bridges} for n in networks]
            self._bridges.update(n["name"] for n in networks)
        return {"networks": result}

    def hotunplug_nic(self, vm_id: str, mac: str) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            before = len(vm["nics"])
            vm["nics"] = [n for n in vm["nics"] if n["mac"] != mac]
        return {"vm_id": vm_id, "plugged": False, "existed": len(vm["nics"]) < before}

    def set_memory(self, vm_id: str, memory_mib: int) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            check_balloon(vm["spec"], memory_mib, vm["max_memory_mib"])
            vm["memory_mib"] = memory_mib
        return {"vm_id": vm_id, "memory_mib": memory_mib, "max_memory_mib": vm["max_memory_mib"]}

    def set_vcpus(self, vm_id: str, vcpus: int) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            if vcpus > vm["max_vcpus"]:
                raise InvalidParams("params.vcpus", f"exceeds the VM's maximum of {vm['max_vcpus']} vCPUs")
            vm["vcpus"] = vcpus
        return {"vm_id": vm_id, "vcpus": vcpus, "max_vcpus": vm["max_vcpus"]}

    # Snapshots -----------------------------------------------------------------------------------

    def snapshot_create(self, vm_id: str, snapshot: dict, spec: dict | None = None) -> dict:
        with self._lock:
            vm = self._vm_or_spec(vm_id, spec)
            snaps = self._snapshots.setdefault(vm_id, {})
            if snapshot["id"] in snaps:
                return {"vm_id": vm_id, "snapshot_id": snapshot["id"], "already": True}
            running = vm is not None and vm["status"] in ("up", "paused")
            snaps[snapshot["id"]] = {
                "description": snapshot["description"],
                "status": vm["status"] if vm else "down",
                "memory": running,
                "created": _now(),
            }
        return {"vm_id": vm_id, "snapshot_id": snapshot["id"], "memory": running, "offline": vm is None}

    def snapshot_revert(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        with self._lock:
            vm = self._vm_or_spec(vm_id, spec)
            snap = self._snapshots.get(vm_id, {}).get(snapshot_id)
            if snap is None:
                raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id} on this host.")
            if vm is not None:
                vm["status"] = snap["status"] if snap["memory"] else "down"
        return {"vm_id": vm_id, "snapshot_id": snapshot_id, "status": vm["status"] if vm else "down"}

    def snapshot_delete(self, vm_id: str, snapshot_id: str, spec: dict | None = None) -> dict:
        with self._lock:
            self._vm_or_spec(vm_id, spec)
            existed = self._snapshots.get(vm_id, {}).pop(snapshot_id, None) is not None
        return {"vm_id": vm_id, "snapshot_id": snapshot_id, "deleted": True, "existed": existed}

    # Monitoring ----------------------------------------------------------------------------------

    def vm_stats(self, vm_id: str | None = None) -> dict:
        with self._lock:
            vms = [(vm_id, self._vm(vm_id))] if vm_id else sorted(self._vms.items())
            stats = [self._stats(vid, vm) for vid, vm in vms]
        return {"vms": stats}

    def guest_info(self, vm_id: str) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            self._require(vm, ("up",), "read guest information of")
            nics = [{"mac": n["mac"], "name": f"eth{i}", "addresses": []} for i, n in enumerate(vm["nics"])]
        return {
            "vm_id": vm_id,
            "guest_agent": "ok",
            "os": {"id": "simulated", "name": "Simulated OS", "kernel_release": "0.0-simulated"},
            "hostname": vm["spec"]["name"],
            "timezone": "UTC",
            "users": [],
            "interfaces": nics,
        }

    def open_console(self, vm_id: str) -> ConsoleStream:
        with self._lock:
            vm = self._vm(vm_id)
            self._require(vm, ("up", "paused"), "open the console of")
            name = vm["spec"]["name"]
        return SimConsole(f"OLVM simulated serial console of VM {name} (no hypervisor)\r\n".encode())

    def open_vnc(self, vm_id: str) -> socket.socket:
        with self._lock:
            vm = self._vm(vm_id)
            self._require(vm, ("up", "paused"), "open the VNC display of")
        raise Unsupported(
            f"VM {vm_id} runs on a simulated host: nothing draws a screen, so there is no VNC display "
            "(its serial console works)."
        )

    # Images --------------------------------------------------------------------------------------

    def image_create(self, image: dict) -> dict:
        self.store.image_path(image["storage_domain"], image["id"])
        key = self._key(image["storage_domain"], image["id"])
        with self._lock:
            if key in self._images:
                raise Conflict(
                    f"Image {image['id']} already exists in storage domain {image['storage_domain']['path']}."
                )
            size = image["size"]
            if image["backing_id"]:
                base = self._image(image["storage_domain"], image["backing_id"])
                if size is not None and size < base["virtual_size"]:
                    raise InvalidParams(
                        "params.image.size", f"is smaller than the base image ({base['virtual_size']} bytes)"
                    )
                size = size or base["virtual_size"]
            elif image["copy_from_id"]:
                source = self._image(image["copy_from_domain"] or image["storage_domain"], image["copy_from_id"])
                size = max(size or 0, source["virtual_size"])
            elif size is None:
                raise InvalidParams("params.image.size", "is required for a new blank image")
            actual = size if image["allocation"] == "preallocated" else min(size, SIM_ACTUAL_THIN)
            self._images[key] = {
                "format": image["format"],
                "virtual_size": size,
                "actual_size": actual,
                "backing_id": image["backing_id"],
            }
            return {"image_id": image["id"], **self._describe(key)}

    image_clone = image_create
    image_copy = image_create

    def image_info(self, image: dict) -> dict:
        with self._lock:
            self._image(image["storage_domain"], image["id"])
            return {"image_id": image["id"], **self._describe(self._key(image["storage_domain"], image["id"]))}

    def image_resize(self, image: dict, size: int) -> dict:
        with self._lock:
            img = self._image(image["storage_domain"], image["id"])
            if size < img["virtual_size"]:
                raise InvalidParams(
                    "params.size", f"is smaller than the current virtual size ({img['virtual_size']} bytes)"
                )
            img["virtual_size"] = size
            return {"image_id": image["id"], **self._describe(self._key(image["storage_domain"], image["id"]))}

    def image_remove(self, image: dict) -> dict:
        self.store.image_path(image["storage_domain"], image["id"])
        key = self._key(image["storage_domain"], image["id"])
        with self._lock:
            if key not in self._images:
                return {"image_id": image["id"], "removed": True, "existed": False}
            users = sorted(
                i for (d, i), img in self._images.items() if d == key[0] and img["backing_id"] == image["id"]
            )
            if users:
                raise Conflict(f"Image {image['id']} is the base of {len(users)} other image(s): {', '.join(users)}.")
            del self._images[key]
        return {"image_id": image["id"], "removed": True, "existed": True}

    def storage_domain_stats(self, domain: dict) -> dict:
        path = self.store.domain_dir(domain, field="params.domain", must_exist=False)
        with self._lock:
            count = sum(1 for d, _ in self._images if d == path)
        if os.path.isdir(path):
            st = os.statvfs(path)
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        else:  # no such directory here: a simulated 1 TiB domain, half free
            total, free = 1024**4, 1024**4 // 2
        return {"path": path, "total_bytes": total, "free_bytes": free, "used_bytes": total - free, "images": count}

    # Helpers -------------------------------------------------------------------------------------

    def _new_vm(self, spec: dict, xml: str, status: str) -> dict:
        targets = domxml.assign_targets(spec["disks"])
        return {
            "spec": spec,
            "xml": xml,
            "status": status,
            "memory_mib": spec["memory_mib"],
            "max_memory_mib": spec["max_memory_mib"] or spec["memory_mib"],
            "vcpus": spec["vcpus"],
            "max_vcpus": spec["max_vcpus"] or spec["vcpus"],
            "disks": [{**d, "target": targets[d["id"]], "path": self.store.disk_path(d)} for d in spec["disks"]],
            "nics": [dict(n) for n in spec["nics"]],
            "started": time.monotonic(),
        }

    def _check_name(self, spec: dict) -> None:
        for vid, vm in self._vms.items():
            if vid != spec["id"] and vm["spec"]["name"] == spec["name"]:
                raise Conflict(f"Another VM named {spec['name']!r} ({vid}) is defined on this host.")

    def _vm(self, vm_id: str) -> dict:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} is not on this host.")
        return vm

    def _vm_or_spec(self, vm_id: str, spec: dict | None) -> dict | None:
        vm = self._vms.get(vm_id)
        if vm is None and spec is None:
            raise NotFound(f"VM {vm_id} is not on this host; pass its spec to work on its disks offline.")
        if vm is None and spec["id"] != vm_id:
            raise InvalidParams("params.spec.id", "must be the VM's id")
        return vm

    def _require(self, vm: dict, allowed: tuple[str, ...], verb: str) -> None:
        if vm["status"] not in allowed:
            raise Conflict(f"Cannot {verb} VM {vm['spec']['name']}: it is {vm['status']}.", status=vm["status"])

    def _set_status(
        self, vm_id: str, status: str, *, allowed: tuple[str, ...], verb: str, event: tuple[str, str]
    ) -> dict:
        with self._lock:
            vm = self._vm(vm_id)
            if vm["status"] == status:
                return {"vm_id": vm_id, "status": status, "already": True}
            self._require(vm, allowed, verb)
            vm["status"] = status
        self._event(vm_id, status, *event)
        return {"vm_id": vm_id, "status": status}

    def _stats(self, vm_id: str, vm: dict) -> dict:
        running = vm["status"] in ("up", "paused")
        uptime = time.monotonic() - vm["started"] if running else 0.0
        return {
            "vm_id": vm_id,
            "name": vm["spec"]["name"],
            "status": vm["status"],
            "cpu_time_ns": int(uptime * 1e7) * vm["vcpus"],
            "vcpus": vm["vcpus"],
            "memory_kib": vm["max_memory_mib"] * 1024,
            "balloon_kib": vm["memory_mib"] * 1024 if running else 0,
            "disks": [{"target": d["target"], "path": d["path"], "rd_bytes": 0, "wr_bytes": 0} for d in vm["disks"]],
            "nics": [{"mac": n["mac"], "rx_bytes": 0, "tx_bytes": 0} for n in vm["nics"]],
        }

    def _key(self, domain: dict, image_id: str) -> tuple[str, str]:
        return (self.store.domain_dir(domain, must_exist=False), image_id)

    def _image(self, domain: dict, image_id: str) -> dict:
        img = self._images.get(self._key(domain, image_id))
        if img is None:
            raise NotFound(f"Image {image_id} does not exist in storage domain {domain['path']}.")
        return img

    def _describe(self, key: tuple[str, str]) -> dict:
        img = self._images[key]
        return {
            "path": os.path.join(key[0], "images", key[1]),
            "format": img["format"],
            "virtual_size": img["virtual_size"],
            "actual_size": img["actual_size"],
            "backing_id": img["backing_id"],
            "snapshots": [],
        }

    def _root_stats(self, root: str) -> dict:
        if os.path.isdir(root):
            st = os.statvfs(root)
            return {"path": root, "total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}
        return {"path": root, "total_bytes": 1024**4, "free_bytes": 1024**4 // 2}

    def _mac(self, index: int) -> str:
        octets = [0x56, 0x6F] + list((self.seed + index).to_bytes(4, "big"))
        return ":".join(f"{o:02x}" for o in octets)

    def _event(self, vm_id: str, status: str, event: str, detail: str) -> None:
        """A `vm_event` as libvirt would report the same change (docs/ingest.md)."""
        with self._lock:
            vm = self._vms.get(vm_id)  # gone if undefined meanwhile
            name = vm["spec"]["name"] if vm else vm_id
        payload = {"vm_id": vm_id, "name": name, "status": status, "event": event, "detail": detail}
        self.events.emit("vm_event", payload)


def simulated_hardware(host_name: str) -> dict:
    """The CPUs and memory a simulated host reports, derived from its name (the engine
    records the same figures for hosts it creates for a simulator)."""
    seed = int(hashlib.sha256(host_name.encode()).hexdigest()[:8], 16)
    sockets = 2
    cores = sockets * (8 + seed % 3 * 4)
    return {
        "cpu_model": "Simulated CPU (no hypervisor)",
        "cpu_sockets": sockets,
        "cpu_cores": cores,
        "cpu_threads": cores * 2,
        "memory_mib": (64 + seed % 4 * 64) * 1024,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
