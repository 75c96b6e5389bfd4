"""Live monitoring in a real browser: a page sees status changes, stats and new events within a
second without polling, and after the engine restarts it reconnects and catches up."""

import os
import subprocess
import sys
import time

import pytest
from django.db import transaction

from compute.choices import VmStatus
from conftest import ADMIN_PASSWORD
from inventory import publish
from inventory.audit import record_event
from tests.factories import make_cluster, make_host, make_user, make_vm

from .conftest import ARTIFACTS, ROOT, _database_url, _free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def default_channel_prefix(settings):
    """The web process uses the default Channels prefix; under pytest-xdist this process has a
    prefix of its own (conftest.py): publish where the browser's engine listens."""
    from channels.layers import channel_layers

    publish.flush()
    config = settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})
    saved = config.get("prefix")
    config["prefix"] = settings.OLVM_CHANNEL_PREFIX
    channel_layers.backends.clear()
    yield
    publish.flush()
    if saved is not None:
        config["prefix"] = saved
    channel_layers.backends.clear()


class Daphne:
    """The engine web process on a fixed port, which a test can stop and start again."""

    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "PYTHONPATH": str(ROOT),
            "OLVM_PLAIN_STATIC": "1",
            "OLVM_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OLVM_CSRF_TRUSTED_ORIGINS": self.url,
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = open(ARTIFACTS / "daphne-live.log", "a")
        command = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "olvm_site.asgi:application",
        ]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        import socket

        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("daphne did not start (see var/test-artifacts/daphne-live.log)")
                time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def engine(transactional_db):
    daphne = Daphne()
    daphne.start()
    yield daphne
    daphne.stop()


def login(page, base):
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def open_live(page, url):
    page.goto(url)
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=10_000)


def change_status(vm, status, host=False):
    from compute.services import set_vm_status

    with transaction.atomic():
        set_vm_status(vm, status, host=host)


def test_a_vm_list_shows_a_status_change_and_the_host_within_a_second(engine, page, browser_admin):
    cluster = make_cluster()
    host = make_host(cluster, name="kvm-live-1")
    vm = make_vm(cluster, name="vm-live-1")
    login(page, engine.url)
    open_live(page, f"{engine.url}/vms/")
    row = f'tr[data-live="vm.{vm.pk}"]'

    started = time.monotonic()
    change_status(vm, VmStatus.WAIT_FOR_LAUNCH, host)
    page.wait_for_selector(f'{row} [data-field="status"] [data-status="wait_for_launch"]', timeout=1000)

    assert time.monotonic() - started < 1.0
    assert page.inner_text(f'{row} [data-field="run_on_host_name"]') == "kvm-live-1"
    assert page.js_errors == []


def test_a_vm_page_follows_status_stats_and_events_and_its_chart_grows(engine, page, browser_admin):
    cluster = make_cluster()
    host = make_host(cluster, name="kvm-live-2")
    vm = make_vm(cluster, name="vm-live-2", status=VmStatus.UP, run_on_host=host)
    login(page, engine.url)
    open_live(page, f"{engine.url}/vms/{vm.pk}/")
    page.wait_for_function("window.Chart && Chart.getChart(document.querySelector('canvas[data-chart=usage]'))")

    sample = {
        "id": str(vm.pk),
        "at": time.time(),
        "cpu_pct": 37.0,
        "mem_pct": 50.0,
        "net_rx_bps": 4096.0,
        "net_tx_bps": 0.0,
    }
    publish.send_now(
        f"host.{host.pk}", "host.stats", {"id": str(host.pk), "at": sample["at"], "host": {}, "vms": [sample]}
    )
    page.wait_for_function(
        "document.querySelector('.olvm-monitoring [data-stat=cpu]').textContent === '37 %'", timeout=1000
    )
    points = page.evaluate(
        "Chart.getChart(document.querySelector('canvas[data-chart=usage]')).data.datasets[0].data.length"
    )
    assert points == 1

    record_event("VM_STATUS_CHANGED", "vm-live-2 is paused (browser test).", obj=vm)
    change_status(vm, VmStatus.PAUSED)
    page.wait_for_selector('.olvm-page-head [data-status="paused"]', timeout=1000)
    page.wait_for_selector("#pane-events-body >> text=vm-live-2 is paused (browser test).", timeout=1000)
    assert page.is_disabled("[data-vm-actions] button[data-action=reboot]")  # allowed when up, not paused
    assert page.is_enabled("[data-vm-actions] button[data-action=resume]")
    assert page.js_errors == []


