"""The rows of a VM's tabs: network interfaces (new / edit / remove), snapshots (revert /
delete) and disks (detach / remove). Destructive actions are confirmed first; refusals of
the services come back as banners, field errors as form errors."""

import pytest
from django.urls import reverse

from compute.choices import SnapshotStatus, VmStatus
from compute.models import Snapshot
from inventory.models import Event, Job
from networking.models import ClusterNetwork, VmNic
from networking.services import create_network, create_nic
from storage.models import Disk, DiskAttachment
from tests.factories import make_cluster, make_disk, make_storage_domain, make_vm

MISSING = "00000000-0000-0000-0000-000000000001"


def banner(client, url) -> str:
    return client.get(url).content.decode()


def form_errors(response) -> dict:
    return {name: list(errors) for name, errors in response.context["form"].errors.items()}


def tab(vm, name: str) -> str:
    return f"{vm.get_absolute_url()}?tab={name}"


@pytest.fixture
def lab(db):
    """VM web1 (down) in a cluster with network vmnet attached; network other of the same
    data center is not attached to the cluster."""
    cluster = make_cluster(name="Prod")
    vmnet = create_network(user=None, data_center=cluster.data_center, name="vmnet", vlan_tag=10, clusters=[cluster])
    other = create_network(user=None, data_center=cluster.data_center, name="other", vlan_tag=20)
    vm = make_vm(cluster, name="web1")
    return {
        "cluster": cluster,
        "vm": vm,
        "profile": vmnet.vnic_profiles.get(),
        "other_profile": other.vnic_profiles.get(),
    }


def nic_data(**overrides) -> dict:
    data = {"name": "", "profile": "", "interface": "virtio", "mac": "", "linked": "on", "plugged": "on"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


# Network interfaces -------------------------------------------------------------------------


def test_nics_tab_offers_new_edit_and_remove(user_client, lab):
    vm = lab["vm"]
    nic, _ = create_nic(vm, user=None, name="nic1", profile=lab["profile"])

    body = user_client.get(vm.get_absolute_url(), {"tab": "nics"}).content.decode()

    add_url = reverse("portals:vm-nic-add", args=[vm.pk])
    edit_url = reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk])
    assert f'href="{add_url}"><i class="bi bi-plus-lg"></i> New network interface' in body
    assert f'href="{edit_url}"><i class="bi bi-pencil"></i> Edit</a>' in body
    assert f'href="{reverse("portals:vm-nic-action", args=[vm.pk, nic.pk, "remove"])}"' in body


def test_new_nic_page_defaults_the_name_and_offers_the_cluster_profiles(user_client, lab):
    vm = lab["vm"]
    create_nic(vm, user=None, name="nic1")

    response = user_client.get(reverse("portals:vm-nic-add", args=[vm.pk]))

    assert response.status_code == 200
    form = response.context["form"]
    assert form["name"].value() == "nic2"
    assert [str(label) for _, label in form.fields["profile"].choices] == [
        "No network",
        "ovirtmgmt (ovirtmgmt)",
        "vmnet (vmnet)",
    ]
    assert "A network interface of VM" in response.content.decode()


def test_new_nic_on_a_vm_that_is_down_takes_a_mac_from_the_pool(user_client, lab, admin_user):
    vm = lab["vm"]

    response = user_client.post(
        reverse("portals:vm-nic-add", args=[vm.pk]), nic_data(profile=lab["profile"].pk, interface="e1000")
    )

    assert response.status_code == 302
    assert response["Location"] == tab(vm, "nics")
    nic = VmNic.objects.get(vm=vm)
    assert (nic.name, nic.profile, nic.interface, nic.mac, nic.linked, nic.plugged) == (
        "nic1",
        lab["profile"],
        "e1000",
        "56:6f:1a:2b:00:00",
        True,
        True,
    )
    assert Job.objects.count() == 0
    assert Event.objects.filter(code="NETWORK_ADD_VM_INTERFACE", user=admin_user).count() == 1
    assert "Network interface nic1 was added to VM web1." in banner(user_client, response["Location"])


