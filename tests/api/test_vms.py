"""Behaviour of /api/v1/vms/: create and its validation, removal, power actions, filters."""

import pytest
from django.urls import reverse

from compute.models import InstanceType, Template, VirtualMachine
from inventory.models import Event, Job
from tests.factories import make_cluster, make_data_center, make_host, make_vm

pytestmark = pytest.mark.django_db


def vms_url() -> str:
    return reverse("api:vm-list")


def vm_url(vm, action: str | None = None) -> str:
    if action:
        return reverse(f"api:vm-{action}", args=[vm.pk])
    return reverse("api:vm-detail", args=[vm.pk])


def test_create_vm_from_blank_is_201_with_the_vm_and_no_job(api_client, cluster):
    response = api_client.post(vms_url(), {"name": "web1", "cluster": str(cluster.pk)}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    vm = VirtualMachine.objects.get(name="web1")
    assert body["id"] == str(vm.pk)
    assert body["url"] == f"http://testserver/api/v1/vms/{vm.pk}/"
    assert body["job"] is None
    assert (body["status"], body["data_center"], body["template_name"]) == (
        "down",
        str(cluster.data_center_id),
        "Blank",
    )
    assert (vm.cluster_id, vm.data_center_id, vm.memory_mib, vm.guaranteed_memory_mib) == (
        cluster.pk,
        cluster.data_center_id,
        1024,
        1024,
    )
    event = Event.objects.get(code="USER_ADD_VM")
    assert (event.object_id, event.username, event.message) == (
        vm.pk,
        "admin",
        "VM web1 was created by admin from template Blank.",
    )


def test_create_vm_takes_shape_from_template_and_instance_type(api_client, cluster):
    template = Template.objects.create(name="big", memory_mib=8192, vcpus=4, os_type="debian_12")
    itype = InstanceType.objects.get(name="Small")

    response = api_client.post(
        vms_url(),
        {"name": "app1", "cluster": str(cluster.pk), "template": str(template.pk), "instance_type": str(itype.pk)},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["os_type"], body["vcpus"], body["memory_mib"], body["guaranteed_memory_mib"]) == (
        "debian_12",
        1,
        2048,
        2048,
    )


def test_guaranteed_memory_is_checked_against_the_template_memory(api_client, cluster):
    """Validation sees the VM as the service will make it: 2048 guaranteed of the template's 4096 is fine."""
    template = Template.objects.create(name="mid", memory_mib=4096)

    response = api_client.post(
        vms_url(),
        {"name": "app2", "cluster": str(cluster.pk), "template": str(template.pk), "guaranteed_memory_mib": 2048},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert VirtualMachine.objects.get(name="app2").memory_mib == 4096


def test_duplicate_vm_name_in_the_data_center_is_400_on_name(api_client, dc):
    make_vm(make_cluster(dc), name="db1")
    other_cluster = make_cluster(dc)
    events = Event.objects.count()

    response = api_client.post(vms_url(), {"name": "db1", "cluster": str(other_cluster.pk)}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["Virtual machine with this Data center and Name already exists."]}
    assert VirtualMachine.objects.filter(name="db1").count() == 1
    assert Event.objects.count() == events


def test_same_vm_name_in_another_data_center_is_fine(api_client):
    make_vm(make_cluster(make_data_center()), name="db1")

    response = api_client.post(vms_url(), {"name": "db1", "cluster": str(make_cluster().pk)}, format="json")

    assert response.status_code == 201
    assert VirtualMachine.objects.filter(name="db1").count() == 2


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"memory_mib": 1024, "guaranteed_memory_mib": 2048},
            {"guaranteed_memory_mib": ["Guaranteed memory cannot exceed the VM's memory."]},
        ),
        ({"vcpus": 65}, {"vcpus": ["At most 64 vCPUs per VM in cluster {cluster}."]}),
        ({"vcpus": 0}, {"vcpus": ["Ensure this value is greater than or equal to 1."]}),
        ({"name": "web 1"}, {"name": ["Use letters, digits, '_', '-' and '.' only (as oVirt names do)."]}),
        ({"os_type": "beos"}, {"os_type": ['"beos" is not a valid choice.']}),
        ({"cluster": "not-a-uuid"}, {"cluster": ["“not-a-uuid” is not a valid UUID."]}),
        (
            {"cluster": "00000000-0000-0000-0000-000000000001"},
            {"cluster": ['Invalid pk "00000000-0000-0000-0000-000000000001" - object does not exist.']},
        ),
        ({"memory_mib": 2**40}, {"memory_mib": ["Ensure this value is less than or equal to 2147483647."]}),
    ],
)
def test_invalid_vm_is_400_with_field_messages(api_client, cluster, body, errors):
    data = {"name": "web1", "cluster": str(cluster.pk), **body}

    response = api_client.post(vms_url(), data, format="json")

    assert response.status_code == 400
    expected = {k: [m.format(cluster=cluster.name) for m in v] for k, v in errors.items()}
    assert response.json() == expected
    assert not VirtualMachine.objects.exists()


