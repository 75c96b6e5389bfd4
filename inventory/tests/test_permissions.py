"""Object permissions (inventory.permissions): every predefined role at every level, inheritance,
groups, owners, superusers, the refusal messages and the queries they cost."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext

from compute.models import Template
from inventory.choices import ActionGroup
from inventory.constants import OWNER_ACTIONS, PREDEFINED_ROLES
from inventory.models import Role
from inventory.permissions import (
    allowed_actions,
    check,
    grants_on,
    has_permission,
    visible_clusters,
    visible_templates,
    visible_vms,
)
from storage.models import StorageDomain
from tests.factories import grant, make_cluster, make_data_center, make_host, make_user, make_vm

pytestmark = pytest.mark.django_db

ALL_ACTIONS = list(ActionGroup.values)


@pytest.fixture
def world():
    """Two data centers: dc1 with cluster1 (vm1, template1, its version, host1) and cluster2
    (vm2); dc2 with cluster3 (vm3, template3)."""
    dc1, dc2 = make_data_center(name="dc1"), make_data_center(name="dc2")
    cluster1, cluster2, cluster3 = make_cluster(dc1, name="c1"), make_cluster(dc1, name="c2"), make_cluster(dc2)
    template1 = Template.objects.create(name="t1", cluster=cluster1)
    return {
        "dc1": dc1,
        "dc2": dc2,
        "cluster1": cluster1,
        "cluster2": cluster2,
        "cluster3": cluster3,
        "vm1": make_vm(cluster1, name="vm1"),
        "vm2": make_vm(cluster2, name="vm2"),
        "vm3": make_vm(cluster3, name="vm3"),
        "template1": template1,
        "template1v2": Template.objects.create(name="t1", cluster=cluster1, base_template=template1, version_number=2),
        "template3": Template.objects.create(name="t3", cluster=cluster3),
        "host1": make_host(cluster1, name="host1"),
    }


# What a grant on each level reaches (the system reaches everything).
REACHES = {
    "dc1": {"dc1", "cluster1", "cluster2", "vm1", "vm2", "template1", "template1v2", "host1"},
    "cluster1": {"cluster1", "vm1", "template1", "template1v2", "host1"},
    "vm1": {"vm1"},
    "template1": {"template1", "template1v2"},
}
TARGETS = ["dc1", "dc2", "cluster1", "cluster2", "cluster3", "vm1", "vm2", "vm3", "template1", "template1v2"]
TARGETS += ["template3", "host1"]


def test_the_seeded_roles_are_the_predefined_ones():
    seeded = {role.name: (role.administrative, role.description, set(role.action_names)) for role in Role.objects.all()}

    assert seeded == {
        name: (administrative, description, set(actions))
        for name, (administrative, description, actions) in PREDEFINED_ROLES.items()
    }
    assert OWNER_ACTIONS == set(PREDEFINED_ROLES["UserRole"][2])
    assert set(PREDEFINED_ROLES["SuperUser"][2]) == set(ALL_ACTIONS)


@pytest.mark.parametrize("role_name", list(PREDEFINED_ROLES))
@pytest.mark.parametrize("level", ["system", "dc1", "cluster1", "vm1", "template1"])
def test_role_at_level_allows_its_actions_on_what_the_level_reaches(world, role_name, level):
    user = make_user()
    grant(user, role_name, None if level == "system" else world[level])
    role_actions = set(PREDEFINED_ROLES[role_name][2])

    for target in TARGETS:
        reached = level == "system" or target in REACHES[level]
        for action in ALL_ACTIONS:
            expected = reached and action in role_actions
            assert has_permission(user, action, world[target]) is expected, (role_name, level, target, action)
        assert allowed_actions(user, world[target]) == (role_actions if reached else set()), target
    for action in ALL_ACTIONS:
        assert has_permission(user, action, None) is (level == "system" and action in role_actions)

    def names(queryset):
        return set(queryset.values_list("name", flat=True))

    reached_vms = {t for t in ("vm1", "vm2", "vm3") if level == "system" or t in REACHES[level]}
    reached_templates = {
        world[t].name for t in ("template1", "template3") if level == "system" or t in REACHES[level]
    } | ({"Blank"} if level == "system" else set())
    can_see_vms = ActionGroup.VM_VIEW in role_actions
    can_use_templates = ActionGroup.TEMPLATE_USE in role_actions
    assert names(visible_vms(user)) == (reached_vms if can_see_vms else set())
    assert names(visible_vms(user, ActionGroup.VM_REMOVE)) == (
        reached_vms if ActionGroup.VM_REMOVE in role_actions else set()
    )
    assert names(visible_templates(user, ActionGroup.TEMPLATE_USE)) == (
        reached_templates if can_use_templates else set()
    )
    reached_clusters = {
        world[t].name for t in ("cluster1", "cluster2", "cluster3") if level == "system" or t in REACHES[level]
    }
    assert names(visible_clusters(user, ActionGroup.VM_CREATE)) == (
        reached_clusters if ActionGroup.VM_CREATE in role_actions else set()
    )


def test_a_grant_to_a_group_holds_for_its_members_only(world):
    group = Group.objects.create(name="devs")
    member, outsider = make_user(groups=[group]), make_user()
    grant(group, "UserRole", world["cluster2"])

    assert has_permission(member, ActionGroup.VM_OPERATE, world["vm2"]) is True
    assert has_permission(outsider, ActionGroup.VM_OPERATE, world["vm2"]) is False
    assert list(visible_vms(member)) == [world["vm2"]]
    assert list(visible_vms(outsider)) == []

    member.groups.clear()
    assert has_permission(member, ActionGroup.VM_OPERATE, world["vm2"]) is False
    assert list(visible_vms(member)) == []


def test_own_and_group_grants_add_up(world):
    group = Group.objects.create(name="ops")
    user = make_user(groups=[group])
    grant(group, "UserRole", world["vm1"])
    grant(user, "UserRole", world["vm3"])

    assert sorted(vm.name for vm in visible_vms(user)) == ["vm1", "vm3"]


def test_the_owner_of_a_vm_has_user_role_on_it_and_nothing_more(world):
    owner = make_user()
    vm = make_vm(world["cluster1"], name="mine", owner=owner)

    for action in ALL_ACTIONS:
        assert has_permission(owner, action, vm) is (action in OWNER_ACTIONS), action
        assert has_permission(owner, action, world["vm1"]) is False, action
    assert allowed_actions(owner, vm) == OWNER_ACTIONS
    assert list(visible_vms(owner)) == [vm]
    assert list(visible_vms(owner, ActionGroup.VM_OPERATE)) == [vm]
    assert list(visible_vms(owner, ActionGroup.VM_EDIT)) == []


def test_superusers_may_do_everything_and_inactive_or_anonymous_users_nothing(world):
    superuser = make_user(is_superuser=True)
    inactive = make_user(is_active=False)
    grant(inactive, "SuperUser")

    for action in ALL_ACTIONS:
        assert has_permission(superuser, action, world["vm3"]) is True
        assert has_permission(inactive, action, world["vm3"]) is False
        assert has_permission(AnonymousUser(), action, world["vm3"]) is False
    assert visible_vms(superuser).count() == 3
    assert visible_vms(inactive).count() == 0
    assert visible_vms(AnonymousUser()).count() == 0
    assert allowed_actions(superuser, world["vm1"]) == set(ALL_ACTIONS)


def test_a_storage_domain_inherits_from_its_data_center(world):
    user = make_user()
    sd = StorageDomain.objects.create(name="sd-x", path="/srv/x", data_center=world["dc1"])
    grant(user, "ReadOnlyAdmin", world["dc1"])

    assert has_permission(user, ActionGroup.INVENTORY_VIEW, sd) is True
    assert has_permission(make_user(), ActionGroup.INVENTORY_VIEW, sd) is False


def test_check_says_why_and_names_only_what_the_user_sees(world):
    viewer, stranger = make_user(), make_user()
    grant(viewer, "ReadOnlyAdmin", world["cluster1"])

    with pytest.raises(PermissionDenied) as refused:
        check(viewer, ActionGroup.VM_OPERATE, world["vm1"])
    assert str(refused.value) == (
        "You may not start, shut down, power off or reboot virtual machine vm1: no role of yours on it, "
        "its cluster, its data center or the system allows 'vm.operate'."
    )
    with pytest.raises(PermissionDenied) as hidden:
        check(stranger, ActionGroup.VM_OPERATE, world["vm1"])
    assert str(hidden.value) == (
        "You have no permission on this virtual machine: it is not yours and no role of yours covers it."
    )
    assert "vm1" not in str(hidden.value)
    check(viewer, ActionGroup.VM_VIEW, world["vm1"])  # allowed: no exception


def test_grants_on_lists_own_and_inherited_grants_with_object_names(world):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    grant(alice, "UserRole", world["vm1"])
    grant(bob, "ClusterAdmin", world["cluster1"])
    grant(carol, "ReadOnlyAdmin")
    grant(make_user(), "UserRole", world["vm2"])  # another VM's: not listed

    rows = [(p.user.username, p.role.name, p.inherited, p.object_name) for p in grants_on(world["vm1"])]

    assert rows == [
        ("alice", "UserRole", False, "vm1"),
        ("bob", "ClusterAdmin", True, "c1"),
        ("carol", "ReadOnlyAdmin", True, ""),
    ]


# Queries ------------------------------------------------------------------------------------


def queries(fn) -> int:
    with CaptureQueriesContext(connection) as captured:
        fn()
    return len(captured.captured_queries)


def test_a_check_is_one_query_and_none_for_superusers_and_owners(world):
    user = make_user(groups=[Group.objects.create(name="g")])
    grant(user, "UserRole", world["cluster1"])
    owner = make_user()
    mine = make_vm(world["cluster2"], owner=owner)
    template = Template.objects.get(pk=world["template1v2"].pk)  # its cluster not loaded: a subquery

    assert queries(lambda: has_permission(user, ActionGroup.VM_OPERATE, world["vm1"])) == 1
    assert queries(lambda: has_permission(user, ActionGroup.TEMPLATE_USE, template)) == 1
    assert queries(lambda: allowed_actions(user, world["vm1"])) == 1
    superuser = make_user(is_superuser=True)
    assert queries(lambda: has_permission(superuser, ActionGroup.VM_REMOVE, mine)) == 0
    assert queries(lambda: has_permission(owner, ActionGroup.VM_OPERATE, mine)) == 0


@pytest.mark.parametrize("grants", [3, 30])
def test_the_visible_vms_are_one_query_whatever_the_number_of_grants(world, grants):
    user = make_user(groups=[Group.objects.create(name="g")])
    vms = [make_vm(world["cluster3"]) for _ in range(grants)]
    for vm in vms:
        grant(user, "UserRole", vm)
    grant(user.groups.get(), "UserRole", world["cluster1"])
    make_vm(world["cluster2"], owner=user)

    with CaptureQueriesContext(connection) as captured:
        found = list(visible_vms(user))
        templates = list(visible_templates(user, ActionGroup.TEMPLATE_USE))

    assert len(captured.captured_queries) == 2
    assert len(found) == grants + 2  # the granted ones, vm1 (through the group's cluster), the owned one
    assert templates == []
