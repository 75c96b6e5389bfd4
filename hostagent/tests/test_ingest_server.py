"""The engine's ingest listener: mutual TLS, the host named by its certificate, minimal HTTP/1.1
with keep-alive, and the structural check of a batch (docs/ingest.md)."""

import datetime as dt
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostagent import pki as engine_pki
from hostagent.agent.testing import make_ingest_pki, running_ingest_server
from hostagent.ingest_server import MAX_MESSAGES, MAX_VMS, IngestError, IngestServer, validate_batch

VM_ID = "7d4c5a4e-1f7e-4bb6-9a9e-0d2f3f1f2a10"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_ingest_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """Another CA altogether: another engine, or an attacker's."""
    return make_ingest_pki(tmp_path_factory.mktemp("other"))


class Handler:
    """Records (host_cn, body) and answers 200, or what `answer` says."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.answer = None

    def __call__(self, host_cn: str, body: dict):
        self.calls.append((host_cn, body))
        if self.answer is not None:
            return self.answer(host_cn, body)
        return 200, {"ok": True, "accepted": len(body.get("messages", []))}


@pytest.fixture
def handler():
    return Handler()


@pytest.fixture
def server(handler, pki):
    with running_ingest_server(handler, pki, read_timeout=1.0, handshake_timeout=1.0) as server:
        yield server


def context(pki, cert: dict | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=pki.listener["ca_file"])
    if cert:
        ctx.load_cert_chain(cert["cert_file"], cert["key_file"])
    return ctx


def connection(server, pki, cert: dict | None = None, *, port: int | None = None) -> http.client.HTTPSConnection:
    """A client of `server` (on `port` if given) with the host's certificate, or `cert`."""
    return http.client.HTTPSConnection(
        "127.0.0.1", port or server.ports[0], context=context(pki, pki.host if cert is None else cert), timeout=5
    )


def post(conn: http.client.HTTPSConnection, body, *, path="/ingest", method="POST", headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=raw, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response, json.loads(response.read())


def raw_exchange(server, pki, data: bytes, cert: dict | None = None) -> bytes:
    """Send bytes on a TLS connection made with `cert` (the host's by default); all that comes back."""
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5) as raw:
        with context(pki, pki.host if cert is None else cert).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
            return received


def assert_refused_at_handshake(server, pki, cert) -> None:
    # With TLS 1.3 the client finishes its side of the handshake before the server has
    # checked the client certificate, so the refusal surfaces on the first read.
    try:
        data = raw_exchange(server, pki, b"POST /ingest HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", cert)
    except (ssl.SSLError, ConnectionResetError) as exc:
        assert not isinstance(exc, ssl.SSLCertVerificationError)  # the listener's certificate was fine
        return
    assert data == b"", f"the listener answered {data[:60]!r}"


def self_signed(tmp_path, common_name: str) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "self.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {"cert_file": str(tmp_path / "self.pem"), "key_file": str(tmp_path / "self.key")}


def batch() -> dict:
    """A valid batch with one message of each kind."""
    return {
        "agent": {"version": "0.1.0", "driver": "sim", "simulated": True, "boot_id": "ab" * 16, "hostname": "h1"},
        "seq": 1,
        "sent_at": 1795000000.5,
        "messages": [
            {"kind": "heartbeat", "at": 1795000000.1},
            {
                "kind": "vm_report",
                "at": 1795000000.1,
                "full": True,
                "vms": [{"id": VM_ID, "name": "vm1", "status": "up", "olvm": True}],
            },
            {
                "kind": "vm_event",
                "at": 1795000000.2,
                "vm_id": VM_ID,
                "name": "vm1",
                "status": "down",
                "event": "stopped",
                "detail": "shutdown",
            },
            {"kind": "stats", "at": 1795000000.3, "host": {"cpu": {}}, "vms": [{"vm_id": VM_ID, "status": "up"}]},
            {"kind": "guest_info", "at": 1795000000.4, "vm_id": VM_ID, "info": {"hostname": "vm1"}},
        ],
    }


# TLS: who gets in ---------------------------------------------------------------------------


def test_a_host_certificate_reaches_the_handler_with_its_common_name(server, handler, pki):
    conn = connection(server, pki)

    response, reply = post(conn, batch())

    assert (response.status, reply) == (200, {"ok": True, "accepted": 5})
    assert handler.calls == [(pki.host_id, batch())]


