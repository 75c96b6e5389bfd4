"""Images with the real qemu-img in a temporary storage root, and the paths they may never leave."""

import fcntl
import json
import os
import shutil
import struct
import subprocess
import uuid

import pytest

from hostagent.agent.config import config_from_dict
from hostagent.agent.drivers.libvirt_driver import LibvirtDriver
from hostagent.agent.errors import AgentFailure, Conflict, InvalidParams, NotFound, Timeout, Unsupported
from hostagent.agent.images import ImageStore
from hostagent.agent.verbs import IMAGE, VM_SPEC

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
MiB = 1024**2


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "storage"
    (root / "sd1").mkdir(parents=True)
    (root / "sd2").mkdir()
    return root


@pytest.fixture
def store(root):
    return ImageStore([str(root)], state_dir=str(root / "states"), timeout=60)


def image(root, sd="sd1", **fields):
    return IMAGE.clean({"id": str(uuid.uuid4()), "storage_domain": {"path": str(root / sd)}, **fields}, "params.image")


def qemu_info(path) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], capture_output=True, check=True)
    return json.loads(out.stdout)


def test_a_thin_qcow2_image(store, root):
    spec = image(root, size=64 * MiB)

    result = store.create(spec)

    path = root / "sd1" / "images" / spec["id"]
    assert result["path"] == str(path)
    assert (result["format"], result["virtual_size"], result["backing_id"]) == ("qcow2", 64 * MiB, None)
    assert result["actual_size"] < MiB
    assert qemu_info(path)["format"] == "qcow2"
    assert sorted(os.listdir(root / "sd1" / "images")) == [spec["id"]]


def test_a_preallocated_raw_image_takes_its_space(store, root):
    result = store.create(image(root, size=8 * MiB, format="raw", allocation="preallocated"))

    assert result["format"] == "raw"
    assert result["actual_size"] >= 8 * MiB


def test_an_overlay_on_a_template_disk_names_its_base_relatively(store, root):
    base = image(root, size=16 * MiB)
    store.create(base)
    overlay = image(root, backing_id=base["id"], size=32 * MiB)

    result = store.create(overlay)

    assert result["backing_id"] == base["id"]
    assert result["virtual_size"] == 32 * MiB
    info = qemu_info(root / "sd1" / "images" / overlay["id"])
    assert info["backing-filename"] == base["id"]  # relative: the domain may be mounted elsewhere
    assert info["backing-filename-format"] == "qcow2"


def test_an_overlay_smaller_than_its_base_is_refused(store, root):
    base = image(root, size=16 * MiB)
    store.create(base)

    with pytest.raises(InvalidParams) as caught:
        store.create(image(root, backing_id=base["id"], size=MiB))

    assert caught.value.field == "params.image.size"
    assert os.listdir(root / "sd1" / "images") == [base["id"]]


def test_an_overlay_on_a_missing_base_leaves_nothing_behind(store, root):
    missing = str(uuid.uuid4())

    with pytest.raises(NotFound, match=f"Image {missing} does not exist"):
        store.create(image(root, backing_id=missing))

    assert os.listdir(root / "sd1" / "images") == []


def test_a_full_copy_from_another_storage_domain(store, root):
    source = image(root, sd="sd2", size=4 * MiB)
    store.create(source)
    copy = image(
        root, copy_from_id=source["id"], copy_from_domain={"path": str(root / "sd2")}, format="raw", size=8 * MiB
    )

    result = store.create(copy)

    assert (result["format"], result["virtual_size"], result["backing_id"]) == ("raw", 8 * MiB, None)
    assert result["path"] == str(root / "sd1" / "images" / copy["id"])


def test_info_resize_and_the_refusal_to_shrink(store, root):
    spec = image(root, size=4 * MiB)
    store.create(spec)

    assert store.info(spec)["virtual_size"] == 4 * MiB
    assert store.resize(spec, 10 * MiB)["virtual_size"] == 10 * MiB
    with pytest.raises(InvalidParams, match="smaller than the current virtual size"):
        store.resize(spec, 4 * MiB)


def test_a_base_image_cannot_be_removed_while_an_overlay_uses_it(store, root):
    base = image(root, size=4 * MiB)
    store.create(base)
    overlay = image(root, backing_id=base["id"])
    store.create(overlay)

    with pytest.raises(Conflict, match=overlay["id"]):
        store.remove(base)
    assert store.remove(overlay) == {"image_id": overlay["id"], "removed": True, "existed": True}
    assert store.remove(base)["existed"] is True
    assert store.remove(base)["existed"] is False
    assert os.listdir(root / "sd1" / "images") == []


def test_an_image_a_running_vm_holds_is_not_removed(store, root):
    spec = image(root, size=MiB)
    path = store.create(spec)["path"]
    fd = os.open(path, os.O_RDWR)
    try:
        # What a running qemu does: open-file-description locks on the image's lock bytes.
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 100, 200, 0))

        with pytest.raises(Conflict, match="is in use"):
            store.remove(spec)
        assert os.path.exists(path)
    finally:
        os.close(fd)
    assert store.remove(spec)["existed"] is True


def test_an_existing_image_is_never_overwritten(store, root):
    spec = image(root, size=4 * MiB)
    store.create(spec)

    with pytest.raises(Conflict, match="already exists"):
        store.create({**spec, "size": 8 * MiB})
    assert store.info(spec)["virtual_size"] == 4 * MiB


def test_storage_domain_stats(store, root):
    store.create(image(root, size=MiB))

    stats = store.domain_stats({"path": str(root / "sd1")})

    assert stats["images"] == 1 and stats["total_bytes"] >= stats["free_bytes"] > 0


