"""Create / edit forms: valid data goes through the service, invalid data writes nothing."""

import pytest
from django.urls import reverse

from compute.choices import VmStatus
from compute.models import BLANK_TEMPLATE_ID, Template, VirtualMachine
from inventory.models import Cluster, DataCenter, Event, Host, Job
from networking.models import LogicalNetwork, VnicProfile
from storage.models import GIB, Disk, DiskAttachment, StorageDomain
from tests.factories import make_cluster, make_data_center, make_disk, make_host, make_storage_domain, make_vm


def form_errors(response) -> dict:
    return {name: list(errors) for name, errors in response.context["form"].errors.items()}


# Data centers -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_data_center(user_client, admin_user):
    response = user_client.post(
        reverse("portals:datacenter-add"),
        {"name": "Paris", "description": "HQ", "storage_type": "shared", "compatibility_version": "4.8"},
    )

    dc = DataCenter.objects.get(name="Paris")
    assert response.status_code == 302
    assert response["Location"] == dc.get_absolute_url()
    assert dc.networks.filter(name="ovirtmgmt").exists()
    assert Event.objects.filter(code="USER_ADD_STORAGE_POOL", data_center_id=dc.pk, user=admin_user).count() == 1
    page = user_client.get(response["Location"])
    assert "Data center Paris was created." in page.content.decode()


@pytest.mark.django_db
def test_invalid_data_center_writes_nothing(user_client):
    response = user_client.post(
        reverse("portals:datacenter-add"),
        {"name": "bad name", "storage_type": "shared", "compatibility_version": "4.8"},
    )

    assert response.status_code == 200
    assert form_errors(response) == {"name": ["Use letters, digits, '_', '-' and '.' only (as oVirt names do)."]}
    assert DataCenter.objects.count() == 0
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_edit_data_center_and_duplicate_name(user_client):
    dc = make_data_center(name="One")
    make_data_center(name="Two")
    url = reverse("portals:datacenter-edit", args=[dc.pk])
    data = {"name": "One", "description": "changed", "storage_type": "shared", "compatibility_version": "4.8"}

    assert user_client.get(url).status_code == 200
    saved = user_client.post(url, data)
    clash = user_client.post(url, {**data, "name": "Two"})

    assert saved.status_code == 302
    dc.refresh_from_db()
    assert (dc.name, dc.description) == ("One", "changed")
    assert clash.status_code == 200
    assert form_errors(clash) == {"name": ["Data center with this Name already exists."]}


@pytest.mark.django_db
def test_service_validation_error_is_attached_to_the_field(user_client):
    dc = make_data_center(name="One", storage_type="shared")
    make_cluster(dc)
    url = reverse("portals:datacenter-edit", args=[dc.pk])

    response = user_client.post(url, {"name": "One", "storage_type": "local", "compatibility_version": "4.8"})

    assert response.status_code == 200
    assert form_errors(response) == {
        "storage_type": ["The storage type cannot change once the data center has clusters."]
    }
    dc.refresh_from_db()
    assert dc.storage_type == "shared"


# Clusters and hosts -------------------------------------------------------------------------

CLUSTER_DATA = {
    "name": "Prod",
    "cpu_type": "QEMU x86_64",
    "memory_overcommit_percent": 100,
    "scheduling_policy": "evenly_distributed",
    "scheduling_properties": "",
    "migration_policy": "minimal_downtime",
    "migration_max_concurrent": 2,
    "migration_bandwidth_mibps": 0,
    "fencing_enabled": "on",
    "fencing_connectivity_threshold": 50,
    "max_vm_vcpus": 64,
    "max_vm_memory_mib": 262144,
}


@pytest.mark.django_db
def test_create_cluster_with_the_default_mac_pool(user_client):
    dc = make_data_center()
    page = user_client.get(reverse("portals:cluster-add"), {"data_center": dc.pk})
    mac_pool = page.context["form"].initial["mac_pool"]

    response = user_client.post(
        reverse("portals:cluster-add"), {**CLUSTER_DATA, "data_center": dc.pk, "mac_pool": mac_pool}
    )

    cluster = Cluster.objects.get(name="Prod")
    assert response.status_code == 302
    assert cluster.data_center == dc
    assert cluster.scheduling_properties == {}
    assert cluster.network_attachments.filter(network__name="ovirtmgmt").exists()