def test_a_client_without_a_certificate_is_refused_at_the_handshake(server, handler, pki):
    assert_refused_at_handshake(server, pki, cert={})

    assert handler.calls == []


def test_a_self_signed_certificate_is_refused_at_the_handshake(server, handler, pki, tmp_path):
    assert_refused_at_handshake(server, pki, self_signed(tmp_path, pki.host_id))

    assert handler.calls == []


def test_a_host_certificate_of_another_ca_is_refused_at_the_handshake(server, handler, pki, other_pki):
    assert_refused_at_handshake(server, pki, other_pki.host)

    assert handler.calls == []


def test_an_engine_signed_server_only_certificate_cannot_push(server, handler, pki, tmp_path):
    server_only = engine_pki.issue_certificate(
        pki.ca_dir, str(uuid.uuid4()), tmp_path / "srv", 1, "server", addresses=["127.0.0.1"]
    )

    assert_refused_at_handshake(server, pki, server_only)

    assert handler.calls == []


def test_a_certificate_without_a_common_name_is_forbidden(server, handler, pki, tmp_path):
    nameless = engine_pki.issue_certificate(pki.ca_dir, "x", tmp_path / "nameless", 1, "client")
    # Re-sign the same key with an empty subject: still the engine CA's, but naming no host.
    ca_cert = x509.load_pem_x509_certificate((pki.ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki.ca_dir / "ca.key").read_bytes(), None)
    issued = x509.load_pem_x509_certificate((tmp_path / "nameless" / "cert.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OLVM")]))
        .issuer_name(ca_cert.subject)
        .public_key(issued.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "nameless" / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    response, reply = post(connection(server, pki, nameless), batch())

    assert response.status == 403
    assert reply == {"error": "The client certificate names no host (it needs exactly one common name)."}
    assert handler.calls == []


# HTTP ---------------------------------------------------------------------------------------


def test_several_requests_on_one_kept_alive_connection_are_answered_in_order(server, handler, pki):
    conn = connection(server, pki)
    replies = []
    sockets = set()

    for seq in (1, 2, 3):
        response, reply = post(conn, {**batch(), "seq": seq})
        replies.append((response.status, response.will_close))
        sockets.add(id(conn.sock))

    assert replies == [(200, False)] * 3
    assert len(sockets) == 1
    assert [body["seq"] for _, body in handler.calls] == [1, 2, 3]


def test_another_path_is_404_and_closes(server, handler, pki):
    response, reply = post(connection(server, pki), batch(), path="/rpc")

    assert (response.status, reply) == (404, {"error": "Reports go to POST /ingest."})
    assert response.will_close
    assert handler.calls == []


def test_another_method_is_405(server, handler, pki):
    response, reply = post(connection(server, pki), b"", method="GET")

    assert (response.status, reply) == (405, {"error": "Only POST /ingest is served."})
    assert response.getheader("Allow") == "POST"
    assert handler.calls == []


def test_a_body_over_4_mib_is_413_before_it_is_read(server, handler, pki):
    head = b"POST /ingest HTTP/1.1\r\nHost: engine\r\nContent-Length: 4194305\r\n\r\n"

    data = raw_exchange(server, pki, head)

    status_line, _, body = data.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == {"error": "The body (4194305 bytes) exceeds the limit of 4194304 bytes."}
    assert handler.calls == []


def test_a_request_without_content_length_is_411(server, handler, pki):
    data = raw_exchange(server, pki, b"POST /ingest HTTP/1.1\r\nHost: engine\r\n\r\n")

    assert data.startswith(b"HTTP/1.1 411 Length Required\r\n")
    assert data.endswith(b'{"error":"A Content-Length header is required."}')


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"{not json", {"error": "The body is not JSON: unexpected character: line 1 column 2 (char 1)"}),
        (b'{"seq": NaN}', {"error": "The body is not JSON: unexpected character: line 1 column 9 (char 8)"}),
        (b"\xff\xfe", {"error": "The body is not JSON: str is not valid UTF-8: surrogates not allowed: "
                       "line 1 column 1 (char 0)"}),
        (b"[1, 2]", {"error": "The body must be a JSON object.", "field": ""}),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_json_object_is_400_and_the_connection_stays(server, handler, pki, body, reply):
    conn = connection(server, pki)

    response, answer = post(conn, body)
    again, _ = post(conn, batch())

    assert (response.status, answer) == (400, reply)
    assert not response.will_close and again.status == 200
    assert len(handler.calls) == 1


def test_a_failing_handler_is_a_500_with_its_traceback_logged(server, handler, pki, caplog):
    def broken(host_cn, body):
        raise KeyError("seq")

    handler.answer = broken
    conn = connection(server, pki)

    with caplog.at_level(logging.ERROR, logger="hostagent.ingest"):
        response, reply = post(conn, batch())
    handler.answer = None
    again, _ = post(conn, batch())

    assert (response.status, reply) == (500, {"error": "Internal error of the engine; retry later."})
    assert f"the ingest handler failed on a request of {pki.host_id}" in caplog.text
    assert "KeyError: 'seq'" in caplog.text
    assert again.status == 200


def test_the_handlers_status_and_ingest_errors_go_back_as_they_are(server, handler, pki):
    conn = connection(server, pki)

    handler.answer = lambda host_cn, body: (503, {"error": "The database is down; retry."})
    unavailable = post(conn, batch())
    handler.answer = lambda host_cn, body: validate_batch({**body, "seq": -1})
    refused = post(conn, batch())

    assert (unavailable[0].status, unavailable[1]) == (503, {"error": "The database is down; retry."})
    assert (refused[0].status, refused[1]) == (400, {"error": "seq must be an integer >= 0", "field": "seq"})


def test_a_stalled_client_blocks_nobody_and_is_closed_after_the_read_timeout(server, handler, pki):
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5) as raw:
        with context(pki, pki.host).wrap_socket(raw, server_hostname="127.0.0.1") as stalled:
            stalled.sendall(b"POST /ingest HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # and then nothing

            response, _ = post(connection(server, pki), batch())
            closed = stalled.recv(4096)

    assert response.status == 200
    assert closed.startswith(b"HTTP/1.1 408 Request Timeout\r\n")  # after read_timeout (1 s)
    assert len(handler.calls) == 1


def test_a_client_that_never_finishes_its_handshake_is_dropped(server, handler, pki):
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5) as silent:
        response, _ = post(connection(server, pki), batch())
        dropped = silent.recv(4096)  # the handshake timeout is 1 s

    assert response.status == 200
    assert dropped == b""


def test_handlers_run_in_the_thread_pool_while_the_loop_goes_on(handler, pki):
    release = threading.Event()
    answers = []

    def slow(host_cn, body):
        if body["seq"] == 1:
            release.wait(5)
        return 200, {"seq": body["seq"]}

    handler.answer = slow
    with running_ingest_server(handler, pki, executor_workers=2) as server:
        first = connection(server, pki)
        waiting = threading.Thread(target=lambda: answers.append(post(first, {**batch(), "seq": 1})[1]))
        waiting.start()
        while not handler.calls:
            time.sleep(0.01)

        response, reply = post(connection(server, pki), {**batch(), "seq": 2})
        release.set()
        waiting.join(5)

    assert (response.status, reply) == (200, {"seq": 2})
    assert answers == [{"seq": 1}]


def test_stopping_lets_a_running_handler_answer(handler, pki):
    started, release = threading.Event(), threading.Event()
    answers = []

    def slow(host_cn, body):
        started.set()
        release.wait(5)
        return 200, {"applied": True}

    handler.answer = slow
    server = IngestServer(
        handler,
        listen=[("127.0.0.1", 0)],
        cert_file=pki.listener["cert_file"],
        key_file=pki.listener["key_file"],
        ca_file=pki.listener["ca_file"],
    )
    server.start()
    conn = connection(server, pki)
    waiting = threading.Thread(target=lambda: answers.append(post(conn, batch())))
    waiting.start()
    started.wait(5)

    stopping = threading.Thread(target=server.stop)
    stopping.start()
    time.sleep(0.1)
    release.set()
    stopping.join(5)
    waiting.join(5)

    [(response, reply)] = answers
    assert (response.status, reply, response.will_close) == (200, {"applied": True}, True)


def test_it_listens_on_every_address_and_stops(handler, pki):
    server = IngestServer(
        handler,
        listen=[("127.0.0.1", 0), ("127.0.0.1", 0)],
        cert_file=pki.listener["cert_file"],
        key_file=pki.listener["key_file"],
        ca_file=pki.listener["ca_file"],
    )
    server.start()
    statuses = [post(connection(server, pki, port=port), batch())[0].status for port in server.ports]

    server.stop()

    assert statuses == [200, 200]
    assert len(set(server.ports)) == 2
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5)


