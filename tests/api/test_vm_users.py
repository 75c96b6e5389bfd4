"""/api/v1/vms/ and /api/v1/snapshots/ for users who are not administrators: only the VMs they
own or were granted, each action as their roles allow; another user's VM is a 404."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from compute.choices import VmStatus
from compute.models import Snapshot, Template, VirtualMachine
from inventory.models import Job
from inventory.services import set_quota
from tests.factories import grant, make_cluster, make_host, make_user, make_vm

pytestmark = pytest.mark.django_db


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def cluster():
    cluster = make_cluster(name="c1")
    make_host(cluster, status="up")
    return cluster


@pytest.fixture
def vms(alice, cluster):
    """alice owns `mine`, was granted UserRole on `granted`; `theirs` is bob's."""
    bob = make_user("bob")
    granted = make_vm(cluster, name="granted")
    grant(alice, "UserRole", granted)
    return {
        "mine": make_vm(cluster, name="mine", owner=alice),
        "granted": granted,
        "theirs": make_vm(cluster, name="theirs", owner=bob),
    }


def test_the_list_holds_only_own_and_granted_vms(alice, vms):
    body = client_of(alice).get(reverse("api:vm-list"), {"limit": 500}).json()

    assert body["count"] == 2
    assert sorted(row["name"] for row in body["results"]) == ["granted", "mine"]
    assert "theirs" not in str(body)


def test_filters_and_search_never_widen_the_list(alice, vms, cluster):
    client = client_of(alice)

    by_name = client.get(reverse("api:vm-list"), {"search": "theirs"}).json()
    by_cluster = client.get(reverse("api:vm-list"), {"cluster": str(cluster.pk)}).json()

    assert by_name["count"] == 0
    assert sorted(row["name"] for row in by_cluster["results"]) == ["granted", "mine"]


def test_another_users_vm_is_a_404_as_if_it_did_not_exist(alice, vms):
    client = client_of(alice)
    theirs = vms["theirs"]

    assert client.get(reverse("api:vm-detail", args=[vms["mine"].pk])).json()["owner"] == alice.pk
    for response in (
        client.get(reverse("api:vm-detail", args=[theirs.pk])),
        client.post(reverse("api:vm-start", args=[theirs.pk])),
        client.patch(reverse("api:vm-detail", args=[theirs.pk]), {"name": "x"}, format="json"),
        client.delete(reverse("api:vm-detail", args=[theirs.pk])),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "No VirtualMachine matches the given query."}
    theirs.refresh_from_db()
    assert (theirs.name, theirs.status) == ("theirs", VmStatus.DOWN)
    assert not Job.objects.exists()


@pytest.mark.parametrize("name", ["mine", "granted"])
def test_own_and_granted_vms_can_be_started(alice, vms, name):
    vm = vms[name]

    response = client_of(alice).post(reverse("api:vm-start", args=[vm.pk]))

    assert response.status_code == 202, response.json()
    assert (response.json()["action_type"], response.json()["owner"]) == ("RunVm", alice.pk)
    vm.refresh_from_db()
    assert vm.status == VmStatus.WAIT_FOR_LAUNCH


def test_an_action_the_role_does_not_allow_is_a_403_saying_why(alice, cluster):
    vm = make_vm(cluster, name="watched")
    grant(alice, "ReadOnlyAdmin", vm)  # sees it, may not run it
    client = client_of(alice)

    assert client.get(reverse("api:vm-detail", args=[vm.pk])).status_code == 200
    response = client.post(reverse("api:vm-start", args=[vm.pk]))

    assert response.status_code == 403
    assert response.json() == {
        "detail": "You may not start, shut down, power off or reboot virtual machine watched: no role of yours on "
        "it, its cluster, its data center or the system allows 'vm.operate'."
    }
    assert not Job.objects.exists()


def test_editing_and_removing_need_their_own_roles(alice, vms):
    client = client_of(alice)
    mine = vms["mine"]

    refused = client.patch(reverse("api:vm-detail", args=[mine.pk]), {"description": "new"}, format="json")
    assert refused.status_code == 403
    assert "allows 'vm.edit'" in refused.json()["detail"]
    assert client.delete(reverse("api:vm-detail", args=[mine.pk])).status_code == 403

    grant(alice, "UserVmManager", mine)
    renamed = client.patch(reverse("api:vm-detail", args=[mine.pk]), {"description": "new"}, format="json")
    resized = client.patch(reverse("api:vm-detail", args=[mine.pk]), {"vcpus": 32}, format="json")
    pinned = client.patch(reverse("api:vm-detail", args=[mine.pk]), {"kernel_path": "/etc/shadow"}, format="json")

    assert (renamed.status_code, renamed.json()["description"]) == (200, "new")
    assert resized.status_code == 400
    assert resized.json() == {"vcpus": ["This field cannot be changed once the object exists."]}
    assert (pinned.status_code, pinned.json()["kernel_path"]) == (200, "")  # read-only for users: ignored
    assert client.delete(reverse("api:vm-detail", args=[mine.pk])).status_code == 204
    assert not VirtualMachine.objects.filter(pk=mine.pk).exists()


