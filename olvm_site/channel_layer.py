"""The Channels layer: Redis publish/subscribe, with a bounded queue per consumer.

Everything the engine sends through the layer is a live update to a page (a status change,
a stats report, an event, a job's progress, a console take-over); the database holds the
truth and a page re-reads it on reconnect. Publish/subscribe suits that: a group message is
one PUBLISH, and Redis pushes it to every process that has a member in the group over the
one connection that process subscribes on, so a consumer's receive is a local queue get.
channels_redis's list-based layer costs four round trips per message received (a clean-up
script, BZPOPMIN, a backup ZADD and its removal) and a sorted set per consumer, which is
what held back a thousand hosts' stats on their way to the pages.

What it gives up is delivery to a consumer that is not subscribed at the moment of the
PUBLISH (a reconnecting process): the same loss a page has when its websocket drops, and
the page's replay (`since`) covers both. `group_add` and `new_channel` return once Redis
has confirmed the subscription (channels_redis's return once SUBSCRIBE is written), so what
is published after they return reaches the consumer: a page that joins a host's group when
its VM moves there gets that host's next stats, and its replay misses nothing in between.

channels_redis's queues are unbounded; here a consumer that cannot keep up (a slow browser)
keeps its newest `capacity` messages and the oldest go, as the list-based layer's capacity
did (it refused the newest instead: for live updates the newest matter).

Redis publish/subscribe spans every database of a server, so the key prefix must tell
engines sharing a Redis server apart: settings derive it from the database number.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close, decode_hosts

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1500
CONFIRM_TIMEOUT = 5.0  # s to wait for Redis to confirm a subscription


class _NewestQueue(asyncio.Queue):
    """A queue that drops its oldest item when a new one comes and it is full."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def put_nowait(self, item) -> None:
        if self.full():
            self.get_nowait()
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10000 == 0:
                logger.warning("a consumer is not keeping up: %d live message(s) dropped", self.dropped)
        super().put_nowait(item)


class _Shard(RedisSingleShardConnection):
    """channels_redis's connection to one Redis server, whose `subscribe` waits for Redis's
    confirmation: its receiving loop reads the confirmations too (channels_redis skips them)."""

    def __init__(self, host, channel_layer) -> None:
        super().__init__(host, channel_layer)
        self._unconfirmed: dict[str, asyncio.Future] = {}

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            confirmed = self._unconfirmed.get(channel)
            if channel not in self._subscribed_to:
                self._ensure_redis()
                self._ensure_receiver()
                confirmed = self._unconfirmed[channel] = asyncio.get_running_loop().create_future()
                await self._pubsub.subscribe(channel)
                self._subscribed_to.add(channel)
        if confirmed is not None:
            try:
                await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT)
            except TimeoutError:  # best effort, as the layer is: the page's replay covers it
                logger.warning("Redis did not confirm the subscription to %s in %g s", channel, CONFIRM_TIMEOUT)

    async def flush(self) -> None:
        for waiter in self._unconfirmed.values():
            waiter.cancel()
        self._unconfirmed.clear()
        await super().flush()

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(timeout=0.1)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._receive_message(message)
                    elif message["type"] == "subscribe":
                        name = message["channel"]
                        waiter = self._unconfirmed.pop(name.decode() if isinstance(name, bytes) else name, None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
                else:
                    await asyncio.sleep(0.02)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:
                logger.exception("Unexpected exception in receive task")
                await asyncio.sleep(1)


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, *args, capacity: int = DEFAULT_CAPACITY, **kwargs) -> None:
        super().__init__(hosts, *args, **kwargs)
        self.capacity = capacity
        self._shards = [_Shard(host, self) for host in decode_hosts(hosts)]

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = _NewestQueue(maxsize=self.capacity)
        await self._get_shard(channel).subscribe(channel)


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """channels_redis's publish/subscribe layer (one per event loop, as there) whose
    consumers keep at most `capacity` messages each (CONFIG: hosts, prefix, capacity)."""

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer
