"""The engine's ingest listener: where host agents push heartbeats, VM reports, events and stats.

The wire contract is docs/ingest.md. This module is the transport only, plain Python (no
Django): HTTPS with mutual TLS, a minimal HTTP/1.1 server with keep-alive, one route
(`POST /ingest`, JSON in and out), and a structural check of a batch (`validate_batch`).
What a batch *means* is the handler's business: the engine passes `inventory.ingest.handle`.

- TLS: TLS 1.2+, `verify_mode = CERT_REQUIRED`, the engine CA as the only trust anchor, so
  a client without an engine-signed client certificate is refused during the handshake (it
  never reaches HTTP and the listener does not see it: the agent logs the refusal).
- The peer is the verified certificate's subject common name, the host's inventory id;
  nothing in the body can claim another host.
- One asyncio loop in one thread serves every connection, so a slow or idle client stalls
  nobody: handshakes, request heads, bodies and replies each have a timeout. The handler
  is synchronous (the engine's uses the Django ORM) and runs in a bounded thread pool;
  requests on one connection are answered in order.

    server = IngestServer(handle, listen=[("127.0.0.1", 54322)], cert_file=..., key_file=..., ca_file=...)
    server.serve_forever()            # the CLI: until SIGTERM / SIGINT or stop()
    server.start(); ...; server.stop()  # tests: a background thread, `server.ports` bound
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import math
import queue
import re
import signal
import ssl
import threading
from collections.abc import Callable

import orjson

from hostagent.agent.drivers import VM_STATUSES

log = logging.getLogger("hostagent.ingest")

INGEST_PATH = "/ingest"
DEFAULT_PORT = 54322
MAX_BODY = 4 * 1024 * 1024
MAX_HEAD = 64 * 1024
MAX_MESSAGES = 10_000
MAX_VMS = 5_000
MAX_NAME = 255  # VM and host names
MAX_WORD = 64  # event and detail names, agent version and driver, boot_id
MAX_HOST_NICS = 1_024  # host NICs in a stats message
KINDS = ("heartbeat", "vm_report", "vm_event", "stats", "guest_info")
CLOSE_TIMEOUT = 5.0

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

Handler = Callable[[str, dict], tuple[int, dict]]


class IngestError(Exception):
    """A request the engine refuses: the HTTP status, a message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def as_reply(self) -> dict:
        reply: dict = {"error": self.message}
        if self.field is not None:
            reply["field"] = self.field
        return reply


# Validation ---------------------------------------------------------------------------------


def validate_batch(body) -> None:
    """Check the envelope and every message against docs/ingest.md; raise IngestError(400)
    naming the first field at fault ("messages[3].vm_id"). Keys the contract does not name
    are let through, so a newer agent can add some without its batches being refused."""
    _check(isinstance(body, dict), "", "must be a JSON object")
    agent = body.get("agent")
    _check(isinstance(agent, dict), "agent", "must be an object")
    for key in ("version", "driver", "boot_id"):
        _text(agent.get(key), f"agent.{key}", MAX_WORD)
    _text(agent.get("hostname"), "agent.hostname", MAX_NAME, allow_empty=True)
    _check(isinstance(agent.get("simulated"), bool), "agent.simulated", "must be true or false")
    seq = body.get("seq")
    _check(isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0, "seq", "must be an integer >= 0")
    _number(body.get("sent_at"), "sent_at")
    messages = body.get("messages")
    _check(isinstance(messages, list), "messages", "must be a list")
    _check(len(messages) <= MAX_MESSAGES, "messages", f"holds at most {MAX_MESSAGES} messages")
    for i, message in enumerate(messages):
        validate_message(message, f"messages[{i}]")


