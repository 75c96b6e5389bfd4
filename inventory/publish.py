"""Publish engine changes to websocket subscribers through the Channels layer.

Always after commit: a subscriber never sees a change that was rolled back. A Redis
outage loses the live update (the page still shows the truth on reload), never the write.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def send_now(group: str, message_type: str, payload: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": message_type, "payload": payload})
    except Exception as exc:  # the channel layer is best effort; the database holds the truth
        logger.warning("could not publish %s to %s: %s", message_type, group, exc)


def publish(group: str, message_type: str, payload: dict) -> None:
    """Send `payload` to `group` once the current transaction commits."""
    transaction.on_commit(lambda: send_now(group, message_type, payload))
