"""The engine CA: create it once, sign host (server) and engine (client) certificates."""

import datetime as dt
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hostagent import pki


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pki") / "ca"
    pki.create_ca(path, "OLVM Test CA", days=365)
    return path


def load(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def test_create_ca_writes_a_ca_certificate_and_a_private_key_only_root_can_read(ca_dir):
    info = pki.certificate_info(ca_dir / "ca.pem")

    assert info["common_name"] == "OLVM Test CA"
    assert info["issuer"] == "OLVM Test CA"
    assert info["is_ca"] is True and info["usage"] == "ca"
    assert info["key_type"] == "ec-secp256r1"
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    constraints = load(ca_dir / "ca.pem").extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0


def test_create_ca_refuses_to_replace_an_existing_ca(ca_dir):
    before = (ca_dir / "ca.pem").read_bytes()

    with pytest.raises(pki.PkiError, match="already there"):
        pki.create_ca(ca_dir)

    assert (ca_dir / "ca.pem").read_bytes() == before


def test_a_server_certificate_carries_the_host_address_and_server_usage(ca_dir, tmp_path):
    result = pki.issue_certificate(ca_dir, "10.213.0.11", tmp_path / "h1", 30, "server")

    cert = load(result["cert_file"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.11")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == load(ca_dir / "ca.pem").subject
    assert result["fingerprint_sha256"] == pki.fingerprint(cert)
    assert len(result["fingerprint_sha256"].split(":")) == 32
    assert dt.datetime.fromisoformat(result["not_after"]) == cert.not_valid_after_utc
    assert 29 <= result["expires_in_days"] <= 30
    assert (tmp_path / "h1" / "ca.pem").read_bytes() == (ca_dir / "ca.pem").read_bytes()
    assert stat.S_IMODE((tmp_path / "h1" / "key.pem").stat().st_mode) == 0o600


def test_a_client_certificate_has_client_usage_and_no_address_unless_given(ca_dir, tmp_path):
    result = pki.issue_certificate(ca_dir, "olvm-engine", tmp_path / "engine", 30, "client")

    info = pki.certificate_info(result["cert_file"])
    assert info["usage"] == "client"
    assert info["addresses"] == []
    assert info["is_ca"] is False


def test_dns_names_and_several_addresses_go_into_the_san(ca_dir, tmp_path):
    result = pki.issue_certificate(
        ca_dir, "host1.example.org", tmp_path / "h", 30, "server", addresses=["host1.example.org", "10.0.0.5", "::1"]
    )

    assert sorted(pki.certificate_info(result["cert_file"])["addresses"]) == ["10.0.0.5", "::1", "host1.example.org"]


def test_a_certificate_never_outlives_its_ca(ca_dir, tmp_path):
    result = pki.issue_certificate(ca_dir, "10.0.0.9", tmp_path / "long", 3650, "server")

    assert result["not_after"] == pki.certificate_info(ca_dir / "ca.pem")["not_after"]


def test_rsa_3072_keys_on_request(tmp_path):
    pki.create_ca(tmp_path / "ca", key_type="rsa")
    result = pki.issue_certificate(tmp_path / "ca", "10.0.0.1", tmp_path / "h", 10, "server", key_type="rsa")

    assert pki.certificate_info(result["cert_file"])["key_type"] == "rsa-3072"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"usage": "both"}, "usage must be"),
        ({"days": 0}, "days must be"),
        ({"days": True}, "days must be"),
        ({"common_name": ""}, "common name"),
        ({"addresses": ["not a name!"]}, "neither an IP address nor a DNS name"),
        ({"key_type": "dsa"}, "key_type must be"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(ca_dir, tmp_path, kwargs, message):
    args = {"common_name": "10.0.0.1", "days": 30, "usage": "server", **kwargs}

    with pytest.raises(pki.PkiError, match=message):
        pki.issue_certificate(
            ca_dir, args.pop("common_name"), tmp_path / "x", args.pop("days"), args.pop("usage"), **args
        )


def test_issuing_without_a_ca_says_so(tmp_path):
    with pytest.raises(pki.PkiError, match="make-ca"):
        pki.issue_certificate(tmp_path / "nothing", "10.0.0.1", tmp_path / "x")


def test_certificate_info_of_something_that_is_not_a_certificate(tmp_path):
    (tmp_path / "junk.pem").write_text("hello")

    with pytest.raises(pki.PkiError, match="not a PEM certificate"):
        pki.certificate_info(tmp_path / "junk.pem")