def test_an_address_in_use_fails_start(handler, pki):
    with running_ingest_server(handler, pki) as first:
        second = IngestServer(
            handler,
            listen=[("127.0.0.1", first.ports[0])],
            cert_file=pki.listener["cert_file"],
            key_file=pki.listener["key_file"],
            ca_file=pki.listener["ca_file"],
        )
        with pytest.raises(OSError, match="address already in use"):
            second.start()


def test_a_renewed_certificate_is_served_to_new_connections(server, pki, tmp_path):
    renewed = engine_pki.issue_certificate(pki.ca_dir, "127.0.0.1", tmp_path / "renewed", 30, "server")
    before = connection(server, pki)
    post(before, batch())

    server.reload_certificate(renewed["cert_file"], renewed["key_file"])
    after = connection(server, pki)
    post(after, batch())
    post(before, batch())  # the open connection goes on with the old one

    assert fingerprint(after) == renewed["fingerprint_sha256"]
    assert fingerprint(before) == pki.listener["fingerprint_sha256"]
    with pytest.raises(ssl.SSLError):
        server.reload_certificate(renewed["cert_file"], pki.host["key_file"])  # not its key
    assert fingerprint(connection_used(server, pki)) == renewed["fingerprint_sha256"]


def fingerprint(conn: http.client.HTTPSConnection) -> str:
    der = conn.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex(":").upper()


def connection_used(server, pki) -> http.client.HTTPSConnection:
    conn = connection(server, pki)
    post(conn, batch())
    return conn


# validate_batch -----------------------------------------------------------------------------


def test_a_valid_batch_passes_and_unknown_keys_are_let_through():
    body = batch()
    body["agent"]["arch"] = "x86_64"
    body["messages"][1]["vms"][0]["extra"] = 1

    assert validate_batch(body) is None
    assert validate_batch({**batch(), "messages": []}) is None


