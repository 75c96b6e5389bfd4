"""The filters of the list pages: none grows with the inventory. Related objects are given
by id (the links of the tree and the detail pages) or by name; a select lists them only
while there are few (hosts never: a text box)."""

import re

import pytest
from django.urls import reverse

from compute.choices import VmStatus
from portals import filtersets
from tests.factories import make_cluster, make_data_center, make_host, make_storage_domain, make_vm

FILTERED_LISTS = [
    "portals:cluster-list",
    "portals:host-list",
    "portals:vm-list",
    "portals:template-list",
    "portals:network-list",
    "portals:vnicprofile-list",
    "portals:storagedomain-list",
    "portals:disk-list",
]


def selects(body: str) -> dict[str, int]:
    """Name -> number of options, of every select of a page."""
    return {
        name: options.count("<option")
        for name, options in re.findall(r'<select name="(\w+)"[^>]*>(.*?)</select>', body, re.S)
    }


def text_boxes(body: str) -> set[str]:
    return set(re.findall(r'<input type="search" name="(\w+)"', body))


@pytest.mark.django_db
def test_vm_host_filter_is_a_text_box_taking_a_name_a_prefix_or_an_id(user_client):
    cluster = make_cluster(name="Default")
    node_a, node_b = make_host(cluster, name="node-a"), make_host(cluster, name="node-b")
    make_vm(cluster, status=VmStatus.UP, run_on_host=node_a, name="on-a")
    make_vm(cluster, status=VmStatus.UP, run_on_host=node_b, name="on-b")
    make_vm(cluster, name="stopped")

    def listed(**params):
        response = user_client.get(reverse("portals:vm-list"), params)
        assert response.status_code == 200
        return [vm.name for vm in response.context["table"].data]

    body = user_client.get(reverse("portals:vm-list")).content.decode()
    assert "host" not in selects(body)
    assert "host" in text_boxes(body)
    assert listed(host="NODE-A") == ["on-a"]
    assert listed(host="node*") == ["on-a", "on-b"]
    assert listed(host=str(node_b.pk)) == ["on-b"]
    assert listed(host="nobody") == []
    assert listed(host=" ") == ["on-a", "on-b", "stopped"]


@pytest.mark.django_db
def test_related_selects_become_text_boxes_beyond_the_limit(user_client, monkeypatch):
    monkeypatch.setattr(filtersets, "MAX_FILTER_OPTIONS", 2)
    dc = make_data_center(name="DC1")
    for name in ("Default", "Second"):
        make_vm(make_cluster(dc, name=name), name=f"vm-{name.lower()}")

    two = user_client.get(reverse("portals:vm-list")).content.decode()
    assert selects(two)["cluster"] == 3  # Any + 2
    make_vm(make_cluster(dc, name="Third"), name="vm-third")
    three = user_client.get(reverse("portals:vm-list"), {"cluster": "sec*"})

    assert "cluster" not in selects(three.content.decode())
    assert "cluster" in text_boxes(three.content.decode())
    assert 'value="sec*"' in three.content.decode()
    assert [vm.name for vm in three.context["table"].data] == ["vm-second"]


@pytest.mark.django_db
def test_a_select_keeps_a_value_given_by_name(user_client, seeded):
    response = user_client.get(reverse("portals:host-list"), {"cluster": "default"})

    assert [host.name for host in response.context["table"].data] == ["host-01"]
    body = response.content.decode()
    assert '<option value="default" selected>default</option>' in body
    by_id = user_client.get(reverse("portals:host-list"), {"cluster": str(seeded["cluster"].pk)}).content.decode()
    assert f'<option value="{seeded["cluster"].pk}" selected>Default</option>' in by_id


@pytest.mark.django_db
def test_no_filter_lists_more_than_the_limit(user_client, seeded, monkeypatch):
    from .conftest import build_inventory

    monkeypatch.setattr(filtersets, "MAX_FILTER_OPTIONS", 2)
    for number in range(2, 5):
        build_inventory(f"-{number}")
    make_storage_domain(seeded["dc"])

    for name in FILTERED_LISTS:
        body = user_client.get(reverse(name)).content.decode()
        counts = selects(body)  # what is left are the fixed choices: statuses, types...
        for related in ("cluster", "data_center", "host", "network", "storage_domain"):
            assert related not in counts, (name, related, counts)
        assert all(n <= 30 for n in counts.values()), (name, counts)


@pytest.mark.django_db
def test_related_filters_work_by_name_on_every_list(user_client, seeded):
    from .conftest import build_inventory

    build_inventory("-2")
    checks = [
        ("portals:cluster-list", {"data_center": "dc1"}, 1),
        ("portals:host-list", {"data_center": "DC1"}, 1),
        ("portals:vm-list", {"data_center": "DC1", "cluster": "Default"}, 2),
        ("portals:template-list", {"cluster": str(seeded["cluster"].pk)}, 1),
        ("portals:network-list", {"data_center": "DC1", "cluster": "default"}, 2),  # ovirtmgmt, vmnet
        ("portals:vnicprofile-list", {"network": "vmnet", "data_center": "DC1-2"}, 1),
        ("portals:storagedomain-list", {"data_center": "dc1*"}, 2),
        ("portals:disk-list", {"storage_domain": "data1"}, 1),
    ]
    for name, params, expected in checks:
        response = user_client.get(reverse(name), params)
        assert response.status_code == 200, name
        assert len(response.context["table"].data) == expected, (name, params)