def validate_message(message, field: str = "message") -> None:
    """Check one message (`field` prefixes the names of the fields at fault)."""
    _check(isinstance(message, dict), field, "must be an object")
    kind = message.get("kind")
    _check(kind in KINDS, f"{field}.kind", f"must be one of {', '.join(KINDS)}")
    _number(message.get("at"), f"{field}.at")
    if kind == "vm_report":
        _check(isinstance(message.get("full"), bool), f"{field}.full", "must be true or false")
        for j, vm in enumerate(_list(message.get("vms"), f"{field}.vms", MAX_VMS)):
            where = f"{field}.vms[{j}]"
            _check(isinstance(vm, dict), where, "must be an object")
            _uuid(vm.get("id"), f"{where}.id")
            _text(vm.get("name"), f"{where}.name", MAX_NAME)
            _status(vm.get("status"), f"{where}.status")
            _check(isinstance(vm.get("olvm"), bool), f"{where}.olvm", "must be true or false")
    elif kind == "vm_event":
        _uuid(message.get("vm_id"), f"{field}.vm_id")
        _text(message.get("name"), f"{field}.name", MAX_NAME)
        _status(message.get("status"), f"{field}.status")
        _text(message.get("event"), f"{field}.event", MAX_WORD)
        _text(message.get("detail"), f"{field}.detail", MAX_WORD, allow_empty=True)
    elif kind == "stats":
        host = message.get("host")
        _check(isinstance(host, dict), f"{field}.host", "must be an object")
        if "nics" in host:  # the host's NIC byte counters (a host libvirt reaches remotely has none)
            for j, nic in enumerate(_list(host["nics"], f"{field}.host.nics", MAX_HOST_NICS)):
                where = f"{field}.host.nics[{j}]"
                _check(isinstance(nic, dict), where, "must be an object")
                _text(nic.get("name"), f"{where}.name", MAX_WORD)
                for key in ("rx_bytes", "tx_bytes"):
                    value = nic.get(key)
                    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
                    _check(ok, f"{where}.{key}", "must be an integer >= 0")
                if "bridge" in nic:
                    _check(isinstance(nic["bridge"], bool), f"{where}.bridge", "must be true or false")
        for j, vm in enumerate(_list(message.get("vms"), f"{field}.vms", MAX_VMS)):
            where = f"{field}.vms[{j}]"
            _check(isinstance(vm, dict), where, "must be an object")
            _uuid(vm.get("vm_id"), f"{where}.vm_id")
            if "status" in vm:
                _status(vm["status"], f"{where}.status")
    elif kind == "guest_info":
        _uuid(message.get("vm_id"), f"{field}.vm_id")
        _check(isinstance(message.get("info"), dict), f"{field}.info", "must be an object")


