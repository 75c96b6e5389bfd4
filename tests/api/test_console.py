"""POST /api/v1/vms/{id}/console/: a one-time console ticket for a running VM."""

import sys
import types

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from rest_framework.test import APIClient

from compute.choices import VmStatus
from compute.services import claim_console_ticket, console_ticket_key, may_open_console
from inventory.models import Event
from tests.factories import make_host, make_vm


@pytest.fixture
def agent_host(cluster):
    """A host with an agent to reach (not simulated in-process): the ticket never calls it."""
    return make_host(cluster, simulated=False, address="127.0.0.1", cert_fingerprint="ab:cd")


@pytest.fixture
def running_vm(cluster, agent_host):
    return make_vm(cluster, status=VmStatus.UP, run_on_host=agent_host, console_type="serial", name="tiny1")


def url(vm) -> str:
    return f"/api/v1/vms/{vm.pk}/console/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def test_a_ticket_for_the_serial_console_of_a_running_vm(api_client, admin_user, running_vm):
    response = api_client.post(url(running_vm), {"kind": "serial"}, format="json")

    assert response.status_code == 200, response.data
    body = response.json()
    ticket = body["ticket"]
    assert body == {
        "ticket": ticket,
        "kind": "serial",
        "vm_id": str(running_vm.pk),
        "expires_in": 30,
        "url": f"ws://testserver/ws/console/{running_vm.pk}/?ticket={ticket}",
    }
    assert len(ticket) >= 40
    key = cache.make_and_validate_key(console_ticket_key(ticket))
    assert 28 <= cache._cache.get_client(key).ttl(key) <= 30
    event = Event.objects.get(code="VM_SET_TICKET")
    assert event.message == "User admin initiated a serial console session for VM tiny1."
    assert (event.vm_id, event.user_id) == (running_vm.pk, admin_user.pk)


def test_the_ticket_is_bound_to_the_user_the_vm_and_the_kind_and_good_once(api_client, admin_user, running_vm):
    ticket = api_client.post(url(running_vm), {}, format="json").json()["ticket"]

    assert claim_console_ticket(ticket) == {"user_id": admin_user.pk, "vm_id": str(running_vm.pk), "kind": "serial"}
    assert claim_console_ticket(ticket) is None
    assert claim_console_ticket("no-such-ticket") is None


def test_each_ticket_is_new(api_client, running_vm):
    first = api_client.post(url(running_vm), {}, format="json").json()["ticket"]
    second = api_client.post(url(running_vm), {}, format="json").json()["ticket"]

    assert first != second


@pytest.mark.parametrize("status", [VmStatus.DOWN, VmStatus.SUSPENDED, VmStatus.NOT_RESPONDING])
def test_a_vm_that_does_not_run_has_no_console(api_client, cluster, agent_host, status):
    vm = make_vm(cluster, status=status, run_on_host=None if status == VmStatus.DOWN else agent_host, name="off1")

    response = api_client.post(url(vm), {"kind": "serial"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "vm_not_running"
    assert response.json()["detail"].startswith("VM off1 is ")
    assert response.json()["detail"].endswith(": a console opens only while it runs on a host.")
    assert not Event.objects.filter(code="VM_SET_TICKET").exists()


def test_a_down_vm_is_named_in_the_reason(api_client, cluster):
    vm = make_vm(cluster, status=VmStatus.DOWN, name="db-01")

    response = api_client.post(url(vm), {}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "VM db-01 is down: a console opens only while it runs on a host.",
        "code": "vm_not_running",
    }


def test_vnc_only_where_the_vm_has_vnc_graphics(api_client, cluster, agent_host, running_vm):
    vnc_vm = make_vm(cluster, status=VmStatus.UP, run_on_host=agent_host, console_type="vnc")

    refused = api_client.post(url(running_vm), {"kind": "vnc"}, format="json")
    granted = api_client.post(url(vnc_vm), {"kind": "vnc"}, format="json")

    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "VM tiny1 has no VNC display (its console is Serial console only); use its serial console.",
        "code": "no_vnc",
    }
    assert granted.status_code == 200 and granted.json()["kind"] == "vnc"


def test_an_unknown_kind_is_a_400(api_client, running_vm):
    response = api_client.post(url(running_vm), {"kind": "spice"}, format="json")

    assert response.status_code == 400
    assert "kind" in response.json()


def test_a_host_simulated_in_process_has_no_console(api_client, cluster):
    vm = make_vm(cluster, status=VmStatus.UP, name="demo1")  # on a simulated host without certificate

    response = api_client.post(url(vm), {}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "no_console"
    assert "simulated inside the engine with no agent" in response.json()["detail"]


def test_anonymous_users_get_no_ticket(running_vm):
    response = APIClient().post(url(running_vm), {}, format="json")

    assert response.status_code in (401, 403)


def test_a_user_without_the_console_right_gets_no_ticket(django_user_model, running_vm):
    alice = django_user_model.objects.create_user(username="alice", password="x")

    response = client_for(alice).post(url(running_vm), {}, format="json")

    assert response.status_code in (403, 404)  # 404: the VM portal's users do not even see it
    assert not Event.objects.filter(code="VM_SET_TICKET").exists()


# may_open_console: the one check, switched by inventory.permissions when it is there ------------


def test_administrators_may_open_every_console(admin_user, running_vm, monkeypatch):
    monkeypatch.setitem(sys.modules, "inventory.permissions", None)  # no permission module at all

    assert may_open_console(admin_user, running_vm) is True
    assert may_open_console(AnonymousUser(), running_vm) is False
    assert may_open_console(None, running_vm) is False


def test_the_object_permission_hook_decides_for_other_users(django_user_model, running_vm, monkeypatch):
    alice = django_user_model.objects.create_user(username="alice", password="x")
    asked = []
    hook = types.ModuleType("inventory.permissions")
    hook.has_permission = lambda user, action, obj: asked.append((user.pk, action, obj.pk)) or obj.name == "tiny1"
    monkeypatch.setitem(sys.modules, "inventory.permissions", hook)

    assert may_open_console(alice, running_vm) is True
    running_vm.name = "other"
    assert may_open_console(alice, running_vm) is False
    assert asked == [(alice.pk, "vm.console", running_vm.pk)] * 2


def test_without_the_permission_module_only_administrators_may(django_user_model, running_vm, monkeypatch):
    alice = django_user_model.objects.create_user(username="alice", password="x")
    monkeypatch.setitem(sys.modules, "inventory.permissions", None)  # import fails: ModuleNotFoundError

    assert may_open_console(alice, running_vm) is False


def test_an_inactive_user_may_not(django_user_model, running_vm):
    bob = django_user_model.objects.create_user(username="bob", password="x", is_staff=True, is_active=False)

    assert may_open_console(bob, running_vm) is False
