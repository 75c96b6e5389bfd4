"""The console websocket: the browser's end of a VM's serial console or VNC display.

    ws/console/<vm_id>/?ticket=<ticket>      the ticket from POST /api/v1/vms/<id>/console/

The engine proxies the bytes to the host agent's console stream (`RemoteAgentClient.
open_console` / `open_vnc`: mutual TLS to the agent, upgraded to a raw byte stream).

- Binary frames carry the stream both ways: the serial console's bytes, or RFB for noVNC.
  A text frame from the browser is sent on as its UTF-8 bytes.
- Text frames from the engine are JSON for the page: `{"type": "status", "state":
  "connected", ...}` once the agent's stream is open, `{"type": "closed", "code": ...,
  "reason": ...}` just before the engine closes (daphne drops close reasons).
- Close codes: 4403 refused before the handshake completes, with nothing sent (no session,
  no ticket, a ticket unknown, expired or used, another user's or another VM's, no right to
  the console); 4409 the VM has no console now; 4410 another session of the same user
  opened a console of this VM (it takes over, like virt-viewer); 4408 idle for
  OLVM_CONSOLE_IDLE_SECONDS; 4502 the host agent refused or lost the stream; 1000 the
  stream ended.

One thread per console owns the agent's TLS socket (an SSL socket must not be read and
written from two threads): it waits on the socket and on a wake-up pipe, writes what the
browser sent, and hands what the agent sent to the event loop. Nothing here blocks the
event loop or touches the ORM outside `database_sync_to_async`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from compute.models import VirtualMachine
from compute.services import check_console, claim_console_ticket, may_open_console
from hostagent.client import AgentError, RemoteAgentClient
from inventory.exceptions import ConflictError
from inventory.servicekit import agent_for

log = logging.getLogger(__name__)

ENDED = 1000
REFUSED = 4403
IDLE = 4408
NO_CONSOLE = 4409
TAKEN_OVER = 4410
AGENT_FAILED = 4502
DEFAULT_IDLE_SECONDS = 1800.0
DELIVER_TIMEOUT = 30.0


class Refused(Exception):
    """The websocket is closed with REFUSED before its handshake completes."""


@dataclass(frozen=True)
class ConsoleGrant:
    kind: str
    vm_id: str
    vm_name: str
    host_name: str
    client: RemoteAgentClient

    def open(self):
        """The agent's stream (blocking: run it in a thread)."""
        if self.kind == "vnc":
            return self.client.open_vnc(self.vm_id)
        return self.client.open_console(self.vm_id)


def claim(ticket: str, user, vm_id: str) -> ConsoleGrant:
    """Use the ticket up and check it is this user's for this VM, then find the VM's host
    agent. Raises Refused, or ConflictError when the VM has no console now."""
    grant = claim_console_ticket(ticket)
    if grant is None or grant["user_id"] != user.pk or grant["vm_id"] != vm_id:
        raise Refused
    vm = VirtualMachine.objects.select_related("run_on_host").filter(pk=vm_id).first()
    if vm is None or not may_open_console(user, vm):
        raise Refused
    host = check_console(vm, grant["kind"])
    client = agent_for(host)
    if not isinstance(client, RemoteAgentClient):
        raise ConflictError(f"Host {host.name} has no agent to reach: VM {vm.name} has no console.")
    return ConsoleGrant(grant["kind"], vm_id, vm.name, host.name, client)


def idle_seconds() -> float:
    return float(getattr(settings, "OLVM_CONSOLE_IDLE_SECONDS", DEFAULT_IDLE_SECONDS))


