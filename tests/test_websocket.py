"""The event stream over Channels' Redis layer: a service's event reaches a subscriber."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from olvm_site.asgi import application
from portals.consumers import EventStreamConsumer


def communicator(user):
    comm = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    comm.scope["user"] = user
    return comm


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_data_center_created_by_a_service_reaches_the_event_stream(admin_user):
    from inventory.services import create_data_center

    comm = communicator(admin_user)
    connected, _ = await comm.connect()
    assert connected

    dc = await database_sync_to_async(create_data_center)(user=admin_user, name="Stream-DC")

    message = await comm.receive_json_from(timeout=5)
    assert message["type"] == "event.created"
    assert message["event"]["code"] == "USER_ADD_STORAGE_POOL"
    assert message["event"]["data_center_id"] == str(dc.pk)
    assert "Stream-DC" in message["event"]["message"]
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_anonymous_and_non_staff_are_refused():
    comm = communicator(AnonymousUser())
    connected, code = await comm.connect()
    assert not connected
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_asgi_router_refuses_a_websocket_without_a_session():
    comm = WebsocketCommunicator(
        application, "/ws/events/", headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    )
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()
