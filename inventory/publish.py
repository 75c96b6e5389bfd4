"""Publish engine changes to websocket subscribers through the Channels layer.

Always after commit: a subscriber never sees a change that was rolled back. A Redis
outage loses the live update (the page still shows the truth on reload), never the write.

Sending is handed to one publisher thread per process, which keeps its own event loop
(and so its pooled Redis connections) and sends in order. The caller only queues: a
request, a task or the ingest listener never waits for Redis round trips, and no call
builds a fresh event loop and Redis connection as `async_to_sync(group_send)` would from
plain sync code (that cost ~10 ms per message). `flush()` waits until everything queued
has been sent (tests, and management commands before they exit).

With the engine's publish/subscribe layer (olvm_site/channel_layer.py) a whole batch goes
out in one round trip: a pipeline of one PUBLISH per message, in order; Redis pushes each
to the processes with a member in the group. `group_send` would make a round trip per
message, which was most of the publisher's time with a thousand hosts' stats. The hot
cache of stats samples (`cache_now`) is written from here too, one script call per batch.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
from collections import defaultdict

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from olvm_site.channel_layer import PubSubChannelLayer

logger = logging.getLogger(__name__)

MAX_BATCH = 500


# SET every KEYS[i] to ARGV[i] with the TTL of the last ARGV (the hot cache's samples).
_SET_ALL = """
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl)
end
return #KEYS
"""


class _Publisher:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = 0
        self.cond = threading.Condition()
        self.scripts: dict = {}  # (script, redis client) -> its registered script
        self.cache = None  # the hot cache's client, made in the publisher's loop
        self.thread = threading.Thread(target=self._run, name="olvm-publisher", daemon=True)
        self.thread.start()

    def put(self, group: str, message: dict) -> None:
        with self.cond:
            self.pending += 1
        self.queue.put((group, message))

    def put_cache(self, keys: list[str], values: list[bytes], ttl: int) -> None:
        with self.cond:
            self.pending += 1
        self.queue.put((None, (keys, values, ttl)))

    def flush(self, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.pending == 0, timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        while True:
            batch = [self.queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                loop.run_until_complete(self._send(batch))
            except Exception:  # never lose the thread: the next batch may find Redis back
                logger.exception("publishing a batch of %d failed", len(batch))
            finally:
                with self.cond:
                    self.pending -= len(batch)
                    self.cond.notify_all()

    async def _send(self, batch: list[tuple[str | None, object]]) -> None:
        messages = [(group, item) for group, item in batch if group is not None]
        cached = [item for group, item in batch if group is None]
        if cached:
            await self._cache(cached)
        if not messages:
            return
        layer = get_channel_layer()
        if isinstance(layer, PubSubChannelLayer):
            try:
                await self._publish_many(layer, messages)
            except Exception as exc:  # the channel layer is best effort; the database holds the truth
                logger.warning("could not publish %d message(s): %s", len(messages), exc)
            return
        await self._group_send_each(layer, messages)

    async def _cache(self, items: list[tuple[list[str], list[bytes], int]]) -> None:
        by_ttl: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
        for keys, values, ttl in items:
            by_ttl[ttl][0].extend(keys)
            by_ttl[ttl][1].extend(values)
        try:
            if self.cache is None:
                import redis.asyncio

                url = settings.CACHES["default"]["LOCATION"]
                self.cache = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            script = self._script(_SET_ALL, self.cache)
            for ttl, (keys, values) in by_ttl.items():
                await script(keys=keys, args=[*values, ttl], client=self.cache)
        except Exception as exc:  # the hot cache is best effort, like the channel layer
            logger.warning("stats samples not cached: %s", exc)

    def _script(self, source: str, client):
        key = (source, id(client))
        script = self.scripts.get(key)
        if script is None:
            script = self.scripts[key] = client.register_script(source)
        return script

    @staticmethod
    async def _publish_many(layer: PubSubChannelLayer, batch: list[tuple[str, dict]]) -> None:
        """The layer's group_send for a whole batch: one pipeline of PUBLISH per Redis
        server, in the batch's order (so in order within every group)."""
        loop_layer = layer._get_layer()
        by_shard: dict[int, tuple[object, list[tuple[str, bytes]]]] = {}
        for group, message in batch:
            name = loop_layer._get_group_channel_name(group)
            shard = loop_layer._get_shard(name)
            by_shard.setdefault(id(shard), (shard, []))[1].append((name, layer.serialize(message)))
        for shard, messages in by_shard.values():
            shard._ensure_redis()
            pipe = shard._redis.pipeline(transaction=False)
            for name, data in messages:
                pipe.publish(name, data)
            await pipe.execute()

    @staticmethod
    async def _group_send_each(layer, batch: list[tuple[str, dict]]) -> None:
        """Another channel layer (settings may name one): its group_send, in order."""
        for group, message in batch:
            try:
                await layer.group_send(group, message)
            except Exception as exc:  # the channel layer is best effort; the database holds the truth
                logger.warning("could not publish %s to %s: %s", message.get("type"), group, exc)


_publisher: _Publisher | None = None
_lock = threading.Lock()


def _get() -> _Publisher:
    global _publisher
    with _lock:
        # After a fork (Celery's prefork children) the parent's thread does not exist here.
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = _Publisher()
        return _publisher


def send_now(group: str, message_type: str, payload: dict, **extra) -> None:
    """Queue `payload` for `group` at once (no transaction involved); `extra` keys travel
    beside the payload (e.g. a status change's `previous` status)."""
    if get_channel_layer() is None:
        return
    _get().put(group, {"type": message_type, "payload": payload, **extra})


def cache_now(keys: list[str], values: list[bytes], ttl: int) -> None:
    """Set hot-cache keys (the newest stats samples, inventory/ingest.py) from the publisher
    thread, batched with whatever else is queued; `flush()` waits for it too."""
    _get().put_cache(keys, values, ttl)


def publish(group: str, message_type: str, payload: dict, **extra) -> None:
    """Send `payload` to `group` once the current transaction commits."""
    transaction.on_commit(lambda: send_now(group, message_type, payload, **extra))


def flush(timeout: float = 5.0) -> bool:
    """Wait until every queued message was handed to the channel layer."""
    publisher = _publisher
    if publisher is None or publisher.pid != os.getpid():
        return True
    return publisher.flush(timeout)


atexit.register(flush, 2.0)
