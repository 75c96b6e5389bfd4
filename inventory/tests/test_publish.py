"""The publisher thread (inventory/publish.py): a batch to the Redis channel layer goes out in
a few round trips, and every subscriber still gets exactly its groups' messages, in order."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from inventory import publish
from inventory.ingest import STATS_KEY, latest_stats

pytestmark = pytest.mark.django_db


def receive_all(layer, channel, count: int) -> list[dict]:
    return [async_to_sync(layer.receive)(channel) for _ in range(count)]


def test_a_batch_reaches_every_member_of_every_group_in_order():
    layer = get_channel_layer()
    both, only_a = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    for group, channel in (("pub.a", both), ("pub.b", both), ("pub.a", only_a)):
        async_to_sync(layer.group_add)(group, channel)

    # Queued back to back: the publisher takes them as one batch (or a few).
    for i in range(40):
        publish.send_now("pub.a" if i % 2 == 0 else "pub.b", "test.message", {"i": i})
    publish.send_now("pub.nobody", "test.message", {"i": -1})  # a group without members
    assert publish.flush()

    assert [m["payload"]["i"] for m in receive_all(layer, both, 40)] == list(range(40))
    assert [m["payload"]["i"] for m in receive_all(layer, only_a, 20)] == list(range(0, 40, 2))
    assert all(m["type"] == "test.message" for m in receive_all(layer, both, 0))


def test_a_channel_over_capacity_gets_what_fits_and_the_publisher_goes_on(monkeypatch):
    layer = get_channel_layer()
    monkeypatch.setattr(layer, "capacity", 5)
    full = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("pub.full", full)

    for i in range(8):
        publish.send_now("pub.full", "test.message", {"i": i})
    assert publish.flush()

    assert [m["payload"]["i"] for m in receive_all(layer, full, 5)] == [0, 1, 2, 3, 4]
    publish.send_now("pub.full", "test.message", {"i": "later"})  # room again: delivered
    assert publish.flush()
    assert async_to_sync(layer.receive)(full)["payload"]["i"] == "later"


def test_the_hot_cache_is_written_from_the_publisher():
    publish.cache_now(
        [STATS_KEY.format(kind="vm", id="x1"), STATS_KEY.format(kind="vm", id="x2")], [b'{"a":1}', b'{"a":2}'], 60
    )

    assert latest_stats("vm", "x1") == {"a": 1}
    assert latest_stats("vm", "x2") == {"a": 2}