def test_create_vm_with_clone_copies_the_template_disks(api_client, cluster):
    from storage.models import Disk
    from tests.factories import make_disk, make_storage_domain

    template = Template.objects.create(name="golden", cluster=cluster)
    base = make_disk(make_storage_domain(cluster.data_center), template=template)

    response = api_client.post(
        vms_url(),
        {"name": "web1", "cluster": str(cluster.pk), "template": str(template.pk), "clone": True},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert "clone" not in body
    disk = Disk.objects.get(attachments__vm_id=body["id"])
    assert (disk.backing_disk_id, disk.provisioned_size, disk.format) == (None, base.provisioned_size, "qcow2")
    job = Job.objects.get(pk=body["job"])
    assert list(job.steps.values_list("description", flat=True)) == ["Clone disk web1_Disk1 from template disk"]


def test_create_vm_is_thin_unless_clone_is_asked(api_client, cluster):
    from storage.models import Disk
    from tests.factories import make_disk, make_storage_domain

    template = Template.objects.create(name="golden", cluster=cluster)
    base = make_disk(make_storage_domain(cluster.data_center), template=template)

    response = api_client.post(
        vms_url(), {"name": "web1", "cluster": str(cluster.pk), "template": str(template.pk)}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert Disk.objects.get(attachments__vm_id=response.json()["id"]).backing_disk_id == base.pk


def test_clone_from_the_blank_template_is_fine(api_client, cluster):
    response = api_client.post(vms_url(), {"name": "web1", "cluster": str(cluster.pk), "clone": True}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["job"] is None


@pytest.mark.parametrize("clone", ["sometimes", 2, [True], {"yes": 1}])
def test_a_clone_that_is_not_a_boolean_is_400(api_client, cluster, clone):
    response = api_client.post(vms_url(), {"name": "web1", "cluster": str(cluster.pk), "clone": clone}, format="json")

    assert response.status_code == 400
    assert response.json() == {"clone": ["Must be a valid boolean."]}
    assert not VirtualMachine.objects.exists()


def test_clone_is_for_create_only(api_client):
    vm = make_vm()

    asked = api_client.patch(vm_url(vm), {"clone": True}, format="json")
    unchanged = api_client.patch(vm_url(vm), {"clone": False, "comment": "ok"}, format="json")

    assert asked.status_code == 400
    assert asked.json() == {"clone": ["This field cannot be changed once the object exists."]}
    assert unchanged.status_code == 200, unchanged.json()
    vm.refresh_from_db()
    assert vm.comment == "ok"


def test_pinned_host_of_another_cluster_is_400(api_client, cluster):
    stranger = make_host(make_cluster())

    response = api_client.post(
        vms_url(), {"name": "web1", "cluster": str(cluster.pk), "pinned_hosts": [str(stranger.pk)]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"pinned_hosts": [f"Hosts outside cluster {cluster.name}: {stranger.name}."]}


def test_cluster_cannot_change_after_create(api_client, cluster):
    vm = make_vm(cluster)

    response = api_client.patch(vm_url(vm), {"cluster": str(make_cluster().pk)}, format="json")

    assert response.status_code == 400
    assert response.json() == {"cluster": ["This field cannot be changed once the object exists."]}
    vm.refresh_from_db()
    assert vm.cluster_id == cluster.pk


def test_read_only_fields_are_ignored_on_update(api_client):
    vm = make_vm()

    response = api_client.patch(vm_url(vm), {"status": "up", "guest_os": "hacked", "comment": "ok"}, format="json")

    assert response.status_code == 200
    vm.refresh_from_db()
    assert (vm.status, vm.guest_os, vm.comment) == ("down", "", "ok")


def test_update_of_a_running_vm_waits_for_next_run(api_client):
    vm = make_vm(status="up")

    response = api_client.patch(vm_url(vm), {"memory_mib": 4096, "comment": "now"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["memory_mib"], body["comment"], body["next_run_config"]) == (1024, "now", {"memory_mib": 4096})


def test_remove_vm_while_up_is_409_and_keeps_it(api_client):
    vm = make_vm(status="up")

    response = api_client.delete(vm_url(vm))

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"VM {vm.name} is 'up'; only a VM that is down can be removed.",
        "code": "conflict",
    }
    assert VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not Event.objects.filter(code="USER_REMOVE_VM").exists()


def test_remove_down_vm_is_204(api_client):
    vm = make_vm()

    response = api_client.delete(vm_url(vm) + "?remove_disks=false")

    assert response.status_code == 204
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert Event.objects.get(code="USER_REMOVE_VM").message == f"VM {vm.name} was removed by admin."


def test_start_of_an_up_vm_is_409_naming_the_state(api_client):
    vm = make_vm(status="up")

    response = api_client.post(vm_url(vm, "start"))

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Cannot start a VM whose status is 'up' (allowed from: down, suspended).",
        "code": "illegal_state",
    }
    assert not Job.objects.exists()


def test_start_of_a_down_vm_is_202_with_the_job(api_client, cluster):
    host = make_host(cluster)
    vm = make_vm(cluster)

    response = api_client.post(vm_url(vm, "start"))

    assert response.status_code == 202, response.json()
    body = response.json()
    job = Job.objects.get()
    assert body["id"] == str(job.pk)
    assert (body["action_type"], body["status"], body["vm_id"]) == ("RunVm", "started", str(vm.pk))
    assert body["description"] == f"Launching VM {vm.name} on host {host.name}"
    assert [step["description"] for step in body["steps"]] == [
        "Create the VM on the host",
        "Wait for the VM to come up",
    ]
    vm.refresh_from_db()
    assert (vm.status, vm.run_on_host_id) == ("wait_for_launch", host.pk)
    assert Event.objects.get(code="USER_START_VM").correlation_id == str(job.pk)


def test_start_without_a_host_is_409(api_client):
    vm = make_vm()

    response = api_client.post(vm_url(vm, "start"))

    assert response.status_code == 409
    assert response.json()["code"] == "no_host"
    vm.refresh_from_db()
    assert vm.status == "down"


def test_a_refused_start_carries_the_placement_in_details(api_client, cluster):
    host = make_host(cluster, name="tiny", memory_mib=512)
    vm = make_vm(cluster, memory_mib=1024, guaranteed_memory_mib=1024)

    response = api_client.post(vm_url(vm, "start"))

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "no_host"
    assert body["detail"].endswith("tiny: filtered by memory: needs 1024 MiB guaranteed, 512 MiB available")
    assert body["details"]["message"] == "tiny: filtered by memory: needs 1024 MiB guaranteed, 512 MiB available"
    assert body["details"]["rejected"] == [
        {
            "host_id": str(host.pk),
            "host": "tiny",
            "filter": "memory",
            "reason": "needs 1024 MiB guaranteed, 512 MiB available",
        }
    ]


@pytest.mark.parametrize(
    ("action", "status", "action_type", "new_status"),
    [
        ("shutdown", "up", "ShutdownVm", "powering_down"),
        ("stop", "up", "StopVm", "up"),
        ("reboot", "up", "RebootVm", "reboot_in_progress"),
        ("suspend", "up", "HibernateVm", "up"),
        ("resume", "paused", "ResumeVm", "paused"),
    ],
)
def test_power_actions_are_202_with_the_job(api_client, action, status, action_type, new_status):
    vm = make_vm(status=status)

    response = api_client.post(vm_url(vm, action))

    assert response.status_code == 202, response.json()
    assert response.json()["action_type"] == action_type
    vm.refresh_from_db()
    assert vm.status == new_status


@pytest.mark.parametrize("action", ["shutdown", "stop", "reboot", "suspend", "resume"])
def test_power_actions_on_a_down_vm_are_409(api_client, action):
    vm = make_vm()

    response = api_client.post(vm_url(vm, action))

    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Cannot {action} a VM whose status is 'down'")


def test_actions_need_post(api_client):
    vm = make_vm()

    assert api_client.get(vm_url(vm, "start")).status_code == 405


def test_action_on_unknown_vm_is_404(api_client):
    assert api_client.post("/api/v1/vms/00000000-0000-0000-0000-00000000abcd/start/").status_code == 404
    assert api_client.post("/api/v1/vms/nonsense/start/").status_code == 404


def test_filters(api_client, dc):
    cluster_a, cluster_b = make_cluster(dc), make_cluster()
    host = make_host(cluster_a)
    web = make_vm(cluster_a, name="web-1", status="up", run_on_host=host)
    make_vm(cluster_a, name="db-1")
    other = make_vm(cluster_b, name="web-2")

    def names(**params):
        response = api_client.get(vms_url(), params)
        assert response.status_code == 200, response.json()
        return sorted(row["name"] for row in response.json()["results"])

    assert names(status="up") == ["web-1"]
    assert names(status=["up", "down"]) == ["db-1", "web-1", "web-2"]
    assert names(cluster=str(cluster_b.pk)) == ["web-2"]
    assert names(data_center=str(dc.pk)) == ["db-1", "web-1"]
    assert names(host=str(host.pk)) == ["web-1"]
    assert names(name="WEB") == ["web-1", "web-2"]
    assert names(search="db") == ["db-1"]
    ordered = api_client.get(vms_url(), {"ordering": "-name"}).json()["results"]
    assert [row["name"] for row in ordered] == ["web-2", "web-1", "db-1"]
    assert {web.name, other.name} == {"web-1", "web-2"}


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"status": "flying"}, {"status": ["Select a valid choice. flying is not one of the available choices."]}),
        ({"cluster": "nope"}, {"cluster": ["“nope” is not a valid UUID."]}),
    ],
)
def test_bad_filter_is_400(api_client, params, errors):
    response = api_client.get(vms_url(), params)

    assert response.status_code == 400
    assert response.json() == errors


