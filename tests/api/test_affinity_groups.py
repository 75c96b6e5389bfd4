"""Affinity groups through the API: the routine endpoint tests, then the cluster rules."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.models import AffinityGroup
from compute.services import create_affinity_group
from inventory.models import Event
from tests.api.base import APIViewTests
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db

# count, the groups with their cluster, their VMs, their hosts: pinned, a change here is a change to review.
AFFINITY_GROUP_LIST_QUERIES = 4


def list_url() -> str:
    return reverse("api:affinity-group-list")


def detail_url(pk) -> str:
    return reverse("api:affinity-group-detail", args=[pk])


def make_group(cluster=None, *, vms=(), hosts=(), **fields) -> AffinityGroup:
    cluster = cluster or make_cluster()
    fields.setdefault("name", f"ag-{uuid.uuid4().hex[:8]}")
    return create_affinity_group(user=None, cluster=cluster, vms=list(vms), hosts=list(hosts), **fields)


def by_name(objs) -> list:
    return sorted(objs, key=lambda o: o.name)


class TestAffinityGroups(APIViewTests):
    basename = "affinity-group"
    model = AffinityGroup
    required_fields = {"cluster", "name"}
    create_event = "USER_ADDED_AFFINITY_GROUP"
    update_event = "USER_UPDATED_AFFINITY_GROUP"
    delete_event = "USER_REMOVED_AFFINITY_GROUP"

    def make(self):
        cluster = make_cluster()
        return make_group(
            cluster,
            vms=[make_vm(cluster), make_vm(cluster)],
            hosts=[make_host(cluster)],
            vm_rule="positive",
            host_rule="negative",
        )

    def event_object_id(self, obj):
        # As in oVirt, an affinity group's audit events are its cluster's, naming the group.
        return obj.cluster_id

    def expected(self, obj):
        vms, hosts = by_name(obj.vms.all()), by_name(obj.hosts.all())
        return {
            "name": obj.name,
            "cluster": str(obj.cluster_id),
            "cluster_name": obj.cluster.name,
            "description": "",
            "priority": 1,
            "vm_rule": "positive",
            "vm_enforcing": True,
            "host_rule": "negative",
            "host_enforcing": False,
            "vms": [str(vm.pk) for vm in vms],
            "vm_names": [vm.name for vm in vms],
            "hosts": [str(host.pk) for host in hosts],
            "host_names": [host.name for host in hosts],
        }

    def create_data(self):
        cluster = make_cluster()
        return {
            "cluster": str(cluster.pk),
            "name": "web",
            "description": "The web tier, apart",
            "priority": 5,
            "vm_rule": "negative",
            "vm_enforcing": False,
            "host_rule": "positive",
            "host_enforcing": True,
            "vms": [str(make_vm(cluster).pk), str(make_vm(cluster).pk)],
            "hosts": [str(make_host(cluster).pk)],
        }

    def update_data(self, obj):
        return {"description": "changed", "vm_rule": "negative", "vms": [str(make_vm(obj.cluster).pk)]}


def test_create_answers_the_names_of_the_members(api_client):
    cluster = make_cluster()
    vm1, vm2 = make_vm(cluster, name="b-vm"), make_vm(cluster, name="a-vm")
    host = make_host(cluster, name="h-a")

    response = api_client.post(
        list_url(),
        {"cluster": str(cluster.pk), "name": "db", "vms": [str(vm1.pk), str(vm2.pk)], "hosts": [str(host.pk)]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["vms"], body["vm_names"], body["hosts"], body["host_names"]) == (
        [str(vm2.pk), str(vm1.pk)],
        ["a-vm", "b-vm"],
        [str(host.pk)],
        ["h-a"],
    )
    assert (body["vm_rule"], body["vm_enforcing"], body["host_rule"], body["host_enforcing"]) == (
        "disabled",
        True,
        "disabled",
        False,
    )
    event = Event.objects.get(code="USER_ADDED_AFFINITY_GROUP")
    assert (event.object_type, event.cluster_id, event.message) == (
        "cluster",
        cluster.pk,
        f"Affinity group db was added to cluster {cluster.name} by admin.",
    )


def test_vm_of_another_cluster_is_400_naming_it(api_client):
    cluster, other = make_cluster(), make_cluster()
    mine, stray = make_vm(cluster), make_vm(other, name="stray-vm")

    response = api_client.post(
        list_url(), {"cluster": str(cluster.pk), "name": "g", "vms": [str(mine.pk), str(stray.pk)]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"vms": [f"VMs outside cluster {cluster.name}: stray-vm."]}
    assert (AffinityGroup.objects.count(), Event.objects.filter(code__contains="AFFINITY").count()) == (0, 0)


def test_host_of_another_cluster_is_400_naming_it(api_client):
    cluster = make_cluster()
    stray = make_host(make_cluster(), name="far-host")

    response = api_client.post(
        list_url(),
        {"cluster": str(cluster.pk), "name": "g", "host_rule": "positive", "hosts": [str(stray.pk)]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"hosts": [f"Hosts outside cluster {cluster.name}: far-host."]}
    assert not AffinityGroup.objects.exists()


def test_unknown_member_ids_are_400(api_client):
    cluster = make_cluster()
    missing = uuid.uuid4()

    response = api_client.post(
        list_url(), {"cluster": str(cluster.pk), "name": "g", "vms": [str(missing)], "hosts": ["nope"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "vms": [f'Invalid pk "{missing}" - object does not exist.'],
        "hosts": ["“nope” is not a valid UUID."],
    }


def test_bad_rule_value_is_400(api_client):
    cluster = make_cluster()

    response = api_client.post(
        list_url(), {"cluster": str(cluster.pk), "name": "g", "vm_rule": "sideways", "priority": 101}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "vm_rule": ['"sideways" is not a valid choice.'],
        "priority": ["Ensure this value is less than or equal to 100."],
    }


def test_host_rule_without_hosts_is_400(api_client):
    cluster = make_cluster()

    response = api_client.post(
        list_url(), {"cluster": str(cluster.pk), "name": "g", "host_rule": "negative"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"hosts": ["A group with a host rule needs at least one host."]}


def test_emptying_the_hosts_of_a_host_rule_is_400(api_client):
    cluster = make_cluster()
    group = make_group(cluster, hosts=[make_host(cluster)], host_rule="positive")

    response = api_client.patch(detail_url(group.pk), {"hosts": []}, format="json")

    assert response.status_code == 400
    assert response.json() == {"hosts": ["A group with a host rule needs at least one host."]}
    assert group.hosts.count() == 1


def test_duplicate_name_in_the_cluster_is_400_but_fine_in_another(api_client):
    cluster = make_cluster()
    make_group(cluster, name="web")

    clash = api_client.post(list_url(), {"cluster": str(cluster.pk), "name": "web"}, format="json")
    elsewhere = api_client.post(list_url(), {"cluster": str(make_cluster().pk), "name": "web"}, format="json")

    assert clash.status_code == 400
    assert clash.json() == {"name": ["Affinity group with this Cluster and Name already exists."]}
    assert elsewhere.status_code == 201, elsewhere.json()
    assert AffinityGroup.objects.filter(name="web").count() == 2


def test_rename_onto_another_group_is_400(api_client):
    cluster = make_cluster()
    make_group(cluster, name="web")
    group = make_group(cluster, name="db")

    response = api_client.patch(detail_url(group.pk), {"name": "web"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["Affinity group with this Cluster and Name already exists."]}


def test_service_duplicate_name_is_a_field_error():
    from django.core.exceptions import ValidationError

    cluster = make_cluster()
    make_group(cluster, name="web")

    with pytest.raises(ValidationError) as caught:
        make_group(cluster, name="web")

    assert caught.value.message_dict == {
        "name": [f"An affinity group named web already exists in cluster {cluster.name}."]
    }


def test_cluster_cannot_change(api_client):
    group = make_group()

    response = api_client.patch(detail_url(group.pk), {"cluster": str(make_cluster().pk)}, format="json")

    assert response.status_code == 400
    assert response.json() == {"cluster": ["This field cannot be changed once the object exists."]}


def test_update_event_names_what_changed(api_client):
    cluster = make_cluster()
    group = make_group(cluster, name="web", vms=[make_vm(cluster)])
    added = make_vm(cluster)

    response = api_client.patch(detail_url(group.pk), {"vm_rule": "positive", "vms": [str(added.pk)]}, format="json")

    assert response.status_code == 200, response.json()
    assert list(group.vms.values_list("pk", flat=True)) == [added.pk]
    event = Event.objects.get(code="USER_UPDATED_AFFINITY_GROUP")
    assert event.message == f"Affinity group web of cluster {cluster.name} was updated by admin (vm_rule, vms)."


def test_filters_by_cluster_vm_and_host(api_client):
    cluster, other = make_cluster(), make_cluster()
    vm, host = make_vm(cluster), make_host(cluster)
    with_vm = make_group(cluster, name="with-vm", vms=[vm])
    with_host = make_group(cluster, name="with-host", hosts=[host], host_rule="positive")
    make_group(other, name="elsewhere")

    def names(params) -> list[str]:
        response = api_client.get(list_url(), params)
        assert response.status_code == 200, response.json()
        return [row["name"] for row in response.json()["results"]]

    assert names({"cluster": str(cluster.pk)}) == ["with-host", "with-vm"]
    assert names({"vm": str(vm.pk)}) == [with_vm.name]
    assert names({"host": str(host.pk)}) == [with_host.name]
    assert names({"vm_rule": "disabled", "cluster": str(other.pk)}) == ["elsewhere"]


def test_delete_removes_the_group_not_its_members(api_client):
    cluster = make_cluster()
    vm, host = make_vm(cluster), make_host(cluster)
    group = make_group(cluster, name="web", vms=[vm], hosts=[host], host_rule="positive")

    response = api_client.delete(detail_url(group.pk))

    assert response.status_code == 204
    assert not AffinityGroup.objects.exists()
    vm.refresh_from_db()
    host.refresh_from_db()
    event = Event.objects.get(code="USER_REMOVED_AFFINITY_GROUP")
    assert (event.cluster_id, event.message) == (
        cluster.pk,
        f"Affinity group web was removed from cluster {cluster.name} by admin.",
    )


def test_browsable_api_renders(api_client):
    make_group()

    listing = api_client.get(list_url(), HTTP_ACCEPT="text/html")

    assert listing.status_code == 200
    assert "Affinity Group List" in listing.content.decode()


def list_queries(client, expected_rows: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(list_url(), {"limit": 100})
    assert response.status_code == 200
    assert len(response.json()["results"]) == expected_rows
    return len(queries)


def add_groups(count: int) -> None:
    for _ in range(count):
        cluster = make_cluster()
        vms = [make_vm(cluster) for _ in range(3)]
        hosts = [make_host(cluster) for _ in range(2)]
        make_group(cluster, vms=vms, hosts=hosts, host_rule="positive", vm_rule="negative")


def test_list_query_count_is_flat(api_client):
    add_groups(2)
    few = list_queries(api_client, 2)
    add_groups(10)
    many = list_queries(api_client, 12)

    assert few == many == AFFINITY_GROUP_LIST_QUERIES
