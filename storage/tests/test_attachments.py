import pytest
from django.core.exceptions import ValidationError

from hostagent.client import AgentError, SimulatedAgentClient
from inventory.choices import JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event
from storage import services
from storage.models import DiskAttachment
from storage.tasks import detach_disk_task, hotplug_disk_task, hotunplug_disk_task
from tests.factories import make_cluster, make_data_center, make_disk, make_storage_domain, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_tasks(monkeypatch):
    """Celery tasks sent on commit, as (name, args)."""
    from olvm_site.celery import app

    calls = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kwargs: calls.append((name, args)))
    return calls


@pytest.fixture
def cluster():
    return make_cluster(make_data_center())


@pytest.fixture
def sd(cluster):
    return make_storage_domain(cluster.data_center, name="data1")


# attach_disk ------------------------------------------------------------------------------


def test_attach_disk_to_a_down_vm_opens_no_job_and_records_event(admin_user, cluster, sd, sent_tasks):
    vm = make_vm(cluster, name="web")
    disk = make_disk(sd, alias="root")

    attachment, job = services.attach_disk(vm, disk, user=admin_user, bootable=True)

    assert job is None
    assert (attachment.vm, attachment.disk, attachment.interface, attachment.bootable, attachment.active) == (
        vm,
        disk,
        "virtio",
        True,
        True,
    )
    assert sent_tasks == []
    event = Event.objects.get(code="USER_ATTACH_DISK_TO_VM")
    assert event.message == "Disk root was attached to VM web (virtio, bootable, plugged) by admin."
    assert (event.vm_id, event.storage_domain_id) == (vm.pk, sd.pk)


def test_attach_a_second_bootable_disk_is_refused(cluster, sd):
    vm = make_vm(cluster, name="web")
    services.attach_disk(vm, make_disk(sd, alias="root"), user=None, bootable=True)

    with pytest.raises(ValidationError) as exc:
        services.attach_disk(vm, make_disk(sd), user=None, bootable=True)

    assert exc.value.message_dict == {"bootable": ["VM web already boots from disk root; a VM has one bootable disk."]}


def test_attach_a_non_bootable_disk_next_to_the_boot_disk(cluster, sd):
    vm = make_vm(cluster)
    services.attach_disk(vm, make_disk(sd), user=None, bootable=True)

    services.attach_disk(vm, make_disk(sd), user=None)

    assert vm.disk_attachments.count() == 2


def test_attach_the_same_disk_twice_is_refused(cluster, sd):
    vm = make_vm(cluster, name="web")
    disk = make_disk(sd, alias="root")
    services.attach_disk(vm, disk, user=None)

    with pytest.raises(ConflictError, match="Disk root is already attached to VM web"):
        services.attach_disk(vm, disk, user=None)


def test_attach_a_disk_of_another_vm_needs_shareable(cluster, sd):
    disk = make_disk(sd, alias="root")
    services.attach_disk(make_vm(cluster, name="web"), disk, user=None)

    with pytest.raises(ConflictError, match="attached to VM web; only a shareable disk"):
        services.attach_disk(make_vm(cluster), disk, user=None)


def test_attach_a_shareable_disk_to_two_vms(cluster, sd):
    disk = make_disk(sd, format="raw", shareable=True)
    services.attach_disk(make_vm(cluster), disk, user=None)

    services.attach_disk(make_vm(cluster), disk, user=None)

    assert disk.attachments.count() == 2


def test_attach_a_disk_of_another_data_center_is_refused(sd):
    vm = make_vm(name="far")

    with pytest.raises(ValidationError) as exc:
        services.attach_disk(vm, make_disk(sd, alias="root"), user=None)

    assert exc.value.message_dict == {
        "disk": ["Disk root is on storage domain data1, outside the data center of VM far."]
    }


@pytest.mark.parametrize("status", ["locked", "illegal"])
def test_attach_a_disk_that_is_not_ok_is_refused(cluster, sd, status):
    with pytest.raises(ConflictError, match=f"is {status}; only a disk in status ok"):
        services.attach_disk(make_vm(cluster), make_disk(sd, status=status), user=None)


def test_attach_a_template_disk_is_refused(cluster, sd):
    from compute.models import Template

    disk = make_disk(sd, template=Template.objects.create(name="tpl"))

    with pytest.raises(ConflictError, match="belongs to a template"):
        services.attach_disk(make_vm(cluster), disk, user=None)