def test_put_back_of_a_running_vm_queues_nothing_for_the_next_run(api_client):
    vm = make_vm(status="up")
    body = api_client.get(vm_url(vm)).json()

    response = api_client.put(vm_url(vm), body, format="json")

    assert response.status_code == 200
    assert response.json()["next_run_config"] == {}
    assert not Event.objects.filter(code="USER_UPDATE_VM").exists()


def test_create_vm_inherits_the_template_boot_options_and_validates_them_as_it_will_be(api_client, cluster):
    template = Template.objects.create(
        name="tiny", kernel_path="/var/images/vmlinuz", initrd_path="/var/images/initrd.img", kernel_params="quiet"
    )

    response = api_client.post(
        vms_url(),
        {"name": "t1", "cluster": str(cluster.pk), "template": str(template.pk), "kernel_params": "console=ttyS0"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kernel_path"], body["initrd_path"], body["kernel_params"]) == (
        "/var/images/vmlinuz",
        "/var/images/initrd.img",
        "console=ttyS0",
    )


def test_boot_options_without_a_kernel_are_400(api_client, cluster):
    response = api_client.post(
        vms_url(),
        {"name": "t1", "cluster": str(cluster.pk), "initrd_path": "/boot/initrd.img", "kernel_params": "quiet"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "initrd_path": ["An initrd needs a kernel path (direct kernel boot)."],
        "kernel_params": ["Kernel parameters need a kernel path (direct kernel boot)."],
    }
    assert not VirtualMachine.objects.exists()


def test_boot_options_of_a_running_vm_wait_for_next_run(api_client):
    vm = make_vm(status="up")

    response = api_client.patch(
        vm_url(vm), {"kernel_path": "/boot/vmlinuz", "kernel_params": "console=ttyS0"}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["kernel_path"], body["kernel_params"], body["next_run_config"]) == (
        "",
        "",
        {"kernel_path": "/boot/vmlinuz", "kernel_params": "console=ttyS0"},
    )