class AgentPipe:
    """The agent's stream socket, owned by one thread.

    `send(data)` (any thread) queues bytes for the agent; `deliver(data)` is called in the
    pipe's thread with bytes from the agent and returns once they are on their way;
    `finished(code, reason)` is called once in the pipe's thread when the stream ends by
    itself (not after `close()`)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        deliver: Callable[[bytes], None],
        finished: Callable[[int, str], None],
        idle_timeout: float,
    ):
        self.sock = sock
        self.deliver = deliver
        self.finished = finished
        self.idle_timeout = idle_timeout
        self._outbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="olvm-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, data: bytes) -> None:
        self._outbox.put(data)
        self._wake()

    def close(self) -> None:
        self._closing.set()
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe has woken the thread already
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        code, reason = ENDED, "The console stream ended (the VM stopped or the host closed it)."
        last = time.monotonic()
        try:
            while not self._closing.is_set():
                quiet = time.monotonic() - last
                if quiet >= self.idle_timeout:
                    code, reason = IDLE, f"Closed after {self.idle_timeout:g} s without activity."
                    break
                if self.sock.pending():
                    ready = [self.sock]
                else:
                    wait = min(1.0, self.idle_timeout - quiet)
                    ready = select.select([self.sock, self._wake_r], [], [], wait)[0]
                if self._wake_r in ready:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                while not self._closing.is_set():
                    try:
                        data = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    self.sock.sendall(data)
                    last = time.monotonic()
                if self.sock in ready and not self._closing.is_set():
                    data = self.sock.recv(65536)
                    if not data:
                        break
                    self.deliver(data)
                    last = time.monotonic()
        except OSError as exc:
            code, reason = AGENT_FAILED, f"The connection to the host agent was lost: {exc}"
        except Exception as exc:  # `deliver` failed: the browser's side is gone
            log.info("console stream to the browser ended: %r", exc)
            code, reason = ENDED, "The browser's side of the console went away."
        finally:
            for sock in (self.sock, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()
        if not self._closing.is_set():
            self.finished(code, reason)


class ConsoleConsumer(AsyncWebsocketConsumer):
    """One console of one VM for one signed-in user (see the module docstring)."""

    pipe: AgentPipe | None = None
    group: str | None = None
    ended = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        vm_id = str(self.scope["url_route"]["kwargs"]["vm_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [""])[0]
        if user is None or not user.is_authenticated or not ticket:
            await self.close(code=REFUSED)
            return
        try:
            grant = await database_sync_to_async(claim)(ticket, user, vm_id)
        except Refused:
            await self.close(code=REFUSED)
            return
        except ConflictError as exc:
            await self.accept()
            await self.end(NO_CONSOLE, exc.message)
            return
        # At most one console of a VM per user: this one takes over from any other.
        self.group = f"console.{vm_id}.{user.pk}"
        await self.channel_layer.group_send(self.group, {"type": "console.takeover", "channel": self.channel_name})
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        try:
            sock = await asyncio.to_thread(grant.open)
        except AgentError as exc:
            await self.end(AGENT_FAILED, str(exc))
            return
        if self.ended:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        self.pipe = AgentPipe(
            sock,
            deliver=lambda data: self._deliver(loop, data),
            finished=lambda code, reason: self._finished(loop, code, reason),
            idle_timeout=idle_seconds(),
        )
        log.info("%s console of VM %s opened by %s", grant.kind, grant.vm_name, user.get_username())
        await self.send_status(
            {"type": "status", "state": "connected", "kind": grant.kind, "vm": grant.vm_name, "host": grant.host_name}
        )
        self.pipe.start()

    def _deliver(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        """In the pipe's thread: send the agent's bytes and wait until the browser's side took
        them, so a slow browser slows the agent's stream down instead of filling memory."""
        asyncio.run_coroutine_threadsafe(self.send(bytes_data=data), loop).result(DELIVER_TIMEOUT)

    def _finished(self, loop: asyncio.AbstractEventLoop, code: int, reason: str) -> None:
        """In the pipe's thread: the agent's stream ended by itself; close the websocket."""
        with contextlib.suppress(RuntimeError):  # the event loop is gone already
            asyncio.run_coroutine_threadsafe(self.end(code, reason), loop)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.pipe is None or self.ended:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        if data:
            self.pipe.send(data)

    async def disconnect(self, code) -> None:
        self.ended = True
        if self.pipe is not None:
            self.pipe.close()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def console_takeover(self, message: dict) -> None:
        if message["channel"] != self.channel_name:
            await self.end(TAKEN_OVER, "Another session of yours opened this console; this one was closed.")

    async def end(self, code: int, reason: str) -> None:
        """Close with a reason the page can show (sent as a status message first)."""
        if self.ended:
            return
        self.ended = True
        if self.pipe is not None:
            self.pipe.close()
        await self.send_status({"type": "closed", "code": code, "reason": reason})
        await self.close(code=code, reason=reason.encode()[:120].decode("utf-8", "ignore"))

    async def send_status(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message))
