"""Action buttons: POST only, destructive ones confirmed first, refusals shown as banners."""

import pytest
from django.urls import reverse

from compute.choices import VmStatus
from compute.models import VirtualMachine
from inventory.models import DataCenter, Host, Job
from tests.factories import make_cluster, make_data_center, make_host, make_vm


def banner(client, url) -> str:
    return client.get(url).content.decode()


@pytest.mark.django_db
def test_run_is_a_post_that_starts_a_job(user_client):
    cluster = make_cluster()
    make_host(cluster, status="up")
    vm = make_vm(cluster, name="web1")
    url = reverse("portals:vm-action", args=[vm.pk, "run"])

    assert user_client.get(url).status_code == 405
    response = user_client.post(url)

    assert response.status_code == 302
    assert response["Location"] == vm.get_absolute_url()
    vm.refresh_from_db()
    job = Job.objects.get(vm_id=vm.pk)
    assert (vm.status, job.action_type) == (VmStatus.WAIT_FOR_LAUNCH, "RunVm")
    assert f'Run: web1. Job started: <a href="{job.get_absolute_url()}"' in banner(user_client, response["Location"])


@pytest.mark.django_db
def test_refused_action_shows_the_reason(user_client):
    vm = make_vm(status=VmStatus.UP, name="web1")

    response = user_client.post(reverse("portals:vm-action", args=[vm.pk, "run"]))

    assert response.status_code == 302
    page = banner(user_client, response["Location"])
    assert "Cannot start a VM whose status is &#x27;up&#x27; (allowed from: down, suspended)." in page
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP
    assert Job.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "question", "status", "job_type"),
    [
        ("shutdown", "Are you sure you want to shut down VM web1?", VmStatus.POWERING_DOWN, "ShutdownVm"),
        (
            "poweroff",
            "Are you sure you want to power off VM web1?",
            VmStatus.UP,
            "StopVm",
        ),  # down when the host says so
    ],
)
def test_destructive_vm_actions_are_confirmed_first(user_client, action, question, status, job_type):
    vm = make_vm(status=VmStatus.UP, name="web1")
    url = reverse("portals:vm-action", args=[vm.pk, action])

    confirm = user_client.get(url)
    vm.refresh_from_db()
    assert (confirm.status_code, vm.status, Job.objects.count()) == (200, VmStatus.UP, 0)
    assert question in confirm.content.decode()
    assert 'method="post"' in confirm.content.decode()

    response = user_client.post(url)

    assert response.status_code == 302
    vm.refresh_from_db()
    assert vm.status == status
    assert list(Job.objects.values_list("action_type", flat=True)) == [job_type]


@pytest.mark.django_db
def test_vm_detail_offers_only_the_allowed_actions(user_client):
    vm = make_vm(status=VmStatus.DOWN, name="web1")

    context = user_client.get(vm.get_absolute_url()).context

    allowed = {name: ok for name, _, ok in context["vm_actions"]}
    assert allowed == {
        "run": True,
        "shutdown": False,
        "poweroff": False,
        "reboot": False,
        "suspend": False,
        "resume": False,
        "cancel_migration": False,
    }


@pytest.mark.django_db
def test_unknown_action_is_a_404(user_client):
    vm = make_vm()

    assert user_client.post(reverse("portals:vm-action", args=[vm.pk, "explode"])).status_code == 404


@pytest.mark.django_db
def test_host_maintenance_is_confirmed_and_evacuates_the_running_vms(user_client):
    cluster = make_cluster()
    host = make_host(cluster, name="node1", status="up")
    make_vm(cluster, status=VmStatus.UP, run_on_host=host)
    url = reverse("portals:host-action", args=[host.pk, "maintenance"])

    confirm = user_client.get(url)
    user_client.post(url)

    page = confirm.content.decode()
    assert "Are you sure you want to move host node1 to maintenance?" in page
    assert "Its running VMs are live-migrated to other hosts first" in page
    host.refresh_from_db()
    assert host.status == "preparing_for_maintenance"
    assert Job.objects.get(action_type="MaintenanceVds").description == "Moving host node1 to maintenance"


@pytest.mark.django_db
def test_host_maintenance_then_activate(user_client):
    host = make_host(name="node1", status="up")

    user_client.post(reverse("portals:host-action", args=[host.pk, "maintenance"]))
    host.refresh_from_db()
    assert host.status == "preparing_for_maintenance"

    Host.objects.filter(pk=host.pk).update(status="maintenance")
    user_client.post(reverse("portals:host-action", args=[host.pk, "activate"]))
    host.refresh_from_db()
    assert host.status == "connecting"
    assert list(Job.objects.filter(host_id=host.pk).order_by("started_at").values_list("action_type", flat=True)) == [
        "MaintenanceVds",
        "ActivateVds",
    ]


@pytest.mark.django_db
def test_remove_is_confirmed_then_done(user_client):
    dc = make_data_center(name="Empty")
    url = reverse("portals:datacenter-remove", args=[dc.pk])

    confirm = user_client.get(url)
    assert confirm.status_code == 200
    assert "Are you sure you want to remove the data center Empty?" in confirm.content.decode()
    assert DataCenter.objects.filter(pk=dc.pk).exists()

    response = user_client.post(url)

    assert response.status_code == 302
    assert response["Location"] == reverse("portals:datacenter-list")
    assert not DataCenter.objects.filter(pk=dc.pk).exists()
    assert "Data center Empty was removed." in banner(user_client, response["Location"])


@pytest.mark.django_db
def test_refused_remove_keeps_the_object_and_says_why(user_client):
    cluster = make_cluster()
    dc = cluster.data_center

    response = user_client.post(reverse("portals:datacenter-remove", args=[dc.pk]))

    assert response["Location"] == dc.get_absolute_url()
    assert f"Data Center {dc.name} still has clusters; remove them first." in banner(user_client, response["Location"])
    assert DataCenter.objects.filter(pk=dc.pk).exists()


@pytest.mark.django_db
def test_remove_vm_with_or_without_disks(user_client):
    vm = make_vm(name="web1")
    url = reverse("portals:vm-remove", args=[vm.pk])

    confirm = user_client.get(url)
    assert "Remove the VM&#x27;s disks too" in confirm.content.decode()
    response = user_client.post(url, {"remove_disks": "on"})

    assert response.status_code == 302
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()


@pytest.mark.django_db
def test_remove_host_only_in_maintenance(user_client):
    host = make_host(name="node1", status="up")
    url = reverse("portals:host-remove", args=[host.pk])

    user_client.post(url)
    assert Host.objects.filter(pk=host.pk).exists()

    Host.objects.filter(pk=host.pk).update(status="maintenance")
    user_client.post(url)
    assert not Host.objects.filter(pk=host.pk).exists()


@pytest.mark.django_db
def test_snapshot_from_the_vm_tab(user_client):
    vm = make_vm(name="web1")

    response = user_client.post(reverse("portals:vm-snapshot-add", args=[vm.pk]), {"description": "before"})

    assert response["Location"] == f"{vm.get_absolute_url()}?tab=snapshots"
    assert list(vm.snapshots.values_list("description", flat=True)) == ["before"]
