"""A member of Channels groups for plain (sync) tests.

The engine's layer is Redis publish/subscribe (olvm_site/channel_layer.py): a consumer's
channel lives in the event loop that made it and hears only what is published while it is
subscribed. `async_to_sync` runs every call in a loop of its own, so a test cannot make a
channel in one call and receive in the next; this listener keeps one loop in a thread of
its own for as long as the test needs it, like a consumer in daphne.

    with GroupListener("vm.<id>") as listener:
        ...  # something the engine publishes
        message = listener.receive(timeout=5)
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time


class GroupListener:
    def __init__(self, *groups: str, layer=None) -> None:
        self.groups = groups
        self.layer = layer  # default: a layer of its own made from the settings
        self.messages: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, name="group-listener", daemon=True)

    def __enter__(self) -> GroupListener:
        self.thread.start()
        if not self.ready.wait(10):
            raise TimeoutError(f"not subscribed to {self.groups} after 10 s")
        if self.failed is not None:
            raise self.failed
        return self

    def __exit__(self, *exc) -> None:
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)

    def receive(self, timeout: float = 5.0) -> dict:
        """The next message of any of the groups (queue.Empty after `timeout` seconds)."""
        return self.messages.get(timeout=timeout)

    def receive_all(self, count: int, timeout: float = 5.0) -> list[dict]:
        return [self.receive(timeout) for _ in range(count)]

    def pending(self, wait: float = 0.3) -> list[dict]:
        """What arrives within `wait` seconds (and what had arrived)."""
        time.sleep(wait)
        result = []
        while True:
            try:
                result.append(self.messages.get_nowait())
            except queue.Empty:
                return result

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.task = self.loop.create_task(self._listen())
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.failed = exc
            self.ready.set()
        finally:
            self.loop.close()  # the layer's connections close with its loop

    async def _listen(self) -> None:
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        layer = self.layer or channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        channel = await layer.new_channel()
        for group in self.groups:
            await layer.group_add(group, channel)  # returns once Redis confirmed it
        self.ready.set()
        while True:
            self.messages.put(await layer.receive(channel))
