"""The console websocket (portals/console.py) against a real host agent: the sim driver
behind the agent's HTTPS server with mutual TLS, on 127.0.0.1, its certificate issued by
the engine CA like a deployed host's. The sim console greets and echoes what it is sent."""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from compute import services as compute_services
from compute.choices import VmStatus
from compute.models import VirtualMachine
from compute.services import console_ticket
from hostagent.agent.config import config_from_dict
from hostagent.agent.testing import running_agent
from inventory.certs import issue_host_certificate
from inventory.models import Host
from inventory.servicekit import agent_for
from olvm_site.asgi import application
from portals.routing import websocket_urlpatterns
from tests.factories import make_cluster, make_host, make_vm

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def agent_host(transactional_db, tmp_path):
    """A host row (not simulated) served by a real agent with the sim driver on 127.0.0.1."""
    host = make_host(make_cluster(), simulated=False, address="127.0.0.1", name="h1")
    paths = issue_host_certificate(host)  # common name: the host id; subject alternative name 127.0.0.1
    config = config_from_dict(
        {
            "listen_address": "127.0.0.1",
            "listen_port": 0,
            "cert_file": paths.cert_file,
            "key_file": paths.key_file,
            "ca_file": paths.ca_file,
            "driver": "sim",
            "host_name": "h1",
            "storage_roots": [str(tmp_path)],
        }
    )
    with running_agent(config) as server:
        Host.objects.filter(pk=host.pk).update(agent_port=server.port)
        host.refresh_from_db()
        yield host


def running_vm(host: Host, console_type: str = "serial", name: str = "tiny1") -> VirtualMachine:
    """A VM Up on the host, in the engine and on the agent."""
    vm = make_vm(host.cluster, status=VmStatus.UP, run_on_host=host, console_type=console_type, name=name)
    agent_for(host).create_vm(
        {"id": str(vm.pk), "name": vm.name, "vcpus": 1, "memory_mib": 64, "console_type": console_type}
    )
    return vm


@pytest.fixture
def vm(agent_host):
    return running_vm(agent_host)


@pytest.fixture
def other_admin(django_user_model):
    return django_user_model.objects.create_user(username="root2", password="x", is_staff=True)


def banner(vm) -> bytes:
    return f"OLVM simulated serial console of VM {vm.name} (no hypervisor)\r\n".encode()


def communicator(user, vm_id, ticket: str | None = None) -> WebsocketCommunicator:
    path = f"/ws/console/{vm_id}/" + (f"?ticket={ticket}" if ticket is not None else "")
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    comm.scope["user"] = user
    return comm


async def ticket_for(vm, user, kind: str = "serial") -> str:
    return (await database_sync_to_async(console_ticket)(vm, user=user, kind=kind))["ticket"]


async def receive_bytes(comm, marker: bytes, timeout: float = 10) -> bytes:
    data = b""
    while marker not in data:
        message = await comm.receive_output(timeout)
        assert message["type"] == "websocket.send" and "bytes" in message, message
        data += message["bytes"]
    return data


async def receive_json(comm, timeout: float = 10) -> dict:
    message = await comm.receive_output(timeout)
    assert message["type"] == "websocket.send" and "text" in message, message
    return json.loads(message["text"])


async def receive_close(comm, timeout: float = 10) -> int:
    message = await comm.receive_output(timeout)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def open_console(user, vm) -> WebsocketCommunicator:
    comm = communicator(user, vm.pk, await ticket_for(vm, user))
    connected, _ = await comm.connect(timeout=10)
    assert connected
    assert await receive_json(comm) == {
        "type": "status",
        "state": "connected",
        "kind": "serial",
        "vm": vm.name,
        "host": "h1",
    }
    assert await receive_bytes(comm, b"\r\n") == banner(vm)
    return comm


async def assert_refused(comm) -> None:
    connected, code = await comm.connect(timeout=10)
    assert (connected, code) == (False, 4403)
    assert await comm.receive_nothing(0.2)


# Through the console ---------------------------------------------------------------------------


async def test_bytes_go_both_ways_through_the_sim_console(admin_user, vm):
    comm = await open_console(admin_user, vm)

    await comm.send_to(bytes_data=b"echo hello\r")
    echoed = await receive_bytes(comm, b"echo hello\r\n")
    await comm.send_to(text_data="ls\r")  # a text frame is sent on as its UTF-8 bytes
    listed = await receive_bytes(comm, b"ls\r\n")

    assert (echoed, listed) == (b"echo hello\r\n", b"ls\r\n")
    await comm.disconnect()


async def test_the_websocket_url_of_the_ticket_works_through_the_asgi_application(admin_user, vm):
    def session_cookie() -> str:
        client = Client()
        client.force_login(admin_user)
        return client.cookies["sessionid"].value

    cookie = await database_sync_to_async(session_cookie)()
    ticket = await ticket_for(vm, admin_user)
    comm = WebsocketCommunicator(
        application,
        f"/ws/console/{vm.pk}/?ticket={ticket}",
        headers=[
            (b"origin", b"http://127.0.0.1:8000"),
            (b"host", b"127.0.0.1:8000"),
            (b"cookie", f"sessionid={cookie}".encode()),
        ],
    )

    connected, _ = await comm.connect(timeout=10)

    assert connected
    assert (await receive_json(comm))["state"] == "connected"
    assert await receive_bytes(comm, b"\r\n") == banner(vm)
    await comm.disconnect()


