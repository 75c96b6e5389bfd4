"""The admin portal's Permissions tabs (data center, cluster, VM, template), the system
permissions page and the roles column of the Users page."""

import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import Event, Permission
from tests.factories import grant, make_user, make_vm, role

pytestmark = pytest.mark.django_db


def tab(obj) -> str:
    return f"{obj.get_absolute_url()}?tab=permissions"


@pytest.mark.parametrize("kind", ["dc", "cluster", "vm", "template"])
def test_every_kind_of_object_has_a_permissions_tab_with_own_and_inherited_grants(user_client, seeded, kind):
    obj = seeded[kind]
    grant(make_user("alice"), "UserRole", obj)
    grant(Group.objects.create(name="auditors"), "ReadOnlyAdmin")

    response = user_client.get(tab(obj))

    body = response.content.decode()
    assert response.status_code == 200
    rows = [(p.principal_name, p.role.name, p.inherited) for p in response.context["table"].data]
    assert rows == [("alice", "UserRole", False), ("auditors", "ReadOnlyAdmin", True)]
    assert reverse("portals:permission-add") in body
    own = response.context["table"].data[0]
    # The own grant is removed here; an inherited one where it was made.
    assert re.findall(r"/permissions/[0-9a-f-]{36}/remove/", body) == [
        reverse("portals:permission-remove", args=[own.pk])
    ]


def test_a_vm_tab_shows_where_an_inherited_grant_comes_from(user_client, seeded):
    grant(make_user("bob"), "ClusterAdmin", seeded["cluster"])

    body = user_client.get(tab(seeded["vm"])).content.decode()

    assert "Cluster Default" in body


def test_adding_a_grant_from_the_tab(user_client, seeded, admin_user):
    alice = make_user("alice")
    vm = seeded["vm"]

    response = user_client.post(
        reverse("portals:permission-add"),
        {"user": alice.pk, "role": str(role("UserRole").pk), "object_type": "vm", "object_id": str(vm.pk)},
    )

    assert (response.status_code, response["Location"]) == (302, tab(vm))
    permission = Permission.objects.get()
    assert (permission.user, permission.object_type, permission.object_id) == (alice, "vm", vm.pk)
    assert "Role UserRole was granted to alice." in user_client.get(response["Location"]).content.decode()


def test_a_grant_needs_exactly_one_of_user_and_group(user_client, seeded):
    cluster = seeded["cluster"]

    response = user_client.post(
        reverse("portals:permission-add"),
        {"role": str(role("UserRole").pk), "object_type": "cluster", "object_id": str(cluster.pk)},
    )

    assert response["Location"] == tab(cluster)
    assert "Choose a user or a group (one of the two)." in user_client.get(response["Location"]).content.decode()
    assert not Permission.objects.exists()


def test_removing_a_grant_is_confirmed(user_client, seeded):
    permission = grant(make_user("alice"), "UserRole", seeded["template"])
    url = reverse("portals:permission-remove", args=[permission.pk])

    confirm = user_client.get(url)
    assert "Are you sure you want to take role UserRole on template rhel9 from alice?" in confirm.content.decode()
    response = user_client.post(url)

    assert response["Location"] == tab(seeded["template"])
    assert not Permission.objects.exists()
    assert Event.objects.filter(code="USER_REMOVE_PERMISSION").count() == 1


def test_the_system_permissions_page(user_client, seeded):
    grant(make_user("carol"), "SuperUser")

    response = user_client.get(reverse("portals:permission-list"))
    listed = [(p.principal_name, p.role.name) for p in response.context["table"].data]
    added = user_client.post(
        reverse("portals:permission-add"),
        {"group": Group.objects.create(name="ops").pk, "role": str(role("ReadOnlyAdmin").pk), "object_type": "system"},
    )

    assert listed == [("carol", "SuperUser")]
    assert added["Location"] == reverse("portals:permission-list")
    assert Permission.objects.filter(group__name="ops", object_type="system").exists()


def test_users_may_not_manage_permissions(plain_user_client, seeded):
    permission = grant(make_user("zed"), "UserRole", seeded["vm"])

    assert plain_user_client.get(reverse("portals:permission-list")).status_code == 403
    assert plain_user_client.post(reverse("portals:permission-remove", args=[permission.pk])).status_code == 403
    assert Permission.objects.count() == 1


def test_the_users_page_shows_each_users_roles(user_client, seeded):
    alice = make_user("alice")
    grant(alice, "UserRole", seeded["vm"])
    grant(alice, "PowerUserRole", seeded["cluster"])

    body = user_client.get(reverse("portals:user-list")).content.decode()

    assert "PowerUserRole, UserRole" in body
    assert "SuperUser (superuser)" in body  # admin


@pytest.mark.parametrize("grants", [2, 20])
def test_the_permissions_tab_costs_the_same_queries_at_any_size(user_client, seeded, grants):
    vm = seeded["vm"]
    for _ in range(grants):
        grant(make_user(), "UserRole", vm)
        grant(make_user(), "ClusterAdmin", seeded["cluster"])
        make_vm(seeded["cluster"])

    with CaptureQueriesContext(connection) as captured:
        response = user_client.get(tab(vm))

    assert response.status_code == 200
    assert len(response.context["table"].data) == 2 * grants
    # the VM page's own (see test_query_counts) + the grants + the form's users, groups and roles
    assert len(captured.captured_queries) == 14
