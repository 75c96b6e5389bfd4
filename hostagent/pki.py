"""The engine's certificate authority: the one trust anchor between the engine and its hosts.

The engine keeps a CA (`create_ca`) and signs its certificates with it
(`issue_certificate`): each host agent gets a *host* certificate (server and client usage:
it serves the engine's calls and pushes its reports to the engine's ingest listener) whose
common name is the host's inventory id and whose subject alternative names carry the
host's address; the engine gets a *client* certificate it presents to every agent and a
*server* certificate for its ingest listener. The agent trusts only this CA and asks every caller for a
certificate (mutual TLS), so anything not signed by the engine is refused at the
handshake; the extended key usage keeps a host's server certificate from being used to
call another host.

Files: a CA directory holds `ca.pem` and `ca.key` (mode 0600, unencrypted: protect the
directory). An issued certificate directory holds `cert.pem`, `key.pem` (0600) and a copy
of `ca.pem`, which is exactly what the agent's config (and the engine client) needs.

No Django here: the engine's own code calls these functions with plain paths.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
KEY_TYPES = ("ec", "rsa")
USAGES = ("server", "client", "host")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_-]{1,63})*\.?$")


class PkiError(ValueError):
    pass


def create_ca(
    ca_dir: str | os.PathLike,
    common_name: str = "OLVM Engine CA",
    *,
    days: int = 3650,
    key_type: str = "ec",
    overwrite: bool = False,
) -> dict:
    """Create the engine CA in `ca_dir`; refuse to replace an existing one unless `overwrite`."""
    ca_dir = Path(ca_dir)
    _check_name(common_name)
    _check_days(days)
    if (ca_dir / CA_CERT).exists() and not overwrite:
        raise PkiError(f"{ca_dir / CA_CERT} exists: a CA is already there (every issued certificate depends on it)")
    ca_dir.mkdir(parents=True, exist_ok=True)
    key = _new_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_dir / CA_KEY, _key_pem(key))
    _write_public(ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return {**_describe(cert), "cert_file": str(ca_dir / CA_CERT), "key_file": str(ca_dir / CA_KEY)}


def issue_certificate(
    ca_dir: str | os.PathLike,
    common_name: str,
    out_dir: str | os.PathLike,
    days: int = 825,
    usage: str = "server",
    *,
    addresses: list[str] | None = None,
    key_type: str = "ec",
) -> dict:
    """Sign a new key pair with the CA in `ca_dir`; write cert.pem, key.pem and ca.pem to `out_dir`.

    `addresses` are the subject alternative names (IP addresses or DNS names); a server
    certificate defaults to its common name, which is then the host's address. Returns the
    SHA-256 fingerprint, the serial and the validity (capped at the CA's own expiry).
    """
    if usage not in USAGES:
        raise PkiError(f"usage must be one of {', '.join(USAGES)}, not {usage!r}")
    _check_name(common_name)
    _check_days(days)
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    if addresses is None:
        addresses = [common_name] if usage in ("server", "host") else []
    san = [_general_name(address) for address in addresses]
    key = _new_key(key_type)
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise PkiError("the CA has expired; create a new CA first")
    # A host agent serves the engine's calls and pushes its reports to the engine's ingest
    # listener with the same key pair: `host` carries both usages.
    eku = {
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
        "host": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }[usage]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_private(out_dir / KEY_FILE, _key_pem(key))
    _write_public(out_dir / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(out_dir / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    return {
        **_describe(cert),
        "cert_file": str(out_dir / CERT_FILE),
        "key_file": str(out_dir / KEY_FILE),
        "ca_file": str(out_dir / CA_CERT),
    }


def certificate_info(path: str | os.PathLike) -> dict:
    """What a PEM certificate says: subject, issuer, SANs, usage, validity, fingerprint."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from None
    return _describe(cert)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _describe(cert: x509.Certificate) -> dict:
    def cn(name: x509.Name) -> str:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        addresses = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usage = [
            {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}.get(
                oid, oid.dotted_string
            )
            for oid in ekus
        ]
    except x509.ExtensionNotFound:
        usage = []
    now = _now()
    return {
        "common_name": cn(cert.subject),
        "issuer": cn(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "fingerprint_sha256": fingerprint(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "expires_in_days": (cert.not_valid_after_utc - now).days,
        "expired": cert.not_valid_after_utc <= now,
        "addresses": addresses,
        "usage": "ca" if is_ca else ",".join(usage),
        "is_ca": is_ca,
        "key_type": _key_type(cert.public_key()),
    }


def _key_type(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-{public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    return type(public_key).__name__


def _load_ca(ca_dir: Path):
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"no CA in {ca_dir}: {exc.filename} is missing (run make-ca first)") from None
    except ValueError as exc:
        raise PkiError(f"the CA in {ca_dir} cannot be read: {exc}") from None
    return cert, key


def _new_key(key_type: str):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise PkiError(f"key_type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _general_name(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        pass
    if not isinstance(address, str) or not _HOSTNAME.match(address):
        raise PkiError(f"{address!r} is neither an IP address nor a DNS name")
    return x509.DNSName(address)


def _check_name(common_name: str) -> None:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= 64:
        raise PkiError("the common name must be 1 to 64 characters")


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36500:
        raise PkiError("days must be an integer from 1 to 36500")


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
