"""The permission and quota services: grant, revoke, set a quota; what they refuse and record."""

import uuid

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from compute.services import remove_template, remove_vm
from inventory.models import Event, Permission, Quota
from inventory.services import (
    grant_permission,
    remove_cluster,
    remove_quota,
    revoke_permission,
    set_quota,
    update_quota,
)
from tests.factories import grant, make_cluster, make_host, make_user, make_vm, role

pytestmark = pytest.mark.django_db


def test_grant_records_who_got_what_where(admin_user):
    alice = make_user("alice")
    vm = make_vm(name="web1")

    permission = grant_permission(user=admin_user, principal=alice, role=role("UserRole"), obj=vm)

    assert (permission.user, permission.group, permission.object_type, permission.object_id) == (
        alice,
        None,
        "vm",
        vm.pk,
    )
    event = Event.objects.get(code="USER_ADD_PERMISSION")
    assert (event.message, event.object_id, event.vm_id, event.username) == (
        "User alice was granted role UserRole on VM web1 by admin.",
        vm.pk,
        vm.pk,
        "admin",
    )


def test_grant_to_a_group_on_the_system(admin_user):
    group = Group.objects.create(name="operators")

    permission = grant_permission(user=admin_user, principal=group, role=role("ReadOnlyAdmin"), obj=None)

    assert (permission.group, permission.object_type, permission.object_id) == (group, "system", None)
    assert Event.objects.get(code="USER_ADD_PERMISSION").message == (
        "Group operators was granted role ReadOnlyAdmin on the system by admin."
    )


def test_the_same_grant_twice_is_refused(admin_user):
    alice, cluster = make_user("alice"), make_cluster()
    grant(alice, "UserRole", cluster)
    grant(alice, "UserRole")

    with pytest.raises(ValidationError) as on_object:
        grant_permission(user=admin_user, principal=alice, role=role("UserRole"), obj=cluster)
    with pytest.raises(ValidationError) as on_system:
        grant_permission(user=admin_user, principal=alice, role=role("UserRole"), obj=None)

    assert on_object.value.messages == ["This user already has this role on this object."]
    assert on_system.value.messages == ["This user already has this role on the system."]
    assert Permission.objects.count() == 2
    grant(alice, "PowerUserRole", cluster)  # another role on the same object is fine


def test_a_grant_on_a_host_is_refused(admin_user):
    with pytest.raises(ValidationError) as refused:
        grant_permission(user=admin_user, principal=make_user(), role=role("UserRole"), obj=make_host())

    assert refused.value.message_dict == {
        "object_type": ["Permissions are granted on the system, a data center, a cluster, a VM or a template."]
    }


def test_the_database_keeps_one_principal_and_an_object_id_off_the_system():
    alice, group = make_user(), Group.objects.create(name="g")
    user_role = role("UserRole")

    with pytest.raises(IntegrityError), transaction.atomic():
        Permission.objects.create(user=alice, group=group, role=user_role, object_type="system")
    with pytest.raises(IntegrityError), transaction.atomic():
        Permission.objects.create(user=alice, role=user_role, object_type="cluster")
    with pytest.raises(IntegrityError), transaction.atomic():
        Permission.objects.create(user=alice, role=user_role, object_type="system", object_id=uuid.uuid4())


def test_revoke_records_and_deletes(admin_user):
    alice, vm = make_user("alice"), make_vm(name="web1")
    permission = grant(alice, "UserRole", vm)

    revoke_permission(permission, user=admin_user)

    assert not Permission.objects.exists()
    assert Event.objects.get(code="USER_REMOVE_PERMISSION").message == (
        "Role UserRole on VM web1 was taken from User alice by admin."
    )


def test_removing_an_object_removes_its_grants(admin_user):
    from compute.models import Template

    alice = make_user()
    cluster = make_cluster()
    vm, other = make_vm(cluster), make_vm(cluster)
    template = Template.objects.create(name="tpl", cluster=cluster)
    grant(alice, "UserRole", vm)
    kept = grant(alice, "UserRole", other)
    grant(alice, "PowerUserRole", template)
    grant(alice, "UserRole", cluster)

    remove_vm(vm, user=admin_user)
    remove_template(template, user=admin_user)
    remove_vm(other, user=admin_user)
    assert list(Permission.objects.values_list("object_type", flat=True)) == ["cluster"]
    remove_cluster(cluster, user=admin_user)

    assert not Permission.objects.exists()
    assert kept.object_id == other.pk


def test_set_quota_creates_then_changes_the_one_quota(admin_user):
    alice = make_user("alice")

    quota = set_quota(user=admin_user, principal=alice, max_vcpus=4, max_memory_mib=8192)
    again = set_quota(user=admin_user, principal=alice, max_vcpus=8)

    assert again.pk == quota.pk
    assert (again.max_vcpus, again.max_memory_mib, again.max_disk_gib) == (8, 8192, None)
    assert list(Event.objects.filter(code="USER_SET_QUOTA").values_list("message", flat=True).order_by("id")) == [
        "Quota of user alice: 4 vCPUs, 8192 MiB memory, unlimited disk was set by admin.",
        "Quota of user alice: 8 vCPUs, 8192 MiB memory, unlimited disk was set by admin.",
    ]


def test_quota_of_a_group_update_and_remove(admin_user):
    group = Group.objects.create(name="students")
    quota = set_quota(user=admin_user, principal=group, max_disk_gib=50)

    update_quota(quota, user=admin_user, max_disk_gib=None, max_vcpus=2)
    quota.refresh_from_db()
    assert (quota.group, quota.max_vcpus, quota.max_disk_gib) == (group, 2, None)

    remove_quota(quota, user=admin_user)
    assert not Quota.objects.exists()
    assert Event.objects.get(code="USER_REMOVE_QUOTA").message == "Quota of group students was removed by admin."


def test_a_quota_needs_a_principal_and_known_limits(admin_user):
    with pytest.raises(ValidationError):
        set_quota(user=admin_user, principal=None, max_vcpus=1)
    with pytest.raises(ValidationError) as unknown:
        set_quota(user=admin_user, principal=make_user(), max_gpus=1)

    assert unknown.value.message_dict == {"max_gpus": ["'max_gpus' cannot be set on a quota."]}
    assert not Quota.objects.exists()
