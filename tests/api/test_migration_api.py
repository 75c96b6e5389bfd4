"""/api/v1/vms/<id>/migrate/ and /cancel-migration/: 202 with the Job, 400 on bad input,
409 with every host and the filter that removed it when nothing fits."""

import pytest
from django.urls import reverse

from compute.choices import PlacementPolicy, VmStatus
from inventory.models import Job
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


def url(vm, action: str) -> str:
    return reverse(f"api:vm-{action}", args=[vm.pk])


@pytest.fixture
def running():
    cluster = make_cluster()
    src, dst = make_host(cluster=cluster, name="src"), make_host(cluster=cluster, name="dst")
    vm = make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=src, guaranteed_memory_mib=1024)
    return vm, src, dst


def test_migrate_is_202_with_the_job_and_the_scheduler_picks_the_host(api_client, running):
    vm, _src, dst = running
    response = api_client.post(url(vm, "migrate"), {}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.action_type == "MigrateVm" and job.description == f"Migrating VM {vm.name} from src to dst"
    vm.refresh_from_db()
    assert vm.migrating_to_host_id == dst.pk


def test_migrate_to_a_named_host(api_client, running):
    vm, _src, dst = running
    response = api_client.post(url(vm, "migrate"), {"host": str(dst.pk)}, format="json")
    assert response.status_code == 202


@pytest.mark.parametrize("host", ["nonsense", "00000000-0000-0000-0000-00000000beef", 12])
def test_a_bad_host_is_400_on_the_field(api_client, running, host):
    vm, _src, _dst = running
    response = api_client.post(url(vm, "migrate"), {"host": host}, format="json")
    assert response.status_code == 400
    assert "host" in response.json()
    assert not Job.objects.filter(action_type="MigrateVm").exists()


def test_no_host_fits_is_409_with_each_host_and_its_filter(api_client, running):
    vm, src, dst = running
    vm.placement_policy = PlacementPolicy.PINNED
    vm.save()
    response = api_client.post(url(vm, "migrate"), {}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["detail"].startswith(f"Cannot migrate VM {vm.name} within cluster ")
    assert {(r["host"], r["filter"]) for r in body["details"]["rejected"]} == {
        ("src", "migration"),
        ("dst", "migration"),
    }


def test_a_vm_that_is_down_cannot_migrate(api_client):
    vm = make_vm()
    response = api_client.post(url(vm, "migrate"), {}, format="json")
    assert response.status_code == 409
    assert "only a VM that is up can migrate" in response.json()["detail"]


def test_cancel_migration(api_client, running):
    vm, _src, _dst = running
    assert api_client.post(url(vm, "cancel_migration")).status_code == 409
    api_client.post(url(vm, "migrate"), {}, format="json")
    response = api_client.post(reverse("api:vm-cancel_migration", args=[vm.pk]))
    assert response.status_code == 202
    assert response.json()["action_type"] == "MigrateVm"
    assert reverse("api:vm-cancel_migration", args=[vm.pk]).endswith("/cancel-migration/")


def test_vm_users_cannot_migrate(django_user_model, running):
    from rest_framework.test import APIClient

    from tests.factories import grant

    vm, _src, _dst = running
    client = APIClient()
    alice = django_user_model.objects.create_user("alice", password="x")
    client.force_authenticate(user=alice)
    assert client.post(url(vm, "migrate"), {}, format="json").status_code == 403
    grant(alice, "UserRole", vm)
    assert client.post(url(vm, "migrate"), {}, format="json").status_code == 403  # seen, not theirs to move
    assert not Job.objects.filter(action_type="MigrateVm").exists()