@pytest.mark.parametrize("interface", ["virtio", "virtio_scsi"])
def test_attach_disk_to_a_running_vm_hot_plugs_it_through_a_job(
    cluster, sd, sent_tasks, django_capture_on_commit_callbacks, interface
):
    vm = make_vm(cluster, status="up", name="web")

    with django_capture_on_commit_callbacks(execute=True):
        attachment, job = services.attach_disk(vm, make_disk(sd, alias="data"), user=None, interface=interface)

    assert (job.action_type, job.description, job.vm_id) == (
        "HotPlugDiskToVm",
        "Hot-plugging disk data into VM web",
        vm.pk,
    )
    assert sent_tasks == [("storage.tasks.hotplug_disk_task", [str(job.pk), str(attachment.pk)])]
    assert Event.objects.get(code="USER_ATTACH_DISK_TO_VM").correlation_id == job.correlation_id


def test_attach_a_sata_disk_to_a_running_vm_is_refused(cluster, sd):
    with pytest.raises(ConflictError, match="sata disk cannot be hot-plugged"):
        services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None, interface="sata")


def test_attach_an_inactive_sata_disk_to_a_running_vm_opens_no_job(cluster, sd):
    attachment, job = services.attach_disk(
        make_vm(cluster, status="up"), make_disk(sd), user=None, interface="sata", active=False
    )

    assert job is None
    assert attachment.active is False


# update_disk_attachment -------------------------------------------------------------------


def test_update_attachment_of_a_down_vm_changes_interface_without_a_job(cluster, sd):
    attachment, _ = services.attach_disk(make_vm(cluster), make_disk(sd), user=None)

    attachment, job = services.update_disk_attachment(attachment, user=None, interface="sata", read_only=True)

    assert job is None
    attachment.refresh_from_db()
    assert (attachment.interface, attachment.read_only) == ("sata", True)


def test_update_attachment_interface_of_a_plugged_disk_on_a_running_vm_is_refused(cluster, sd):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)

    with pytest.raises(ConflictError, match="unplug first"):
        services.update_disk_attachment(attachment, user=None, interface="virtio_scsi")


def test_update_attachment_deactivate_on_a_running_vm_opens_an_unplug_job(
    cluster, sd, sent_tasks, django_capture_on_commit_callbacks
):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)
    sent_tasks.clear()

    with django_capture_on_commit_callbacks(execute=True):
        attachment, job = services.update_disk_attachment(attachment, user=None, active=False)

    assert job.action_type == "HotUnPlugDiskFromVm"
    assert sent_tasks == [("storage.tasks.hotunplug_disk_task", [str(job.pk), str(attachment.pk)])]
    assert DiskAttachment.objects.get(pk=attachment.pk).active is False


def test_update_attachment_activate_sata_on_a_running_vm_is_refused(cluster, sd):
    attachment, _ = services.attach_disk(
        make_vm(cluster, status="up"), make_disk(sd), user=None, interface="sata", active=False
    )

    with pytest.raises(ConflictError, match="cannot be hot-plugged"):
        services.update_disk_attachment(attachment, user=None, active=True)


def test_update_attachment_refuses_a_second_bootable_disk(cluster, sd):
    vm = make_vm(cluster)
    services.attach_disk(vm, make_disk(sd), user=None, bootable=True)
    attachment, _ = services.attach_disk(vm, make_disk(sd), user=None)

    with pytest.raises(ValidationError) as exc:
        services.update_disk_attachment(attachment, user=None, bootable=True)

    assert list(exc.value.message_dict) == ["bootable"]


def test_update_attachment_unplugging_the_boot_disk_of_a_running_vm_is_refused(cluster, sd):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None, bootable=True)

    with pytest.raises(ConflictError, match="boot disk"):
        services.update_disk_attachment(attachment, user=None, active=False)


# detach_disk ------------------------------------------------------------------------------


def test_detach_disk_from_a_down_vm_removes_the_attachment(cluster, sd):
    vm = make_vm(cluster, name="web")
    attachment, _ = services.attach_disk(vm, make_disk(sd, alias="data"), user=None)

    job = services.detach_disk(attachment, user=None)

    assert job is None
    assert not DiskAttachment.objects.filter(pk=attachment.pk).exists()
    assert (
        Event.objects.get(code="USER_DETACH_DISK_FROM_VM").message
        == "Disk data was detached from VM web by the system."
    )


def test_detach_an_inactive_disk_from_a_running_vm_needs_no_job(cluster, sd):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None, active=False)

    assert services.detach_disk(attachment, user=None) is None
    assert not DiskAttachment.objects.filter(pk=attachment.pk).exists()


