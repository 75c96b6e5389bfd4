"""Fixtures for the engine in the lab: real lab hosts (hostagent/lab/tests/conftest.py),
the engine's ingest listener on the lab bridge, and an engine with the lab registered and
its hosts deployed through their real agents."""

import contextlib
import gc
import threading
import time

import pytest
from django.conf import settings as django_settings

from hostagent.ingest_server import IngestServer
from hostagent.lab import core
from hostagent.lab.tests.conftest import lab_hosts, lab_images, lab_state_dir, pytest_configure  # noqa: F401
from olvm_site.celery import tasks_inline
from tests.factories import ensure_seed_data

libvirt = pytest.importorskip("libvirt")

INGEST_PORT = 54397  # not the 54322 of a `make run` on the same machine


class GatedHandler:
    """The engine's ingest handler behind a gate: closed, agents get 503 and retry, and
    nothing touches the database (a test's teardown flush would deadlock with it)."""

    def __init__(self, handler):
        self.handler = handler
        self.open = False
        self.busy = 0
        self.cond = threading.Condition()

    def __call__(self, host_cn, body):
        with self.cond:
            if not self.open:
                return 503, {"error": "the test engine is between tests"}
            self.busy += 1
        try:
            return self.handler(host_cn, body)
        finally:
            with self.cond:
                self.busy -= 1
                self.cond.notify_all()

    def close(self, timeout: float = 30) -> None:
        with self.cond:
            self.open = False
            self.cond.wait_for(lambda: self.busy == 0, timeout)


@pytest.fixture(scope="module")
def ingest_listener(lab_state_dir):  # noqa: F811 - the fixture imported above
    """The engine's ingest listener on 127.0.0.1 and the lab bridge, for the module."""
    from inventory import certs, ingest

    core.up(2, lab_state_dir, probe_kvm=False)  # the bridge address to listen on

    saved = django_settings.OLVM_INGEST_LISTEN
    django_settings.OLVM_INGEST_LISTEN = f"127.0.0.1:{INGEST_PORT},{core.BRIDGE_IP}:{INGEST_PORT}"
    paths = certs.ingest_server_cert()
    gate = GatedHandler(ingest.handle)
    server = IngestServer(
        gate,
        listen=certs.ingest_listen(),
        cert_file=paths.cert_file,
        key_file=paths.key_file,
        ca_file=paths.ca_file,
    )
    server.start()
    server.gate = gate
    try:
        yield server
    finally:
        server.stop()
        django_settings.OLVM_INGEST_LISTEN = saved


def guest_ping(dom) -> bool:
    """Does the lab guest's qemu-guest-agent answer?"""
    try:
        return core.guest_command(dom, "guest-ping") == {}
    except libvirt.libvirtError:
        return False


def active_on(conn, vm_id: str) -> bool:
    """Is the domain running on the host of this connection?"""
    try:
        return bool(conn.lookupByUUIDString(vm_id).isActive())
    except libvirt.libvirtError:
        return False


def clear_domains(hosts) -> None:
    """Destroy and undefine every domain on the lab hosts (between tests); first free the
    libvirt objects the last test left in reference cycles, while the hosts answer."""
    gc.collect()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    for host in hosts:
        if not core.tcp_reachable(host.ip):
            continue
        conn = libvirt.open(host.libvirt_uri)
        try:
            for dom in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(
                        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    )
        finally:
            conn.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


@pytest.fixture
def engine(lab_hosts, lab_state_dir, ingest_listener, admin_user, settings):  # noqa: F811 - the fixtures imported above
    """The lab registered in the engine (storage domain, tiny template) with h1 and h2
    deployed through their real agents; every domain cleared afterwards."""
    from inventory.lab import register_lab

    settings.OLVM_LAB_STATE_DIR = str(lab_state_dir)
    settings.OLVM_AGENT_GUEST_INFO_INTERVAL = 2.0
    settings.OLVM_AGENT_STATS_INTERVAL = 2.0
    settings.OLVM_DEPLOY_AGENT_WAIT = 30.0
    ensure_seed_data()  # a previous transactional test flushed what the migrations seeded
    clear_domains(lab_hosts)
    ingest_listener.gate.open = True
    try:
        with tasks_inline():
            register_lab(core.lab_info(lab_state_dir), core.status(lab_state_dir), user=admin_user)
        yield {"user": admin_user, "lab": lab_hosts, "state_dir": lab_state_dir}
    finally:
        ingest_listener.gate.close()
        clear_domains(lab_hosts)