@pytest.mark.django_db
def test_invalid_cluster_shows_model_errors(user_client):
    dc = make_data_center()
    page = user_client.get(reverse("portals:cluster-add"))
    data = {
        **CLUSTER_DATA,
        "data_center": dc.pk,
        "mac_pool": page.context["form"].initial["mac_pool"],
        "memory_overcommit_percent": 50,
        "scheduling_properties": '{"Bogus": 1}',
    }

    response = user_client.post(reverse("portals:cluster-add"), data)

    assert response.status_code == 200
    assert form_errors(response) == {
        "memory_overcommit_percent": ["Ensure this value is greater than or equal to 100."],
        "scheduling_properties": [
            "Unknown property 'Bogus'; known: BalanceMarginPercent, CpuOverCommitDurationMinutes, HighUtilization, "
            "HighVmCount, HostsInReserve, LowUtilization, MaxFreeMemoryForOverUtilized, MigrationHoldOffMinutes, "
            "MigrationThreshold, MinFreeMemoryForUnderUtilized, SpmVmGrace."
        ],
    }
    assert Cluster.objects.count() == 0


@pytest.mark.django_db
def test_add_host_starts_a_job(user_client):
    cluster = make_cluster()

    response = user_client.post(
        reverse("portals:host-add"),
        {
            "cluster": cluster.pk,
            "name": "node1",
            "address": "node1.example.com",
            "agent_port": 54321,
            "simulated": "on",
        },
    )

    host = Host.objects.get(name="node1")
    job = Job.objects.get(host_id=host.pk)
    assert response.status_code == 302
    assert (host.status, host.simulated, job.action_type) == ("installing", True, "AddVds")
    page = user_client.get(response["Location"])
    assert f'Job started: <a href="{job.get_absolute_url()}" class="alert-link">' in page.content.decode()


@pytest.mark.django_db
def test_invalid_host_writes_nothing(user_client):
    cluster = make_cluster()

    response = user_client.post(
        reverse("portals:host-add"),
        {"cluster": cluster.pk, "name": "node1", "address": "node1", "agent_port": 70000},
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "agent_port": ["Ensure this value is less than or equal to 65535."],
    }
    assert Host.objects.count() == 0
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_host_power_management_needs_an_agent(user_client):
    cluster = make_cluster()

    response = user_client.post(
        reverse("portals:host-add"),
        {"cluster": cluster.pk, "name": "node1", "address": "node1", "agent_port": 54321, "pm_enabled": "on"},
    )

    assert form_errors(response) == {
        "pm_address": ["Power management needs a fence agent type and address when enabled."]
    }


@pytest.mark.django_db
def test_conflict_on_edit_is_a_banner_and_changes_nothing(user_client):
    host = make_host(name="node1", address="10.9.9.9", status="up")

    response = user_client.post(
        reverse("portals:host-edit", args=[host.pk]),
        {"name": "node1", "address": "10.9.9.10", "agent_port": 54321},
    )

    assert response.status_code == 200
    assert "Put the host in maintenance before changing its address or agent port." in response.content.decode()
    host.refresh_from_db()
    assert host.address == "10.9.9.9"


@pytest.mark.django_db
def test_edit_host_keeps_the_fence_password_when_left_empty(user_client):
    host = make_host(name="node1", status="maintenance", pm_enabled=True, pm_type="ipmilan", pm_address="bmc1")
    host.pm_password = "secret"
    host.save()

    response = user_client.post(
        reverse("portals:host-edit", args=[host.pk]),
        {
            "name": "node1",
            "description": "rack 4",
            "address": host.address,
            "agent_port": 54321,
            "pm_enabled": "on",
            "pm_type": "ipmilan",
            "pm_address": "bmc1",
            "pm_password": "",
        },
    )

    assert response.status_code == 302
    host.refresh_from_db()
    assert (host.description, host.pm_password) == ("rack 4", "secret")