async def test_a_second_console_of_the_same_user_takes_over(admin_user, vm):
    first = await open_console(admin_user, vm)

    second = await open_console(admin_user, vm)

    assert await receive_json(first) == {
        "type": "closed",
        "code": 4410,
        "reason": "Another session of yours opened this console; this one was closed.",
    }
    assert await receive_close(first) == 4410
    await second.send_to(bytes_data=b"still here\r")
    assert await receive_bytes(second, b"still here\r\n") == b"still here\r\n"
    await first.disconnect()
    await second.disconnect()


async def test_another_users_console_of_the_same_vm_is_not_taken_over(admin_user, other_admin, vm):
    first = await open_console(admin_user, vm)

    second = await open_console(other_admin, vm)

    assert await first.receive_nothing(0.3)
    await first.disconnect()
    await second.disconnect()


async def test_an_idle_console_is_closed(admin_user, vm, settings):
    settings.OLVM_CONSOLE_IDLE_SECONDS = 0.5
    comm = await open_console(admin_user, vm)

    closed = await receive_json(comm, timeout=5)

    assert closed == {"type": "closed", "code": 4408, "reason": "Closed after 0.5 s without activity."}
    assert await receive_close(comm) == 4408
    await comm.disconnect()


async def test_the_agent_refusing_the_stream_closes_with_its_reason(admin_user, agent_host):
    vnc_vm = await database_sync_to_async(running_vm)(agent_host, "vnc", "vnc1")
    comm = communicator(admin_user, vnc_vm.pk, await ticket_for(vnc_vm, admin_user, "vnc"))

    connected, _ = await comm.connect(timeout=10)
    closed = await receive_json(comm)

    assert connected
    assert closed["type"] == "closed" and closed["code"] == 4502
    assert "vnc_open: VM" in closed["reason"] and "runs on a simulated host" in closed["reason"]
    assert await receive_close(comm) == 4502
    await comm.disconnect()


async def test_a_vm_that_stopped_since_the_ticket_has_no_console(admin_user, vm):
    ticket = await ticket_for(vm, admin_user)
    await database_sync_to_async(VirtualMachine.objects.filter(pk=vm.pk).update)(status=VmStatus.DOWN, run_on_host=None)
    comm = communicator(admin_user, vm.pk, ticket)

    connected, _ = await comm.connect(timeout=10)

    assert connected
    assert await receive_json(comm) == {
        "type": "closed",
        "code": 4409,
        "reason": "VM tiny1 is down: a console opens only while it runs on a host.",
    }
    assert await receive_close(comm) == 4409
    await comm.disconnect()


# Refused before the handshake completes: code 4403, nothing sent ---------------------------------


async def test_a_ticket_is_required(admin_user, vm):
    await assert_refused(communicator(admin_user, vm.pk))
    await assert_refused(communicator(admin_user, vm.pk, ""))
    await assert_refused(communicator(admin_user, vm.pk, "made-up-ticket"))


async def test_a_ticket_is_good_once(admin_user, vm):
    ticket = await ticket_for(vm, admin_user)
    first = communicator(admin_user, vm.pk, ticket)
    connected, _ = await first.connect(timeout=10)
    assert connected

    await assert_refused(communicator(admin_user, vm.pk, ticket))
    await first.disconnect()


async def test_another_users_ticket_is_refused_and_burnt(admin_user, other_admin, vm):
    ticket = await ticket_for(vm, admin_user)

    await assert_refused(communicator(other_admin, vm.pk, ticket))
    await assert_refused(communicator(admin_user, vm.pk, ticket))


async def test_a_ticket_for_another_vm_is_refused(admin_user, agent_host, vm):
    other = await database_sync_to_async(running_vm)(agent_host, "serial", "tiny2")
    ticket = await ticket_for(other, admin_user)

    await assert_refused(communicator(admin_user, vm.pk, ticket))
    await assert_refused(communicator(admin_user, uuid.uuid4(), await ticket_for(vm, admin_user)))


async def test_an_expired_ticket_is_refused(admin_user, vm, monkeypatch):
    monkeypatch.setattr(compute_services, "CONSOLE_TICKET_TTL", 1)
    ticket = await ticket_for(vm, admin_user)

    await asyncio.sleep(1.3)

    await assert_refused(communicator(admin_user, vm.pk, ticket))


async def test_anonymous_users_are_refused(vm):
    from django.contrib.auth.models import AnonymousUser

    await assert_refused(communicator(AnonymousUser(), vm.pk, "anything"))


async def test_the_asgi_application_refuses_a_console_without_a_session(admin_user, vm):
    ticket = await ticket_for(vm, admin_user)
    comm = WebsocketCommunicator(
        application,
        f"/ws/console/{vm.pk}/?ticket={ticket}",
        headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")],
    )

    connected, code = await comm.connect(timeout=10)

    assert (connected, code) == (False, 4403)
    await comm.disconnect()
