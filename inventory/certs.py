"""The engine's side of the PKI: its CA, its own certificates and each host's certificate.

Layout under `settings.OLVM_PKI_DIR` (default var/pki/, mode 0700):

    ca/          ca.pem, ca.key            the engine CA, created on first use
    engine/      cert.pem, key.pem, ca.pem the client certificate the engine presents to agents
    ingest/      cert.pem, key.pem, ca.pem the server certificate of the ingest listener
    hosts/<id>/  cert.pem, key.pem, ca.pem a host agent's certificate (usage `host`)

A host certificate's common name is the host's inventory id (the ingest listener knows the
host by it) and its subject alternative name is the host's address (the engine's client
checks it on every call). Certificates expire; `renew_due_certificates` (a beat task)
reissues the engine's own and every host's certificate before `OLVM_CERT_RENEW_DAYS`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from hostagent import pki

from .models import Host


@dataclass(frozen=True)
class CertPaths:
    cert_file: str
    key_file: str
    ca_file: str


def pki_dir() -> Path:
    return Path(settings.OLVM_PKI_DIR)


@contextmanager
def _pki_lock():
    """One process at a time creates or renews (web, workers and beat share the directory)."""
    root = pki_dir()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _paths(directory: Path) -> CertPaths:
    return CertPaths(str(directory / pki.CERT_FILE), str(directory / pki.KEY_FILE), str(directory / pki.CA_CERT))


def _due(cert_file: str) -> bool:
    """Missing, unreadable, issued by another CA, or expiring within the renewal window."""
    try:
        info = pki.certificate_info(cert_file)
        ca = pki.certificate_info(pki_dir() / "ca" / pki.CA_CERT)
    except pki.PkiError:
        return True
    return info["issuer"] != ca["common_name"] or info["expires_in_days"] < settings.OLVM_CERT_RENEW_DAYS


def ensure_ca() -> Path:
    ca_dir = pki_dir() / "ca"
    if not (ca_dir / pki.CA_CERT).exists():
        with _pki_lock():
            if not (ca_dir / pki.CA_CERT).exists():
                pki.create_ca(ca_dir, "OLVM Engine CA")
    return ca_dir


def engine_client_cert() -> CertPaths:
    """The certificate the engine presents to host agents (issued or renewed when needed)."""
    ca_dir = ensure_ca()
    out = pki_dir() / "engine"
    paths = _paths(out)
    if _due(paths.cert_file):
        with _pki_lock():
            if _due(paths.cert_file):
                pki.issue_certificate(ca_dir, "olvm-engine", out, settings.OLVM_CERT_DAYS, "client")
    return paths


def ingest_server_cert() -> CertPaths:
    """The ingest listener's certificate, naming every address agents may reach it on."""
    ca_dir = ensure_ca()
    out = pki_dir() / "ingest"
    paths = _paths(out)
    wanted = sorted(set(ingest_addresses()))
    try:
        current = sorted(set(pki.certificate_info(paths.cert_file)["addresses"]))
    except pki.PkiError:
        current = []
    if _due(paths.cert_file) or current != wanted:
        with _pki_lock():
            pki.issue_certificate(
                ca_dir, "olvm-engine-ingest", out, settings.OLVM_CERT_DAYS, "server", addresses=wanted
            )
    return paths


def ingest_listen() -> list[tuple[str, int]]:
    """`OLVM_INGEST_LISTEN` (`ADDR:PORT,ADDR:PORT`) as pairs."""
    pairs = []
    for item in settings.OLVM_INGEST_LISTEN.split(","):
        item = item.strip()
        if not item:
            continue
        address, _, port = item.rpartition(":")
        pairs.append((address.strip("[]"), int(port)))
    return pairs


def ingest_addresses() -> list[str]:
    names = {"localhost", "127.0.0.1"}
    names.update(address for address, _ in ingest_listen() if address not in ("0.0.0.0", "::", ""))  # noqa: S104
    return sorted(names)


def issue_host_certificate(host: Host) -> CertPaths:
    """A new key pair and certificate for `host`; records its fingerprint and expiry."""
    ca_dir = ensure_ca()
    out = host_cert_dir(host)
    with _pki_lock():
        info = pki.issue_certificate(
            ca_dir, str(host.pk), out, settings.OLVM_CERT_DAYS, "host", addresses=[host.address]
        )
    Host.objects.filter(pk=host.pk).update(
        cert_fingerprint=info["fingerprint_sha256"],
        cert_expires_at=dt.datetime.fromisoformat(info["not_after"]),
        updated_at=timezone.now(),
    )
    host.cert_fingerprint = info["fingerprint_sha256"]
    host.cert_expires_at = dt.datetime.fromisoformat(info["not_after"])
    return _paths(out)


def issue_host_certificates(hosts: list[Host]) -> None:
    """`issue_host_certificate` for many hosts at once: one lock, one bulk update."""
    if not hosts:
        return
    ca_dir = ensure_ca()
    now = timezone.now()
    with _pki_lock():
        for host in hosts:
            info = pki.issue_certificate(
                ca_dir, str(host.pk), host_cert_dir(host), settings.OLVM_CERT_DAYS, "host", addresses=[host.address]
            )
            host.cert_fingerprint = info["fingerprint_sha256"]
            host.cert_expires_at = dt.datetime.fromisoformat(info["not_after"])
            host.updated_at = now
    Host.objects.bulk_update(hosts, ["cert_fingerprint", "cert_expires_at", "updated_at"], batch_size=500)


def host_certificate_valid(host: Host) -> bool:
    """The host has its certificate on file, from this CA, naming its id and address, and
    not yet due for renewal."""
    paths = host_cert_paths(host)
    if _due(paths.cert_file):
        return False
    info = pki.certificate_info(paths.cert_file)
    return info["common_name"] == str(host.pk) and host.address in info["addresses"]


def host_cert_paths(host: Host) -> CertPaths:
    return _paths(host_cert_dir(host))


def host_cert_dir(host: Host) -> Path:
    return pki_dir() / "hosts" / str(host.pk)


def host_cert_due(host: Host) -> bool:
    if host.cert_expires_at is None:
        return False  # never deployed with a certificate (a simulated host served in-process)
    window = dt.timedelta(days=settings.OLVM_CERT_RENEW_DAYS)
    return host.cert_expires_at - timezone.now() < window
