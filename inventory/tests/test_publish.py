"""The publisher thread (inventory/publish.py): a batch goes out to the publish/subscribe
channel layer in one round trip, and every subscriber still gets exactly its groups'
messages, in order; a consumer that cannot keep up keeps the newest."""

import asyncio

import pytest

from inventory import publish
from inventory.ingest import STATS_KEY, latest_stats
from olvm_site.channel_layer import PubSubChannelLayer
from tests.listen import GroupListener

pytestmark = pytest.mark.django_db


def test_a_batch_reaches_every_member_of_every_group_in_order():
    with GroupListener("pub.a", "pub.b") as both, GroupListener("pub.a") as only_a:
        # Queued back to back: the publisher takes them as one batch (or a few).
        for i in range(40):
            publish.send_now("pub.a" if i % 2 == 0 else "pub.b", "test.message", {"i": i})
        publish.send_now("pub.nobody", "test.message", {"i": -1})  # a group without members
        assert publish.flush()

        got_both = both.receive_all(40)
        assert [m["payload"]["i"] for m in got_both] == list(range(40))
        assert all(m["type"] == "test.message" for m in got_both)
        assert [m["payload"]["i"] for m in only_a.receive_all(20)] == list(range(0, 40, 2))
        assert both.pending() == [] and only_a.pending() == []


def test_two_members_in_one_process_both_get_the_groups_messages():
    async def scenario():
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("pub.shared", first)
        await layer.group_add("pub.shared", second)
        await layer.group_send("pub.shared", {"type": "test.message", "n": 1})
        got = [await asyncio.wait_for(layer.receive(channel), 5) for channel in (first, second)]
        await layer.group_discard("pub.shared", first)
        await layer.group_send("pub.shared", {"type": "test.message", "n": 2})
        later = await asyncio.wait_for(layer.receive(second), 5)
        return got, later, layer._get_layer().channels[first].qsize()

    got, later, left_for_first = asyncio.run(scenario())
    assert [m["n"] for m in got] == [1, 1]
    assert later["n"] == 2 and left_for_first == 0


def test_a_consumer_over_capacity_keeps_the_newest(settings):
    small = PubSubChannelLayer(**{**settings.CHANNEL_LAYERS["default"]["CONFIG"], "capacity": 5})

    async def scenario():
        channel = await small.new_channel()
        await small.group_add("pub.slow", channel)
        for i in range(8):  # nobody reads meanwhile: a consumer stuck on a slow browser
            await small.group_send("pub.slow", {"type": "test.message", "i": i})
        queue = small._get_layer().channels[channel]
        deadline = asyncio.get_running_loop().time() + 5
        while queue.dropped < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        kept = [(await small.receive(channel))["i"] for _ in range(queue.qsize())]
        await small.group_send("pub.slow", {"type": "test.message", "i": "later"})  # room again
        return kept, (await asyncio.wait_for(small.receive(channel), 5))["i"]

    kept, later = asyncio.run(scenario())
    assert kept == [3, 4, 5, 6, 7]
    assert later == "later"


def test_group_add_returns_once_redis_has_the_subscription(settings):
    """What is published after group_add returns must reach the member (a page following its
    VM to another host gets that host's next stats): group_add waits for Redis to confirm the
    SUBSCRIBE, not only to have it written. Redis is paused for a moment to see it wait."""
    import redis

    layer = PubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    admin = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario():
        channel = await layer.new_channel()
        admin.client_pause(2000, all=True)
        try:
            adding = asyncio.ensure_future(layer.group_add("pub.confirmed", channel))
            await asyncio.sleep(0.3)
            waited = not adding.done()
        finally:
            admin.client_unpause()
        await asyncio.wait_for(adding, 5)
        return waited

    assert asyncio.run(scenario()), "group_add returned while Redis could not have subscribed"


def test_a_consumer_hears_its_groups_again_after_redis_drops_its_connection(settings):
    """A Redis restart (or a dropped connection) must not leave a daphne process deaf: the
    layer reconnects and subscribes again to every channel and group it had."""
    import redis

    layer = PubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    sender = PubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    admin = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("pub.reconnect", channel)
        subscriber = layer._get_layer()._get_shard(channel)._pubsub.connection
        port = subscriber._writer.get_extra_info("sockname")[1]
        killed = admin.client_kill_filter(_type="pubsub", addr=f"127.0.0.1:{port}")
        deadline = asyncio.get_running_loop().time() + 15
        queue = layer._get_layer().channels[channel]  # read directly: a cancelled receive unsubscribes
        while True:  # published until the layer is back (what was sent meanwhile is lost)
            await sender.group_send("pub.reconnect", {"type": "test.message"})
            try:
                return killed, await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                assert asyncio.get_running_loop().time() < deadline, "no message after the reconnect"

    killed, message = asyncio.run(scenario())
    assert killed == 1
    assert layer.deserialize(message)["type"] == "test.message"


def test_the_hot_cache_is_written_from_the_publisher():
    publish.cache_now(
        [STATS_KEY.format(kind="vm", id="x1"), STATS_KEY.format(kind="vm", id="x2")], [b'{"a":1}', b'{"a":2}'], 60
    )

    assert latest_stats("vm", "x1") == {"a": 1}
    assert latest_stats("vm", "x2") == {"a": 2}
