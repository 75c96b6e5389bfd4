"""The Affinity Groups tab of a cluster and its add / edit / remove pages."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.models import AffinityGroup
from compute.services import create_affinity_group
from inventory.models import Event
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


def tab_url(cluster) -> str:
    return f"{reverse('portals:cluster-detail', args=[cluster.pk])}?tab=affinity"


def add_url(cluster) -> str:
    return reverse("portals:cluster-affinity-group-add", args=[cluster.pk])


def edit_url(group) -> str:
    return reverse("portals:cluster-affinity-group-edit", args=[group.cluster_id, group.pk])


def remove_url(group) -> str:
    return reverse("portals:cluster-affinity-group-remove", args=[group.cluster_id, group.pk])


def form_errors(response) -> dict:
    return {name: list(errors) for name, errors in response.context["form"].errors.items()}


def make_group(cluster, **fields) -> AffinityGroup:
    return create_affinity_group(user=None, cluster=cluster, **fields)


def test_tab_lists_the_groups_of_the_cluster_with_rules_and_members(user_client):
    cluster = make_cluster()
    vm, host = make_vm(cluster, name="web-1"), make_host(cluster, name="host-a")
    group = make_group(
        cluster, name="web", vms=[vm], hosts=[host], vm_rule="negative", host_rule="positive", host_enforcing=False
    )
    make_group(make_cluster(), name="elsewhere")

    response = user_client.get(tab_url(cluster))

    assert response.status_code == 200
    body = response.content.decode()
    assert [row.name for row in response.context["table"].page.object_list.data] == ["web"]
    assert 'Negative (apart) <span class="badge text-bg-light border">hard</span>' in body
    assert 'Positive (together) <span class="badge text-bg-light border">soft</span>' in body
    assert f'<a href="{vm.get_absolute_url()}">web-1</a>' in body
    assert f'<a href="{reverse("portals:host-detail", args=[host.pk])}">host-a</a>' in body
    assert f'href="{edit_url(group)}"' in body
    assert f'href="{remove_url(group)}"' in body
    assert f'href="{add_url(cluster)}"' in body


def test_empty_tab_says_so(user_client):
    response = user_client.get(tab_url(make_cluster()))

    assert response.status_code == 200
    assert "No affinity groups." in response.content.decode()


def tab_queries(client, cluster) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(tab_url(cluster)).status_code == 200
    return len(queries)


def test_tab_query_count_does_not_grow_with_groups(user_client):
    cluster = make_cluster()
    hosts = [make_host(cluster) for _ in range(3)]
    make_group(cluster, name="g0", vms=[make_vm(cluster)], hosts=hosts[:1], host_rule="positive")
    few = tab_queries(user_client, cluster)
    for n in range(1, 12):
        make_group(cluster, name=f"g{n}", vms=[make_vm(cluster), make_vm(cluster)], hosts=hosts, host_rule="negative")

    assert tab_queries(user_client, cluster) == few


def test_add_form_offers_only_the_clusters_vms_and_hosts(user_client):
    cluster, other = make_cluster(), make_cluster()
    mine_vm, mine_host = make_vm(cluster), make_host(cluster)
    make_vm(other), make_host(other)

    response = user_client.get(add_url(cluster))

    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.fields["vms"].queryset) == [mine_vm]
    assert list(form.fields["hosts"].queryset) == [mine_host]
    assert response.context["title"] == f"New affinity group in cluster {cluster.name}"


def test_create_through_the_form(user_client, admin_user):
    cluster = make_cluster()
    vm1, vm2, host = make_vm(cluster), make_vm(cluster), make_host(cluster)

    response = user_client.post(
        add_url(cluster),
        {
            "name": "db",
            "description": "apart",
            "priority": 10,
            "vm_rule": "negative",
            "vm_enforcing": "on",
            "host_rule": "positive",
            "vms": [vm1.pk, vm2.pk],
            "hosts": [host.pk],
        },
    )

    assert response.status_code == 302, form_errors(response)
    assert response["Location"] == tab_url(cluster)
    group = AffinityGroup.objects.get(cluster=cluster, name="db")
    assert (group.vm_rule, group.vm_enforcing, group.host_rule, group.host_enforcing, group.priority) == (
        "negative",
        True,
        "positive",
        False,
        10,
    )
    assert set(group.vms.all()) == {vm1, vm2}
    assert list(group.hosts.all()) == [host]
    event = Event.objects.get(code="USER_ADDED_AFFINITY_GROUP")
    assert (event.user, event.cluster_id) == (admin_user, cluster.pk)
    page = user_client.get(response["Location"])
    assert f"Affinity group db was added to cluster {cluster.name}." in page.content.decode()


def test_host_rule_without_hosts_shows_the_field_message(user_client):
    cluster = make_cluster()

    response = user_client.post(
        add_url(cluster), {"name": "g", "priority": 1, "vm_rule": "disabled", "host_rule": "negative"}
    )

    assert response.status_code == 200
    assert form_errors(response) == {"hosts": ["A group with a host rule needs at least one host."]}
    assert "A group with a host rule needs at least one host." in response.content.decode()
    assert not AffinityGroup.objects.exists()
    assert not Event.objects.filter(code="USER_ADDED_AFFINITY_GROUP").exists()


def test_duplicate_name_shows_the_field_message(user_client):
    cluster = make_cluster()
    make_group(cluster, name="web")

    response = user_client.post(
        add_url(cluster), {"name": "web", "priority": 1, "vm_rule": "disabled", "host_rule": "disabled"}
    )

    assert response.status_code == 200
    assert form_errors(response) == {"name": [f"An affinity group named web already exists in cluster {cluster.name}."]}
    assert AffinityGroup.objects.count() == 1


def test_vm_of_another_cluster_is_not_a_choice(user_client):
    cluster = make_cluster()
    stray = make_vm(make_cluster())

    response = user_client.post(
        add_url(cluster),
        {"name": "g", "priority": 1, "vm_rule": "positive", "host_rule": "disabled", "vms": [stray.pk]},
    )

    assert response.status_code == 200
    assert form_errors(response) == {"vms": [f"Select a valid choice. {stray.pk} is not one of the available choices."]}
    assert not AffinityGroup.objects.exists()


def test_edit_through_the_form(user_client):
    cluster = make_cluster()
    vm1, vm2 = make_vm(cluster), make_vm(cluster)
    group = make_group(cluster, name="web", vms=[vm1], vm_rule="positive")

    page = user_client.get(edit_url(group))
    response = user_client.post(
        edit_url(group),
        {"name": "web", "priority": 1, "vm_rule": "negative", "host_rule": "disabled", "vms": [vm1.pk, vm2.pk]},
    )

    assert page.status_code == 200
    assert page.context["form"].initial["vms"] == [vm1]
    assert response.status_code == 302, form_errors(response)
    assert response["Location"] == tab_url(cluster)
    group.refresh_from_db()
    assert (group.vm_rule, group.vm_enforcing) == ("negative", False)
    assert set(group.vms.all()) == {vm1, vm2}
    event = Event.objects.get(code="USER_UPDATED_AFFINITY_GROUP")
    assert event.message == (
        f"Affinity group web of cluster {cluster.name} was updated by admin (vm_rule, vm_enforcing, vms)."
    )


def test_edit_of_a_group_through_another_cluster_is_404(user_client):
    group = make_group(make_cluster(), name="web")
    other = make_cluster()

    response = user_client.get(reverse("portals:cluster-affinity-group-edit", args=[other.pk, group.pk]))

    assert response.status_code == 404


def test_remove_asks_then_removes(user_client, admin_user):
    cluster = make_cluster()
    vm = make_vm(cluster)
    group = make_group(cluster, name="web", vms=[vm])

    question = user_client.get(remove_url(group))
    response = user_client.post(remove_url(group))

    assert question.status_code == 200
    assert f"Are you sure you want to remove affinity group web of cluster {cluster.name}?" in (
        question.content.decode()
    )
    assert response.status_code == 302
    assert response["Location"] == tab_url(cluster)
    assert not AffinityGroup.objects.exists()
    vm.refresh_from_db()
    event = Event.objects.get(code="USER_REMOVED_AFFINITY_GROUP")
    assert (event.user, event.cluster_id) == (admin_user, cluster.pk)
    page = user_client.get(response["Location"])
    assert f"Affinity group web was removed from cluster {cluster.name}." in page.content.decode()


def test_non_staff_users_are_refused(plain_user_client):
    cluster = make_cluster()
    group = make_group(cluster, name="web")

    for url in (add_url(cluster), edit_url(group), remove_url(group)):
        assert plain_user_client.get(url).status_code == 403
    assert plain_user_client.post(remove_url(group)).status_code == 403
    assert AffinityGroup.objects.filter(pk=group.pk).exists()


def test_anonymous_is_sent_to_login():
    group = make_group(make_cluster(), name="web")

    response = Client().get(edit_url(group))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portals:login"))


def test_crawl_from_the_tab_finds_no_broken_page(user_client, seeded):
    from portals.tests.test_crawl import crawl

    cluster = seeded["cluster"]
    make_group(cluster, name="web", vms=[seeded["vm"]], hosts=[seeded["host"]], host_rule="positive")

    seen, broken = crawl(user_client, start=tab_url(cluster))

    assert broken == []
    assert {add_url(cluster), edit_url(AffinityGroup.objects.get()), remove_url(AffinityGroup.objects.get())} <= set(
        seen
    )


def test_the_vm_page_lists_the_groups_the_vm_is_in(user_client):
    cluster = make_cluster()
    vm, other = make_vm(cluster, name="web-1"), make_vm(cluster, name="db-1")
    group = make_group(cluster, name="web", vms=[vm, other], vm_rule="negative")
    make_group(cluster, name="db-only", vms=[other])

    response = user_client.get(f"{vm.get_absolute_url()}?tab=affinity")

    assert response.status_code == 200
    assert [row.name for row in response.context["table"].page.object_list.data] == ["web"]
    body = response.content.decode()
    assert f'<a href="{other.get_absolute_url()}">db-1</a>' in body
    assert f'href="{edit_url(group)}"' in body
    assert f'href="{add_url(cluster)}"' in body