# Virtual machines ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_vm_takes_the_blank_template_and_defaults(user_client):
    cluster = make_cluster()

    response = user_client.post(
        reverse("portals:vm-add"),
        {"cluster": cluster.pk, "name": "web1", "ha_priority": 1, "placement_policy": "migratable"},
    )

    vm = VirtualMachine.objects.get(name="web1")
    assert response.status_code == 302
    assert response["Location"] == vm.get_absolute_url()
    assert (str(vm.template_id), vm.memory_mib, vm.guaranteed_memory_mib, vm.vcpus, vm.os_type) == (
        BLANK_TEMPLATE_ID,
        1024,
        1024,
        1,
        "other",
    )


@pytest.mark.django_db
def test_new_vm_left_blank_takes_the_template_hardware(user_client):
    cluster = make_cluster()
    template = Template.objects.create(name="rhel9", cluster=cluster, vcpus=2, memory_mib=4096, os_type="rhel_9x64")
    page = user_client.get(reverse("portals:vm-add"), {"cluster": cluster.pk})
    form = page.context["form"]
    assert [form[name].value() for name in ("vcpus", "memory_mib", "os_type", "cluster")] == [
        None,
        None,
        None,
        str(cluster.pk),
    ]

    user_client.post(
        reverse("portals:vm-add"),
        {
            "cluster": cluster.pk,
            "template": template.pk,
            "name": "app1",
            "vcpus": "",
            "memory_mib": "",
            "os_type": "",
            "ha_priority": 1,
            "placement_policy": "migratable",
        },
    )

    vm = VirtualMachine.objects.get(name="app1")
    assert (vm.template, vm.vcpus, vm.memory_mib, vm.guaranteed_memory_mib, vm.os_type) == (
        template,
        2,
        4096,
        4096,
        "rhel_9x64",
    )


@pytest.mark.django_db
def test_new_vm_storage_allocation_is_thin_by_default_or_clone(user_client):
    cluster = make_cluster()
    template = Template.objects.create(name="golden", cluster=cluster)
    base = make_disk(make_storage_domain(cluster.data_center), template=template)
    page = user_client.get(reverse("portals:vm-add"))
    common = {"cluster": cluster.pk, "template": template.pk, "ha_priority": 1, "placement_policy": "migratable"}

    user_client.post(reverse("portals:vm-add"), {**common, "name": "thin1", "storage_allocation": "thin"})
    user_client.post(reverse("portals:vm-add"), {**common, "name": "clone1", "storage_allocation": "clone"})
    wrong = user_client.post(reverse("portals:vm-add"), {**common, "name": "what1", "storage_allocation": "fat"})

    field = page.context["form"]["storage_allocation"]
    assert (field.label, field.value()) == ("Storage allocation", "thin")
    assert '<option value="clone">Clone</option>' in page.content.decode()
    assert Disk.objects.get(attachments__vm__name="thin1").backing_disk_id == base.pk
    clone = Disk.objects.get(attachments__vm__name="clone1")
    assert (clone.backing_disk_id, clone.provisioned_size) == (None, base.provisioned_size)
    job = Job.objects.get(vm_id=clone.attachments.get().vm_id)
    assert list(job.steps.values_list("description", flat=True)) == ["Clone disk clone1_Disk1 from template disk"]
    assert form_errors(wrong) == {
        "storage_allocation": ["Select a valid choice. fat is not one of the available choices."]
    }
    assert not VirtualMachine.objects.filter(name="what1").exists()


@pytest.mark.django_db
def test_new_vm_with_all_fields(user_client):
    cluster = make_cluster()

    user_client.post(
        reverse("portals:vm-add"),
        {
            "cluster": cluster.pk,
            "name": "db1",
            "description": "database",
            "os_type": "rhel_9x64",
            "vcpus": 4,
            "memory_mib": 8192,
            "guaranteed_memory_mib": 4096,
            "ha_enabled": "on",
            "ha_priority": 100,
            "placement_policy": "pinned",
            "console_type": "spice",
        },
    )

    vm = VirtualMachine.objects.get(name="db1")
    assert (vm.description, vm.os_type, vm.vcpus, vm.memory_mib, vm.guaranteed_memory_mib) == (
        "database",
        "rhel_9x64",
        4,
        8192,
        4096,
    )
    assert (vm.ha_enabled, vm.ha_priority, vm.placement_policy, vm.console_type) == (True, 100, "pinned", "spice")