def _check(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise IngestError(400, f"{field or 'the body'} {problem}", field)


def _text(value, field: str, limit: int, *, allow_empty: bool = False) -> None:
    _check(isinstance(value, str), field, "must be a string")
    _check(allow_empty or value != "", field, "must not be empty")
    _check(len(value) <= limit, field, f"must be at most {limit} characters")


def _number(value, field: str) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    _check(ok, field, "must be a number of seconds since the epoch")


def _uuid(value, field: str) -> None:
    _check(isinstance(value, str) and _UUID.fullmatch(value) is not None, field, "must be a UUID")


def _status(value, field: str) -> None:
    _check(value in VM_STATUSES, field, f"must be one of {', '.join(VM_STATUSES)}")


def _list(value, field: str, limit: int) -> list:
    _check(isinstance(value, list), field, "must be a list")
    _check(len(value) <= limit, field, f"holds at most {limit} entries")
    return value


# Transport ----------------------------------------------------------------------------------


def ingest_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """The listener's own certificate, and the engine CA as the one authority agents come from."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def peer_common_name(peercert: dict | None) -> str:
    """The subject common name of a verified peer certificate; "" when there is not exactly one."""
    names = [value for rdn in (peercert or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[0] if len(names) == 1 else ""


class _Refusal(Exception):
    """An HTTP-level refusal before the body is read: answered, then the connection closes
    (an unread body would be taken for the next request)."""

    def __init__(self, status: int, message: str, *, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class IngestServer:
    """The ingest listener on one or more addresses, served by one asyncio loop."""

    def __init__(
        self,
        handler: Handler,
        *,
        listen: list[tuple[str, int]],
        cert_file: str,
        key_file: str,
        ca_file: str,
        executor_workers: int = 4,
        read_timeout: float = 30.0,
        handshake_timeout: float = 10.0,
        max_body: int = MAX_BODY,
        max_connections: int = 1000,
        reuse_port: bool = False,
    ):
        if not listen:
            raise ValueError("give at least one address to listen on")
        self.handler = handler
        self.listen = [(host, int(port)) for host, port in listen]
        self.ssl_context = ingest_ssl_context(cert_file, key_file, ca_file)
        self.executor_workers = executor_workers
        self.read_timeout = read_timeout
        self.handshake_timeout = handshake_timeout
        self.max_body = max_body
        self.max_connections = max_connections
        self.reuse_port = reuse_port  # several listener processes on one port (the kernel spreads connections)
        self.addresses: list[tuple[str, int]] = []  # bound, one per `listen` entry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._pool: _HandlerPool | None = None
        self._connections: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # between a request's body and its answer
        self._closing = False

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self.addresses]

    def start(self) -> None:
        """Serve from a background thread; return once every address is bound (or raise why not)."""
        if self._thread is not None:
            raise RuntimeError("the ingest server is already running")
        self._thread = threading.Thread(target=self._run, name="ingest-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def serve_forever(self) -> None:
        """Serve from this thread until stop(), or SIGTERM / SIGINT when this is the main thread."""
        self._run(handle_signals=threading.current_thread() is threading.main_thread())
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and close every connection; a request being handled still gets its
        answer (for up to 5 s)."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def reload_certificate(self, cert_file: str, key_file: str, timeout: float = 10.0) -> None:
        """Serve a renewed certificate to new connections (open ones keep theirs); a pair that
        does not load raises here and changes nothing."""
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        loop = self._loop
        if loop is None or loop.is_closed():
            self.ssl_context.load_cert_chain(cert_file, key_file)
            return

        async def load() -> None:  # in the loop's thread, where the context makes connections
            self.ssl_context.load_cert_chain(cert_file, key_file)

        asyncio.run_coroutine_threadsafe(load(), loop).result(timeout)
        log.info("ingest certificate reloaded from %s", cert_file)

    # The loop -----------------------------------------------------------------------------------

    def _run(self, *, handle_signals: bool = False) -> None:
        self._pool = _HandlerPool(self.executor_workers, "ingest-handler")
        try:
            asyncio.run(self._main(handle_signals))
        except BaseException as exc:
            if self._ready.is_set():
                raise
            self._startup_error = exc
        finally:
            self._ready.set()
            self._pool.shutdown()

    async def _main(self, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._loop = loop
        servers: list[asyncio.Server] = []
        try:
            for host, port in self.listen:
                server = await asyncio.start_server(
                    self._connection,
                    host,
                    port,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.handshake_timeout,
                    ssl_shutdown_timeout=CLOSE_TIMEOUT,
                    limit=MAX_HEAD,
                    reuse_address=True,
                    reuse_port=self.reuse_port or None,
                )
                servers.append(server)
                self.addresses.append(server.sockets[0].getsockname()[:2])
        except BaseException:
            for server in servers:
                server.close()
            raise
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        if self._stop_requested:
            self._stopping.set()
        self._ready.set()
        log.info("ingest listening on %s", ", ".join(f"https://{h}:{p}{INGEST_PATH}" for h, p in self.addresses))
        await self._stopping.wait()
        log.info("ingest stopping")
        for server in servers:
            server.close()
        # Requests being handled get their answers (their changes are made); idle
        # connections close at once.
        self._closing = True
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(list(self._busy), timeout=CLOSE_TIMEOUT)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)

    # One connection -----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        host_cn = peer_common_name(writer.get_extra_info("peercert"))
        try:
            if len(self._connections) > self.max_connections:
                log.warning("refusing %s: %d connections already open", peer, self.max_connections)
                await self._reply(writer, 503, {"error": "Too many connections; retry."}, close=True)
                return
            while await self._exchange(reader, writer, host_cn, peer):
                pass
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("connection from %s (%s) ended: %r", peer, host_cn, exc)
        except asyncio.CancelledError:
            # Only stop() cancels, and the task ends here: asyncio 3.11 would log a cancelled
            # connection task as an error.
            pass
        finally:
            self._connections.discard(task)
            if self._closing:  # the listener stops: no TLS goodbye with clients that may not answer it
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)

    async def _exchange(self, reader, writer, host_cn: str, peer: str) -> bool:
        """Read one request and answer it; whether the connection stays open for the next."""
        try:
            # asyncio.timeout, not wait_for: no extra task per read (it showed at 1,000 hosts).
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError):
            return False  # the client closed, or stayed idle too long
        except asyncio.LimitOverrunError:
            await self._reply(writer, 431, {"error": f"The request head exceeds {MAX_HEAD} bytes."}, close=True)
            return False
        try:
            keep_alive, length = self._parse_head(head)
        except _Refusal as refusal:
            await self._reply(writer, refusal.status, {"error": refusal.message}, close=True, headers=refusal.headers)
            return False
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await reader.readexactly(length)
        except TimeoutError:
            await self._reply(
                writer, 408, {"error": f"The body did not arrive within {self.read_timeout:g} s."}, close=True
            )
            return False
        task = asyncio.current_task()
        self._busy.add(task)
        try:
            status, reply = await self._handle(host_cn, raw, peer)
            keep_alive = keep_alive and not self._closing
            await self._reply(writer, status, reply, close=not keep_alive)
        finally:
            self._busy.discard(task)
        return keep_alive and not self._closing  # stop() may have come while answering

    def _parse_head(self, head: bytes) -> tuple[bool, int]:
        """(keep-alive, Content-Length) of a request head, or a _Refusal."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise _Refusal(400, "Not an HTTP/1.x request line.")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            name = name.strip().lower()
            if not sep or not name or (name == "content-length" and name in headers):
                raise _Refusal(400, "Malformed request header.")
            headers[name] = value.strip()
        if target.split("?", 1)[0] != INGEST_PATH:
            raise _Refusal(404, f"Reports go to POST {INGEST_PATH}.")
        if method != "POST":
            raise _Refusal(405, f"Only POST {INGEST_PATH} is served.", headers={"Allow": "POST"})
        if "transfer-encoding" in headers:
            raise _Refusal(411, "Send a Content-Length; chunked bodies are refused.")
        if "content-length" not in headers:
            raise _Refusal(411, "A Content-Length header is required.")
        raw_length = headers["content-length"]
        if not (raw_length.isascii() and raw_length.isdigit()):
            raise _Refusal(400, "Content-Length must be a number.")
        length = int(raw_length)
        if length > self.max_body:
            raise _Refusal(413, f"The body ({length} bytes) exceeds the limit of {self.max_body} bytes.")
        connection = headers.get("connection", "").lower()
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        return keep_alive, length

    async def _handle(self, host_cn: str, raw: bytes, peer: str) -> tuple[int, dict]:
        try:
            # orjson: several times faster than json on these bodies (most of a busy
            # listener's time went here); it refuses NaN, Infinity and malformed UTF-8 itself.
            body = orjson.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return 400, {"error": f"The body is not JSON: {str(exc)[:200]}"}
        if not isinstance(body, dict):
            return 400, {"error": "The body must be a JSON object.", "field": ""}
        if not host_cn:
            return 403, {"error": "The client certificate names no host (it needs exactly one common name)."}
        try:
            result = await self._pool.run(self.handler, host_cn, body)
        except IngestError as exc:
            return exc.status, exc.as_reply()
        except Exception:
            log.exception("the ingest handler failed on a request of %s (%s)", host_cn, peer)
            return 500, {"error": "Internal error of the engine; retry later."}
        if not (
            isinstance(result, tuple)
            and len(result) == 2
            and isinstance(result[0], int)
            and 100 <= result[0] <= 599
            and isinstance(result[1], dict)
        ):
            log.error("the ingest handler answered %r, not (status, dict)", result)
            return 500, {"error": "Internal error of the engine; retry later."}
        return result

    async def _reply(self, writer, status: int, payload: dict, *, close: bool, headers: dict | None = None) -> None:
        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            log.exception("the ingest handler's answer is not JSON")
            status, body = 500, b'{"error":"Internal error of the engine; retry later."}'
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        if close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        async with asyncio.timeout(self.read_timeout):
            await writer.drain()


class _HandlerPool:
    """The threads the (synchronous) handler runs in. The loop hands a request over and is
    called back with the answer: lighter than `run_in_executor`, which makes a
    concurrent.futures.Future (with its lock and condition) for every request; at a thousand
    hosts that showed in the listener's profile. Answers that finish while the loop has not
    yet taken the previous ones ride the same wake-up (one self-pipe write, not one each)."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done: dict[asyncio.AbstractEventLoop, _Answers] = {}
        self._done_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(max(workers, 1))
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable, *args) -> asyncio.Future:
        """`fn(*args)` in a thread of the pool; await the returned future for its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((self._answers(loop), future, fn, args))
        return future

    def _answers(self, loop: asyncio.AbstractEventLoop) -> _Answers:
        answers = self._done.get(loop)
        if answers is None:
            with self._done_lock:
                answers = self._done.setdefault(loop, _Answers(loop))
        return answers

    def shutdown(self) -> None:
        """Cancel what waits, let what runs finish, stop the threads."""
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    item[0].add(item[1], None, asyncio.CancelledError())
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            answers, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                answers.add(future, None, exc)
            else:
                answers.add(future, result, None)


class _Answers:
    """Results waiting for one event loop, handed over in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[tuple[asyncio.Future, object, BaseException | None]] = []
        self.wake_pending = False

    def add(self, future: asyncio.Future, result, exc: BaseException | None) -> None:
        with self.lock:
            self.items.append((future, result, exc))
            if self.wake_pending:
                return  # the loop has yet to run the wake-up already on its way: it takes this too
            self.wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.hand_over)

    def hand_over(self) -> None:
        with self.lock:
            items, self.items = self.items, []
            self.wake_pending = False
        for future, result, exc in items:
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)
