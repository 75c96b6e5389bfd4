"""Behaviour of networks (attach-cluster), NICs and MAC pools through the API."""

import pytest
from django.urls import reverse

from networking.models import ClusterNetwork, LogicalNetwork, VmNic
from tests.factories import make_cluster, make_vm

pytestmark = pytest.mark.django_db


def network(dc, name="storage") -> LogicalNetwork:
    return LogicalNetwork.objects.create(data_center=dc, name=name)


def test_attach_cluster_is_201_with_the_attachment(api_client, cluster):
    net = network(cluster.data_center)

    response = api_client.post(
        reverse("api:network-attach-cluster", args=[net.pk]), {"cluster": str(cluster.pk), "required": False}
    )

    assert response.status_code == 201, response.json()
    attachment = ClusterNetwork.objects.get(network=net)
    assert response.json() == {
        "id": attachment.pk,
        "url": f"http://testserver/api/v1/cluster-networks/{attachment.pk}/",
        "cluster": str(cluster.pk),
        "cluster_name": cluster.name,
        "network": str(net.pk),
        "network_name": "storage",
        "required": False,
    }


def test_attach_cluster_twice_is_409(api_client, cluster):
    net = network(cluster.data_center)
    ClusterNetwork.objects.create(cluster=cluster, network=net)

    response = api_client.post(reverse("api:network-attach-cluster", args=[net.pk]), {"cluster": str(cluster.pk)})

    assert response.status_code == 409
    assert response.json()["detail"] == f"Network storage is already attached to cluster {cluster.name}."


def test_attach_cluster_of_another_data_center_is_400(api_client, cluster):
    net = network(cluster.data_center)
    stranger = make_cluster()

    response = api_client.post(reverse("api:network-attach-cluster", args=[net.pk]), {"cluster": str(stranger.pk)})

    assert response.status_code == 400
    assert response.json() == {"cluster": [f"Cluster {stranger.name} is not in the data center of network storage."]}
    assert not ClusterNetwork.objects.filter(network=net).exists()


def test_attach_cluster_needs_a_cluster(api_client, cluster):
    net = network(cluster.data_center)

    response = api_client.post(reverse("api:network-attach-cluster", args=[net.pk]), {}, format="json")

    assert response.status_code == 400
    assert response.json() == {"cluster": ["This field is required."]}


def test_management_network_cannot_be_removed(api_client, dc):
    mgmt = LogicalNetwork.objects.get(data_center=dc, is_management=True)

    response = api_client.delete(reverse("api:network-detail", args=[mgmt.pk]))

    assert response.status_code == 409
    assert LogicalNetwork.objects.filter(pk=mgmt.pk).exists()


def test_duplicate_vlan_in_data_center_is_400(api_client, dc):
    LogicalNetwork.objects.create(data_center=dc, name="a", vlan_tag=7)

    response = api_client.post(
        reverse("api:network-list"), {"data_center": str(dc.pk), "name": "b", "vlan_tag": 7}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"vlan_tag": ["Logical network with this Data center and Vlan tag already exists."]}


def test_nic_gets_the_next_free_mac_and_name(api_client):
    vm = make_vm()

    response = api_client.post(reverse("api:nic-list"), {"vm": str(vm.pk)}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["mac"], body["job"]) == ("nic1", "56:6f:1a:2b:00:00", None)
    assert VmNic.objects.get().mac == "56:6f:1a:2b:00:00"


def test_nic_with_a_bad_mac_is_400(api_client):
    vm = make_vm()

    response = api_client.post(reverse("api:nic-list"), {"vm": str(vm.pk), "mac": "zz:zz"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"mac": ["'zz:zz' is not a MAC address like 56:6f:1a:2b:00:01."]}


def test_mac_pool_ranges_are_validated(api_client):
    response = api_client.post(
        reverse("api:mac-pool-list"),
        {"name": "p", "ranges": [{"from": "56:6f:00:00:00:10", "to": "56:6f:00:00:00:01"}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"ranges": ["Range 1 starts after it ends."]}


def test_default_mac_pool_cannot_be_removed(api_client):
    from networking.models import MacPool

    response = api_client.delete(reverse("api:mac-pool-detail", args=[MacPool.objects.get(name="Default").pk]))

    assert response.status_code == 409