@pytest.mark.django_db
def test_invalid_vm_writes_nothing(user_client):
    cluster = make_cluster(max_vm_vcpus=8)

    response = user_client.post(
        reverse("portals:vm-add"),
        {
            "cluster": cluster.pk,
            "name": "web1",
            "vcpus": 16,
            "memory_mib": 1024,
            "guaranteed_memory_mib": 2048,
            "ha_priority": 1,
            "placement_policy": "migratable",
        },
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "guaranteed_memory_mib": ["Guaranteed memory cannot exceed the VM's memory."],
        "vcpus": [f"At most 8 vCPUs per VM in cluster {cluster.name}."],
    }
    assert VirtualMachine.objects.count() == 0
    assert Event.objects.filter(code="USER_ADD_VM").count() == 0


@pytest.mark.django_db
def test_duplicate_vm_name_from_the_service_is_a_field_error(user_client):
    cluster = make_cluster()
    make_vm(cluster, name="web1")

    response = user_client.post(
        reverse("portals:vm-add"),
        {"cluster": cluster.pk, "name": "web1", "ha_priority": 1, "placement_policy": "migratable"},
    )

    assert response.status_code == 200
    assert form_errors(response) == {"name": ["A VM named web1 already exists in this data center."]}
    assert VirtualMachine.objects.count() == 1


@pytest.mark.django_db
def test_edit_running_vm_marks_next_run_fields_and_saves_them_for_later(user_client):
    vm = make_vm(status=VmStatus.UP, name="web1", vcpus=2, memory_mib=2048, guaranteed_memory_mib=1024)
    url = reverse("portals:vm-edit", args=[vm.pk])

    page = user_client.get(url)
    form = page.context["form"]
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(vcpus=4, description="front end")
    data = {k: ("on" if v is True else v) for k, v in data.items() if v is not False}
    response = user_client.post(url, data)

    assert page.context["next_run_fields"] == [
        "console_type",
        "guaranteed_memory_mib",
        "initrd_path",
        "instance_type",
        "kernel_params",
        "kernel_path",
        "memory_mib",
        "os_type",
        "vcpus",
    ]
    assert "next run</span>" in page.content.decode()
    assert response.status_code == 302
    vm.refresh_from_db()
    assert (vm.vcpus, vm.description, vm.next_run_config) == (2, "front end", {"vcpus": 4})
    detail = user_client.get(response["Location"]).content.decode()
    assert "Changes waiting for the next run: vcpus." in detail


@pytest.mark.django_db
def test_edit_vm_has_no_cluster_or_template_fields(user_client):
    vm = make_vm(name="web1")

    page = user_client.get(reverse("portals:vm-edit", args=[vm.pk]))

    assert "cluster" not in page.context["form"].fields
    assert "template" not in page.context["form"].fields
    assert "storage_allocation" not in page.context["form"].fields
    assert page.context["next_run_fields"] == []


@pytest.mark.django_db
def test_new_vm_boot_options_left_empty_come_from_the_template(user_client):
    cluster = make_cluster()
    template = Template.objects.create(
        name="tiny", cluster=cluster, kernel_path="/var/images/vmlinuz", initrd_path="/var/images/initrd.img"
    )
    base = {"cluster": cluster.pk, "template": template.pk, "ha_priority": 1, "placement_policy": "migratable"}

    response = user_client.post(
        reverse("portals:vm-add"),
        {**base, "name": "t1", "kernel_path": "", "initrd_path": "", "kernel_params": "console=ttyS0"},
    )
    blank = user_client.post(
        reverse("portals:vm-add"),
        {**base, "template": "", "name": "t2", "initrd_path": "/var/images/initrd.img"},
    )

    vm = VirtualMachine.objects.get(name="t1")
    assert response.status_code == 302
    assert (vm.kernel_path, vm.initrd_path, vm.kernel_params) == (
        "/var/images/vmlinuz",
        "/var/images/initrd.img",
        "console=ttyS0",
    )
    detail = user_client.get(response["Location"]).content.decode()
    assert "kernel <code>/var/images/vmlinuz</code>, initrd <code>/var/images/initrd.img</code>" in detail
    assert "parameters <code>console=ttyS0</code>" in detail
    assert blank.status_code == 200
    assert form_errors(blank) == {"initrd_path": ["An initrd needs a kernel path (direct kernel boot)."]}
    assert not VirtualMachine.objects.filter(name="t2").exists()


