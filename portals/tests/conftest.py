"""Fixtures of the portal tests: one of every object the portal shows, and clients."""

import pytest
from django.test import Client

from compute.choices import VmStatus
from compute.models import Snapshot
from inventory.audit import create_job, record_event
from networking.services import create_network, create_nic
from storage.models import DiskAttachment
from tests.factories import (
    make_cluster,
    make_data_center,
    make_disk,
    make_host,
    make_storage_domain,
    make_vm,
)


def build_inventory(suffix: str = "") -> dict:
    """One of every object the portal shows; `suffix` keeps the names of a second set unique."""
    from compute.models import Template

    dc = make_data_center(name=f"DC1{suffix}")
    cluster = make_cluster(dc, name="Default")
    host = make_host(cluster, name=f"host-01{suffix}")
    vm = make_vm(cluster, status=VmStatus.UP, run_on_host=host, name="web-01", memory_mib=2048, vcpus=2)
    vm_down = make_vm(cluster, name="db-01")
    sd = make_storage_domain(dc, name=f"data1{suffix}")
    disk = make_disk(sd, alias="web-01_Disk1")
    DiskAttachment.objects.create(vm=vm, disk=disk, bootable=True)
    network = create_network(user=None, data_center=dc, name="vmnet", vlan_tag=10, clusters=[cluster])
    profile = network.vnic_profiles.get()
    nic, _ = create_nic(vm_down, user=None, name="nic1", profile=profile)
    template = Template.objects.create(
        name=f"rhel9{suffix}", cluster=cluster, memory_mib=2048, vcpus=2, os_type="rhel_9x64"
    )
    snapshot = Snapshot.objects.create(vm=vm, description="before upgrade")
    job = create_job("RunVm", f"Launching VM {vm.name}", obj=vm, steps=["Choose a host", "Start the VM"])
    event = record_event("USER_STARTED_VM", f"VM {vm.name} was started by admin.", obj=vm)
    return {
        "dc": dc,
        "cluster": cluster,
        "host": host,
        "vm": vm,
        "vm_down": vm_down,
        "sd": sd,
        "disk": disk,
        "network": network,
        "profile": profile,
        "nic": nic,
        "template": template,
        "snapshot": snapshot,
        "job": job,
        "event": event,
    }


@pytest.fixture
def seeded(db):
    """A data center with a cluster, a host running one VM, storage, a network, a job and events."""
    return build_inventory()


@pytest.fixture
def plain_user_client(django_user_model):
    """A logged-in user who is not staff (a VM portal user)."""
    user = django_user_model.objects.create_user(username="alice", password="alice-password-123")
    client = Client()
    client.force_login(user)
    return client