def _set(path: str, value):
    """A mutation of batch(): set the value at a dotted path (list indexes as numbers)."""

    def mutate(body):
        *parents, last = path.split(".")
        target = body
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if isinstance(target, list) else last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (_set("agent", "sim"), "agent", "agent must be an object"),
        (_set("agent.boot_id", ""), "agent.boot_id", "agent.boot_id must not be empty"),
        (_set("agent.version", 1), "agent.version", "agent.version must be a string"),
        (_set("agent.driver", "x" * 65), "agent.driver", "agent.driver must be at most 64 characters"),
        (_set("agent.simulated", "no"), "agent.simulated", "agent.simulated must be true or false"),
        (_set("seq", True), "seq", "seq must be an integer >= 0"),
        (_set("seq", -1), "seq", "seq must be an integer >= 0"),
        (_set("sent_at", "now"), "sent_at", "sent_at must be a number of seconds since the epoch"),
        (_set("messages", {}), "messages", "messages must be a list"),
        (_set("messages", [{"kind": "heartbeat", "at": 1}] * (MAX_MESSAGES + 1)), "messages", "at most 10000"),
        (_set("messages.0", "heartbeat"), "messages[0]", "messages[0] must be an object"),
        (_set("messages.0.kind", "hello"), "messages[0].kind", "must be one of heartbeat, vm_report, vm_event"),
        (_set("messages.0.at", _DELETE), "messages[0].at", "messages[0].at must be a number"),
        (_set("messages.0.at", float("inf")), "messages[0].at", "messages[0].at must be a number"),
        (_set("messages.0.at", False), "messages[0].at", "messages[0].at must be a number"),
        (_set("messages.1.full", "yes"), "messages[1].full", "must be true or false"),
        (_set("messages.1.vms", None), "messages[1].vms", "messages[1].vms must be a list"),
        (_set("messages.1.vms", [{}] * (MAX_VMS + 1)), "messages[1].vms", "holds at most 5000 entries"),
        (_set("messages.1.vms.0", [VM_ID]), "messages[1].vms[0]", "messages[1].vms[0] must be an object"),
        (_set("messages.1.vms.0.id", "vm1"), "messages[1].vms[0].id", "messages[1].vms[0].id must be a UUID"),
        (_set("messages.1.vms.0.id", "{" + VM_ID + "}"), "messages[1].vms[0].id", "must be a UUID"),
        (_set("messages.1.vms.0.name", ""), "messages[1].vms[0].name", "must not be empty"),
        (_set("messages.1.vms.0.name", "n" * 256), "messages[1].vms[0].name", "must be at most 255 characters"),
        (_set("messages.1.vms.0.status", "running"), "messages[1].vms[0].status", "must be one of down, up,"),
        (_set("messages.1.vms.0.olvm", 1), "messages[1].vms[0].olvm", "must be true or false"),
        (_set("messages.2.vm_id", None), "messages[2].vm_id", "messages[2].vm_id must be a UUID"),
        (_set("messages.2.name", None), "messages[2].name", "messages[2].name must be a string"),
        (_set("messages.2.status", "Up"), "messages[2].status", "must be one of"),
        (_set("messages.2.event", ""), "messages[2].event", "messages[2].event must not be empty"),
        (_set("messages.2.detail", 0), "messages[2].detail", "messages[2].detail must be a string"),
        (_set("messages.3.host", []), "messages[3].host", "messages[3].host must be an object"),
        (_set("messages.3.host.nics", {}), "messages[3].host.nics", "messages[3].host.nics must be a list"),
        (_set("messages.3.host.nics", [7]), "messages[3].host.nics[0]", "must be an object"),
        (_set("messages.3.host.nics", [{"rx_bytes": 1, "tx_bytes": 2}]), "messages[3].host.nics[0].name", "string"),
        (
            _set("messages.3.host.nics", [{"name": "eth0", "rx_bytes": -1, "tx_bytes": 2}]),
            "messages[3].host.nics[0].rx_bytes",
            "must be an integer >= 0",
        ),
        (
            _set("messages.3.host.nics", [{"name": "eth0", "rx_bytes": 1, "tx_bytes": 2.5}]),
            "messages[3].host.nics[0].tx_bytes",
            "must be an integer >= 0",
        ),
        (
            _set("messages.3.host.nics", [{"name": "br0", "rx_bytes": 1, "tx_bytes": 2, "bridge": "yes"}]),
            "messages[3].host.nics[0].bridge",
            "must be true or false",
        ),
        (_set("messages.3.vms", {}), "messages[3].vms", "messages[3].vms must be a list"),
        (_set("messages.3.vms.0.vm_id", _DELETE), "messages[3].vms[0].vm_id", "must be a UUID"),
        (_set("messages.3.vms.0.status", "gone"), "messages[3].vms[0].status", "must be one of"),
        (_set("messages.4.vm_id", 7), "messages[4].vm_id", "messages[4].vm_id must be a UUID"),
        (_set("messages.4.info", "ok"), "messages[4].info", "messages[4].info must be an object"),
    ],
)
def test_validate_batch_names_the_malformed_field(mutate, field, message):
    body = batch()
    mutate(body)

    with pytest.raises(IngestError) as caught:
        validate_batch(body)

    assert (caught.value.status, caught.value.field) == (400, field)
    assert message in caught.value.message


def test_a_body_that_is_not_an_object_is_named_the_body():
    with pytest.raises(IngestError) as caught:
        validate_batch([])

    assert (caught.value.status, caught.value.field, caught.value.message) == (
        400,
        "",
        "the body must be a JSON object",
    )


def test_the_handler_pool_hands_answers_back_in_batches_and_loses_none(monkeypatch):
    """Answers finished while the loop is busy ride one wake-up; each still reaches its caller,
    errors included."""
    import asyncio

    from hostagent.ingest_server import _HandlerPool

    wakeups = []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe
        monkeypatch.setattr(loop, "call_soon_threadsafe", lambda *a: (wakeups.append(1), real(*a))[1])
        pool = _HandlerPool(4, "t")
        try:

            def work(n):
                if n == 13:
                    raise ValueError("thirteen")
                return n * 2

            futures = [pool.run(work, n) for n in range(200)]
            time.sleep(0.3)  # the loop is blocked: every answer is ready before it looks
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            pool.shutdown()
        return results

    results = asyncio.run(main())
    assert [r for i, r in enumerate(results) if i != 13] == [n * 2 for n in range(200) if n != 13]
    assert isinstance(results[13], ValueError)
    assert len(wakeups) < 20  # not one per answer
