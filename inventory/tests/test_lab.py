"""Registering a lab in the engine (inventory.lab) and `manage.py lab`, without root.

The lab itself is faked by its facts (a shared dir and a guest image dir in tmp_path, with
a real qcow2 made by qemu-img); the engine side is real: services, PostgreSQL, the host
agent's own image store resolving the registered template disk.
"""

import json
import os
import subprocess
import uuid
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from compute import services as compute
from compute.models import Template
from compute.tasks import vm_spec
from hostagent.agent.images import ImageStore
from hostagent.lab import core
from inventory.choices import HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.lab import LabImageError, register_lab
from inventory.models import Cluster, DataCenter, Event, Host, Job
from storage.models import Disk, StorageDomain
from storage.tasks import image_spec
from tests.factories import default_mac_pool, make_cluster, make_data_center, make_host

pytestmark = pytest.mark.django_db

MIB = 1024**2
# As core.status() rows give them (only name and ip are read).
LAB_HOSTS = [{"name": "h2", "ip": "10.213.0.12", "state": "up"}, {"name": "h1", "ip": "10.213.0.11", "state": "up"}]


@pytest.fixture
def lab(tmp_path, db):
    """The facts of a two-host lab: a shared dir and the tiny guest's files."""
    default_mac_pool()
    images = tmp_path / "images"
    images.mkdir()
    (images / "vmlinuz").write_bytes(b"kernel")
    (images / "initrd.img").write_bytes(b"initrd")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "tiny-disk.qcow2"), "64M"], check=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    return {"shared_dir": str(shared), "images_dir": str(images), "bridge": "olvmbr0"}


def counts() -> dict:
    models = (DataCenter, Cluster, StorageDomain, Template, Disk, Host, Job, Event)
    return {model.__name__: model.objects.count() for model in models}


def qemu_img_info(path) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True, text=True)
    return json.loads(out.stdout)


def test_register_lab_makes_the_engine_know_the_lab(lab, admin_user):
    registration = register_lab(lab, LAB_HOSTS, user=admin_user)

    dc, cluster = registration.data_center, registration.cluster
    assert (dc.name, cluster.name, cluster.data_center) == ("Lab", "Lab", dc)
    sd = StorageDomain.objects.get(name="lab-shared")
    st = os.statvfs(lab["shared_dir"])
    assert (sd.path, sd.type, sd.role, sd.shared, sd.status, sd.data_center) == (
        lab["shared_dir"],
        "posixfs",
        "data",
        True,
        "active",
        dc,
    )
    assert sd.total_bytes == st.f_blocks * st.f_frsize
    assert 0 < sd.free_bytes <= sd.total_bytes
    assert sd.committed_bytes == 64 * MIB

    template = Template.objects.get(name="tiny")
    images = lab["images_dir"]
    assert (template.vcpus, template.memory_mib, template.os_type, template.console_type, template.cluster) == (
        1,
        256,
        "other",
        "serial",
        cluster,
    )
    assert (template.kernel_path, template.initrd_path, template.kernel_params) == (
        f"{images}/vmlinuz",
        f"{images}/initrd.img",
        "console=ttyS0",
    )

    disk = Disk.objects.get(template=template)
    assert (disk.alias, disk.format, disk.allocation, disk.status, disk.provisioned_size, disk.storage_domain) == (
        "tiny_Disk1",
        "qcow2",
        "thin",
        "ok",
        64 * MIB,
        sd,
    )
    image = os.path.join(lab["shared_dir"], "images", str(disk.pk))
    assert os.listdir(os.path.join(lab["shared_dir"], "images")) == [str(disk.pk)]
    info = qemu_img_info(image)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 64 * MIB)
    assert disk.actual_size == os.stat(image).st_blocks * 512

    hosts = Host.objects.order_by("name")
    assert [(h.name, h.address, h.cluster, h.status, h.simulated) for h in hosts] == [
        ("h1", "10.213.0.11", cluster, HostStatus.INSTALLING, False),
        ("h2", "10.213.0.12", cluster, HostStatus.INSTALLING, False),
    ]
    assert [(h.name, job.action_type, job.status) for h, job in registration.hosts] == [
        ("h1", "AddVds", JobStatus.STARTED),
        ("h2", "AddVds", JobStatus.STARTED),
    ]
    assert registration.changes == [
        "data center Lab created",
        "cluster Lab created",
        f"storage domain lab-shared added at {lab['shared_dir']}",
        f"template tiny created (kernel {images}/vmlinuz)",
        f"disk tiny_Disk1 of template tiny registered ({image})",
        "host h1 (10.213.0.11) added to cluster Lab",
        "host h2 (10.213.0.12) added to cluster Lab",
    ]
    assert set(Event.objects.filter(username="admin").values_list("code", flat=True)) >= {
        "USER_ADD_STORAGE_DOMAIN",
        "USER_ADD_VM_TEMPLATE",
        "USER_REGISTER_DISK",
        "USER_ADD_VDS",
    }


def test_a_second_registration_changes_nothing(lab, admin_user):
    first = register_lab(lab, LAB_HOSTS, user=admin_user)
    before = counts()
    image_dir = os.path.join(lab["shared_dir"], "images")
    files = {name: os.stat(os.path.join(image_dir, name)).st_mtime_ns for name in os.listdir(image_dir)}

    second = register_lab(lab, LAB_HOSTS, user=admin_user)

    assert second.changes == []
    assert counts() == before
    assert {name: os.stat(os.path.join(image_dir, name)).st_mtime_ns for name in os.listdir(image_dir)} == files
    assert (second.storage_domain, second.template, second.disk) == (first.storage_domain, first.template, first.disk)
    assert [(h.name, job) for h, job in second.hosts] == [("h1", None), ("h2", None)]


def test_a_lab_host_whose_agent_is_not_running_is_reinstalled(lab, admin_user):
    register_lab(lab, LAB_HOSTS, user=admin_user)
    Host.objects.update(status=HostStatus.UP)  # deployed
    rows = [{**row, "running": {"libvirtd": True, "agent": None}} for row in LAB_HOSTS]  # lab down, then up

    again = register_lab(lab, rows, user=admin_user)

    assert [(h.name, job.action_type if job else None) for h, job in again.hosts] == [
        ("h1", "UpdateVds"),
        ("h2", "UpdateVds"),
    ]
    assert any("reinstalled" in change for change in again.changes)


def test_what_the_engine_has_is_kept(lab, admin_user):
    dc = make_data_center(name="Lab")
    cluster = make_cluster(dc, name="Lab")
    known = make_host(cluster, name="lab-one", address="10.213.0.11", simulated=False)

    registration = register_lab(lab, LAB_HOSTS, user=admin_user)

    assert (registration.data_center, registration.cluster) == (dc, cluster)
    assert registration.hosts[0] == (known, None)
    assert sorted(Host.objects.values_list("name", flat=True)) == ["h2", "lab-one"]
    assert registration.changes[:2] == [
        f"storage domain lab-shared added at {lab['shared_dir']}",
        f"template tiny created (kernel {lab['images_dir']}/vmlinuz)",
    ]


def test_a_template_disk_image_gone_from_storage_is_put_back(lab, admin_user):
    lab = {**lab, "hosts": LAB_HOSTS}  # the hosts may come with the lab's facts
    disk = register_lab(lab, user=admin_user).disk
    image = os.path.join(lab["shared_dir"], "images", str(disk.pk))
    os.unlink(image)
    before = counts()

    again = register_lab(lab, user=admin_user)

    assert again.changes == [f"image of disk tiny_Disk1 restored at {image}"]
    assert qemu_img_info(image)["virtual-size"] == 64 * MIB
    assert counts() == before


def test_a_missing_guest_image_is_refused_before_anything_is_written(lab, admin_user):
    os.unlink(os.path.join(lab["images_dir"], "initrd.img"))
    os.unlink(os.path.join(lab["images_dir"], "tiny-disk.qcow2"))
    before = counts()

    with pytest.raises(LabImageError, match="missing: initrd.img, tiny-disk.qcow2.*build-guest-image.sh"):
        register_lab(lab, LAB_HOSTS, user=admin_user)

    assert counts() == before


def test_a_lab_shared_domain_elsewhere_is_a_conflict(lab, admin_user, tmp_path):
    from storage.services import register_storage_domain

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    register_storage_domain(user=None, name="lab-shared", type="posixfs", role="data", path=str(elsewhere))

    with pytest.raises(ConflictError, match=f"exists at {elsewhere}, not at the lab's shared directory"):
        register_lab(lab, LAB_HOSTS, user=admin_user)

    assert not Template.objects.filter(name="tiny").exists()


def test_the_agent_finds_the_template_disk_where_the_lab_put_it(lab, admin_user, tmp_path):
    registration = register_lab(lab, LAB_HOSTS, user=admin_user)
    vm, job = compute.create_vm(
        user=admin_user, cluster=registration.cluster, name="tiny-1", template=registration.template
    )
    overlay = Disk.objects.get(attachments__vm=vm)

    store = ImageStore([lab["shared_dir"]], state_dir=str(tmp_path / "agent-state"))
    created = store.create(image_spec(overlay))
    spec = vm_spec(vm)

    assert job.action_type == "AddVmFromTemplate"
    assert (created["backing_id"], created["virtual_size"]) == (str(registration.disk.pk), 64 * MIB)
    assert (spec["kernel"], spec["initrd"], spec["cmdline"], vm.guaranteed_memory_mib) == (
        f"{lab['images_dir']}/vmlinuz",
        f"{lab['images_dir']}/initrd.img",
        "console=ttyS0",
        256,
    )
    assert store.disk_path(spec["disks"][0]) == created["path"]


