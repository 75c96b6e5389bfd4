"""The VM portal (/vm-portal/): a user sees and acts on their own and granted VMs only;
another user's VM is a 403 page that says nothing about it."""

import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.choices import VmStatus
from compute.models import Snapshot, Template, VirtualMachine
from inventory.models import Job
from inventory.services import set_quota
from tests.factories import grant, make_cluster, make_host, make_user, make_vm

pytestmark = pytest.mark.django_db

PASSWORD = "user-password-123"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def cluster():
    cluster = make_cluster(name="c1")
    make_host(cluster, status="up")
    return cluster


@pytest.fixture
def vms(alice, cluster):
    """alice owns `alice-web` and was granted UserRole on `shared-db`; `bobs-secret` is bob's."""
    bob = make_user("bob")
    shared = make_vm(cluster, name="shared-db", guest_ips=["10.0.0.7"], os_type="debian_12")
    grant(alice, "UserRole", shared)
    return {
        "mine": make_vm(cluster, name="alice-web", owner=alice, description="My web server"),
        "shared": shared,
        "theirs": make_vm(cluster, name="bobs-secret", owner=bob, description="Payroll", guest_ips=["10.9.9.9"]),
    }


# Signing in --------------------------------------------------------------------------------


def test_users_land_in_the_vm_portal_and_administrators_in_the_admin_portal(alice, admin_user):
    from conftest import ADMIN_PASSWORD

    user = Client().post(reverse("portals:login"), {"username": "alice", "password": PASSWORD})
    admin = Client().post(reverse("portals:login"), {"username": "admin", "password": ADMIN_PASSWORD})
    portal = Client().post(reverse("vm_portal:login"), {"username": "alice", "password": PASSWORD})

    assert (user.status_code, user["Location"]) == (302, reverse("vm_portal:vm-list"))
    assert (admin.status_code, admin["Location"]) == (302, reverse("portals:dashboard"))
    assert (portal.status_code, portal["Location"]) == (302, reverse("vm_portal:vm-list"))


def test_anonymous_users_are_sent_to_the_vm_portal_sign_in(vms):
    url = reverse("vm_portal:vm-detail", args=[vms["mine"].pk])

    response = Client().get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('vm_portal:login')}?next={url}"
    assert "Sign in" in Client().get(reverse("vm_portal:login")).content.decode()


def test_the_admin_portal_points_users_to_the_vm_portal(alice):
    response = signed_in(alice).get(reverse("portals:dashboard"))

    assert response.status_code == 403
    assert reverse("vm_portal:vm-list") in response.content.decode()


# The list ----------------------------------------------------------------------------------


def test_the_list_shows_own_and_granted_vms_and_nothing_of_anyone_elses(alice, vms):
    response = signed_in(alice).get(reverse("vm_portal:vm-list"))

    body = response.content.decode()
    assert response.status_code == 200
    assert [vm.name for vm in response.context["vm_list"]] == ["alice-web", "shared-db"]
    assert "alice-web" in body and "shared-db" in body and "10.0.0.7" in body and "Debian 12" in body
    for leak in ("bobs-secret", "Payroll", "10.9.9.9", str(vms["theirs"].pk)):
        assert leak not in body


def test_a_user_without_vms_is_told_how_to_get_one(alice):
    body = signed_in(alice).get(reverse("vm_portal:vm-list")).content.decode()

    assert "You have no virtual machines yet." in body
    assert "Ask an administrator to give you one." in body


@pytest.mark.parametrize("size", [3, 30])
def test_the_list_costs_the_same_queries_at_any_size(alice, cluster, size):
    for n in range(size):
        grant(alice, "UserRole", make_vm(cluster))
        make_vm(cluster, owner=alice if n % 2 else None)

    client = signed_in(alice)

    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("vm_portal:vm-list"))

    assert response.status_code == 200
    # session, user, count, page of VMs, may the user create VMs
    assert len(captured.captured_queries) == 5


# A VM's page -------------------------------------------------------------------------------


