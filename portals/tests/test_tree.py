"""The system tree: data centers and clusters on every page; the hosts of a cluster and the
VMs of a host come from htmx partials, a bounded page at a time; a detail page shows the
branch of its object expanded."""

import re

import pytest
from django.urls import reverse

from compute.choices import VmStatus
from portals import context_processors
from tests.factories import make_cluster, make_data_center, make_host, make_vm


def tree_html(response) -> str:
    body = response.content.decode()
    return body[body.index('<aside class="olvm-tree"') : body.index("</aside>")]


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 3 hosts per cluster and 2 VMs per host, so that a few rows overflow them."""
    monkeypatch.setattr(context_processors, "TREE_HOSTS_PER_CLUSTER", 3)
    monkeypatch.setattr(context_processors, "TREE_VMS_PER_HOST", 2)


@pytest.mark.django_db
def test_pages_show_data_centers_and_clusters_and_fetch_the_rest_on_expansion(user_client, seeded):
    other = make_cluster(seeded["dc"], name="Other")

    tree = tree_html(user_client.get(reverse("portals:vm-list")))

    assert "DC1" in tree
    assert "Default" in tree
    assert "Other" in tree
    assert "host-01" not in tree
    assert "web-01" not in tree
    for cluster in (seeded["cluster"], other):
        assert f'hx-get="{reverse("portals:tree-cluster", args=[cluster.pk])}" hx-trigger="toggle once"' in tree


@pytest.mark.django_db
def test_cluster_partial_lists_its_hosts_with_their_vm_counts(user_client, seeded):
    idle = make_host(seeded["cluster"], name="host-02")

    response = user_client.get(reverse("portals:tree-cluster", args=[seeded["cluster"].pk]))

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "portals/inc/tree_hosts.html"
    body = response.content.decode()
    assert "<html" not in body
    node = response.context["cluster_node"]
    assert [(h.host.name, h.vm_count) for h in node.hosts] == [("host-01", 1), ("host-02", 0)]
    assert node.more == 0
    assert "more…" not in body
    # A host with VMs opens on its own partial; one without VMs is a leaf.
    assert f'hx-get="{reverse("portals:tree-host", args=[seeded["host"].pk])}"' in body
    assert reverse("portals:tree-host", args=[idle.pk]) not in body
    assert reverse("portals:host-detail", args=[idle.pk]) in body


@pytest.mark.django_db
def test_cluster_partial_shows_a_page_of_hosts_and_links_to_the_rest(user_client, small_pages):
    cluster = make_cluster(name="Big")
    for number in range(5):
        make_host(cluster, name=f"node-{number}")
    make_host(make_cluster(cluster.data_center), name="elsewhere")

    response = user_client.get(reverse("portals:tree-cluster", args=[cluster.pk]))

    node = response.context["cluster_node"]
    assert [h.host.name for h in node.hosts] == ["node-0", "node-1", "node-2"]
    assert (node.host_count, node.more) == (5, 2)
    more_url = f"{reverse('portals:host-list')}?cluster={cluster.pk}"
    assert f'href="{more_url}"' in response.content.decode()
    assert "2 more…" in response.content.decode()
    listed = user_client.get(more_url)
    assert [host.name for host in listed.context["table"].data] == [f"node-{n}" for n in range(5)]


@pytest.mark.django_db
def test_host_partial_shows_a_page_of_vms_and_links_to_the_rest(user_client, small_pages):
    cluster = make_cluster()
    host = make_host(cluster, name="busy")
    for name in ("vm-c", "vm-a", "vm-d", "vm-b"):
        make_vm(cluster, status=VmStatus.UP, run_on_host=host, name=name)
    make_vm(cluster, status=VmStatus.UP, name="vm-0-elsewhere")

    response = user_client.get(reverse("portals:tree-host", args=[host.pk]))

    assert [t.name for t in response.templates][0] == "portals/inc/tree_vms.html"
    node = response.context["host_node"]
    assert [vm.name for vm in node.vms] == ["vm-a", "vm-b"]
    assert (node.vm_count, node.more) == (4, 2)
    more_url = f"{reverse('portals:vm-list')}?host={host.pk}"
    assert f'href="{more_url}"' in response.content.decode()
    listed = user_client.get(more_url)
    assert [vm.name for vm in listed.context["table"].data] == ["vm-a", "vm-b", "vm-c", "vm-d"]


@pytest.mark.django_db
def test_partials_of_unknown_objects_are_404(user_client, db):
    missing = "00000000-0000-0000-0000-000000000001"

    assert user_client.get(reverse("portals:tree-cluster", args=[missing])).status_code == 404
    assert user_client.get(reverse("portals:tree-host", args=[missing])).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["portals:tree-cluster", "portals:tree-host"])
def test_partials_need_a_staff_login(client, plain_user_client, seeded, name):
    url = reverse(name, args=[seeded["cluster" if name == "portals:tree-cluster" else "host"].pk])

    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"{reverse('portals:login')}?next={url}"
    # From htmx, the whole page goes to the sign-in page rather than the tree showing it.
    htmx = client.get(url, headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/vms/?status=up"})
    assert htmx.status_code == 204
    assert htmx["HX-Redirect"] == f"{reverse('portals:login')}?next=%2Fvms%2F%3Fstatus%3Dup"
    assert plain_user_client.get(url).status_code == 403
    assert plain_user_client.get(url, headers={"HX-Request": "true"}).status_code == 403


@pytest.mark.django_db
def test_vm_page_expands_its_branch_even_beyond_the_first_page(user_client, small_pages):
    dc = make_data_center(name="DC")
    cluster = make_cluster(dc, name="C1")
    other = make_cluster(dc, name="C2")
    for name in ("h-a", "h-b", "h-c", "h-d"):
        make_host(cluster, name=name)
    host = make_host(cluster, name="h-z")  # after the first page of hosts
    for name in ("a1", "a2", "a3"):
        make_vm(cluster, status=VmStatus.UP, run_on_host=host, name=name)
    vm = make_vm(cluster, status=VmStatus.UP, run_on_host=host, name="zz")  # after the first page of VMs

    response = user_client.get(reverse("portals:vm-detail", args=[vm.pk]))

    [dc_node] = response.context["chrome"].tree
    c1, c2 = dc_node.clusters
    assert c2.hosts is None  # other clusters stay lazy
    assert [h.host.name for h in c1.hosts] == ["h-a", "h-b", "h-z"]
    assert (c1.host_count, c1.more) == (5, 2)
    host_node = c1.hosts[-1]
    assert [v.name for v in host_node.vms] == ["a1", "zz"]
    assert (host_node.vm_count, host_node.more) == (4, 2)
    tree = tree_html(response)
    assert f'href="{reverse("portals:vm-detail", args=[vm.pk])}" class="olvm-current"' in tree
    assert f'href="{reverse("portals:vm-list")}?host={host.pk}"' in tree
    assert f'href="{reverse("portals:host-list")}?cluster={cluster.pk}"' in tree
    assert f'hx-get="{reverse("portals:tree-cluster", args=[other.pk])}"' in tree
    assert reverse("portals:tree-cluster", args=[cluster.pk]) not in tree  # already there
    assert len(re.findall(r'class="olvm-current"', tree)) == 1


@pytest.mark.django_db
def test_host_and_cluster_pages_expand_their_branch(user_client, seeded):
    cluster, host = seeded["cluster"], seeded["host"]

    on_host = user_client.get(reverse("portals:host-detail", args=[host.pk]))
    on_cluster = user_client.get(reverse("portals:cluster-detail", args=[cluster.pk]))
    on_stopped_vm = user_client.get(reverse("portals:vm-detail", args=[seeded["vm_down"].pk]))

    host_node = on_host.context["chrome"].tree[0].clusters[0].hosts[0]
    assert [vm.name for vm in host_node.vms] == ["web-01"]
    assert f'href="{reverse("portals:host-detail", args=[host.pk])}" class="olvm-current"' in tree_html(on_host)
    cluster_node = on_cluster.context["chrome"].tree[0].clusters[0]
    assert [h.host.name for h in cluster_node.hosts] == ["host-01"]
    assert cluster_node.hosts[0].vms is None  # the host stays lazy
    assert f'href="{reverse("portals:cluster-detail", args=[cluster.pk])}" class="olvm-current"' in tree_html(
        on_cluster
    )
    on_dc = user_client.get(reverse("portals:datacenter-detail", args=[seeded["dc"].pk]))
    assert on_dc.context["chrome"].tree[0].clusters[0].hosts is None  # data centers are open anyway
    assert f'href="{reverse("portals:datacenter-detail", args=[seeded["dc"].pk])}" class="olvm-current"' in tree_html(
        on_dc
    )
    # A VM that is not running is under no host: its cluster is shown open.
    assert [h.host.name for h in on_stopped_vm.context["chrome"].tree[0].clusters[0].hosts] == ["host-01"]


@pytest.mark.django_db
def test_list_pages_do_not_expand_the_tree(user_client, seeded):
    response = user_client.get(reverse("portals:host-list"))

    assert response.context["chrome"].tree[0].clusters[0].hosts is None
    assert "olvm-current" not in tree_html(response)
