"""Behaviour of storage domains, disks and attachments through the API."""

import pytest
from django.urls import reverse

from storage.models import GIB, Disk, DiskAttachment, StorageDomain
from tests.factories import make_cluster, make_data_center, make_disk, make_storage_domain, make_vm

pytestmark = pytest.mark.django_db


def test_nfs_domain_needs_an_export_path(api_client):
    response = api_client.post(
        reverse("api:storage-domain-list"), {"name": "nfs1", "type": "nfs", "path": "/srv/x"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"path": ["An NFS domain needs an export as server:/path."]}
    assert not StorageDomain.objects.exists()


def test_role_cannot_change(api_client):
    sd = make_storage_domain()

    response = api_client.patch(reverse("api:storage-domain-detail", args=[sd.pk]), {"role": "iso"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"role": ["This field cannot be changed once the object exists."]}


def test_domain_with_disks_cannot_be_removed(api_client):
    disk = make_disk()

    response = api_client.delete(reverse("api:storage-domain-detail", args=[disk.storage_domain_id]))

    assert response.status_code == 409
    assert response.json()["detail"].endswith("still holds 1 disk(s); remove or move them first.")


def test_disk_larger_than_the_domain_allows_is_400(api_client):
    sd = make_storage_domain(total=100 * GIB, free=100 * GIB)

    response = api_client.post(
        reverse("api:disk-list"),
        {"storage_domain": str(sd.pk), "alias": "big", "provisioned_size": 400 * GIB},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["provisioned_size"]
    assert not Disk.objects.exists()
    sd.refresh_from_db()
    assert sd.committed_bytes == 0


def test_disk_created_for_a_vm_is_attached(api_client):
    dc = make_data_center()
    vm, sd = make_vm(make_cluster(dc)), make_storage_domain(dc)

    response = api_client.post(
        reverse("api:disk-list"),
        {"storage_domain": str(sd.pk), "alias": "boot", "provisioned_size": GIB, "vm": str(vm.pk), "bootable": True},
        format="json",
    )

    assert response.status_code == 201, response.json()
    attachment = DiskAttachment.objects.get()
    assert (attachment.vm_id, str(attachment.disk_id), attachment.bootable) == (vm.pk, response.json()["id"], True)


def test_disk_cannot_shrink(api_client):
    disk = make_disk(provisioned_size=10 * GIB)

    response = api_client.patch(
        reverse("api:disk-detail", args=[disk.pk]), {"provisioned_size": 5 * GIB}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "provisioned_size": [f"Disk {disk.alias} cannot shrink from 10 GiB to 5 GiB; a disk can only grow."]
    }


def test_second_bootable_disk_is_400(api_client):
    dc = make_data_center()
    vm, sd = make_vm(make_cluster(dc)), make_storage_domain(dc)
    DiskAttachment.objects.create(vm=vm, disk=make_disk(sd), bootable=True)

    response = api_client.post(
        reverse("api:disk-attachment-list"),
        {"vm": str(vm.pk), "disk": str(make_disk(sd).pk), "bootable": True},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"bootable": ["Disk attachment with this Vm and Bootable already exists."]}


def test_attach_read_only_is_refused_on_create(api_client):
    dc = make_data_center()
    vm, disk = make_vm(make_cluster(dc)), make_disk(make_storage_domain(dc))

    response = api_client.post(
        reverse("api:disk-attachment-list"), {"vm": str(vm.pk), "disk": str(disk.pk), "read_only": True}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"read_only": ["Attach the disk first, then make it read-only."]}