def test_an_own_vm_page_offers_the_actions_console_and_snapshots(alice, vms):
    vm = vms["mine"]
    Snapshot.objects.create(vm=vm, description="before upgrade")

    response = signed_in(alice).get(reverse("vm_portal:vm-detail", args=[vm.pk]))

    body = response.content.decode()
    assert response.status_code == 200
    assert "My web server" in body and "before upgrade" in body
    for name in ("run", "shutdown", "poweroff", "reboot"):
        assert reverse("vm_portal:vm-action", args=[vm.pk, name]) in body
    assert f'href="/vm-portal/vms/{vm.pk}/console/"' in body
    assert reverse("vm_portal:vm-snapshot-add", args=[vm.pk]) in body


def test_the_vm_portal_pages_follow_their_vms_live(alice, vms):
    client = signed_in(alice)
    vm = vms["mine"]

    listing = client.get(reverse("vm_portal:vm-list")).content.decode()
    detail = client.get(reverse("vm_portal:vm-detail", args=[vm.pk]))
    sign_in = Client().get(reverse("vm_portal:login")).content.decode()

    # The same script as the admin portal, subscribed to the rows and the VM of the page.
    assert re.findall(r'data-live="([^"]+)"', listing) == [f"vm.{vm.pk}", f"vm.{vms['shared'].pk}"]
    assert "olvm/live.js" in listing and 'id="olvm-live-config"' in listing and 'id="olvm-live"' in listing
    body = detail.content.decode()
    assert re.findall(r'data-live="([^"]+)"', body) == [f"vm.{vm.pk}"]
    config = detail.context["vm_portal_chrome"].live_config
    assert (config["path"], config["pageObject"], config["urls"]) == (
        "/ws/live/",
        {"kind": "vm", "id": str(vm.pk)},
        {"vm": "/vm-portal/vms/{id}/"},
    )
    states = json.loads(re.search(r'id="olvm-vm-action-states" type="application/json">(.*?)</script>', body).group(1))
    assert sorted(states) == ["poweroff", "reboot", "run", "shutdown"]
    assert "down" in states["run"] and "up" in states["poweroff"] and "down" not in states["poweroff"]
    assert all(f'data-action="{name}"' in body for name in states)
    assert "olvm/live.js" not in sign_in


def test_both_portals_sign_in_on_one_form_each_posting_to_its_own_portal():
    portal = Client().get(reverse("vm_portal:login"))
    admin = Client().get(reverse("portals:login"))

    assert [t.name for t in portal.templates][:3] == [
        "vm_portal/login.html",
        "registration/login.html",
        "base_plain.html",
    ]
    assert [t.name for t in admin.templates][:2] == ["registration/login.html", "base_plain.html"]
    body, admin_body = portal.content.decode(), admin.content.decode()
    assert 'action="/vm-portal/login/"' in body and "OLVM VM portal: your virtual machines" in body
    assert "<title>Sign in · OLVM VM Portal</title>" in body
    assert 'action="/login/"' in admin_body and "OLVM administration portal" in admin_body


def test_a_viewer_sees_the_vm_without_buttons(alice, cluster):
    vm = make_vm(cluster, name="watched")
    grant(alice, "ReadOnlyAdmin", vm)

    body = signed_in(alice).get(reverse("vm_portal:vm-detail", args=[vm.pk])).content.decode()

    assert "watched" in body
    assert reverse("vm_portal:vm-action", args=[vm.pk, "run"]) not in body
    assert "console/" not in body
    assert reverse("vm_portal:vm-snapshot-add", args=[vm.pk]) not in body


def test_another_users_vm_is_a_403_page_that_says_nothing_about_it(alice, vms):
    theirs = vms["theirs"]
    client = signed_in(alice)

    responses = [
        client.get(reverse("vm_portal:vm-detail", args=[theirs.pk])),
        client.get(reverse("vm_portal:vm-action", args=[theirs.pk, "shutdown"])),
        client.post(reverse("vm_portal:vm-action", args=[theirs.pk, "run"])),
        client.post(reverse("vm_portal:vm-snapshot-add", args=[theirs.pk]), {"description": "x"}),
    ]

    for response in responses:
        body = response.content.decode()
        assert response.status_code == 403
        assert [t.name for t in response.templates][0] == "403.html"
        assert "Access denied (403)" in body
        assert "This virtual machine is not yours" in body
        for leak in ("bobs-secret", "Payroll", "10.9.9.9"):
            assert leak not in body
    theirs.refresh_from_db()
    assert theirs.status == VmStatus.DOWN
    assert not Job.objects.exists() and not Snapshot.objects.exists()