def test_a_power_user_creates_a_vm_of_their_own_from_a_granted_template(alice, cluster):
    template = Template.objects.create(name="debian", cluster=cluster, vcpus=2, memory_mib=2048)
    grant(alice, "PowerUserRole", template)

    response = client_of(alice).post(
        reverse("api:vm-list"), {"name": "alice-vm", "template": str(template.pk)}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["owner"], body["owner_name"], body["cluster"], body["vcpus"]) == (
        alice.pk,
        "alice",
        str(cluster.pk),
        2,
    )
    assert VirtualMachine.objects.get(name="alice-vm").owner == alice


def test_a_power_user_may_ask_for_cloned_disks(alice, cluster):
    from storage.models import Disk
    from tests.factories import make_disk, make_storage_domain

    template = Template.objects.create(name="debian", cluster=cluster)
    make_disk(make_storage_domain(cluster.data_center), template=template)
    grant(alice, "PowerUserRole", template)

    response = client_of(alice).post(
        reverse("api:vm-list"), {"name": "alice-vm", "template": str(template.pk), "clone": True}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert Disk.objects.get(attachments__vm_id=response.json()["id"]).backing_disk_id is None


def test_a_user_role_cannot_create_and_another_template_does_not_exist_for_them(alice, cluster):
    template = Template.objects.create(name="debian", cluster=cluster)
    grant(alice, "UserRole", cluster)

    response = client_of(alice).post(
        reverse("api:vm-list"), {"name": "nope", "template": str(template.pk)}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"template": [f'Invalid pk "{template.pk}" - object does not exist.']}
    assert not VirtualMachine.objects.filter(name="nope").exists()


def test_the_quota_refusal_is_a_409_saying_why(alice, cluster):
    template = Template.objects.create(name="big", cluster=cluster, vcpus=4, memory_mib=4096)
    grant(alice, "PowerUserRole", cluster)
    set_quota(user=None, principal=alice, max_vcpus=2)

    response = client_of(alice).post(
        reverse("api:vm-list"), {"name": "too-big", "template": str(template.pk)}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Your quota does not allow this VM (vCPUs: it needs 4, 2 of your 2 are left). "
        "Ask an administrator for more.",
        "code": "quota_exceeded",
    }
    assert not VirtualMachine.objects.filter(name="too-big").exists()


def test_an_administrator_gives_a_vm_to_a_user(api_client, alice, cluster):
    vm = make_vm(cluster, name="gift")

    response = api_client.patch(reverse("api:vm-detail", args=[vm.pk]), {"owner": alice.pk}, format="json")

    assert (response.status_code, response.json()["owner_name"]) == (200, "alice")
    assert client_of(alice).get(reverse("api:vm-detail", args=[vm.pk])).status_code == 200


def test_other_endpoints_stay_for_administrators(alice, vms):
    client = client_of(alice)

    for name in ("api:host-list", "api:cluster-list", "api:template-list", "api:event-list", "api:job-list"):
        response = client.get(reverse(name))
        assert response.status_code == 403, name
        assert response.json() == {"detail": "Administrator rights are needed for this API."}


def test_snapshots_of_own_vms_only(alice, vms):
    client = client_of(alice)
    mine, theirs = vms["mine"], vms["theirs"]
    Snapshot.objects.create(vm=theirs, description="bob's")

    created = client.post(reverse("api:snapshot-list"), {"vm": str(mine.pk), "description": "before"}, format="json")
    on_theirs = client.post(reverse("api:snapshot-list"), {"vm": str(theirs.pk), "description": "x"}, format="json")
    listed = client.get(reverse("api:snapshot-list")).json()

    assert created.status_code == 201, created.json()
    assert on_theirs.status_code == 400
    assert on_theirs.json() == {"vm": [f'Invalid pk "{theirs.pk}" - object does not exist.']}
    assert [row["description"] for row in listed["results"]] == ["before"]


def test_a_viewer_may_not_snapshot(alice, cluster):
    vm = make_vm(cluster, name="watched")
    grant(alice, "ReadOnlyAdmin", vm)

    response = client_of(alice).post(
        reverse("api:snapshot-list"), {"vm": str(vm.pk), "description": "x"}, format="json"
    )

    assert response.status_code == 403
    assert "allows 'vm.snapshot'" in response.json()["detail"]
    assert not Snapshot.objects.exists()


@pytest.mark.parametrize("grants", [3, 30])
def test_a_users_vm_list_costs_the_same_queries_as_an_administrators(alice, cluster, grants):
    for n in range(grants):
        grant(alice, "UserRole", make_vm(cluster))
        make_vm(cluster, owner=alice if n % 2 else None)

    with CaptureQueriesContext(connection) as captured:
        response = client_of(alice).get(reverse("api:vm-list"), {"limit": 100})

    assert response.json()["count"] == grants + grants // 2
    assert len(captured.captured_queries) == 3  # count, rows with their relations, pinned hosts


def test_administrators_list_the_vms_of_one_owner(api_client, alice, vms):
    body = api_client.get(reverse("api:vm-list"), {"owner": alice.pk}).json()
    huge = api_client.get(reverse("api:vm-list"), {"owner": 10**30})

    assert [row["name"] for row in body["results"]] == ["mine"]
    assert (huge.status_code, huge.json()["count"]) == (200, 0)
