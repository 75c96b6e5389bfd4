"""The list endpoints' query counts do not grow with the number of rows (no N+1)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.models import InstanceType
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db

# The queries of one list request, pinned: a change here is a change to review.
VM_LIST_QUERIES = 3  # count, rows with their relations, pinned hosts
HOST_LIST_QUERIES = 2  # count, rows with their cluster


def list_queries(client, url: str, expected_rows: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"limit": 100})
    assert response.status_code == 200
    assert len(response.json()["results"]) == expected_rows
    return len(queries)


def add_vms(count: int, clusters, hosts, itype) -> None:
    for n in range(count):
        cluster = clusters[n % len(clusters)]
        running = n % 2 == 0
        vm = make_vm(
            cluster,
            status="up" if running else "down",
            run_on_host=hosts[cluster.pk] if running else None,
            instance_type=itype if n % 3 == 0 else None,
        )
        vm.pinned_hosts.set([hosts[cluster.pk]])


def test_vm_list_query_count_is_flat(api_client):
    clusters = [make_cluster(), make_cluster()]
    hosts = {c.pk: make_host(c) for c in clusters}
    itype = InstanceType.objects.get(name="Small")

    add_vms(3, clusters, hosts, itype)
    few = list_queries(api_client, reverse("api:vm-list"), 3)
    add_vms(27, clusters, hosts, itype)
    many = list_queries(api_client, reverse("api:vm-list"), 30)

    assert few == many == VM_LIST_QUERIES


def test_host_list_query_count_is_flat(api_client):
    clusters = [make_cluster(), make_cluster()]

    for n in range(3):
        make_host(clusters[n % 2])
    few = list_queries(api_client, reverse("api:host-list"), 3)
    for n in range(27):
        make_host(clusters[n % 2])
    many = list_queries(api_client, reverse("api:host-list"), 30)

    assert few == many == HOST_LIST_QUERIES


@pytest.mark.parametrize(
    "basename",
    [
        "data-center",
        "cluster",
        "event",
        "job",
        "template",
        "snapshot",
        "storage-domain",
        "disk",
        "disk-attachment",
        "network",
        "cluster-network",
        "vnic-profile",
        "mac-pool",
        "nic",
    ],
)
def test_other_lists_do_not_query_per_row(api_client, basename):
    """Every list: the same queries for 2 rows as for 6 (the rows come from a factory per endpoint)."""
    from . import test_endpoints

    cls = next(
        c for c in vars(test_endpoints).values() if isinstance(c, type) and getattr(c, "basename", None) == basename
    )
    maker = cls()
    url = reverse(f"api:{basename}-list")
    for _ in range(2):
        maker.make()
    with CaptureQueriesContext(connection) as few:
        api_client.get(url, {"limit": 500})
    for _ in range(4):
        maker.make()
    with CaptureQueriesContext(connection) as many:
        response = api_client.get(url, {"limit": 500})

    assert response.status_code == 200
    assert len(few) == len(many), [q["sql"] for q in many.captured_queries]
