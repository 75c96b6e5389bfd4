"""The admin portal's Migrate page and Cancel migration button."""

import pytest
from django.urls import reverse

from compute.choices import PlacementPolicy, VmStatus
from compute.models import VirtualMachine
from inventory.models import Job
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def running():
    cluster = make_cluster()
    src, dst = make_host(cluster=cluster, name="src"), make_host(cluster=cluster, name="dst")
    return make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=src, name="mig-1"), src, dst


def test_the_vm_page_links_to_migrate_while_the_vm_is_up(user_client, running):
    vm, _src, _dst = running
    page = user_client.get(vm.get_absolute_url()).content.decode()
    assert reverse("portals:vm-migrate", args=[vm.pk]) in page
    assert '"migrate": ["up"]' in page


def test_migrate_page_lists_the_other_hosts_and_starts_the_migration(user_client, running):
    vm, _src, dst = running
    url = reverse("portals:vm-migrate", args=[vm.pk])
    page = user_client.get(url).content.decode()
    assert "dst (Up)" in page and "src (Up)" not in page
    response = user_client.post(url, {"host": str(dst.pk)})
    assert response.status_code == 302
    assert VirtualMachine.objects.get(pk=vm.pk).migrating_to_host_id == dst.pk
    assert Job.objects.filter(action_type="MigrateVm").count() == 1


def test_a_refused_migration_shows_each_host_and_its_filter(user_client, running):
    vm, _src, _dst = running
    VirtualMachine.objects.filter(pk=vm.pk).update(placement_policy=PlacementPolicy.PINNED)
    response = user_client.post(reverse("portals:vm-migrate", args=[vm.pk]), {"host": ""})
    assert response.status_code == 409
    page = response.content.decode()
    assert "Cannot migrate VM mig-1 within cluster" in page
    assert "<td>dst</td><td>migration</td><td>the VM is not migratable</td>" in page
    assert not Job.objects.filter(action_type="MigrateVm").exists()


def test_a_host_outside_the_cluster_is_a_400(user_client, running):
    vm, _src, _dst = running
    other = make_host()
    response = user_client.post(reverse("portals:vm-migrate", args=[vm.pk]), {"host": str(other.pk)})
    assert response.status_code == 400
    assert "Choose a host of the VM&#x27;s cluster." in response.content.decode()


def test_cancel_migration_asks_first_then_cancels(user_client, running):
    vm, _src, _dst = running
    user_client.post(reverse("portals:vm-migrate", args=[vm.pk]), {"host": ""})
    url = reverse("portals:vm-action", args=[vm.pk, "cancel_migration"])
    assert "Cancel the migration of VM mig-1?" in user_client.get(url).content.decode()
    response = user_client.post(url, follow=True)
    assert "Cancel migration" in response.content.decode()
