"""JSON-RPC 2.0 over HTTPS with mutual TLS: the agent's only door.

- TLS: `ssl.SSLContext(PROTOCOL_TLS_SERVER)`, TLS 1.2+, `verify_mode = CERT_REQUIRED`, and
  the engine CA as the only trust anchor, so a caller without an engine-signed client
  certificate is refused during the handshake and never reaches HTTP. The handshake runs
  in the connection's own thread with its own timeout, so a slow client stalls nobody.
- HTTP: `POST /rpc` with a JSON body of at most `max_request_bytes` (Content-Length
  required); every HTTP-level refusal still carries a JSON-RPC error object.
- JSON-RPC: single calls and batches; -32700 parse error, -32600 invalid request, -32601
  unknown verb, -32602 invalid params (naming the field), -32603 internal error (a bug,
  logged with its traceback), and the application codes of `errors.py`.
- Timeouts: each call runs in a worker thread and is answered with a timeout error when it
  overruns its deadline (the verb's own, or the caller's `OLVM-Deadline` header if
  shorter); idle and slow connections are closed after `socket_timeout`.
- Consoles: `console_open` hands out a one-time path; `GET /console/<ticket>` with
  `Upgrade: olvm-console` switches that TLS connection to a raw byte stream to the VM's
  serial console. `vnc_open` does the same for the VM's VNC display: `GET /vnc/<ticket>`
  with `Upgrade: olvm-vnc` becomes a raw TCP proxy to the VNC server QEMU runs on this
  host (RFB passes through untouched). A ticket is good once, for its own kind only.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import secrets
import select
import signal
import socket
import socketserver
import ssl
import threading
import time

from . import AGENT_VERSION
from .config import AgentConfig
from .drivers import ConsoleStream, Driver, make_driver
from .errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    AgentFailure,
    Busy,
    Timeout,
)
from .push import Pusher
from .verbs import VERBS, Verb

log = logging.getLogger("hostagent.server")

RPC_PATH = "/rpc"
CONSOLE_PREFIX = "/console/"
CONSOLE_UPGRADE = "olvm-console"
VNC_PREFIX = "/vnc/"
VNC_UPGRADE = "olvm-vnc"
# The kinds of console stream: the path prefix of its tickets and the Upgrade token.
CONSOLE_KINDS = {"serial": (CONSOLE_PREFIX, CONSOLE_UPGRADE), "vnc": (VNC_PREFIX, VNC_UPGRADE)}
DEADLINE_HEADER = "OLVM-Deadline"
CONSOLE_TICKET_TTL = 30.0
LINGER_BYTES = 4 * 1024 * 1024  # read and dropped after refusing an oversized body
LINGER_SECONDS = 2.0


def server_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """This host's certificate, and the engine CA as the one authority callers must come from."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def _error(rid, code: int, message: str, data: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _valid_id(rid) -> bool:
    return rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


class ConsoleRegistry:
    """One-time tickets for console streams opened by `console_open` (a ConsoleStream) and
    `vnc_open` (a socket connected to the VNC server), valid for a few seconds."""

    def __init__(self, ttl: float = CONSOLE_TICKET_TTL):
        self.ttl = ttl
        self._tickets: dict[str, tuple[str, str, ConsoleStream | socket.socket, float]] = {}
        self._lock = threading.Lock()

    def open(self, driver: Driver, vm_id: str, kind: str = "serial") -> dict:
        prefix, upgrade = CONSOLE_KINDS[kind]
        stream = driver.open_vnc(vm_id) if kind == "vnc" else driver.open_console(vm_id)
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            self._tickets[ticket] = (kind, vm_id, stream, time.monotonic() + self.ttl)
        # An unclaimed ticket must not keep the VM's console open: close it when it expires.
        timer = threading.Timer(self.ttl + 0.05, self._expire_locked)
        timer.daemon = True
        timer.start()
        return {"vm_id": vm_id, "path": prefix + ticket, "upgrade": upgrade, "expires_in": self.ttl}

    def take(self, ticket: str, kind: str = "serial") -> tuple[str, ConsoleStream | socket.socket] | None:
        """The VM id and stream of an unexpired ticket of this kind, which is then used up."""
        with self._lock:
            self._expire()
            entry = self._tickets.get(ticket)
            if entry is None or entry[0] != kind:
                return None
            del self._tickets[ticket]
        return entry[1], entry[2]

    def close_all(self) -> None:
        with self._lock:
            entries, self._tickets = list(self._tickets.values()), {}
        for _, _, stream, _ in entries:
            stream.close()

    def _expire_locked(self) -> None:
        with self._lock:
            self._expire()

    def _expire(self) -> None:
        now = time.monotonic()
        for ticket in [t for t, (_, _, _, until) in self._tickets.items() if until < now]:
            self._tickets.pop(ticket)[2].close()


