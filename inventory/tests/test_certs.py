"""The engine's certificates: created on first use, renewed before they expire."""

import datetime as dt

import pytest
from django.utils import timezone

from hostagent import pki
from inventory import certs
from inventory.choices import HostStatus
from inventory.models import Event, Job
from inventory.tasks import renew_certificates_task
from tests.factories import make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def pki_dir(tmp_path, settings):
    settings.OLVM_PKI_DIR = tmp_path / "pki"
    return settings.OLVM_PKI_DIR


def test_the_ca_and_the_engine_certificates_are_made_on_first_use(pki_dir, settings):
    client = certs.engine_client_cert()
    info = pki.certificate_info(client.cert_file)
    assert info["usage"] == "client" and info["issuer"] == "OLVM Engine CA"
    assert (pki_dir / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    settings.OLVM_INGEST_LISTEN = "127.0.0.1:54322,10.213.0.1:54322"
    server = pki.certificate_info(certs.ingest_server_cert().cert_file)
    assert server["usage"] == "server" and set(server["addresses"]) == {"127.0.0.1", "10.213.0.1", "localhost"}
    # Unchanged: the same certificate is kept.
    assert pki.certificate_info(certs.engine_client_cert().cert_file)["serial"] == info["serial"]


def test_an_engine_certificate_inside_the_renewal_window_is_reissued(pki_dir, settings):
    first = pki.certificate_info(certs.engine_client_cert().cert_file)
    settings.OLVM_CERT_RENEW_DAYS = 400  # longer than the certificate's life: it is due now
    second = pki.certificate_info(certs.engine_client_cert().cert_file)
    assert second["serial"] != first["serial"]


def test_a_host_certificate_names_the_host_id_and_address(pki_dir):
    host = make_host(simulated=False, address="10.213.0.11")
    info = pki.certificate_info(certs.issue_host_certificate(host).cert_file)
    assert info["common_name"] == str(host.pk) and info["addresses"] == ["10.213.0.11"]
    assert info["usage"] == "server,client"
    host.refresh_from_db()
    assert host.cert_fingerprint == info["fingerprint_sha256"] and host.cert_expires_at is not None


def test_the_beat_starts_a_renewal_job_only_for_hosts_close_to_expiry(pki_dir):
    soon = make_host(simulated=False, cert_expires_at=timezone.now() + dt.timedelta(days=10))
    later = make_host(simulated=False, cert_expires_at=timezone.now() + dt.timedelta(days=200))
    make_host(simulated=True)  # served in-process: no certificate
    make_host(simulated=False, status=HostStatus.INSTALL_FAILED, cert_expires_at=timezone.now())
    assert renew_certificates_task() == 1
    job = Job.objects.get(action_type="RenewHostCertificate")
    assert job.host_id == soon.pk
    assert not Job.objects.filter(host_id=later.pk).exists()
    assert Event.objects.filter(host_id=soon.pk, code="VDS_CERTIFICATE_RENEWAL").exists()
