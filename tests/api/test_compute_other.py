"""Behaviour of snapshots, templates and instance types through the API."""

import pytest
from django.urls import reverse

from compute.models import BLANK_TEMPLATE_ID, Snapshot, Template
from inventory.models import Job
from tests.factories import make_vm

pytestmark = pytest.mark.django_db


def test_snapshot_create_is_201_locked_with_its_job(api_client):
    vm = make_vm()

    response = api_client.post(reverse("api:snapshot-list"), {"vm": str(vm.pk), "description": "pre"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["with_memory"], body["job"]) == (
        "locked",
        False,
        str(Job.objects.get(action_type="CreateSnapshot").pk),
    )


def test_snapshot_with_memory_of_a_down_vm_is_400(api_client):
    vm = make_vm()

    response = api_client.post(
        reverse("api:snapshot-list"), {"vm": str(vm.pk), "description": "pre", "with_memory": True}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"with_memory": ["A VM that is down has no memory to save."]}
    assert not Snapshot.objects.exists()


def test_revert_of_a_running_vm_is_409(api_client):
    snapshot = Snapshot.objects.create(vm=make_vm(status="up"), description="s")

    response = api_client.post(reverse("api:snapshot-revert", args=[snapshot.pk]))

    assert response.status_code == 409
    assert response.json()["detail"] == f"VM {snapshot.vm.name} is 'up'; shut it down before reverting to a snapshot."


def test_revert_is_202_and_locks_the_vm(api_client):
    snapshot = Snapshot.objects.create(vm=make_vm(), description="s")

    response = api_client.post(reverse("api:snapshot-revert", args=[snapshot.pk]))

    assert response.status_code == 202
    assert response.json()["action_type"] == "RestoreAllSnapshots"
    snapshot.vm.refresh_from_db()
    assert snapshot.vm.status == "image_locked"


def test_template_version_takes_the_base_name(api_client):
    base = Template.objects.create(name="golden")

    response = api_client.post(
        reverse("api:template-list"), {"base_template": str(base.pk), "version_name": "v2"}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["version_number"], body["base_template"]) == ("golden", 2, str(base.pk))


def test_duplicate_base_template_name_is_400(api_client):
    Template.objects.create(name="golden")

    response = api_client.post(reverse("api:template-list"), {"name": "golden"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["template with this name already exists."]}


def test_blank_template_cannot_be_removed(api_client):
    response = api_client.delete(reverse("api:template-detail", args=[BLANK_TEMPLATE_ID]))

    assert response.status_code == 409
    assert response.json() == {"detail": "The Blank template cannot be removed.", "code": "conflict"}


def test_template_boot_options_round_trip_and_relative_paths_are_400(api_client):
    good = api_client.post(
        reverse("api:template-list"),
        {"name": "tiny", "kernel_path": "/var/images/vmlinuz", "kernel_params": "console=ttyS0"},
        format="json",
    )
    bad = api_client.post(reverse("api:template-list"), {"name": "bad", "kernel_path": "vmlinuz"}, format="json")

    assert good.status_code == 201, good.json()
    body = good.json()
    assert (body["kernel_path"], body["initrd_path"], body["kernel_params"]) == (
        "/var/images/vmlinuz",
        "",
        "console=ttyS0",
    )
    assert bad.status_code == 400
    assert bad.json() == {"kernel_path": ["Give an absolute path (starting with /)."]}
    assert not Template.objects.filter(name="bad").exists()