def test_new_nic_on_a_running_vm_is_hot_plugged_as_a_job(user_client, lab):
    vm = make_vm(lab["cluster"], status=VmStatus.UP, name="web2")

    response = user_client.post(
        reverse("portals:vm-nic-add", args=[vm.pk]),
        nic_data(name="eth0", profile=lab["profile"].pk, mac="56:6F:1A:2B:10:01", linked=None),
    )

    assert response.status_code == 302
    nic = VmNic.objects.get(vm=vm)
    assert (nic.name, nic.mac, nic.linked) == ("eth0", "56:6f:1a:2b:10:01", False)
    job = Job.objects.get()
    assert job.action_type == "ActivateVmNic"
    assert (
        f'Network interface eth0 was added to VM web2. Job started: <a href="{job.get_absolute_url()}" '
        f'class="alert-link">Hot-plugging NIC eth0 into VM web2</a>.'
    ) in banner(user_client, response["Location"])


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"mac": "zz:zz"}, {"mac": ["'zz:zz' is not a MAC address like 56:6f:1a:2b:00:01."]}),
        (
            {"mac": "57:00:00:00:00:01"},
            {"mac": ["57:00:00:00:00:01 is a multicast address; a NIC needs a unicast MAC."]},
        ),
        ({"name": "nic1"}, {"name": ["VM web1 already has a NIC named nic1."]}),
        ({"name": "bad name"}, {"name": ["Use letters, digits, '_', '-' and '.' only (as oVirt names do)."]}),
        (
            {"mac": "56:6f:1a:2b:00:00"},
            {"mac": ["MAC 56:6f:1a:2b:00:00 is already used by NIC nic1 of VM web1 (pool Default)."]},
        ),
        (
            {"interface": "token_ring"},
            {"interface": ["Select a valid choice. token_ring is not one of the available choices."]},
        ),
    ],
)
def test_invalid_new_nic_shows_field_errors_and_writes_nothing(user_client, lab, overrides, errors):
    vm = lab["vm"]
    create_nic(vm, user=None, name="nic1")

    response = user_client.post(reverse("portals:vm-nic-add", args=[vm.pk]), nic_data(**overrides))

    assert response.status_code == 200
    assert form_errors(response) == errors
    assert list(VmNic.objects.filter(vm=vm).values_list("name", flat=True)) == ["nic1"]


def test_profile_of_a_network_outside_the_cluster_is_not_a_choice(user_client, lab):
    vm = lab["vm"]

    response = user_client.post(reverse("portals:vm-nic-add", args=[vm.pk]), nic_data(profile=lab["other_profile"].pk))

    assert response.status_code == 200
    assert form_errors(response) == {
        "profile": ["Select a valid choice. That choice is not one of the available choices."]
    }
    assert not VmNic.objects.exists()


def test_edit_nic_link_state_and_profile_of_a_running_vm(user_client, lab):
    vm = make_vm(lab["cluster"], status=VmStatus.UP, name="web2")
    nic, _ = create_nic(vm, user=None, name="nic1")
    url = reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk])

    page = user_client.get(url)
    assert page.status_code == 200
    assert page.context["form"]["name"].value() == "nic1"
    assert "The VM is running (Up)" in page.content.decode()
    response = user_client.post(url, nic_data(name="nic1", profile=lab["profile"].pk, mac=nic.mac, linked=None))

    assert response.status_code == 302
    assert response["Location"] == tab(vm, "nics")
    nic.refresh_from_db()
    assert (nic.profile, nic.linked) == (lab["profile"], False)
    job = Job.objects.get(action_type="UpdateVmInterface")
    assert f'Network interface nic1 was saved on VM web2. Job started: <a href="{job.get_absolute_url()}"' in banner(
        user_client, response["Location"]
    )


def test_edit_nic_keeps_a_profile_whose_network_left_the_cluster(user_client, lab):
    vm = lab["vm"]
    nic, _ = create_nic(vm, user=None, name="nic1", profile=lab["profile"])
    ClusterNetwork.objects.filter(cluster=lab["cluster"], network=lab["profile"].network).delete()

    response = user_client.post(
        reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk]),
        nic_data(name="lan0", profile=lab["profile"].pk, mac=nic.mac),
    )

    assert response.status_code == 302
    nic.refresh_from_db()
    assert (nic.name, nic.profile) == ("lan0", lab["profile"])