def test_an_unknown_vm_is_a_404(alice):
    response = signed_in(alice).get(reverse("vm_portal:vm-detail", args=["00000000-0000-0000-0000-0000000000aa"]))

    assert response.status_code == 404


# Actions -----------------------------------------------------------------------------------


def test_run_starts_the_vm_and_says_so(alice, vms):
    vm = vms["shared"]
    client = signed_in(alice)

    response = client.post(reverse("vm_portal:vm-action", args=[vm.pk, "run"]))

    assert (response.status_code, response["Location"]) == (302, reverse("vm_portal:vm-detail", args=[vm.pk]))
    vm.refresh_from_db()
    job = Job.objects.get(vm_id=vm.pk)
    assert (vm.status, job.action_type, job.owner) == (VmStatus.WAIT_FOR_LAUNCH, "RunVm", alice)
    assert "Run: shared-db. Job started" in client.get(response["Location"]).content.decode()


def test_power_off_is_confirmed_first(alice, cluster):
    vm = make_vm(cluster, status=VmStatus.UP, name="running", owner=alice)
    url = reverse("vm_portal:vm-action", args=[vm.pk, "poweroff"])
    client = signed_in(alice)

    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Are you sure you want to power off VM running?" in confirm.content.decode()
    assert not Job.objects.exists()

    client.post(url)
    assert list(Job.objects.values_list("action_type", flat=True)) == ["StopVm"]


def test_a_refused_action_shows_the_reason(alice, cluster):
    vm = make_vm(cluster, status=VmStatus.UP, name="running", owner=alice)
    client = signed_in(alice)

    response = client.post(reverse("vm_portal:vm-action", args=[vm.pk, "run"]))

    body = client.get(response["Location"]).content.decode()
    assert "Cannot start a VM whose status is &#x27;up&#x27;" in body
    assert not Job.objects.exists()


def test_a_viewer_may_not_act_and_is_told_why(alice, cluster):
    vm = make_vm(cluster, name="watched")
    grant(alice, "ReadOnlyAdmin", vm)

    response = signed_in(alice).post(reverse("vm_portal:vm-action", args=[vm.pk, "run"]))

    assert response.status_code == 403
    assert "You may not start, shut down, power off or reboot virtual machine watched" in response.content.decode()
    assert not Job.objects.exists()


def test_snapshots_are_created_reverted_and_deleted(alice, vms):
    vm = vms["mine"]
    client = signed_in(alice)

    client.post(reverse("vm_portal:vm-snapshot-add", args=[vm.pk]), {"description": "before"})
    snapshot = Snapshot.objects.get(vm=vm)
    Snapshot.objects.filter(pk=snapshot.pk).update(status="ok")
    Job.objects.update(status="finished")
    revert_url = reverse("vm_portal:vm-snapshot-action", args=[vm.pk, snapshot.pk, "revert"])
    assert "Are you sure you want to revert VM alice-web to snapshot" in client.get(revert_url).content.decode()
    client.post(revert_url)
    Snapshot.objects.filter(pk=snapshot.pk).update(status="ok")
    VirtualMachine.objects.filter(pk=vm.pk).update(status="down")
    Job.objects.update(status="finished")
    client.post(reverse("vm_portal:vm-snapshot-action", args=[vm.pk, snapshot.pk, "remove"]))

    assert list(Job.objects.order_by("started_at").values_list("action_type", flat=True)) == [
        "CreateSnapshot",
        "RestoreAllSnapshots",
        "RemoveSnapshot",
    ]


# New VM ------------------------------------------------------------------------------------