def test_detach_a_plugged_disk_from_a_running_vm_opens_a_hot_unplug_job(
    cluster, sd, sent_tasks, django_capture_on_commit_callbacks
):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)
    sent_tasks.clear()

    with django_capture_on_commit_callbacks(execute=True):
        job = services.detach_disk(attachment, user=None)

    assert job.action_type == "DetachDiskFromVm"
    assert sent_tasks == [("storage.tasks.detach_disk_task", [str(job.pk), str(attachment.pk)])]
    assert DiskAttachment.objects.filter(pk=attachment.pk).exists()


def test_detach_the_boot_disk_of_a_running_vm_is_refused(cluster, sd):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None, bootable=True)

    with pytest.raises(ConflictError, match="boot disk"):
        services.detach_disk(attachment, user=None)


# Tasks ------------------------------------------------------------------------------------


def test_hotplug_disk_task_plugs_the_disk_on_the_vm_host(cluster, sd, monkeypatch):
    vm = make_vm(cluster, status="up", name="web")
    disk = make_disk(sd, alias="data")
    attachment, job = services.attach_disk(vm, disk, user=None, interface="virtio_scsi")
    calls = []
    monkeypatch.setattr(
        SimulatedAgentClient, "hotplug_disk", lambda self, vm_id, spec: calls.append((self.host.name, vm_id, spec))
    )

    hotplug_disk_task(str(job.pk), str(attachment.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    host_name, vm_id, spec = calls[0]
    assert (host_name, vm_id) == (vm.run_on_host.name, str(vm.pk))
    assert (spec["id"], spec["interface"], spec["size"], spec["bootable"]) == (
        str(disk.pk),
        "virtio_scsi",
        disk.provisioned_size,
        False,
    )
    assert Event.objects.get(code="USER_HOTPLUG_DISK").message == "Disk data was plugged into VM web."


def test_hotplug_disk_task_failure_leaves_the_disk_inactive(cluster, sd, monkeypatch):
    attachment, job = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)

    def refuse(self, vm_id, spec):
        raise AgentError("no free slot on the bus")

    monkeypatch.setattr(SimulatedAgentClient, "hotplug_disk", refuse)

    hotplug_disk_task(str(job.pk), str(attachment.pk))

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "no free slot on the bus")
    assert DiskAttachment.objects.get(pk=attachment.pk).active is False
    assert Event.objects.get(code="USER_FAILED_HOTPLUG_DISK").severity == "error"


def test_hotunplug_disk_task_failure_marks_the_disk_active_again(cluster, sd, monkeypatch):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)
    attachment, job = services.update_disk_attachment(attachment, user=None, active=False)

    def refuse(self, vm_id, disk_id):
        raise AgentError("guest refused")

    monkeypatch.setattr(SimulatedAgentClient, "hotunplug_disk", refuse)

    hotunplug_disk_task(str(job.pk), str(attachment.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert DiskAttachment.objects.get(pk=attachment.pk).active is True


def test_detach_disk_task_unplugs_then_detaches(cluster, sd, monkeypatch):
    vm = make_vm(cluster, status="up", name="web")
    disk = make_disk(sd, alias="data")
    attachment, _ = services.attach_disk(vm, disk, user=None)
    job = services.detach_disk(attachment, user=None)
    calls = []
    monkeypatch.setattr(
        SimulatedAgentClient, "hotunplug_disk", lambda self, vm_id, disk_id: calls.append((vm_id, disk_id))
    )

    detach_disk_task(str(job.pk), str(attachment.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert calls == [(str(vm.pk), str(disk.pk))]
    assert not DiskAttachment.objects.filter(pk=attachment.pk).exists()
    assert Event.objects.get(code="USER_DETACH_DISK_FROM_VM").message == "Disk data was detached from VM web."


def test_detach_disk_task_keeps_the_attachment_when_the_unplug_fails(cluster, sd, monkeypatch):
    attachment, _ = services.attach_disk(make_vm(cluster, status="up"), make_disk(sd), user=None)
    job = services.detach_disk(attachment, user=None)

    def refuse(self, vm_id, disk_id):
        raise AgentError("device busy")

    monkeypatch.setattr(SimulatedAgentClient, "hotunplug_disk", refuse)

    detach_disk_task(str(job.pk), str(attachment.pk))

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "device busy")
    assert DiskAttachment.objects.get(pk=attachment.pk).active is True