# Templates, storage, networks ---------------------------------------------------------------


@pytest.mark.django_db
def test_create_template_and_invalid_template(user_client):
    cluster = make_cluster()
    good = user_client.post(
        reverse("portals:template-add"),
        {
            "name": "rhel9",
            "cluster": cluster.pk,
            "os_type": "rhel_9x64",
            "vcpus": 2,
            "memory_mib": 2048,
            "console_type": "vnc",
        },
    )
    bad = user_client.post(
        reverse("portals:template-add"),
        {"name": "", "os_type": "rhel_9x64", "vcpus": 2, "memory_mib": 64, "console_type": "vnc"},
    )

    template = Template.objects.get(name="rhel9")
    assert good.status_code == 302
    assert (template.cluster, template.memory_mib, template.version_number) == (cluster, 2048, 1)
    assert bad.status_code == 200
    assert form_errors(bad) == {
        "memory_mib": ["Ensure this value is greater than or equal to 128."],
        "name": ["Name the template (or choose a base template for a new version)."],
    }
    assert Template.objects.exclude(pk=BLANK_TEMPLATE_ID).count() == 1


@pytest.mark.django_db
def test_template_from_a_vm_prefills_its_hardware(user_client):
    vm = make_vm(name="golden", vcpus=4, memory_mib=4096, os_type="debian_12")

    page = user_client.get(reverse("portals:template-add"), {"vm": vm.pk})

    form = page.context["form"]
    assert (form["vcpus"].value(), form["memory_mib"].value(), form["os_type"].value()) == (4, 4096, "debian_12")
    assert "The template is made from VM" in page.content.decode()


@pytest.mark.django_db
def test_create_storage_domain_and_invalid_path(user_client):
    dc = make_data_center()
    data = {
        "name": "nfs1",
        "data_center": dc.pk,
        "type": "nfs",
        "role": "data",
        "path": "filer:/export/nfs1",
        "shared": "on",
        "max_overcommit_percent": 300,
        "critical_space_gib": 5,
        "warning_low_space_percent": 10,
    }

    good = user_client.post(reverse("portals:storagedomain-add"), data)
    bad = user_client.post(reverse("portals:storagedomain-add"), {**data, "name": "nfs2", "path": "/no/server"})

    assert good.status_code == 302
    sd = StorageDomain.objects.get(name="nfs1")
    assert Job.objects.filter(storage_domain_id=sd.pk, action_type="AddStorageDomain").count() == 1
    assert bad.status_code == 200
    assert form_errors(bad) == {"path": ["An NFS domain needs an export as server:/path."]}
    assert StorageDomain.objects.count() == 1


@pytest.mark.django_db
def test_create_disk_attached_to_a_vm(user_client):
    vm = make_vm(name="web1")
    sd = make_storage_domain(vm.data_center)
    page = user_client.get(reverse("portals:disk-add"), {"vm": vm.pk})
    assert page.context["form"]["alias"].value() == "web1_Disk1"

    response = user_client.post(
        reverse("portals:disk-add"),
        {
            "alias": "web1_Disk1",
            "storage_domain": sd.pk,
            "size_gib": "10",
            "format": "qcow2",
            "allocation": "thin",
            "vm": vm.pk,
            "interface": "virtio",
            "bootable": "on",
        },
    )

    disk = Disk.objects.get(alias="web1_Disk1")
    assert response.status_code == 302
    assert disk.provisioned_size == 10 * GIB
    attachment = DiskAttachment.objects.get(disk=disk)
    assert (attachment.vm, attachment.bootable) == (vm, True)


