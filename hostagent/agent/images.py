"""Disk images with qemu-img, confined to the storage roots of this host.

A storage domain is a directory under one of the configured storage roots (for a shared
domain: the same mount on every host). Its images live flat in `<domain>/images/<image-id>`,
named by the image's UUID only, so a path never comes from a caller: the caller names a
domain path (checked to resolve, symlinks included, under a storage root) and a UUID.
Overlays (thin clones of a template disk) name their base by a path relative to the overlay,
so a domain mounted elsewhere on another host still works.

Every qemu-img run has a timeout. New images are written under a temporary name and renamed
at the end, so a failed or timed-out create/copy leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import subprocess

from .errors import AgentFailure, Conflict, InvalidParams, NotFound, Timeout, Unsupported

IMAGES_DIR = "images"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
INFO_TIMEOUT = 30.0


class ImageStore:
    def __init__(self, storage_roots, *, state_dir: str, qemu_img: str = "qemu-img", timeout: float = 3600.0):
        self.roots = [os.path.realpath(r) for r in storage_roots]
        self.state_dir = state_dir
        self.qemu_img = qemu_img
        self.timeout = timeout

    # Paths ----------------------------------------------------------------------------------

    def domain_dir(self, domain: dict, *, field: str = "params.image.storage_domain", must_exist: bool = True) -> str:
        """The real directory of a storage domain, refused unless it lies under a storage root."""
        path = domain.get("path")
        where = f"{field}.path"
        if not isinstance(path, str) or not path:
            raise InvalidParams(where, "is required")
        real = self.confine(path, where)
        if must_exist and not os.path.isdir(real):
            raise NotFound(f"Storage domain directory {path} does not exist on this host.", field=where)
        return real

    def confine(self, path: str, field: str) -> str:
        if "\x00" in path:
            raise InvalidParams(field, "must not contain NUL")
        if not os.path.isabs(path):
            raise InvalidParams(field, f"must be an absolute path, not {path!r}")
        if ".." in path.split("/"):
            raise InvalidParams(field, "must not contain '..'")
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.roots):
            raise InvalidParams(field, f"{path} is outside the storage roots of this host ({', '.join(self.roots)})")
        return real

    def image_path(
        self,
        domain: dict,
        image_id: str,
        *,
        id_field: str = "params.image.id",
        domain_field: str = "params.image.storage_domain",
        must_exist: bool = False,
    ) -> str:
        if not isinstance(image_id, str) or not UUID_RE.match(image_id):
            raise InvalidParams(id_field, "must be a lowercase UUID (an image id, never a path)")
        base = self.domain_dir(domain, field=domain_field, must_exist=must_exist)
        path = os.path.join(base, IMAGES_DIR, image_id)
        # The images directory itself could be a symlink out of the root: check the result too.
        real = os.path.realpath(path)
        if not any(real.startswith(root.rstrip("/") + "/") for root in self.roots):
            raise InvalidParams(id_field, f"resolves to {real}, outside the storage roots of this host")
        if must_exist and not os.path.isfile(real):
            raise NotFound(f"Image {image_id} does not exist in storage domain {domain.get('path')}.")
        return real

    def disk_path(self, disk: dict, field: str = "params.disk") -> str:
        """The image path of a VM disk (for domain XML); the image need not exist yet."""
        return self.image_path(
            disk["storage_domain"], disk["id"], id_field=f"{field}.id", domain_field=f"{field}.storage_domain"
        )

    def state_path(self, state_path: str, field: str = "params.state_path") -> str:
        """Where a suspended VM's memory state goes: a bare name under state_dir, or a path under a root."""
        if os.path.isabs(state_path):
            return self.confine(state_path, field)
        if not STATE_NAME_RE.match(state_path) or ".." in state_path:
            raise InvalidParams(field, "must be a file name (letters, digits, '.', '_', '-') or an absolute path")
        return self.confine(os.path.join(self.state_dir, state_path), field)

    # Verbs ---------------------------------------------------------------------------------

    def create(self, image: dict) -> dict:
        """Blank image, qcow2 overlay on `backing_id`, or full copy of `copy_from_id`."""
        target = self.image_path(image["storage_domain"], image["id"])
        if os.path.lexists(target):
            raise Conflict(f"Image {image['id']} already exists in storage domain {image['storage_domain']['path']}.")
        images_dir = os.path.dirname(target)
        os.makedirs(images_dir, mode=0o755, exist_ok=True)
        tmp = os.path.join(images_dir, f".{image['id']}.tmp-{secrets.token_hex(4)}")
        fmt, size = image["format"], image.get("size")
        prealloc = image.get("allocation") == "preallocated"
        try:
            if image.get("backing_id"):
                base = self.image_path(
                    image["storage_domain"], image["backing_id"], id_field="params.image.backing_id", must_exist=True
                )
                base_info = self._info(base)
                if size is not None and size < base_info["virtual-size"]:
                    raise InvalidParams(
                        "params.image.size", f"is smaller than the base image ({base_info['virtual-size']} bytes)"
                    )
                args = ["create", "-q", "-f", "qcow2", "-b", image["backing_id"], "-F", base_info["format"], tmp]
                if size is not None and size != base_info["virtual-size"]:
                    args.append(str(size))
                self._run(args, self.timeout)
            elif image.get("copy_from_id"):
                source_domain = image.get("copy_from_domain") or image["storage_domain"]
                source = self.image_path(
                    source_domain,
                    image["copy_from_id"],
                    id_field="params.image.copy_from_id",
                    domain_field="params.image.copy_from_domain"
                    if image.get("copy_from_domain")
                    else "params.image.storage_domain",
                    must_exist=True,
                )
                source_info = self._info(source)
                args = ["convert", "-q", "-f", source_info["format"], "-O", fmt]
                if prealloc:
                    args += ["-o", "preallocation=falloc"]
                self._run([*args, source, tmp], self.timeout)
                if size is not None and size > source_info["virtual-size"]:
                    self._run(["resize", "-q", "-f", fmt, tmp, str(size)], self.timeout)
            else:
                if size is None:
                    raise InvalidParams("params.image.size", "is required for a new blank image")
                args = ["create", "-q", "-f", fmt]
                if prealloc:
                    args += ["-o", "preallocation=falloc"]
                self._run([*args, tmp, str(size)], self.timeout)
            os.rename(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return {"image_id": image["id"], **self._describe(target)}

    def info(self, image: dict) -> dict:
        path = self.image_path(image["storage_domain"], image["id"], must_exist=True)
        return {"image_id": image["id"], **self._describe(path)}

    def resize(self, image: dict, size: int) -> dict:
        path = self.image_path(image["storage_domain"], image["id"], must_exist=True)
        info = self._info(path)
        if size < info["virtual-size"]:
            raise InvalidParams(
                "params.size", f"is smaller than the current virtual size ({info['virtual-size']} bytes)"
            )
        if size > info["virtual-size"]:
            self._run(["resize", "-q", "-f", info["format"], path, str(size)], self.timeout)
        return {"image_id": image["id"], **self._describe(path)}

    def remove(self, image: dict) -> dict:
        path = self.image_path(image["storage_domain"], image["id"])
        if not os.path.lexists(path):
            return {"image_id": image["id"], "removed": True, "existed": False}
        users = self.overlays_of(os.path.dirname(path), image["id"])
        if users:
            raise Conflict(f"Image {image['id']} is the base of {len(users)} other image(s): {', '.join(users)}.")
        if self.in_use(path):
            raise Conflict(f"Image {image['id']} is in use (a running VM holds its lock); it was not removed.")
        os.unlink(path)
        return {"image_id": image["id"], "removed": True, "existed": True}

    def domain_stats(self, domain: dict) -> dict:
        path = self.domain_dir(domain, field="params.domain")
        st = os.statvfs(path)
        images_dir = os.path.join(path, IMAGES_DIR)
        count = sum(1 for n in os.listdir(images_dir) if UUID_RE.match(n)) if os.path.isdir(images_dir) else 0
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return {"path": path, "total_bytes": total, "free_bytes": free, "used_bytes": total - free, "images": count}

    def snapshot(self, action: str, paths: list[str], name: str) -> None:
        """Internal qcow2 snapshots of a stopped VM's disks (`-c` create, `-a` apply, `-d` delete)."""
        flag = {"create": "-c", "revert": "-a", "delete": "-d"}[action]
        for path in paths:
            self._run(["snapshot", "-q", flag, name, path], self.timeout)

    def snapshot_names(self, path: str) -> list[str]:
        return [s.get("name") for s in self._info(path).get("snapshots", [])]

    # qemu-img ------------------------------------------------------------------------------

    def in_use(self, path: str) -> bool:
        """Whether another process (a running qemu) holds qemu's image lock on the file."""
        try:
            self._run(["info", "--output=json", path], INFO_TIMEOUT)
        except AgentFailure as exc:
            if "lock" in exc.message:
                return True
            raise
        return False

    def overlays_of(self, images_dir: str, image_id: str) -> list[str]:
        """Images in the directory whose qcow2 header names `image_id` as their backing file."""
        users = []
        for name in sorted(os.listdir(images_dir)):
            if UUID_RE.match(name) and name != image_id and _qcow2_backing(os.path.join(images_dir, name)) == image_id:
                users.append(name)
        return users

    def _describe(self, path: str) -> dict:
        info = self._info(path)
        backing = info.get("backing-filename")
        return {
            "path": path,
            "format": info["format"],
            "virtual_size": info["virtual-size"],
            "actual_size": os.stat(path).st_blocks * 512,
            "backing_id": os.path.basename(backing) if backing else None,
            "snapshots": [s.get("name") for s in info.get("snapshots", [])],
        }

    def _info(self, path: str) -> dict:
        out = self._run(["info", "--output=json", "-U", path], INFO_TIMEOUT)
        try:
            return json.loads(out)
        except ValueError:
            raise AgentFailure(f"qemu-img info gave unreadable output for {path}") from None

    def _run(self, args: list[str], timeout: float) -> str:
        binary = shutil.which(self.qemu_img) if "/" not in self.qemu_img else self.qemu_img
        if not binary or not os.access(binary, os.X_OK):
            raise Unsupported(f"qemu-img ({self.qemu_img}) is not installed on this host.")
        try:
            done = subprocess.run(  # noqa: S603 - fixed binary, argument list, no shell
                [binary, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Timeout(f"qemu-img {args[0]} did not finish within {timeout:g} s (killed).") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise AgentFailure(
                f"qemu-img {args[0]} failed: {detail[-1] if detail else f'exit status {done.returncode}'}",
                exit_status=done.returncode,
            )
        return done.stdout


def _qcow2_backing(path: str) -> str | None:
    """The backing file name in a qcow2 header (read directly: no qemu-img run per image)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < size <= 4096:
                return None
            f.seek(offset)
            return os.path.basename(f.read(size).decode("utf-8", "replace"))
    except OSError:
        return None
