"""Pinned query counts: a page costs the same at 3 objects as at 30 (no N+1).

Every page pays 2 queries for the session and the user, 2 for the system tree (data
centers and clusters: hosts and VMs are fetched when their node is opened) and 2 for the
bottom panes; the numbers below are the whole page. The detail page of a cluster, host or
VM also shows its branch of the tree expanded: one query for the first hosts of the
cluster, one for the first VMs of the host.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.choices import VmStatus
from compute.models import Snapshot
from inventory.audit import create_job, record_event
from inventory.models import Host
from networking.services import create_network, create_nic
from storage.models import DiskAttachment
from tests.factories import make_cluster, make_data_center, make_disk, make_host, make_storage_domain, make_vm

VM_LIST_QUERIES = 10  # + count + page of VMs + the cluster and data center selects (the host filter is a text box)
HOST_LIST_QUERIES = 10  # + count + page of hosts + the cluster and data center selects
DASHBOARD_QUERIES = 12  # + 3 totals + hosts and VMs by cluster and status + the clusters
VM_DETAIL_QUERIES = 8  # + the VM with its cluster, data center, host, template... + its cluster's hosts (tree)
RUNNING_VM_DETAIL_QUERIES = VM_DETAIL_QUERIES + 1  # + the VMs of its host (tree)
HOST_DETAIL_QUERIES = 9  # + the host + its cluster's hosts + its VMs (tree)
CLUSTER_DETAIL_QUERIES = 8  # + the cluster + its hosts (tree)
VM_NIC_FORM_QUERIES = 9  # + the VM + its NICs (the next name) or the NIC + the profiles of its cluster
TREE_PARTIAL_QUERIES = 4  # session + user + the cluster (host) + its first hosts (VMs) with the counts


def count_queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(captured.captured_queries)


def grow(total_vms: int, clusters: int = 1, hosts_per_cluster: int = 2) -> None:
    """Data centers, clusters, hosts and running VMs, with events and jobs, in proportion."""
    dc = make_data_center()
    hosts = []
    for _ in range(clusters):
        cluster = make_cluster(dc)
        hosts += [make_host(cluster) for _ in range(hosts_per_cluster)]
    for number in range(total_vms):
        host = hosts[number % len(hosts)]
        vm = make_vm(host.cluster, status=VmStatus.UP if number % 3 else VmStatus.DOWN, run_on_host=host)
        if vm.status != VmStatus.UP:
            vm.run_on_host = None
            vm.save(update_fields=["run_on_host"])
        record_event("USER_ADD_VM", f"VM {vm.name} was added.", obj=vm)
        if number % 5 == 0:
            create_job("RunVm", f"Launching VM {vm.name}", obj=vm, steps=["one", "two"])


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_vm_list_query_count_does_not_grow(user_client, size):
    grow(size, clusters=2)

    assert count_queries(user_client, reverse("portals:vm-list")) == VM_LIST_QUERIES
    assert count_queries(user_client, reverse("portals:vm-list"), {"q": "status=up and cluster=c*"}) == (
        VM_LIST_QUERIES
    )


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_host_list_query_count_does_not_grow(user_client, size):
    grow(size, clusters=size // 3 + 1, hosts_per_cluster=3)

    assert count_queries(user_client, reverse("portals:host-list")) == HOST_LIST_QUERIES


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_dashboard_query_count_does_not_grow(user_client, size):
    grow(size, clusters=size // 3 + 1)

    assert count_queries(user_client, reverse("portals:dashboard")) == DASHBOARD_QUERIES


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_vm_detail_tabs_query_count_does_not_grow(user_client, size):
    grow(size)
    vm = make_vm(make_cluster(), name="target")
    record_event("USER_ADD_VM", "VM target was added.", obj=vm)
    url = reverse("portals:vm-detail", args=[vm.pk])

    assert count_queries(user_client, url) == VM_DETAIL_QUERIES
    assert count_queries(user_client, url, {"tab": "events"}) == VM_DETAIL_QUERIES + 2  # count + page


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_vm_row_tabs_query_count_does_not_grow(user_client, size):
    """The disks, network interfaces and snapshots tabs, with their per-row action links."""
    cluster = make_cluster()
    vm = make_vm(cluster, name="target")
    sd = make_storage_domain(cluster.data_center)
    profile = create_network(
        user=None, data_center=cluster.data_center, name="vmnet", vlan_tag=10, clusters=[cluster]
    ).vnic_profiles.get()
    for number in range(size):
        DiskAttachment.objects.create(vm=vm, disk=make_disk(sd), bootable=number == 0)
        create_nic(vm, user=None, profile=profile)
        Snapshot.objects.create(vm=vm, description=f"snap{number}")
    url = reverse("portals:vm-detail", args=[vm.pk])

    for tab in ("disks", "nics", "snapshots"):
        assert count_queries(user_client, url, {"tab": tab}) == VM_DETAIL_QUERIES + 2, tab  # count + page


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_vm_nic_form_query_count_does_not_grow(user_client, size):
    cluster = make_cluster()
    vm = make_vm(cluster, name="target")
    for number in range(size):
        create_network(user=None, data_center=cluster.data_center, name=f"net{number}", clusters=[cluster])
    nic, _ = create_nic(vm, user=None)

    assert count_queries(user_client, reverse("portals:vm-nic-add", args=[vm.pk])) == VM_NIC_FORM_QUERIES
    assert count_queries(user_client, reverse("portals:vm-nic-edit", args=[vm.pk, nic.pk])) == VM_NIC_FORM_QUERIES


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_detail_pages_with_their_tree_branch_cost_the_same_with_more_rows(user_client, size):
    grow(size, clusters=1, hosts_per_cluster=size // 3 + 1)
    host = Host.objects.filter(running_vms__isnull=False).order_by("name").last()  # one of many, with VMs
    vm = host.running_vms.order_by("name").last()

    assert count_queries(user_client, reverse("portals:vm-detail", args=[vm.pk])) == RUNNING_VM_DETAIL_QUERIES
    assert count_queries(user_client, reverse("portals:host-detail", args=[host.pk])) == HOST_DETAIL_QUERIES
    assert count_queries(user_client, reverse("portals:cluster-detail", args=[host.cluster_id])) == (
        CLUSTER_DETAIL_QUERIES
    )


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 30])
def test_tree_partials_cost_the_same_with_more_rows(user_client, size):
    grow(size, clusters=1, hosts_per_cluster=size // 3 + 1)
    host = Host.objects.filter(running_vms__isnull=False).order_by("name").last()
    cluster = host.cluster

    assert count_queries(user_client, reverse("portals:tree-cluster", args=[cluster.pk])) == TREE_PARTIAL_QUERIES
    assert count_queries(user_client, reverse("portals:tree-host", args=[host.pk])) == TREE_PARTIAL_QUERIES


LIST_PAGES = [
    "portals:datacenter-list",
    "portals:cluster-list",
    "portals:template-list",
    "portals:network-list",
    "portals:vnicprofile-list",
    "portals:storagedomain-list",
    "portals:disk-list",
    "portals:user-list",
    "portals:event-list",
    "portals:job-list",
]


@pytest.mark.django_db
def test_every_list_page_costs_the_same_with_more_rows(user_client, seeded):
    from .conftest import build_inventory

    before = {name: count_queries(user_client, reverse(name)) for name in LIST_PAGES}
    for number in range(2, 5):
        build_inventory(f"-{number}")
    after = {name: count_queries(user_client, reverse(name)) for name in LIST_PAGES}

    assert after == before