@pytest.mark.django_db
def test_invalid_disk_writes_nothing(user_client):
    sd = make_storage_domain()

    response = user_client.post(
        reverse("portals:disk-add"),
        {
            "alias": "d1",
            "storage_domain": sd.pk,
            "size_gib": "1",
            "format": "qcow2",
            "allocation": "preallocated",
            "interface": "virtio",
        },
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "allocation": ["On file storage a preallocated disk is raw; qcow2 disks are thin."]
    }
    assert Disk.objects.count() == 0


@pytest.mark.django_db
def test_disk_grows_and_cannot_shrink(user_client):
    from tests.factories import make_disk

    disk = make_disk(alias="d1", provisioned_size=10 * GIB)
    url = reverse("portals:disk-edit", args=[disk.pk])

    grown = user_client.post(url, {"alias": "d1", "size_gib": "20"})
    shrunk = user_client.post(url, {"alias": "d1", "size_gib": "5"})

    assert grown.status_code == 302
    disk.refresh_from_db()
    assert disk.provisioned_size == 20 * GIB
    assert shrunk.status_code == 200
    assert form_errors(shrunk) == {"size_gib": ["Disk d1 cannot shrink from 20 GiB to 5 GiB; a disk can only grow."]}


@pytest.mark.django_db
def test_create_network_attached_to_clusters(user_client):
    cluster = make_cluster()

    response = user_client.post(
        reverse("portals:network-add"),
        {
            "data_center": cluster.data_center_id,
            "name": "vmnet",
            "vlan_tag": 20,
            "mtu": 0,
            "vm_network": "on",
            "required": "on",
            "clusters": [cluster.pk],
        },
    )

    network = LogicalNetwork.objects.get(name="vmnet")
    assert response.status_code == 302
    assert list(network.cluster_attachments.values_list("cluster", flat=True)) == [cluster.pk]
    assert list(network.vnic_profiles.values_list("name", flat=True)) == ["vmnet"]


@pytest.mark.django_db
def test_invalid_network_writes_nothing(user_client):
    dc = make_data_center()

    response = user_client.post(
        reverse("portals:network-add"), {"data_center": dc.pk, "name": "a-much-too-long-bridge-name", "mtu": 20}
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "name": ["Ensure this value has at most 15 characters (it has 27)."],
        "mtu": ["MTU must be 0 (default) or from 68 to 9000."],
    }
    assert LogicalNetwork.objects.filter(data_center=dc).count() == 1  # ovirtmgmt only


@pytest.mark.django_db
def test_vnic_profile_create_and_invalid(user_client):
    dc = make_data_center()
    network = LogicalNetwork.objects.get(data_center=dc, name="ovirtmgmt")

    good = user_client.post(
        reverse("portals:vnicprofile-add"), {"network": network.pk, "name": "mirror", "port_mirroring": "on"}
    )
    bad = user_client.post(
        reverse("portals:vnicprofile-add"),
        {"network": network.pk, "name": "both", "port_mirroring": "on", "pass_through": "on"},
    )

    profile = VnicProfile.objects.get(name="mirror")
    assert good.status_code == 302
    assert good["Location"] == reverse("portals:vnicprofile-detail", args=[profile.pk])
    assert bad.status_code == 200
    assert form_errors(bad) == {"pass_through": ["A pass-through profile cannot mirror ports."]}
    assert not VnicProfile.objects.filter(name="both").exists()


@pytest.mark.django_db
def test_template_boot_options_are_edited_and_shown(user_client):
    template = Template.objects.create(name="tiny")
    url = reverse("portals:template-edit", args=[template.pk])
    page = user_client.get(url)
    form = page.context["form"]
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}

    bad = user_client.post(url, {**data, "kernel_params": "console=ttyS0"})
    good = user_client.post(url, {**data, "kernel_path": "/var/images/vmlinuz", "kernel_params": "console=ttyS0"})

    assert form_errors(bad) == {"kernel_params": ["Kernel parameters need a kernel path (direct kernel boot)."]}
    assert good.status_code == 302
    template.refresh_from_db()
    assert (template.kernel_path, template.initrd_path, template.kernel_params) == (
        "/var/images/vmlinuz",
        "",
        "console=ttyS0",
    )
    detail = user_client.get(template.get_absolute_url()).content.decode()
    assert "kernel <code>/var/images/vmlinuz</code>, parameters <code>console=ttyS0</code>" in detail
