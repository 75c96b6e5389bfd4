"""A VM user's own VMs: create_own_vm checks template.use, vm.create and the quota (compute.quota)."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError

from compute.models import Template, VirtualMachine
from compute.quota import Limits, Usage, combine, limits_of, quota_rows, refusal, usage_of
from compute.services import create_own_vm
from inventory.exceptions import ConflictError
from inventory.models import Event
from inventory.services import set_quota
from storage.models import GIB, DiskAttachment
from tests.factories import grant, make_cluster, make_disk, make_storage_domain, make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster():
    return make_cluster(name="c1")


@pytest.fixture
def template(cluster):
    """A 2 vCPU / 2 GiB template of cluster c1 with a 10 GiB disk."""
    tpl = Template.objects.create(name="debian", cluster=cluster, vcpus=2, memory_mib=2048)
    make_disk(make_storage_domain(cluster.data_center), provisioned_size=10 * GIB, template=tpl)
    return tpl


# Permissions ---------------------------------------------------------------------------------


def test_power_user_on_a_template_creates_a_vm_of_their_own_from_it(template, cluster):
    alice = make_user("alice")
    grant(alice, "PowerUserRole", template)

    vm, job = create_own_vm(user=alice, template=template, name="alice-1")

    vm.refresh_from_db()
    assert (vm.owner, vm.cluster, vm.vcpus, vm.memory_mib) == (alice, cluster, 2, 2048)
    assert job is not None and job.action_type == "AddVmFromTemplate"
    assert DiskAttachment.objects.get(vm=vm).disk.provisioned_size == 10 * GIB
    assert Event.objects.get(code="USER_ADD_VM").message == "VM alice-1 was created by alice from template debian."


def test_power_user_on_the_cluster_creates_from_its_templates(template, cluster):
    alice = make_user()
    grant(alice, "PowerUserRole", cluster)

    vm, _ = create_own_vm(user=alice, template=template, name="from-cluster", vcpus=1, memory_mib=1024)

    assert (vm.owner_id, vm.vcpus, vm.memory_mib) == (alice.pk, 1, 1024)


def test_a_power_user_may_clone_the_template_disks(template):
    alice = make_user()
    grant(alice, "PowerUserRole", template)

    vm, job = create_own_vm(user=alice, template=template, name="alice-clone", clone=True)

    disk = DiskAttachment.objects.get(vm=vm).disk
    assert (disk.backing_disk_id, disk.provisioned_size, vm.owner_id) == (None, 10 * GIB, alice.pk)
    assert list(job.steps.values_list("description", flat=True)) == ["Clone disk alice-clone_Disk1 from template disk"]


def test_user_role_cannot_create_vms(template, cluster):
    alice = make_user()
    grant(alice, "UserRole", cluster)

    with pytest.raises(PermissionDenied) as refused:
        create_own_vm(user=alice, template=template, name="nope")

    assert str(refused.value) == "You have no permission on this template: no role of yours covers it."
    assert not VirtualMachine.objects.filter(name="nope").exists()


def test_a_template_grant_does_not_reach_another_cluster(template):
    alice = make_user()
    grant(alice, "PowerUserRole", template)
    elsewhere = make_cluster(template.cluster.data_center, name="c2")

    with pytest.raises(PermissionDenied) as refused:
        create_own_vm(user=alice, template=template, name="nope", cluster=elsewhere)

    assert str(refused.value) == "You have no permission on this cluster: no role of yours covers it."
    assert not VirtualMachine.objects.filter(name="nope").exists()


def test_a_template_without_cluster_needs_one(cluster):
    alice = make_user()
    grant(alice, "PowerUserRole")
    blank = Template.objects.get(name="Blank")

    with pytest.raises(ValidationError) as refused:
        create_own_vm(user=alice, template=blank, name="blank-vm")
    vm, _ = create_own_vm(user=alice, template=blank, name="blank-vm", cluster=cluster)

    assert refused.value.message_dict == {
        "cluster": ["Template Blank belongs to no cluster: choose the cluster of the VM."]
    }
    assert vm.owner == alice


def test_only_a_users_own_choices_are_taken(template):
    alice = make_user()
    grant(alice, "PowerUserRole", template)

    with pytest.raises(ValidationError) as refused:
        create_own_vm(user=alice, template=template, name="x", kernel_path="/etc/shadow")

    assert refused.value.message_dict == {"kernel_path": ["'kernel_path' cannot be set on a virtual machine."]}


# Quota ---------------------------------------------------------------------------------------


def test_a_vm_beyond_the_quota_is_refused_saying_why(template, cluster):
    alice = make_user()
    grant(alice, "PowerUserRole", cluster)
    set_quota(user=None, principal=alice, max_vcpus=3, max_memory_mib=8192, max_disk_gib=15)
    make_vm(cluster, owner=alice, vcpus=2, memory_mib=1024)  # already owned: 2 vCPUs
    vms = VirtualMachine.objects.count()

    with pytest.raises(ConflictError) as refused:
        create_own_vm(user=alice, template=template, name="too-big")

    assert refused.value.code == "quota_exceeded"
    assert refused.value.message == (
        "Your quota does not allow this VM (vCPUs: it needs 2, 1 of your 3 are left). Ask an administrator for more."
    )
    assert VirtualMachine.objects.count() == vms
    assert not Event.objects.filter(code="USER_ADD_VM").exists()


def test_every_limit_that_is_passed_is_named(template, cluster):
    alice = make_user()
    grant(alice, "PowerUserRole", cluster)
    set_quota(user=None, principal=alice, max_vcpus=1, max_memory_mib=1024, max_disk_gib=5)

    with pytest.raises(ConflictError) as refused:
        create_own_vm(user=alice, template=template, name="too-big")

    assert refused.value.message == (
        "Your quota does not allow this VM (vCPUs: it needs 2, 1 of your 1 are left; memory: it needs 2048 MiB, "
        "1024 MiB of your 1024 MiB are left; disk: it needs 10 GiB, 5 GiB of your 5 GiB are left). "
        "Ask an administrator for more."
    )


def test_a_vm_that_fits_exactly_is_created(template, cluster):
    alice = make_user()
    grant(alice, "PowerUserRole", cluster)
    set_quota(user=None, principal=alice, max_vcpus=4, max_memory_mib=4096, max_disk_gib=20)
    create_own_vm(user=alice, template=template, name="one")

    create_own_vm(user=alice, template=template, name="two")
    with pytest.raises(ConflictError):
        create_own_vm(user=alice, template=template, name="three")

    assert usage_of(alice) == Usage(vcpus=4, memory_mib=4096, disk_bytes=20 * GIB)
    assert [(r.label, r.used, r.limit, r.left) for r in quota_rows(alice)] == [
        ("vCPUs", 4, 4, 0),
        ("Memory", 4096, 4096, 0),
        ("Disk", 20, 20, 0),
    ]


def test_a_users_quota_wins_over_their_groups_and_groups_give_the_most_generous():
    small, big = Group.objects.create(name="small"), Group.objects.create(name="big")
    alice = make_user(groups=[small, big])
    set_quota(user=None, principal=small, max_vcpus=2, max_memory_mib=None, max_disk_gib=10)
    set_quota(user=None, principal=big, max_vcpus=8, max_memory_mib=4096, max_disk_gib=5)

    assert limits_of(alice) == Limits(vcpus=8, memory_mib=None, disk_gib=10)
    assert limits_of(make_user()) == Limits()

    set_quota(user=None, principal=alice, max_vcpus=1)
    assert limits_of(alice) == Limits(vcpus=1, memory_mib=None, disk_gib=None)


def test_combine_and_refusal_are_plain_logic():
    assert combine(None, []) == Limits()
    assert combine(Limits(1, 2, 3), [Limits(9, 9, 9)]) == Limits(1, 2, 3)
    assert combine(None, [Limits(1, None, 3), Limits(2, 5, 1)]) == Limits(2, None, 3)
    assert refusal(Limits(), Usage(100, 100, 100 * GIB), Usage(1, 1, GIB)) is None
    assert refusal(Limits(disk_gib=1), Usage(0, 0, GIB + 1), Usage(0, 0, GIB + 1)) == (
        "Your quota does not allow this VM (disk: it needs 2 GiB, 1 GiB of your 1 GiB are left). "
        "Ask an administrator for more."
    )
