"""Mutual TLS: only a client certificate signed by the engine CA gets as far as HTTP."""

import datetime as dt
import json
import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostagent import pki as engine_pki
from hostagent.agent.testing import RawRpc, agent_config, make_pki, remote_client, running_agent
from hostagent.client import AgentUnavailable, HostAddress, RemoteAgentClient

REQUEST = (
    b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    config = agent_config(pki, driver="sim", storage_roots=[str(tmp_path_factory.mktemp("storage"))])
    with running_agent(config) as server:
        yield server


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """Another CA altogether: another engine, or an attacker's."""
    return make_pki(tmp_path_factory.mktemp("other"))


def client_context(ca_file, cert_file=None, key_file=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def exchange(port: int, ctx: ssl.SSLContext) -> bytes:
    """Handshake, send one JSON-RPC call, return what came back (raises if TLS refused us)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(REQUEST)
            data = b""
            while True:
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and len(body) >= int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
                    return data
                chunk = tls.recv(4096)
                if not chunk:
                    return data
                data += chunk


def assert_refused_at_handshake(port: int, ctx: ssl.SSLContext) -> None:
    # With TLS 1.3 the client finishes its side of the handshake before the server has
    # checked the client certificate, so the refusal (an alert) surfaces on the first read.
    try:
        data = exchange(port, ctx)
    except ssl.SSLError as exc:
        assert not isinstance(exc, ssl.SSLCertVerificationError)  # the server's certificate was fine
        return
    raise AssertionError(f"no TLS error; the server answered {data[:40]!r}")


def self_signed(tmp_path, usage=ExtendedKeyUsageOID.CLIENT_AUTH, *, expired_by=None, ca_dir=None):
    """A client certificate made by hand: self-signed, or signed by `ca_dir` but expired."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "olvm-engine")])
    issuer, signing_key = name, key
    if ca_dir is not None:
        issuer = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes()).subject
        signing_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key())
    now = dt.datetime.now(dt.UTC)
    end = now - expired_by if expired_by else now + dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(end - dt.timedelta(days=2))
        .not_valid_after(end)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(authority, critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "self.pem", tmp_path / "self.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def test_a_client_with_an_engine_signed_certificate_is_served(server, pki):
    data = exchange(server.port, client_context(pki.client["ca_file"], pki.client["cert_file"], pki.client["key_file"]))

    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")


def test_a_client_without_a_certificate_is_refused_at_the_handshake(server, pki):
    assert_refused_at_handshake(server.port, client_context(pki.client["ca_file"]))


def test_a_client_with_a_self_signed_certificate_is_refused_at_the_handshake(server, pki, tmp_path):
    cert_file, key_file = self_signed(tmp_path)

    assert_refused_at_handshake(server.port, client_context(pki.client["ca_file"], cert_file, key_file))


def test_a_client_certificate_from_another_ca_is_refused(server, pki, other_pki):
    ctx = client_context(pki.client["ca_file"], other_pki.client["cert_file"], other_pki.client["key_file"])

    assert_refused_at_handshake(server.port, ctx)


def test_an_expired_engine_signed_client_certificate_is_refused(server, pki, tmp_path, caplog):
    cert_file, key_file = self_signed(tmp_path, expired_by=dt.timedelta(hours=1), ca_dir=pki.ca_dir)

    assert_refused_at_handshake(server.port, client_context(pki.client["ca_file"], cert_file, key_file))

    deadline = time.monotonic() + 5  # the server thread logs the refusal after the client saw it
    while "certificate has expired" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "certificate has expired" in caplog.text


def test_a_hosts_server_certificate_cannot_be_used_to_call_another_host(server, pki, tmp_path):
    other_host = engine_pki.issue_certificate(pki.ca_dir, "10.213.0.12", tmp_path / "h2", 30, "server")

    ctx = client_context(pki.client["ca_file"], other_host["cert_file"], other_host["key_file"])

    assert_refused_at_handshake(server.port, ctx)


def test_the_server_keeps_serving_after_refusals(server, pki, tmp_path):
    for _ in range(3):
        assert_refused_at_handshake(server.port, client_context(pki.client["ca_file"]))

    status, reply = RawRpc(server, pki).post(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')

    assert status == 200 and reply["result"]["ok"] is True


def test_the_engine_refuses_an_agent_whose_certificate_another_ca_signed(pki, other_pki, tmp_path):
    config = agent_config(other_pki, driver="sim", storage_roots=[str(tmp_path)])
    with running_agent(config) as impostor:
        client = remote_client(impostor, pki)

        with pytest.raises(AgentUnavailable, match="certificate verify failed"):
            client.ping()


def test_the_engine_refuses_an_agent_whose_certificate_names_another_address(pki, tmp_path):
    elsewhere = engine_pki.issue_certificate(pki.ca_dir, "10.213.0.99", tmp_path / "elsewhere", 30, "server")
    config = agent_config(
        pki,
        driver="sim",
        storage_roots=[str(tmp_path)],
        cert_file=elsewhere["cert_file"],
        key_file=elsewhere["key_file"],
    )
    with running_agent(config) as server:
        client = remote_client(server, pki)

        with pytest.raises(AgentUnavailable, match="IP address mismatch"):
            client.ping()


def test_an_engine_without_a_client_certificate_says_what_is_missing(server, monkeypatch):
    for name in ("OLVM_AGENT_CLIENT_CERT", "OLVM_AGENT_CLIENT_KEY", "OLVM_AGENT_CA_CERT"):
        monkeypatch.delenv(name, raising=False)
    host = HostAddress(id="h", name="h1", address="127.0.0.1", port=server.port, simulated=False)

    with pytest.raises(AgentUnavailable) as caught:
        RemoteAgentClient(host).ping()

    assert "set OLVM_AGENT_CLIENT_CERT, OLVM_AGENT_CLIENT_KEY, OLVM_AGENT_CA_CERT" in str(caught.value)


def test_the_engine_client_takes_its_certificates_from_the_environment(server, pki, monkeypatch):
    monkeypatch.setenv("OLVM_AGENT_CLIENT_CERT", pki.client["cert_file"])
    monkeypatch.setenv("OLVM_AGENT_CLIENT_KEY", pki.client["key_file"])
    monkeypatch.setenv("OLVM_AGENT_CA_CERT", pki.client["ca_file"])
    host = HostAddress(id="h", name="h1", address="127.0.0.1", port=server.port, simulated=False)

    assert RemoteAgentClient(host).ping()["ok"] is True


def test_the_server_reply_is_json_rpc(server, pki):
    data = exchange(server.port, client_context(pki.client["ca_file"], pki.client["cert_file"], pki.client["key_file"]))

    body = data.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["id"] == 1
