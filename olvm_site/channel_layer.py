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
the page's replay (`since`) covers both. `group_add` returns once SUBSCRIBE is written to
the process's connection, not when Redis confirms it; what the engine publishes after the
consumer's next database read (the replay) comes later than that in practice.

channels_redis's queues are unbounded; here a consumer that cannot keep up (a slow browser)
keeps its newest `capacity` messages and the oldest go, as the list-based layer's capacity
did (it refused the newest instead: for live updates the newest matter).

Redis publish/subscribe spans every database of a server, so the key prefix must tell
engines sharing a Redis server apart: settings derive it from the database number.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1500


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


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args, capacity: int = DEFAULT_CAPACITY, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

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
            from channels_redis.utils import _wrap_close

            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer
