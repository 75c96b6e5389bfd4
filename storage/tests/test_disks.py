import pytest
from django.core.exceptions import ValidationError

from hostagent.client import AgentError, SimulatedAgentClient
from inventory.choices import JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event
from storage import services
from storage.models import GIB, Disk, DiskAttachment, StorageDomain
from storage.tasks import create_disk_image_task, remove_disk_image_task
from tests.factories import make_cluster, make_data_center, make_disk, make_host, make_storage_domain, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_tasks(monkeypatch):
    """Celery tasks sent on commit, as (name, args)."""
    from olvm_site.celery import app

    calls = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kwargs: calls.append((name, args)))
    return calls


@pytest.fixture
def dc():
    return make_data_center(name="dc-a")


@pytest.fixture
def cluster(dc):
    return make_cluster(dc)


@pytest.fixture
def host(cluster):
    return make_host(cluster, name="kvm1")


@pytest.fixture
def sd(dc):
    """100 GiB, 50 GiB free, 5 GiB reserve, thin limit 300 GiB."""
    return make_storage_domain(dc, total=100 * GIB, free=50 * GIB, name="data1", critical_space_gib=5)


def add_disk(sd, size_gib=10, allocation="thin", **kw):
    kw.setdefault("format", "raw" if allocation == "preallocated" else "qcow2")
    kw.setdefault("alias", "d1")
    return services.create_disk(
        user=None, storage_domain=sd, provisioned_size=size_gib * GIB, allocation=allocation, **kw
    )


def space(sd):
    sd = StorageDomain.objects.get(pk=sd.pk)
    return sd.committed_bytes // GIB, sd.free_bytes // GIB


# create_disk ------------------------------------------------------------------------------