def test_a_power_user_creates_a_vm_from_a_granted_template_within_the_quota(alice, cluster):
    template = Template.objects.create(name="debian", cluster=cluster, vcpus=2, memory_mib=2048)
    grant(alice, "PowerUserRole", template)
    set_quota(user=None, principal=alice, max_vcpus=8, max_memory_mib=8192)
    client = signed_in(alice)

    form = client.get(reverse("vm_portal:vm-add"))
    body = form.content.decode()
    assert "debian (2 vCPU, 2048 MiB)" in body
    assert "Your quota" in body and [(r.label, r.used, r.limit) for r in form.context["quota"]][:2] == [
        ("vCPUs", 0, 8),
        ("Memory", 0, 8192),
    ]
    response = client.post(reverse("vm_portal:vm-add"), {"name": "alice-new", "template": str(template.pk)})

    vm = VirtualMachine.objects.get(name="alice-new")
    assert (response.status_code, response["Location"]) == (302, reverse("vm_portal:vm-detail", args=[vm.pk]))
    assert (vm.owner, vm.cluster, vm.vcpus) == (alice, cluster, 2)


def test_a_power_user_chooses_thin_or_cloned_disks(alice, cluster):
    from storage.models import Disk
    from tests.factories import make_disk, make_storage_domain

    template = Template.objects.create(name="debian", cluster=cluster)
    base = make_disk(make_storage_domain(cluster.data_center), template=template)
    grant(alice, "PowerUserRole", template)
    client = signed_in(alice)

    form = client.get(reverse("vm_portal:vm-add")).context["form"]
    client.post(reverse("vm_portal:vm-add"), {"name": "thin", "template": str(template.pk)})
    client.post(
        reverse("vm_portal:vm-add"), {"name": "cloned", "template": str(template.pk), "storage_allocation": "clone"}
    )

    assert (form["storage_allocation"].value(), form.fields["storage_allocation"].choices) == (
        "thin",
        [("thin", "Thin"), ("clone", "Clone")],
    )
    assert Disk.objects.get(attachments__vm__name="thin").backing_disk_id == base.pk
    assert Disk.objects.get(attachments__vm__name="cloned").backing_disk_id is None


def test_a_user_role_has_no_template_to_create_from(alice, cluster):
    template = Template.objects.create(name="debian", cluster=cluster)
    grant(alice, "UserRole", cluster)
    client = signed_in(alice)

    body = client.get(reverse("vm_portal:vm-add")).content.decode()
    response = client.post(reverse("vm_portal:vm-add"), {"name": "nope", "template": str(template.pk)})

    assert "No template is available to you" in body and "debian" not in body
    assert response.status_code == 200
    assert "Select a valid choice." in response.content.decode()
    assert not VirtualMachine.objects.filter(name="nope").exists()


def test_the_quota_refusal_is_shown_on_the_form(alice, cluster):
    template = Template.objects.create(name="big", cluster=cluster, vcpus=4, memory_mib=4096)
    grant(alice, "PowerUserRole", cluster)
    set_quota(user=None, principal=alice, max_vcpus=6)
    make_vm(cluster, owner=alice, vcpus=4)

    response = signed_in(alice).post(reverse("vm_portal:vm-add"), {"name": "too-big", "template": str(template.pk)})

    body = response.content.decode()
    assert response.status_code == 200
    assert "Your quota does not allow this VM (vCPUs: it needs 4, 2 of your 6 are left)." in body
    assert not VirtualMachine.objects.filter(name="too-big").exists()


def test_a_name_taken_is_a_field_error(alice, cluster, vms):
    template = Template.objects.create(name="debian", cluster=cluster)
    grant(alice, "PowerUserRole", cluster)

    response = signed_in(alice).post(reverse("vm_portal:vm-add"), {"name": "bobs-secret", "template": str(template.pk)})

    assert response.status_code == 200
    assert response.context["form"].errors == {"name": ["A VM named bobs-secret already exists in this data center."]}


@pytest.mark.django_db
def test_the_vm_portal_console_page_is_for_the_vms_user_only(django_user_model):
    owner = django_user_model.objects.create_user(username="carol", password="carol-password-1")
    other = django_user_model.objects.create_user(username="dave", password="dave-password-1")
    vm = make_vm(status=VmStatus.UP, owner=owner, name="carols-vm")
    client = Client()
    client.force_login(owner)
    page = client.get(f"/vm-portal/vms/{vm.pk}/console/")
    assert page.status_code == 200 and b"carols-vm" in page.content
    client.force_login(other)
    refused = client.get(f"/vm-portal/vms/{vm.pk}/console/")
    assert refused.status_code == 403 and b"carols-vm" not in refused.content