@pytest.mark.parametrize(
    ("image_id", "sd_path", "field"),
    [
        ("..", "{root}/sd1", "params.image.id"),
        ("../../../etc/passwd", "{root}/sd1", "params.image.id"),
        ("/etc/passwd", "{root}/sd1", "params.image.id"),
        ("{uuid}", "/etc", "params.image.storage_domain.path"),
        ("{uuid}", "{root}/../outside", "params.image.storage_domain.path"),
        ("{uuid}", "{root}/sd1/../../outside", "params.image.storage_domain.path"),
        ("{uuid}", "sd1", "params.image.storage_domain.path"),
        ("{uuid}", "{root}/escape", "params.image.storage_domain.path"),  # a symlink out of the root
    ],
)
def test_paths_that_leave_the_storage_roots_are_refused(store, root, tmp_path, image_id, sd_path, field):
    (tmp_path / "outside").mkdir(exist_ok=True)
    if not (root / "escape").exists():
        (root / "escape").symlink_to(tmp_path / "outside")
    domain = {"path": sd_path.format(root=root)}

    with pytest.raises(InvalidParams) as caught:
        store.image_path(domain, image_id.format(uuid=uuid.uuid4()))

    assert caught.value.field == field
    assert os.listdir(tmp_path / "outside") == []


def test_an_images_directory_that_is_a_symlink_out_of_the_root_is_refused(store, root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (root / "sd2" / "images").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(InvalidParams, match="outside the storage roots"):
        store.create(image(root, sd="sd2", size=MiB))

    assert os.listdir(tmp_path / "elsewhere") == []


def test_state_files_stay_under_the_state_directory(store, root):
    assert store.state_path("vm1.state") == str(root / "states" / "vm1.state")
    assert store.state_path(str(root / "sd1" / "vm1.state")) == str(root / "sd1" / "vm1.state")
    for bad in ("../vm1.state", "a/b", "/tmp/vm1.state", "", ".x"):
        with pytest.raises(InvalidParams):
            store.state_path(bad)


def test_a_qemu_img_that_hangs_is_killed_at_its_timeout_and_leaves_nothing(root, tmp_path):
    fake = tmp_path / "slow-qemu-img"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    store = ImageStore([str(root)], state_dir=str(root / "states"), qemu_img=str(fake), timeout=0.5)

    with pytest.raises(Timeout, match="did not finish within 0.5 s"):
        store.create(image(root, size=MiB))

    assert os.listdir(root / "sd1" / "images") == []


def test_a_host_without_qemu_img_says_so(root):
    store = ImageStore([str(root)], state_dir=str(root / "states"), qemu_img="/nonexistent/qemu-img")

    with pytest.raises(Unsupported, match="qemu-img .* is not installed"):
        store.create(image(root, size=MiB))


def test_qemu_img_failures_carry_its_message(store, root):
    (root / "sd1" / "images").mkdir()
    bad = image(root, size=MiB)
    (root / "sd1" / "images" / bad["id"]).write_bytes(b"QFI\xfb" + (3).to_bytes(4, "big") + b"\x00" * 200)

    with pytest.raises(AgentFailure) as caught:
        store.info(bad)

    assert caught.value.code == -32000
    assert caught.value.message.startswith("qemu-img info failed: qemu-img: Could not open")
    assert "Unsupported cluster size" in caught.value.message


# Offline snapshots: a VM this host does not run, snapshotted on its disks with qemu-img -----------


@pytest.fixture
def driver(root):
    config = config_from_dict({"driver": "libvirt", "libvirt_uri": "test:///default", "storage_roots": [str(root)]})
    driver = LibvirtDriver(config)
    yield driver
    driver.close()


def vm_spec(root, disks):
    vm_id = str(uuid.uuid4())
    return VM_SPEC.clean(
        {"id": vm_id, "name": f"offline-{vm_id[:8]}", "vcpus": 1, "memory_mib": 64, "disks": disks}, "params.spec"
    )


def test_offline_snapshots_of_a_vm_with_qcow2_disks(driver, store, root):
    disks = [image(root, size=MiB), image(root, size=MiB)]
    for disk in disks:
        store.create(disk)
    spec = vm_spec(root, [{"id": d["id"], "storage_domain": d["storage_domain"]} for d in disks])
    snapshot_id = str(uuid.uuid4())

    created = driver.snapshot_create(spec["id"], {"id": snapshot_id, "description": ""}, spec)

    assert created == {"vm_id": spec["id"], "snapshot_id": snapshot_id, "offline": True, "disks": 2, "memory": False}
    assert [store.info(d)["snapshots"] for d in disks] == [[snapshot_id], [snapshot_id]]
    assert driver.snapshot_create(spec["id"], {"id": snapshot_id}, spec)["already"] is True
    assert driver.snapshot_revert(spec["id"], snapshot_id, spec)["status"] == "down"
    assert driver.snapshot_delete(spec["id"], snapshot_id, spec)["existed"] is True
    assert [store.info(d)["snapshots"] for d in disks] == [[], []]
    with pytest.raises(NotFound):
        driver.snapshot_revert(spec["id"], snapshot_id, spec)


def test_offline_snapshots_need_qcow2(driver, store, root):
    raw = image(root, size=MiB, format="raw")
    store.create(raw)
    spec = vm_spec(root, [{"id": raw["id"], "storage_domain": raw["storage_domain"], "format": "raw"}])

    with pytest.raises(Unsupported, match="internal snapshots need qcow2"):
        driver.snapshot_create(spec["id"], {"id": str(uuid.uuid4())}, spec)