def test_create_thin_disk_commits_its_size_locks_it_and_enqueues_the_image(
    admin_user, sd, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        disk, job = services.create_disk(
            user=admin_user,
            storage_domain=sd,
            alias="root",
            provisioned_size=20 * GIB,
            format="qcow2",
            allocation="thin",
        )

    assert (disk.status, disk.actual_size) == ("locked", 0)
    assert space(sd) == (20, 50)
    assert (job.action_type, job.status, job.storage_domain_id) == ("AddDisk", JobStatus.STARTED, sd.pk)
    assert list(job.steps.values_list("description", flat=True)) == ["Create the image on storage"]
    assert sent_tasks == [("storage.tasks.create_disk_image_task", [str(job.pk), str(disk.pk)])]
    event = Event.objects.get(code="USER_ADD_DISK")
    assert event.message == "Disk root (20 GiB thin qcow2) was added to storage domain data1 by admin."
    assert event.correlation_id == job.correlation_id


def test_create_preallocated_disk_takes_committed_and_free_bytes(sd):
    add_disk(sd, 15, "preallocated")

    assert space(sd) == (15, 35)


def test_create_preallocated_disk_may_fill_up_to_the_critical_space(sd):
    add_disk(sd, 45, "preallocated")

    assert space(sd) == (45, 5)


def test_create_preallocated_disk_refused_when_it_would_eat_into_the_critical_space(sd):
    with pytest.raises(ValidationError) as exc:
        add_disk(sd, 46, "preallocated")

    assert exc.value.message_dict == {
        "provisioned_size": [
            "Storage domain data1 cannot preallocate 46 GiB: it has 50 GiB free and keeps 5 GiB in reserve, "
            "so at most 45 GiB can be preallocated."
        ]
    }
    assert space(sd) == (0, 50)
    assert not Disk.objects.exists()


def test_create_thin_disk_may_commit_up_to_the_overcommit_limit(sd):
    add_disk(sd, 250, alias="a")

    add_disk(sd, 50, alias="b")

    assert space(sd) == (300, 50)


def test_create_thin_disk_refused_beyond_the_overcommit_limit(sd):
    add_disk(sd, 250, alias="a")

    with pytest.raises(ValidationError) as exc:
        add_disk(sd, 51, alias="b")

    assert exc.value.message_dict == {
        "provisioned_size": [
            "Storage domain data1 cannot commit 51 GiB more: 250 GiB of its 300 GiB limit "
            "(300% of 100 GiB) are already committed."
        ]
    }
    assert space(sd) == (250, 50)


def test_create_thin_disk_refused_when_free_space_is_below_the_critical_space(dc):
    sd = make_storage_domain(dc, total=100 * GIB, free=4 * GIB, name="full", critical_space_gib=5)

    with pytest.raises(ValidationError) as exc:
        add_disk(sd, 1)

    assert exc.value.message_dict == {
        "provisioned_size": [
            "Storage domain full has 4 GiB free, below its critical space of 5 GiB: no new thin provisioning."
        ]
    }


def test_preallocated_disks_count_against_the_thin_limit_too(sd):
    add_disk(sd, 40, "preallocated", alias="a")

    with pytest.raises(ValidationError):
        add_disk(sd, 261, alias="b")
    add_disk(sd, 260, alias="c")

    assert space(sd) == (300, 10)


@pytest.mark.parametrize(
    ("status", "role", "reason"),
    [
        ("inactive", "data", "is inactive; disks can be created only on an active domain"),
        ("locked", "data", "is locked; disks can be created only on an active domain"),
        ("active", "iso", "is an ISO domain; disks need a data domain"),
    ],
)
def test_create_disk_needs_an_active_data_domain(dc, status, role, reason):
    sd = make_storage_domain(dc, status=status, role=role)

    with pytest.raises(ConflictError, match=reason):
        add_disk(sd)


def test_create_disk_refuses_a_preallocated_qcow2(sd):
    with pytest.raises(ValidationError) as exc:
        add_disk(sd, allocation="preallocated", format="qcow2")

    assert list(exc.value.message_dict) == ["allocation"]


def test_create_disk_refuses_a_size_under_one_mib(sd):
    with pytest.raises(ValidationError) as exc:
        services.create_disk(
            user=None, storage_domain=sd, alias="tiny", provisioned_size=1000, format="qcow2", allocation="thin"
        )

    assert list(exc.value.message_dict) == ["provisioned_size"]
    assert space(sd) == (0, 50)


def test_create_disk_for_a_vm_attaches_it_in_the_same_transaction(cluster, sd):
    vm = make_vm(cluster, name="web")

    disk, job = add_disk(sd, alias="root", vm=vm, bootable=True, interface="virtio_scsi")

    attachment = DiskAttachment.objects.get(disk=disk)
    assert (attachment.vm, attachment.bootable, attachment.interface, attachment.active) == (
        vm,
        True,
        "virtio_scsi",
        True,
    )
    event = Event.objects.get(code="USER_ATTACH_DISK_TO_VM")
    assert event.message == "Disk root was attached to VM web (virtio_scsi, bootable, plugged) by the system."
    assert (event.vm_id, event.correlation_id) == (vm.pk, job.correlation_id)


def test_create_disk_for_a_vm_of_another_data_center_creates_nothing(sd):
    vm = make_vm(name="far")

    with pytest.raises(ValidationError) as exc:
        add_disk(sd, vm=vm)

    assert exc.value.message_dict == {
        "disk": ["Disk d1 is on storage domain data1, outside the data center of VM far."]
    }
    assert not Disk.objects.exists()
    assert space(sd) == (0, 50)


def test_create_disk_refuses_a_second_bootable_disk(cluster, sd):
    vm = make_vm(cluster, name="web")
    add_disk(sd, alias="root", vm=vm, bootable=True)

    with pytest.raises(ValidationError) as exc:
        add_disk(sd, alias="data", vm=vm, bootable=True)

    assert exc.value.message_dict == {"bootable": ["VM web already boots from disk root; a VM has one bootable disk."]}
    assert space(sd) == (10, 50)


def test_create_sata_disk_for_a_running_vm_is_refused(cluster, sd):
    vm = make_vm(cluster, status="up")

    with pytest.raises(ConflictError, match="sata disk cannot be hot-plugged"):
        add_disk(sd, vm=vm, interface="sata")


def test_create_disk_for_a_running_vm_adds_a_plug_step(cluster, sd):
    vm = make_vm(cluster, status="up", name="web")

    _, job = add_disk(sd, vm=vm)

    assert list(job.steps.values_list("description", flat=True)) == [
        "Create the image on storage",
        "Plug the disk into VM web",
    ]


# create_disk_image_task -------------------------------------------------------------------


def test_create_disk_image_task_creates_the_image_on_an_up_host(sd, host, monkeypatch):
    disk, job = add_disk(sd, 10, alias="root")
    calls = []
    real = SimulatedAgentClient.image_create
    monkeypatch.setattr(
        SimulatedAgentClient,
        "image_create",
        lambda self, image: calls.append((self.host.name, image)) or real(self, image),
    )

    create_disk_image_task(str(job.pk), str(disk.pk))

    disk.refresh_from_db()
    assert (disk.status, disk.actual_size) == ("ok", 196_608)
    job.refresh_from_db()
    assert (job.status, job.progress) == (JobStatus.FINISHED, 100)
    host_name, image = calls[0]
    assert host_name == "kvm1"
    assert (image["id"], image["size"], image["format"], image["allocation"]) == (
        str(disk.pk),
        10 * GIB,
        "qcow2",
        "thin",
    )
    assert image["storage_domain"]["path"] == sd.path
    assert (
        Event.objects.get(code="USER_ADD_DISK_FINISHED_SUCCESS").message
        == "Disk root was created on storage domain data1 by host kvm1."
    )


def test_create_disk_image_task_preallocated_disk_uses_its_full_size(sd, host):
    disk, job = add_disk(sd, 10, "preallocated")

    create_disk_image_task(str(job.pk), str(disk.pk))

    disk.refresh_from_db()
    assert disk.actual_size == 10 * GIB


def test_create_disk_image_task_agent_error_makes_the_disk_illegal_and_fails_the_job(sd, host, monkeypatch):
    disk, job = add_disk(sd, alias="root")

    def refuse(self, image):
        raise AgentError("qemu-img: No space left on device")

    monkeypatch.setattr(SimulatedAgentClient, "image_create", refuse)

    create_disk_image_task(str(job.pk), str(disk.pk))

    disk.refresh_from_db()
    job.refresh_from_db()
    assert disk.status == "illegal"
    assert (job.status, job.error) == (JobStatus.FAILED, "qemu-img: No space left on device")
    event = Event.objects.get(code="USER_ADD_DISK_FINISHED_FAILURE")
    assert event.message == "Disk root could not be created on storage domain data1: qemu-img: No space left on device"
    assert event.severity == "error"


def test_create_disk_image_task_without_an_up_host_fails(sd):
    disk, job = add_disk(sd)

    create_disk_image_task(str(job.pk), str(disk.pk))

    disk.refresh_from_db()
    job.refresh_from_db()
    assert disk.status == "illegal"
    assert job.error == "No host is Up in data center dc-a to reach storage domain data1; activate a host first."


def test_create_disk_image_task_is_a_no_op_when_redelivered(sd, host, monkeypatch):
    disk, job = add_disk(sd)
    create_disk_image_task(str(job.pk), str(disk.pk))
    monkeypatch.setattr(SimulatedAgentClient, "image_create", lambda *a: pytest.fail("called twice"))

    create_disk_image_task(str(job.pk), str(disk.pk))

    assert Event.objects.filter(code="USER_ADD_DISK_FINISHED_SUCCESS").count() == 1


def test_create_disk_image_task_plugs_the_new_disk_into_a_running_vm(cluster, sd, host, monkeypatch):
    vm = make_vm(cluster, status="up", name="web")
    disk, job = add_disk(sd, alias="data", vm=vm)
    plugged = []
    monkeypatch.setattr(
        SimulatedAgentClient, "hotplug_disk", lambda self, vm_id, spec: plugged.append((self.host.id, vm_id, spec))
    )

    create_disk_image_task(str(job.pk), str(disk.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    host_id, vm_id, spec = plugged[0]
    assert (host_id, vm_id, spec["id"], spec["interface"]) == (
        str(vm.run_on_host.pk),
        str(vm.pk),
        str(disk.pk),
        "virtio",
    )
    assert Event.objects.get(code="USER_HOTPLUG_DISK").message == "Disk data was plugged into VM web."


# update_disk ------------------------------------------------------------------------------


def test_update_disk_alias_and_description_records_event(sd):
    disk = make_disk(sd, alias="old")

    services.update_disk(disk, user=None, alias="new", description="logs")

    disk.refresh_from_db()
    assert (disk.alias, disk.description) == ("new", "logs")
    assert (
        Event.objects.get(code="USER_UPDATE_VM_DISK").message
        == "Disk new was updated (alias, description) by the system."
    )


def test_update_disk_grows_a_thin_disk_against_the_commit_limit(sd):
    disk = make_disk(sd, provisioned_size=10 * GIB, alias="root")

    services.update_disk(disk, user=None, provisioned_size=30 * GIB)

    assert space(sd) == (30, 50)
    assert (
        Event.objects.get(code="USER_UPDATE_VM_DISK").message
        == "Disk root was updated (provisioned_size, grown from 10 GiB to 30 GiB) by the system."
    )


def test_update_disk_grows_a_preallocated_disk_from_free_space(sd):
    disk = make_disk(sd, provisioned_size=10 * GIB, allocation="preallocated")

    services.update_disk(disk, user=None, provisioned_size=20 * GIB)

    assert space(sd) == (20, 30)


def test_update_disk_growth_refused_beyond_the_free_space(sd):
    disk = make_disk(sd, provisioned_size=10 * GIB, allocation="preallocated")  # 40 GiB free, 35 GiB usable

    with pytest.raises(ValidationError) as exc:
        services.update_disk(disk, user=None, provisioned_size=46 * GIB)

    assert exc.value.message_dict == {
        "provisioned_size": [
            "Storage domain data1 cannot preallocate 36 GiB: it has 40 GiB free and keeps 5 GiB in reserve, "
            "so at most 35 GiB can be preallocated."
        ]
    }
    assert space(sd) == (10, 40)


def test_update_disk_never_shrinks(sd):
    disk = make_disk(sd, provisioned_size=10 * GIB, alias="root")

    with pytest.raises(ValidationError) as exc:
        services.update_disk(disk, user=None, provisioned_size=5 * GIB)

    assert exc.value.message_dict == {
        "provisioned_size": ["Disk root cannot shrink from 10 GiB to 5 GiB; a disk can only grow."]
    }
    assert space(sd) == (10, 50)


def test_update_disk_shareable_only_while_unattached(cluster, sd):
    disk = make_disk(sd, format="raw")
    services.update_disk(disk, user=None, shareable=True)
    services.attach_disk(make_vm(cluster), disk, user=None)

    with pytest.raises(ConflictError, match="shareable can change only while it is unattached"):
        services.update_disk(disk, user=None, shareable=False)


def test_update_disk_refused_while_locked(sd):
    disk = make_disk(sd, status="locked")

    with pytest.raises(ConflictError, match="locked by a running operation"):
        services.update_disk(disk, user=None, alias="x")


# remove_disk ------------------------------------------------------------------------------


def test_remove_disk_gives_back_its_space_and_enqueues_the_image_removal(
    sd, sent_tasks, django_capture_on_commit_callbacks
):
    thin = make_disk(sd, provisioned_size=10 * GIB)
    make_disk(sd, provisioned_size=5 * GIB, allocation="preallocated")
    prealloc = make_disk(sd, provisioned_size=7 * GIB, allocation="preallocated", alias="big")
    assert space(sd) == (22, 38)

    with django_capture_on_commit_callbacks(execute=True):
        job = services.remove_disk(prealloc, user=None)
    services.remove_disk(thin, user=None)

    assert space(sd) == (5, 45)
    assert not Disk.objects.filter(pk__in=[thin.pk, prealloc.pk]).exists()
    assert (job.action_type, job.status) == ("RemoveDisk", JobStatus.STARTED)
    assert sent_tasks == [("storage.tasks.remove_disk_image_task", [str(job.pk), str(prealloc.pk), str(sd.pk)])]
    assert Event.objects.filter(code="USER_REMOVE_DISK", message__startswith="Disk big was removed").count() == 1


def test_create_then_remove_disk_restores_the_domain_exactly(sd):
    disk, _ = add_disk(sd, 12, "preallocated")
    Disk.objects.filter(pk=disk.pk).update(status="ok")

    services.remove_disk(disk, user=None)

    assert space(sd) == (0, 50)


@pytest.mark.parametrize("status", ["up", "paused", "suspended", "migrating"])
def test_remove_disk_refused_while_attached_to_a_vm_that_is_not_down(cluster, sd, status):
    disk = make_disk(sd)
    services.attach_disk(make_vm(cluster, status=status, name="web"), disk, user=None)

    with pytest.raises(ConflictError, match="attached to VM\\(s\\) web that are not down"):
        services.remove_disk(disk, user=None)
    assert space(sd) == (10, 50)


def test_remove_disk_of_a_down_vm_detaches_it(cluster, sd):
    vm = make_vm(cluster)
    disk = make_disk(sd)
    services.attach_disk(vm, disk, user=None)

    services.remove_disk(disk, user=None)

    assert not DiskAttachment.objects.filter(vm=vm).exists()


def test_remove_template_disk_with_overlays_is_refused(sd):
    from compute.models import Template

    template = Template.objects.create(name="tpl")
    base = make_disk(sd, template=template, alias="base")
    make_disk(sd, backing_disk=base)

    with pytest.raises(ConflictError, match="base of 1 disk"):
        services.remove_disk(base, user=None)


def test_remove_template_disk_refused_while_a_vm_is_cloned_from_it(cluster, sd):
    from compute.models import Template

    template = Template.objects.create(name="tpl")
    base = make_disk(sd, template=template, alias="base")
    vm = make_vm(cluster=cluster, name="copying", status="image_locked", template=template)

    with pytest.raises(ConflictError, match="being copied for VM\\(s\\) copying"):
        services.remove_disk(base, user=None)
    assert Disk.objects.filter(pk=base.pk).exists()

    vm.status = "down"  # the copies are made
    vm.save(update_fields=["status"])
    services.remove_disk(base, user=None)
    assert not Disk.objects.filter(pk=base.pk).exists()


def test_remove_disk_refused_while_locked(sd):
    disk = make_disk(sd, status="locked")

    with pytest.raises(ConflictError, match="locked"):
        services.remove_disk(disk, user=None)


def test_remove_disk_image_task_asks_an_up_host_to_remove_the_image(sd, host, monkeypatch):
    disk = make_disk(sd)
    job = services.remove_disk(disk, user=None)
    calls = []
    monkeypatch.setattr(SimulatedAgentClient, "image_remove", lambda self, image: calls.append(image))

    remove_disk_image_task(str(job.pk), str(disk.pk), str(sd.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert calls == [
        {"id": str(disk.pk), "storage_domain": {"id": str(sd.pk), "name": "data1", "type": "posixfs", "path": sd.path}}
    ]
    assert Event.objects.filter(code="USER_FINISHED_REMOVE_DISK").count() == 1


def test_remove_disk_image_task_failure_fails_the_job_with_a_warning(sd, host, monkeypatch):
    disk = make_disk(sd)
    job = services.remove_disk(disk, user=None)

    def refuse(self, image):
        raise AgentError("image is busy")

    monkeypatch.setattr(SimulatedAgentClient, "image_remove", refuse)

    remove_disk_image_task(str(job.pk), str(disk.pk), str(sd.pk))

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "image is busy")
    assert Event.objects.get(code="USER_FINISHED_FAILED_REMOVE_DISK").severity == "warning"