def test_edit_nic_refused_on_a_running_vm_is_a_banner(user_client, lab):
    vm = make_vm(lab["cluster"], status=VmStatus.UP, name="web2")
    nic, _ = create_nic(vm, user=None, name="nic1")

    response = user_client.post(
        reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk]), nic_data(name="nic1", mac=nic.mac, interface="e1000")
    )

    assert response.status_code == 200
    assert (
        "NIC nic1 is plugged into running VM web2: unplug first to change its interface or MAC."
        in response.content.decode()
    )
    nic.refresh_from_db()
    assert nic.interface == "virtio"


def test_edit_nic_needs_a_mac(user_client, lab):
    vm = lab["vm"]
    nic, _ = create_nic(vm, user=None, name="nic1")

    response = user_client.post(reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk]), nic_data(name="nic1"))

    assert response.status_code == 200
    assert form_errors(response) == {"mac": ["This field is required."]}


def test_remove_nic_is_confirmed_then_done(user_client, lab):
    vm = lab["vm"]
    nic, _ = create_nic(vm, user=None, name="nic1")
    url = reverse("portals:vm-nic-action", args=[vm.pk, nic.pk, "remove"])

    confirm = user_client.get(url)
    assert confirm.status_code == 200
    assert "Are you sure you want to remove network interface nic1 from VM web1?" in confirm.content.decode()
    assert VmNic.objects.filter(pk=nic.pk).exists()

    response = user_client.post(url)

    assert response.status_code == 302
    assert response["Location"] == tab(vm, "nics")
    assert not VmNic.objects.filter(pk=nic.pk).exists()
    assert "Network interface nic1 was removed from VM web1." in banner(user_client, response["Location"])


def test_remove_nic_plugged_into_a_running_vm_is_refused(user_client, lab):
    vm = make_vm(lab["cluster"], status=VmStatus.UP, name="web2")
    nic, _ = create_nic(vm, user=None, name="nic1")

    response = user_client.post(reverse("portals:vm-nic-action", args=[vm.pk, nic.pk, "remove"]))

    assert response["Location"] == tab(vm, "nics")
    assert "NIC nic1 is plugged into running VM web2: unplug first." in banner(user_client, response["Location"])
    assert VmNic.objects.filter(pk=nic.pk).exists()


def test_nic_pages_of_a_missing_vm_or_nic_are_404(user_client, lab):
    vm = lab["vm"]
    other = make_vm(lab["cluster"], name="web3")
    nic, _ = create_nic(other, user=None, name="nic1")

    assert user_client.get(reverse("portals:vm-nic-add", args=[MISSING])).status_code == 404
    assert user_client.post(reverse("portals:vm-nic-add", args=[MISSING]), nic_data()).status_code == 404
    assert user_client.get(reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk])).status_code == 404
    assert user_client.get(reverse("portals:vm-nic-edit", args=[vm.pk, MISSING])).status_code == 404
    assert user_client.post(reverse("portals:vm-nic-action", args=[vm.pk, nic.pk, "remove"])).status_code == 404
    assert user_client.post(reverse("portals:vm-nic-action", args=[other.pk, nic.pk, "explode"])).status_code == 404
    assert VmNic.objects.filter(pk=nic.pk).exists()


# Snapshots ----------------------------------------------------------------------------------


def test_snapshots_tab_offers_revert_and_delete(user_client, lab):
    vm = lab["vm"]
    snapshot = Snapshot.objects.create(vm=vm, description="before")

    body = user_client.get(vm.get_absolute_url(), {"tab": "snapshots"}).content.decode()

    for action in ("revert", "remove"):
        assert f'href="{reverse("portals:vm-snapshot-action", args=[vm.pk, snapshot.pk, action])}"' in body


def test_revert_to_snapshot_is_confirmed_then_a_job(user_client, lab):
    vm = lab["vm"]
    snapshot = Snapshot.objects.create(vm=vm, description="before")
    url = reverse("portals:vm-snapshot-action", args=[vm.pk, snapshot.pk, "revert"])

    confirm = user_client.get(url).content.decode()
    assert "Are you sure you want to revert VM web1 to snapshot &#x27;before&#x27;?" in confirm
    assert "The VM must be down. The current state of its disks is lost" in confirm
    assert Job.objects.count() == 0

    response = user_client.post(url)

    assert response["Location"] == tab(vm, "snapshots")
    vm.refresh_from_db()
    snapshot.refresh_from_db()
    job = Job.objects.get()
    assert (job.action_type, vm.status, snapshot.status) == (
        "RestoreAllSnapshots",
        VmStatus.IMAGE_LOCKED,
        SnapshotStatus.LOCKED,
    )
    assert (
        f'Revert: before. Job started: <a href="{job.get_absolute_url()}" class="alert-link">'
        "Reverting VM web1 to snapshot &#x27;before&#x27;</a>."
    ) in banner(user_client, response["Location"])


