"""Publish engine changes to websocket subscribers through the Channels layer.

Always after commit: a subscriber never sees a change that was rolled back. A Redis
outage loses the live update (the page still shows the truth on reload), never the write.

Sending is handed to one publisher thread per process, which keeps its own event loop
(and so its pooled Redis connections) and sends in order within each group, several groups
at once. The caller only queues: a
request, a task or the ingest listener never waits for Redis round trips, and no call
builds a fresh event loop and Redis connection as `async_to_sync(group_send)` would from
plain sync code (that cost ~10 ms per message). `flush()` waits until everything queued
has been sent (tests, and management commands before they exit).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading

from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

MAX_BATCH = 500
CONCURRENT_GROUPS = 32  # groups sent to at once (each may take a Redis connection of the pool)


class _Publisher:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="olvm-publisher", daemon=True)
        self.thread.start()

    def put(self, group: str, message: dict) -> None:
        with self.cond:
            self.pending += 1
        self.queue.put((group, message))

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
            finally:
                with self.cond:
                    self.pending -= len(batch)
                    self.cond.notify_all()

    @staticmethod
    async def _send(batch: list[tuple[str, dict]]) -> None:
        """In order within each group; groups side by side (a group_send is several Redis
        round trips: one after the other, a thousand hosts' stats would queue for seconds)."""
        layer = get_channel_layer()
        by_group: dict[str, list[dict]] = {}
        for group, message in batch:
            by_group.setdefault(group, []).append(message)
        slots = asyncio.Semaphore(CONCURRENT_GROUPS)

        async def send(group: str, messages: list[dict]) -> None:
            async with slots:
                for message in messages:
                    try:
                        await layer.group_send(group, message)
                    except Exception as exc:  # the channel layer is best effort; the database holds the truth
                        logger.warning("could not publish %s to %s: %s", message.get("type"), group, exc)

        await asyncio.gather(*(send(group, messages) for group, messages in by_group.items()))


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