class Dispatcher:
    """Parses JSON-RPC, validates, runs the verb with its deadline, shapes the reply."""

    def __init__(self, config: AgentConfig, driver: Driver, consoles: ConsoleRegistry):
        self.config = config
        self.driver = driver
        self.consoles = consoles
        self._slots = threading.BoundedSemaphore(config.max_concurrent_calls)

    def handle_body(self, body: bytes, *, deadline: float | None = None, peer: str = ""):
        """The reply for a request body: a dict, a list (batch), or None (only notifications)."""
        try:
            message = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error(None, PARSE_ERROR, f"Parse error: the request body is not JSON ({str(exc)[:200]})")
        if isinstance(message, list):
            if not message:
                return _error(None, INVALID_REQUEST, "Invalid request: an empty batch")
            if len(message) > self.config.max_batch:
                return _error(
                    None, INVALID_REQUEST, f"Invalid request: a batch holds at most {self.config.max_batch} calls"
                )
            replies = [r for r in (self.handle_one(m, deadline=deadline, peer=peer) for m in message) if r is not None]
            return replies or None
        return self.handle_one(message, deadline=deadline, peer=peer)

    def handle_one(self, message, *, deadline: float | None = None, peer: str = ""):
        if not isinstance(message, dict):
            return _error(None, INVALID_REQUEST, "Invalid request: a call must be a JSON object")
        notification = "id" not in message
        rid = message.get("id")
        if not _valid_id(rid):
            return _error(None, INVALID_REQUEST, "Invalid request: id must be a string, an integer or null")
        if message.get("jsonrpc") != "2.0":
            return _error(rid, INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
        method = message.get("method")
        if not isinstance(method, str):
            return _error(rid, INVALID_REQUEST, "Invalid request: method must be a string")
        params = message.get("params", {})
        if not isinstance(params, dict | list):
            return _error(rid, INVALID_REQUEST, "Invalid request: params must be an object or an array")
        verb = VERBS.get(method)
        if verb is None:
            reply = _error(
                rid,
                METHOD_NOT_FOUND,
                f"Method not found: {method[:80]!r} is not a verb of this agent",
                {"verbs": sorted(VERBS)},
            )
        else:
            reply = self.call(verb, params, rid, deadline=deadline, peer=peer)
        return None if notification else reply

    def call(self, verb: Verb, params, rid=None, *, deadline: float | None = None, peer: str = "") -> dict:
        started = time.monotonic()
        try:
            cleaned = verb.validate(params)
            timeout = verb.deadline(self.config, cleaned)
            if deadline is not None:
                timeout = min(timeout, deadline)
            result = self._run(verb, cleaned, timeout)
            if not isinstance(result, dict):
                raise TypeError(f"{verb.name} returned {type(result).__name__}, not an object")
            if self.driver.simulated:
                result = {**result, "simulated": True}
            json.dumps(result)
            reply, outcome = {"jsonrpc": "2.0", "id": rid, "result": result}, "ok"
        except AgentFailure as exc:
            error = exc.error_object()
            if self.driver.simulated:
                error["data"]["simulated"] = True
            reply, outcome = {"jsonrpc": "2.0", "id": rid, "error": error}, exc.kind
        except Exception as exc:
            log.exception("verb %s failed unexpectedly", verb.name)
            reply = _error(rid, INTERNAL_ERROR, f"Internal error in {verb.name}: {exc.__class__.__name__}: {exc}")
            outcome = "internal_error"
        log.info("%s %s -> %s (%.3f s)", peer or "-", verb.name, outcome, time.monotonic() - started)
        return reply

    def _run(self, verb: Verb, params: dict, timeout: float):
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self.config.max_concurrent_calls} calls are already running on this agent; retry shortly.")
        box: dict = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["result"] = self._invoke(verb, params)
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=work, name=f"verb-{verb.name}", daemon=True).start()
        if not done.wait(timeout):
            raise Timeout(
                f"{verb.name} did not finish within {timeout:g} s; it may still complete on the host.", seconds=timeout
            )
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _invoke(self, verb: Verb, params: dict):
        if verb.server_side and verb.name == "console_open":
            return self.consoles.open(self.driver, params["vm_id"], "serial")
        if verb.server_side and verb.name == "vnc_open":
            return self.consoles.open(self.driver, params["vm_id"], "vnc")
        return getattr(self.driver, verb.name)(**params)


class AgentRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"olvm-hostagent/{AGENT_VERSION}"
    sys_version = ""
    # Unbuffered reads: nothing beyond the headers is read ahead, so a console upgrade can
    # hand the socket over as it is.
    rbufsize = 0
    server: AgentHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.config.socket_timeout
        super().setup()
        self.peer = self.client_address[0]
        with contextlib.suppress(Exception):
            subject = dict(x[0] for x in self.connection.getpeercert().get("subject", ()))
            self.peer = f"{subject.get('commonName', '?')}@{self.client_address[0]}"

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.peer if hasattr(self, "peer") else "-", format % args)

    def send_error(self, code, message=None, explain=None) -> None:
        """Every HTTP-level refusal (bad request line, unknown method...) as a JSON-RPC error."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # never answer in HTTP/0.9 (a bare body, no status line)
        with contextlib.suppress(OSError):
            if getattr(self, "command", None) == "HEAD":
                self.send_response(code)
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                return
            text = message or explain or self.responses.get(code, ("",))[0]
            self._reply(code, _error(None, INVALID_REQUEST, f"HTTP {code}: {text}"), close=True)

    def do_POST(self) -> None:
        # Every refusal before the body is read closes the connection: the unread body would
        # otherwise be taken for the next request.
        if self.path != RPC_PATH:
            return self._reply(404, _error(None, INVALID_REQUEST, f"JSON-RPC calls go to POST {RPC_PATH}"), close=True)
        if self.headers.get("Transfer-Encoding"):
            return self._reply(
                411, _error(None, INVALID_REQUEST, "Send a Content-Length; chunked bodies are refused"), close=True
            )
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return self._reply(411, _error(None, INVALID_REQUEST, "A Content-Length header is required"), close=True)
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            return self._reply(400, _error(None, INVALID_REQUEST, "Content-Length must be a number"), close=True)
        limit = self.server.config.max_request_bytes
        if length > limit:
            self._reply(
                413,
                _error(None, INVALID_REQUEST, f"The request body ({length} bytes) exceeds the limit of {limit}"),
                close=True,
            )
            # A lingering close: let the client finish sending (bounded) so the refusal is
            # not lost to a connection reset while its body is still on the wire.
            return self._discard(min(length, LINGER_BYTES), LINGER_SECONDS)
        try:
            body = self._read_exact(length)
        except TimeoutError:
            return self._reply(
                408,
                _error(None, INVALID_REQUEST, f"The request body did not arrive within {self.timeout:g} s"),
                close=True,
            )
        if body is None:
            self.close_connection = True
            return None
        reply = self.server.dispatcher.handle_body(body, deadline=self._deadline(), peer=self.peer)
        if reply is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._reply(200, reply)

    def do_GET(self) -> None:
        for kind, (prefix, _) in CONSOLE_KINDS.items():
            if self.path.startswith(prefix):
                return self._console(self.path[len(prefix) :], kind)
        return self._not_allowed()

    def _not_allowed(self) -> None:
        self._reply(
            405,
            _error(None, INVALID_REQUEST, f"Only POST {RPC_PATH} (and console upgrades) are served"),
            headers={"Allow": "POST"},
            close=True,
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _deadline(self) -> float | None:
        raw = self.headers.get(DEADLINE_HEADER)
        try:
            value = float(raw) if raw else None
        except ValueError:
            return None
        return value if value and 0 < value < 86400 else None

    def _read_exact(self, length: int) -> bytes | None:
        chunks, remaining = [], length
        while remaining:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                return None
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _discard(self, length: int, seconds: float) -> None:
        self.wfile.flush()
        deadline = time.monotonic() + seconds
        try:
            while length > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(0.05, deadline - time.monotonic()))
                read = getattr(self.rfile, "read1", self.rfile.read)  # unbuffered: a raw read
                chunk = read(min(length, 65536))
                if not chunk:
                    break
                length -= len(chunk)
        except (OSError, ValueError):
            pass

    def _reply(self, status: int, payload, *, close: bool = False, headers: dict | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _console(self, ticket: str, kind: str) -> None:
        entry = self.server.consoles.take(ticket, kind)
        if entry is None:
            return self._reply(
                404, _error(None, INVALID_REQUEST, "No such console ticket (used, expired or unknown)"), close=True
            )
        vm_id, stream = entry
        upgrade = CONSOLE_KINDS[kind][1]
        if (self.headers.get("Upgrade") or "").lower() != upgrade:
            stream.close()
            return self._reply(400, _error(None, INVALID_REQUEST, f"Send Upgrade: {upgrade}"), close=True)
        self.send_response(101)
        self.send_header("Upgrade", upgrade)
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.close_connection = True
        log.info("%s %s console of VM %s opened", self.peer, kind, vm_id)
        if isinstance(stream, socket.socket):
            pump_socket(self.connection, stream, self.server.config.console_idle_timeout)
        else:
            pump_console(self.connection, stream, self.server.config.console_idle_timeout)
        log.info("%s %s console of VM %s closed", self.peer, kind, vm_id)
        return None


def pump_console(sock: ssl.SSLSocket, stream: ConsoleStream, idle_timeout: float, poll: float = 0.05) -> None:
    """Copy bytes both ways until either side ends or nothing moves for `idle_timeout`.

    One thread does it all: an SSL socket must not be read and written from two threads,
    and neither may a libvirt stream. The socket is waited on with select; the console is
    polled every `poll` seconds while the socket is quiet.
    """
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_timeout:
            if sock.pending() or select.select([sock], [], [], poll)[0]:
                data = sock.recv(4096)
                if not data:
                    return
                stream.write(data)
                last = time.monotonic()
            while (data := stream.read_nowait(4096)) is not None:
                if not data:
                    return
                sock.sendall(data)
                last = time.monotonic()
    except (OSError, AgentFailure):
        return
    finally:
        stream.close()


def pump_socket(sock: ssl.SSLSocket, peer: socket.socket, idle_timeout: float, poll: float = 1.0) -> None:
    """Proxy bytes between the engine's TLS connection and a plain socket (a VM's VNC
    server) until either side ends or nothing moves for `idle_timeout`.

    One thread, like `pump_console`: both sockets are waited on with select; bytes the TLS
    layer has already decrypted (`pending()`) are read before waiting again. A side that
    stops reading stalls the other no longer than the connection's socket timeout.
    """
    last = time.monotonic()
    try:
        peer.settimeout(sock.gettimeout())
        while time.monotonic() - last < idle_timeout:
            ready = [sock] if sock.pending() else select.select([sock, peer], [], [], min(poll, idle_timeout))[0]
            for source, sink in ((sock, peer), (peer, sock)):
                if source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    sink.sendall(data)
                    last = time.monotonic()
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            peer.close()


class AgentHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, config: AgentConfig, driver: Driver, ssl_context: ssl.SSLContext):
        self.config = config
        self.driver = driver
        self.ssl_context = ssl_context
        self.consoles = ConsoleRegistry()
        self.dispatcher = Dispatcher(config, driver, self.consoles)
        self._connections = threading.BoundedSemaphore(config.max_connections)
        if ":" in config.listen_address:
            self.address_family = socket.AF_INET6
        super().__init__((config.listen_address, config.listen_port), AgentRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the address: a DNS lookup that can hang.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.driver.listening_on(self.server_name, self.server_port)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            log.warning("refusing %s: %d connections already open", client_address[0], self.config.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def finish_request(self, request, client_address) -> None:
        request.settimeout(self.config.handshake_timeout)
        # Replies go out as headers then body: without NODELAY, Nagle holds the body back
        # until the client's delayed ACK (40 ms on every call).
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake with %s refused: %s", client_address[0], exc)
            return
        try:
            tls.settimeout(self.config.socket_timeout)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def server_close(self) -> None:
        super().server_close()
        self.consoles.close_all()


def build_server(config: AgentConfig, driver: Driver | None = None, *, ssl_context: ssl.SSLContext | None = None):
    ctx = ssl_context or server_ssl_context(config.cert_file, config.key_file, config.ca_file)
    return AgentHTTPServer(config, driver or make_driver(config), ctx)


def serve(config: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT; the exit status for the CLI."""
    try:
        ctx = server_ssl_context(config.cert_file, config.key_file, config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        log.error(
            "cannot load the TLS certificate, key or CA (%s, %s, %s): %s",
            config.cert_file,
            config.key_file,
            config.ca_file,
            exc,
        )
        return 2
    _log_certificate(config.cert_file)
    driver = make_driver(config)
    try:
        pusher = Pusher(config, driver) if config.engine_url else None
    except (OSError, ssl.SSLError, ValueError) as exc:
        log.error("cannot push to %s: %s", config.engine_url, exc)
        driver.close()
        return 2
    try:
        server = AgentHTTPServer(config, driver, ctx)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.listen_address, config.listen_port, exc)
        driver.close()
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="agent-server")
    thread.start()
    log.info(
        "listening on https://%s:%d (driver %s%s)",
        config.listen_address,
        server.port,
        driver.name,
        f", libvirt {config.libvirt_uri}" if driver.name == "libvirt" else ", simulated",
    )
    if pusher is not None:
        pusher.start()
    else:
        log.info("no engine_url: nothing is pushed to the engine")
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    if pusher is not None:
        pusher.stop()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    driver.close()
    return 0


def _log_certificate(cert_file: str) -> None:
    from hostagent.pki import PkiError, certificate_info

    try:
        info = certificate_info(cert_file)
    except PkiError as exc:
        log.warning("cannot read %s: %s", cert_file, exc)
        return
    level = logging.WARNING if info["expires_in_days"] < 30 else logging.INFO
    log.log(
        level,
        "certificate %s (%s), expires %s (%d days)",
        info["common_name"],
        info["fingerprint_sha256"],
        info["not_after"],
        info["expires_in_days"],
    )