def test_revert_of_a_running_vm_is_refused(user_client, lab):
    vm = make_vm(lab["cluster"], status=VmStatus.UP, name="web2")
    snapshot = Snapshot.objects.create(vm=vm, description="before")

    response = user_client.post(reverse("portals:vm-snapshot-action", args=[vm.pk, snapshot.pk, "revert"]))

    assert response["Location"] == tab(vm, "snapshots")
    assert "VM web2 is &#x27;up&#x27;; shut it down before reverting to a snapshot." in banner(
        user_client, response["Location"]
    )
    assert Job.objects.count() == 0


def test_delete_snapshot_is_confirmed_then_a_job(user_client, lab):
    vm = lab["vm"]
    snapshot = Snapshot.objects.create(vm=vm, description="before")
    url = reverse("portals:vm-snapshot-action", args=[vm.pk, snapshot.pk, "remove"])

    confirm = user_client.get(url).content.decode()
    assert "Are you sure you want to delete snapshot &#x27;before&#x27; of VM web1?" in confirm
    assert "This cannot be undone." in confirm

    response = user_client.post(url)

    snapshot.refresh_from_db()
    job = Job.objects.get()
    assert (job.action_type, snapshot.status) == ("RemoveSnapshot", SnapshotStatus.LOCKED)
    assert f'Delete: before. Job started: <a href="{job.get_absolute_url()}"' in banner(
        user_client, response["Location"]
    )


def test_delete_of_a_locked_snapshot_is_refused(user_client, lab):
    vm = lab["vm"]
    snapshot = Snapshot.objects.create(vm=vm, description="busy", status=SnapshotStatus.LOCKED)

    response = user_client.post(reverse("portals:vm-snapshot-action", args=[vm.pk, snapshot.pk, "remove"]))

    assert "Snapshot &#x27;busy&#x27; is &#x27;locked&#x27;." in banner(user_client, response["Location"])
    assert Job.objects.count() == 0


def test_snapshot_actions_need_a_confirmation_post_and_the_right_vm(user_client, lab):
    vm = lab["vm"]
    other = make_vm(lab["cluster"], name="web3")
    snapshot = Snapshot.objects.create(vm=other, description="theirs")

    def url(vm_id, snapshot_id, action):
        return reverse("portals:vm-snapshot-action", args=[vm_id, snapshot_id, action])

    assert user_client.get(url(other.pk, snapshot.pk, "revert")).status_code == 200
    assert user_client.post(url(vm.pk, snapshot.pk, "revert")).status_code == 404
    assert user_client.post(url(other.pk, MISSING, "revert")).status_code == 404
    assert user_client.post(url(other.pk, snapshot.pk, "nope")).status_code == 404
    snapshot.refresh_from_db()
    assert (snapshot.status, Job.objects.count()) == (SnapshotStatus.OK, 0)


# Disks --------------------------------------------------------------------------------------


@pytest.fixture
def attached(lab):
    """Disks boot (bootable) and data of VM web1 on a storage domain of its data center."""
    vm = lab["vm"]
    sd = make_storage_domain(vm.data_center, name="data1")
    boot = DiskAttachment.objects.create(vm=vm, disk=make_disk(sd, alias="web1_Disk1"), bootable=True)
    data = DiskAttachment.objects.create(vm=vm, disk=make_disk(sd, alias="web1_Disk2"))
    return {"vm": vm, "boot": boot, "data": data}


def test_disks_tab_offers_detach_and_remove(user_client, attached):
    vm, data = attached["vm"], attached["data"]

    body = user_client.get(vm.get_absolute_url(), {"tab": "disks"}).content.decode()

    for action in ("detach", "remove"):
        assert f'href="{reverse("portals:vm-disk-action", args=[vm.pk, data.pk, action])}"' in body