def test_register_storage_domain_refuses_a_directory_the_engine_cannot_read(tmp_path):
    from storage.services import register_storage_domain

    with pytest.raises(ValidationError) as refused:
        register_storage_domain(user=None, name="gone", type="posixfs", role="data", path=str(tmp_path / "gone"))

    assert refused.value.message_dict == {
        "path": [f"The engine cannot read {tmp_path / 'gone'}: No such file or directory."]
    }
    assert not StorageDomain.objects.exists()


def test_register_disk_needs_the_image_on_the_domain(lab, admin_user):
    from storage.services import register_disk

    registration = register_lab(lab, LAB_HOSTS, user=admin_user)
    missing = uuid.uuid4()

    with pytest.raises(ValidationError) as refused:
        register_disk(
            user=None,
            storage_domain=registration.storage_domain,
            disk_id=missing,
            alias="ghost",
            provisioned_size=64 * MIB,
        )

    assert refused.value.message_dict == {
        "disk_id": [f"Storage domain lab-shared has no image {lab['shared_dir']}/images/{missing} to register."]
    }
    assert not Disk.objects.filter(alias="ghost").exists()


# manage.py lab ------------------------------------------------------------------------------


@pytest.fixture
def fake_lab(lab, monkeypatch):
    """hostagent.lab.core as if a lab were up: the command's engine side runs for real."""
    from pathlib import Path

    state_dir = Path(lab["shared_dir"]).parent
    lab_hosts = [core.make_host(i, state_dir) for i in (1, 2)]
    rows = [
        {
            "name": h.name,
            "state": "up",
            "ip": h.ip,
            "libvirt_uri": h.libvirt_uri,
            "reachable": True,
            "pids": {"virtlogd": 10, "libvirtd": 11, "agent": None},
            "running": {"virtlogd": True, "libvirtd": True, "agent": None},
            "domains": 0,
        }
        for h in lab_hosts
    ]
    monkeypatch.setattr(core, "check_environment", lambda: None)
    monkeypatch.setattr(core, "IMAGES_DIR", Path(lab["images_dir"]))
    monkeypatch.setattr(core, "up", lambda hosts, state_dir: lab_hosts[:hosts])
    monkeypatch.setattr(core, "status", lambda state_dir: rows)
    monkeypatch.setattr(
        core, "lab_info", lambda state_dir: {"shared_dir": lab["shared_dir"], "images_dir": lab["images_dir"]}
    )
    return lab


def run_lab(*args) -> str:
    out = StringIO()
    call_command("lab", *args, stdout=out)
    return out.getvalue()


def test_lab_up_registers_the_lab_and_reports_each_host(fake_lab, admin_user):
    first = run_lab("up", "--hosts", "2")
    second = run_lab("up", "--hosts", "2")

    assert "lab up: 2 host(s)" in first
    assert "engine:\n  data center Lab created\n  cluster Lab created\n" in first
    assert "h1    10.213.0.11  installing          AddVds started" in first
    assert "engine: nothing to change (the lab is registered already)" in second
    assert "h2    10.213.0.12  installing          (in the engine already)" in second
    assert Host.objects.count() == 2 and Job.objects.filter(action_type="AddVds").count() == 2


def test_lab_needs_root_and_says_so(monkeypatch, db):
    def not_root():
        raise core.LabError("the lab needs root (network namespaces, bridges, bind mounts): run it as root")

    monkeypatch.setattr(core, "check_environment", not_root)

    with pytest.raises(CommandError, match="^lab: the lab needs root"):
        run_lab("up")
    assert DataCenter.objects.count() == 0


def test_lab_up_without_the_guest_image_says_how_to_build_it(fake_lab, admin_user):
    os.unlink(os.path.join(fake_lab["images_dir"], "vmlinuz"))

    with pytest.raises(CommandError, match="missing: vmlinuz\\): run scripts/build-guest-image.sh as root"):
        run_lab("up")
    assert DataCenter.objects.count() == 0


def test_lab_status_shows_the_engine_status_of_lab_hosts(fake_lab):
    make_host(make_cluster(), name="h1", address="10.213.0.11", status=HostStatus.NON_RESPONSIVE, simulated=False)
    make_host(make_cluster(), name="elsewhere", address="192.0.2.7")

    out = run_lab("status")

    assert "h1    up     10.213.0.11" in out
    assert "engine hosts:" in out
    assert "non_responsive" in out
    assert "elsewhere" not in out


def test_lab_status_without_a_lab_still_shows_the_engine_hosts(monkeypatch, db):
    monkeypatch.setattr(core, "status", lambda state_dir: [])
    make_host(make_cluster(), name="h1", address="10.213.0.11", status=HostStatus.NON_RESPONSIVE, simulated=False)

    out = run_lab("status")

    assert out.startswith("no lab hosts (run: manage.py lab up --hosts N, or make lab)\n")
    assert "h1    10.213.0.11" in out and "non_responsive" in out
