"""Register a lab (hostagent.lab) in the engine, idempotently: what exists is kept.

`register_lab(lab_info, hosts, user=...)` takes the lab's facts as plain data
(`hostagent.lab.core.lab_info()` and `core.status()`) and makes the engine know the lab:

- data center `Lab` and cluster `Lab` (apart from the simulated demo hosts, so placement
  only ever picks a lab host for the lab's VMs);
- the storage domain `lab-shared`: the lab's shared directory, which the engine sees at the
  same path as every lab host (sized by the engine's own statvfs);
- the template `tiny`: direct kernel boot of the guest kernel and initrd in the images
  directory (the same absolute path on every lab host), and a disk whose image is
  tiny-disk.qcow2 copied into the storage domain where the host agent looks for that disk
  (`<domain>/images/<disk id>`, `StorageDomain.image_path`);
- one engine host per lab host (`h1` at 10.213.0.11, ...), added with `add_host` unless a
  host with that address exists; deploying it is the add_host Job's work.

Every write goes through a service function; this module only decides what is missing and
copies the disk image. It needs no root: `manage.py lab up` brings the lab up first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from compute import services as compute
from compute.choices import ConsoleType, OsType
from compute.models import Template
from inventory import services as inventory
from inventory.choices import HostStatus
from inventory.exceptions import ConflictError
from inventory.models import Cluster, DataCenter, Host, Job
from storage import services as storage
from storage.choices import DiskFormat, StorageDomainRole, StorageDomainType
from storage.models import Disk, StorageDomain

DATA_CENTER = "Lab"
CLUSTER = "Lab"
STORAGE_DOMAIN = "lab-shared"
TEMPLATE = "tiny"
KERNEL, INITRD, DISK_IMAGE = "vmlinuz", "initrd.img", "tiny-disk.qcow2"
TEMPLATE_SHAPE = {
    "description": "The lab's tiny guest: Debian cloud kernel, busybox initramfs, qemu-guest-agent",
    "os_type": OsType.OTHER,
    "vcpus": 1,
    "memory_mib": 256,  # a VM made from it is guaranteed all of it (create_vm's default)
    "console_type": ConsoleType.SERIAL,
    "kernel_params": "console=ttyS0",
}
QEMU_IMG_TIMEOUT = 120  # seconds; the image is a few hundred KiB


class LabImageError(Exception):
    """The guest image is missing or cannot be copied: a message for humans."""


@dataclass
class LabRegistration:
    data_center: DataCenter
    cluster: Cluster
    storage_domain: StorageDomain
    template: Template
    disk: Disk
    # (host, the Job that adds it, or None when the engine knew the host already)
    hosts: list[tuple[Host, Job | None]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what this run did, for people


def guest_image_files(images_dir) -> dict[str, Path]:
    """The tiny guest's files (absolute paths), or LabImageError naming what is missing."""
    images = Path(images_dir).resolve()
    files = {name: images / name for name in (KERNEL, INITRD, DISK_IMAGE)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise LabImageError(
            f"no tiny guest image in {images} (missing: {', '.join(missing)}): run scripts/build-guest-image.sh as root"
        )
    return files


def register_lab(lab: dict, hosts: Iterable[dict] | None = None, *, user) -> LabRegistration:
    """Make the engine know the lab described by `lab` and its `hosts`:

    `lab` as `core.lab_info()` gives it: `{"shared_dir": "/abs/var/lab/shared",
    "images_dir": "/abs/var/images", ...}`; `hosts` as `core.status()` rows (only "name" and
    "ip" are read): `[{"name": "h1", "ip": "10.213.0.11"}, ...]`, by default `lab["hosts"]`.

    A second call with the same lab changes nothing. Raises LabImageError, or the services'
    ValidationError / ConflictError.
    """
    files = guest_image_files(lab["images_dir"])
    shared_dir = str(Path(lab["shared_dir"]).resolve())
    changes: list[str] = []

    dc = DataCenter.objects.filter(name=DATA_CENTER).first()
    if dc is None:
        dc = inventory.create_data_center(user=user, name=DATA_CENTER, description="The default data center")
        changes.append(f"data center {dc.name} created")
    cluster = Cluster.objects.filter(data_center=dc, name=CLUSTER).first()
    if cluster is None:
        cluster = inventory.create_cluster(user=user, data_center=dc, name=CLUSTER, description="The default cluster")
        changes.append(f"cluster {cluster.name} created")

    sd = _storage_domain(dc, shared_dir, user=user, changes=changes)
    template = Template.objects.filter(name=TEMPLATE, base_template__isnull=True).first()
    if template is None:
        template, _ = compute.create_template(
            user=user,
            name=TEMPLATE,
            cluster=cluster,
            kernel_path=str(files[KERNEL]),
            initrd_path=str(files[INITRD]),
            **TEMPLATE_SHAPE,
        )
        changes.append(f"template {template.name} created (kernel {files[KERNEL]})")
    disk = _template_disk(template, sd, files[DISK_IMAGE], user=user, changes=changes)

    lab_hosts = list(lab.get("hosts", ()) if hosts is None else hosts)
    registered = []
    for lab_host in sorted(lab_hosts, key=lambda h: (len(h["name"]), h["name"])):
        host = Host.objects.filter(address=lab_host["ip"]).select_related("cluster").first()
        if host is not None:
            job = None
            agent_down = "running" in lab_host and not lab_host["running"].get("agent")
            if agent_down and host.status != HostStatus.INSTALLING:  # (a deploy under way starts it)
                # The lab was brought down and up again: its libvirtd is new, its agent not started.
                job = inventory.reinstall_host(host, user=user, agent_gone="the lab tool finds its agent not running")
                changes.append(f"host {host.name} ({host.address}) reinstalled: its agent was not running")
            registered.append((host, job))
            continue
        host, job = inventory.add_host(
            user=user,
            cluster=cluster,
            name=lab_host["name"],
            address=lab_host["ip"],
            description=f"Lab host {lab_host['name']} (network namespace olvm-{lab_host['name']})",
        )
        registered.append((host, job))
        changes.append(f"host {host.name} ({host.address}) added to cluster {cluster.name}")
    return LabRegistration(dc, cluster, sd, template, disk, registered, changes)


def _storage_domain(dc: DataCenter, shared_dir: str, *, user, changes: list[str]) -> StorageDomain:
    sd = StorageDomain.objects.filter(name=STORAGE_DOMAIN).first()
    if sd is None:
        sd = storage.register_storage_domain(
            user=user,
            name=STORAGE_DOMAIN,
            type=StorageDomainType.POSIXFS,
            role=StorageDomainRole.DATA,
            path=shared_dir,
            data_center=dc,
            shared=True,
            description="The lab's shared directory, seen at the same path by every lab host and the engine",
        )
        changes.append(f"storage domain {sd.name} added at {sd.path}")
    elif sd.path != shared_dir:
        raise ConflictError(
            f"Storage domain {sd.name} exists at {sd.path}, not at the lab's shared directory {shared_dir}; "
            "remove it (or its disks) first."
        )
    return sd


def _template_disk(template: Template, sd: StorageDomain, source: Path, *, user, changes: list[str]) -> Disk:
    """The template's disk: registered from a copy of `source`, or, when the engine knows it
    already, its image put back if it went missing from the storage domain."""
    disk = template.disks.select_related("storage_domain").order_by("created_at").first()
    if disk is not None:
        target = disk.storage_domain.image_path(disk.pk)
        if not target.exists():
            _copy_image(source, target)
            changes.append(f"image of disk {disk.alias} restored at {target}")
        return disk
    disk_id = uuid.uuid4()
    target = sd.image_path(disk_id)
    _copy_image(source, target)
    try:
        info = _image_info(target)
        disk = storage.register_disk(
            user=user,
            storage_domain=sd,
            disk_id=disk_id,
            alias=f"{template.name}_Disk1",
            provisioned_size=int(info["virtual-size"]),
            actual_size=target.stat().st_blocks * 512,
            format=DiskFormat.QCOW2,
            description=f"The tiny guest's disk, copied from {source}",
            template=template,
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    changes.append(f"disk {disk.alias} of template {template.name} registered ({target})")
    return disk


def _qemu_img(args: list[str]) -> str:
    binary = shutil.which("qemu-img")
    if binary is None:
        raise LabImageError("qemu-img is not installed (package qemu-utils): it copies the guest disk")
    try:
        done = subprocess.run(  # noqa: S603 - fixed binary, argument list, no shell
            [binary, *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise LabImageError(f"qemu-img {args[0]} did not finish within {QEMU_IMG_TIMEOUT} s") from None
    if done.returncode != 0:
        raise LabImageError(f"qemu-img {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _copy_image(source: Path, target: Path) -> None:
    """qemu-img convert to a temporary name in the images directory, then rename: a failed
    copy leaves nothing where the agent looks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        _qemu_img(["convert", "-q", "-f", "qcow2", "-O", "qcow2", str(source), str(tmp)])
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _image_info(path: Path) -> dict:
    try:
        return json.loads(_qemu_img(["info", "--output=json", "-U", str(path)]))
    except ValueError:
        raise LabImageError(f"qemu-img info gave unreadable output for {path}") from None