def test_the_dashboard_counts_follow_vm_status_changes(engine, page, browser_admin):
    cluster = make_cluster()
    host = make_host(cluster)
    vm = make_vm(cluster, name="vm-live-3")
    login(page, engine.url)
    open_live(page, f"{engine.url}/")
    assert page.inner_text('[data-count="vms-running"]') == "0"

    change_status(vm, VmStatus.WAIT_FOR_LAUNCH, host)

    page.wait_for_function("document.querySelector('[data-count=vms-running]').textContent === '1'", timeout=1000)
    assert page.inner_text('[data-count="vm:wait_for_launch"]') == "1"
    assert not page.is_visible('[data-count="vm:down"]')  # none left: left out, as the server draws it
    row = f'[data-capacity="{cluster.pk}"]'
    assert page.inner_text(f'{row} [data-cap="vms"]') == "1 / 1"
    assert "1 GiB of 64 GiB" in page.inner_text(f'{row} [data-cap="memory"]')


def test_after_an_engine_restart_the_page_reconnects_and_catches_up(engine, page, browser_admin):
    cluster = make_cluster()
    host = make_host(cluster)
    vm = make_vm(cluster, name="vm-live-4")
    login(page, engine.url)
    open_live(page, f"{engine.url}/vms/{vm.pk}/")

    engine.stop()
    page.wait_for_selector("#olvm-live[data-state=offline]", timeout=5000)
    change_status(vm, VmStatus.WAIT_FOR_LAUNCH, host)  # while no engine serves the page
    record_event("VM_STATUS_CHANGED", "vm-live-4 changed while the engine was away.", obj=vm)
    engine.start()

    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=40_000)
    page.wait_for_selector('.olvm-page-head [data-status="wait_for_launch"]', timeout=1000)
    page.wait_for_selector("#pane-events-body >> text=vm-live-4 changed while the engine was away.", timeout=1000)
    assert page.js_errors == []


def test_the_vm_portal_follows_its_users_vm_on_its_list_and_page(engine, page):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    user = make_user("vm-live-user")
    user.password = hasher.encode("vm-live-password-1", hasher.salt())  # the web process's hashers
    user.save(update_fields=["password"])
    cluster = make_cluster()
    host = make_host(cluster)
    vm = make_vm(cluster, name="vm-live-5", owner=user)
    page.goto(f"{engine.url}/vm-portal/login/")
    page.fill("input[name=username]", "vm-live-user")
    page.fill("input[name=password]", "vm-live-password-1")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    open_live(page, f"{engine.url}/vm-portal/")
    row = f'tr[data-live="vm.{vm.pk}"]'

    change_status(vm, VmStatus.WAIT_FOR_LAUNCH, host)
    page.wait_for_selector(f'{row} [data-field="status"] [data-status="wait_for_launch"]', timeout=1000)
    open_live(page, f"{engine.url}/vm-portal/vms/{vm.pk}/")
    assert page.is_disabled("[data-vm-actions] button[data-action=run]")
    change_status(vm, VmStatus.DOWN)
    page.wait_for_selector('[data-live] h1 [data-status="down"]', timeout=1000)

    assert page.inner_text('[data-field="status_label"]') == "Down"
    assert page.is_enabled("[data-vm-actions] button[data-action=run]")
    assert "disabled" in page.get_attribute("[data-vm-actions] a[data-action=poweroff]", "class")
    assert page.js_errors == []