def test_detach_disk_is_confirmed_then_done_and_the_disk_stays(user_client, attached):
    vm, data = attached["vm"], attached["data"]
    url = reverse("portals:vm-disk-action", args=[vm.pk, data.pk, "detach"])

    confirm = user_client.get(url).content.decode()
    assert "Are you sure you want to detach disk web1_Disk2 from VM web1?" in confirm
    assert DiskAttachment.objects.filter(pk=data.pk).exists()

    response = user_client.post(url)

    assert response["Location"] == tab(vm, "disks")
    assert not DiskAttachment.objects.filter(pk=data.pk).exists()
    assert Disk.objects.filter(alias="web1_Disk2").exists()
    assert "Disk web1_Disk2 was detached from VM web1." in banner(user_client, response["Location"])


def test_detach_from_a_running_vm_unplugs_as_a_job_but_not_the_boot_disk(user_client, attached):
    vm, boot, data = attached["vm"], attached["boot"], attached["data"]
    type(vm).objects.filter(pk=vm.pk).update(status=VmStatus.UP)

    refused = user_client.post(reverse("portals:vm-disk-action", args=[vm.pk, boot.pk, "detach"]))
    assert "Disk web1_Disk1 is the boot disk of running VM web1: it stays plugged." in banner(
        user_client, refused["Location"]
    )
    detached = user_client.post(reverse("portals:vm-disk-action", args=[vm.pk, data.pk, "detach"]))

    job = Job.objects.get()
    assert job.action_type == "DetachDiskFromVm"
    assert f'Detach: web1_Disk2. Job started: <a href="{job.get_absolute_url()}"' in banner(
        user_client, detached["Location"]
    )


def test_remove_disk_from_the_vm_tab_is_confirmed_then_a_job(user_client, attached):
    vm, data = attached["vm"], attached["data"]
    url = reverse("portals:vm-disk-action", args=[vm.pk, data.pk, "remove"])

    confirm = user_client.get(url).content.decode()
    assert "Are you sure you want to remove disk web1_Disk2 of VM web1?" in confirm
    assert "This cannot be undone." in confirm

    response = user_client.post(url)

    assert response["Location"] == tab(vm, "disks")
    assert not Disk.objects.filter(alias="web1_Disk2").exists()
    job = Job.objects.get()
    assert job.action_type == "RemoveDisk"
    assert f'Remove: web1_Disk2. Job started: <a href="{job.get_absolute_url()}"' in banner(
        user_client, response["Location"]
    )


def test_remove_disk_of_a_running_vm_is_refused(user_client, attached):
    vm, data = attached["vm"], attached["data"]
    type(vm).objects.filter(pk=vm.pk).update(status=VmStatus.UP)

    response = user_client.post(reverse("portals:vm-disk-action", args=[vm.pk, data.pk, "remove"]))

    assert "Disk web1_Disk2 is attached to VM(s) web1 that are not down." in banner(user_client, response["Location"])
    assert Disk.objects.filter(alias="web1_Disk2").exists()


def test_disk_actions_of_another_vm_are_404(user_client, attached, lab):
    other = make_vm(lab["cluster"], name="web3")
    data = attached["data"]

    assert user_client.get(reverse("portals:vm-disk-action", args=[other.pk, data.pk, "detach"])).status_code == 404
    assert user_client.post(reverse("portals:vm-disk-action", args=[other.pk, data.pk, "remove"])).status_code == 404
    assert DiskAttachment.objects.filter(pk=data.pk).exists()


# Access -------------------------------------------------------------------------------------


def test_anonymous_and_non_staff_cannot_act_on_rows(client, plain_user_client, attached):
    vm, data = attached["vm"], attached["data"]
    urls = [
        reverse("portals:vm-disk-action", args=[vm.pk, data.pk, "detach"]),
        reverse("portals:vm-nic-add", args=[vm.pk]),
    ]

    for url in urls:
        anonymous = client.post(url, nic_data())
        assert anonymous.status_code == 302
        assert anonymous["Location"].startswith(reverse("portals:login"))
        assert plain_user_client.post(url, nic_data()).status_code == 403
    assert DiskAttachment.objects.filter(pk=data.pk).exists()
    assert not VmNic.objects.exists()
