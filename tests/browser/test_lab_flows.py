"""The portals in a real browser against a real lab: chromium (Playwright) on daphne, a Celery
worker and the ingest listener, all on the test database, with lab hosts running libvirt + QEMU
(software emulation) and the tiny guest.

What the browser sees comes the way it does in production: a click posts to daphne, the
service queues a task that the worker runs against the host agent, the agent pushes the VM's
status and guest facts to the ingest listener (this process), and the change reaches the page
over /ws/live/ through Channels on Redis. The console is xterm.js over /ws/console/<vm>/,
proxied by daphne to the agent. Screenshots of every stage go to var/test-artifacts/.

Needs root (the lab), like tests/lab; under CI a missing prerequisite fails."""

import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from compute import services as vm_services
from compute.choices import VmStatus
from compute.models import Template, VirtualMachine
from conftest import ADMIN_PASSWORD
from hostagent.lab import core
from hostagent.lab.tests.conftest import lab_hosts, lab_images, lab_state_dir  # noqa: F401 - fixtures
from inventory.models import Cluster, Host
from networking.models import VnicProfile
from olvm_site.celery import tasks_inline
from tests.factories import ensure_seed_data, grant, make_user
from tests.lab.conftest import clear_domains, ingest_listener, wait_for  # noqa: F401 - fixtures

from .conftest import ARTIFACTS, ROOT, _database_url
from .test_live import default_channel_prefix  # noqa: F401 - autouse fixture: the web process's Channels prefix

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

BOOT_TIMEOUT = 90_000  # ms: a TCG guest to an answering guest agent, under CI load
ACTION_TIMEOUT = 120_000  # ms: a start or shutdown through worker, agent and ingest
GUEST_IP = "10.213.1.21"
USER_PASSWORD = "lab-user-password-1"


@pytest.fixture
def lab_engine(lab_hosts, lab_state_dir, ingest_listener, admin_user, settings):  # noqa: F811
    """The lab registered in the engine (template tiny, storage lab-shared) with its hosts
    deployed through their real agents, as tests/lab/test_engine_lab.py does it; every
    domain cleared afterwards."""
    from inventory.lab import register_lab

    settings.OLVM_LAB_STATE_DIR = str(lab_state_dir)
    settings.OLVM_AGENT_GUEST_INFO_INTERVAL = 2.0  # written into the agents' config at deploy
    settings.OLVM_AGENT_STATS_INTERVAL = 2.0
    settings.OLVM_DEPLOY_AGENT_WAIT = 30.0
    ensure_seed_data()
    clear_domains(lab_hosts)
    ingest_listener.gate.open = True
    try:
        with tasks_inline():
            register_lab(core.lab_info(lab_state_dir), core.status(lab_state_dir), user=admin_user)
        cluster, tiny = Cluster.objects.get(name="Lab"), Template.objects.get(name="tiny")
        yield {"user": admin_user, "cluster": cluster, "tiny": tiny}
    finally:
        ingest_listener.gate.close()
        clear_domains(lab_hosts)


@pytest.fixture
def celery_worker(lab_engine, settings):
    """A real Celery worker on the test database (tasks the web process queues run there),
    with the test run's engine CA so it reaches the agents. Solo pool: one task at a time,
    one process."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "celery-lab-flows.log"
    log = open(log_path, "a")
    start = log_path.stat().st_size
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
        "OLVM_PKI_DIR": str(settings.OLVM_PKI_DIR),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "olvm_site",
        "worker",
        "-Q",
        "default,slow",
        "--pool",
        "solo",
        "-l",
        "info",
        "-n",
        f"lab-flows-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with open(log_path, "rb") as f:
                f.seek(start)
                if b" ready." in f.read():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start (see {log_path})", pytrace=False)
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()  # warm shutdown: ends the running task first
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"lab-flows-{name}.png"), full_page=True)


def open_live(page, url):
    page.goto(url)
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.evaluate("window.__olvmSamePage = true")  # gone if anything reloads the page


def same_page(page) -> bool:
    return page.evaluate("window.__olvmSamePage === true")


def web_password(user, password):
    """A password hash the web process can check (tests hash with MD5 in-process)."""
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(password, hasher.salt())
    user.save(update_fields=["password"])


def log_in(page, url, username, password):
    page.goto(url)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, f"{username} could not log in"


def test_an_administrator_creates_runs_uses_and_shuts_down_a_vm(lab_engine, celery_worker, engine_web, page):
    cluster, tiny = lab_engine["cluster"], lab_engine["tiny"]
    web_password(lab_engine["user"], ADMIN_PASSWORD)
    log_in(page, f"{engine_web}/login/", "admin", ADMIN_PASSWORD)

    # New VM from template tiny through the portal's form (its disk: a Job for the worker).
    page.goto(f"{engine_web}/vms/add/")
    page.fill("#id_name", "web-1")
    page.select_option("#id_cluster", str(cluster.pk))
    page.select_option("#id_template", str(tiny.pk))
    page.fill("#id_kernel_params", f"console=ttyS0 olvm.hostname=web-1 olvm.ip={GUEST_IP}/24")
    shot(page, "admin-1-new-vm-form")
    page.click(".olvm-card form button[type=submit]")
    page.wait_for_url(f"{engine_web}/vms/*/", timeout=15_000)
    vm = VirtualMachine.objects.get(name="web-1")
    assert page.url == f"{engine_web}/vms/{vm.pk}/"
    page.wait_for_selector('.olvm-page-head [data-status="down"]', timeout=60_000)  # the disk is there

    # A network interface on ovirtmgmt, so the guest's eth0 has the address of its kernel parameters.
    page.goto(f"{engine_web}/vms/{vm.pk}/nics/add/")
    profile = VnicProfile.objects.get(network__name="ovirtmgmt", network__data_center=cluster.data_center)
    page.select_option("#id_profile", str(profile.pk))
    page.click(".olvm-card form button[type=submit]")
    page.wait_for_load_state()
    assert vm.nics.count() == 1

    # Run: the status goes to Up and the guest agent's IP address appears, without a reload. The
    # Run button posts (the VM's page comes back drawn with whatever status the VM has by then), so
    # a second tab on the VM list, drawn while the VM was down, shows the status arriving live.
    watcher = page.context.new_page()
    open_live(watcher, f"{engine_web}/vms/")
    row = f'tr[data-live="vm.{vm.pk}"]'
    assert watcher.locator(f'{row} [data-field="status"] [data-status="down"]').count() == 1
    open_live(page, f"{engine_web}/vms/{vm.pk}/")
    shot(page, "admin-2-vm-down")
    assert page.is_enabled("[data-vm-actions] button[data-action=run]")
    page.click("[data-vm-actions] button[data-action=run]")
    page.wait_for_load_state()
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.evaluate("window.__olvmSamePage = true")
    page.wait_for_selector('.olvm-page-head [data-status="up"]', timeout=ACTION_TIMEOUT)
    shot(page, "admin-3-vm-up")
    watcher.wait_for_selector(f'{row} [data-field="status"] [data-status="up"]', timeout=10_000)
    assert same_page(watcher)
    assert watcher.inner_text(f'{row} [data-field="run_on_host_name"]') in ("h1", "h2")
    shot(watcher, "admin-3-vm-list-up")
    watcher.close()
    page.wait_for_function(
        "ip => document.querySelector('dd[data-field=guest_ips]').textContent.includes(ip)",
        arg=GUEST_IP,
        timeout=BOOT_TIMEOUT,
    )
    assert page.inner_text("[data-field=guest_hostname]") == "web-1"
    assert page.inner_text("[data-field=status_label]") == "Up"
    assert same_page(page), "the page reloaded: the status and the guest facts must come live"
    shot(page, "admin-4-vm-guest-ip")

    # The serial console: xterm.js over /ws/console/<vm>/, proxied to the host agent.
    console = page.locator("[data-vm-actions] a[data-action=console]")
    assert "disabled" not in console.get_attribute("class")  # enabled live, with the VM up
    console.click()
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/console/")
    page.wait_for_selector("#olvm-console-status[data-state=connected]", timeout=15_000)
    # The whole terminal shows between the top bar and the bottom pane: its last rows (the prompt,
    # once output fills the screen) are not under the pane.
    bottoms = page.evaluate(
        "[document.getElementById('olvm-console-screen').getBoundingClientRect().bottom,"
        " document.querySelector('.olvm-main').getBoundingClientRect().bottom]"
    )
    assert bottoms[0] <= bottoms[1], f"the terminal ends at {bottoms[0]} px, the content area at {bottoms[1]} px"
    page.click("#olvm-console-screen")  # focus the terminal
    prompt = "() => (document.querySelector('#olvm-console-screen .xterm-rows') || {}).textContent?.includes('tiny#')"
    deadline = time.monotonic() + 30
    while True:  # the guest may still be starting its shell: Enter until a prompt shows
        page.keyboard.press("Enter")  # xterm.js sends "\r"
        try:
            page.wait_for_function(prompt, timeout=3000)
            break
        except Exception:
            if time.monotonic() > deadline:
                shot(page, "admin-5-console-no-prompt")
                raise
    shot(page, "admin-5-console-prompt")

    # Shutdown with its confirmation: the guest powers off and the page shows Down live.
    page.click("text=Back to the VM")
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/")
    page.click("[data-vm-actions] a[data-action=shutdown]")
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/shutdown/")
    assert "Are you sure you want to shut down VM web-1?" in page.inner_text("main, body")
    shot(page, "admin-6-shutdown-confirm")
    page.click(".olvm-card form button[type=submit]")
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/")
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.evaluate("window.__olvmSamePage = true")
    page.wait_for_selector('.olvm-page-head [data-status="down"]', timeout=ACTION_TIMEOUT)
    assert same_page(page)
    assert page.inner_text("[data-field=status_label]") == "Down"
    assert "disabled" in page.get_attribute("[data-vm-actions] a[data-action=console]", "class")
    assert page.is_enabled("[data-vm-actions] button[data-action=run]")
    shot(page, "admin-7-vm-down-again")
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN and vm.run_on_host_id is None
    assert page.js_errors == []


def test_a_vm_portal_user_sees_and_runs_only_the_vm_granted(lab_engine, celery_worker, engine_web, page):
    cluster, tiny, admin = lab_engine["cluster"], lab_engine["tiny"], lab_engine["user"]
    with tasks_inline():
        mine, _ = vm_services.create_vm(user=admin, cluster=cluster, name="user-vm-1", template=tiny)
        theirs, _ = vm_services.create_vm(user=admin, cluster=cluster, name="other-vm-1", template=tiny)
    user = make_user("lab-user")
    web_password(user, USER_PASSWORD)
    grant(user, "UserRole", VirtualMachine.objects.get(pk=mine.pk))

    log_in(page, f"{engine_web}/vm-portal/login/", "lab-user", USER_PASSWORD)
    open_live(page, f"{engine_web}/vm-portal/")
    assert page.locator(f'tr[data-live="vm.{mine.pk}"]').is_visible()
    assert page.locator("text=user-vm-1").count() == 1
    assert page.locator("text=other-vm-1").count() == 0  # in the lab's inventory, not theirs
    assert page.locator(f'tr[data-live="vm.{theirs.pk}"]').count() == 0
    shot(page, "user-1-list")

    # Run it from its page; Up comes live (worker -> agent -> ingest -> websocket), also to the
    # list in another tab, drawn while the VM was down.
    watcher = page.context.new_page()
    open_live(watcher, f"{engine_web}/vm-portal/")
    row = f'tr[data-live="vm.{mine.pk}"]'
    open_live(page, f"{engine_web}/vm-portal/vms/{mine.pk}/")
    page.click("[data-vm-actions] button[data-action=run]")
    page.wait_for_url(f"{engine_web}/vm-portal/vms/{mine.pk}/")
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.evaluate("window.__olvmSamePage = true")
    page.wait_for_selector('[data-live] h1 [data-status="up"]', timeout=ACTION_TIMEOUT)
    assert same_page(page)
    assert page.inner_text("[data-field=status_label]") == "Up"
    assert page.is_disabled("[data-vm-actions] button[data-action=run]")
    assert "disabled" not in page.get_attribute("[data-vm-actions] a[data-action=shutdown]", "class")
    assert page.inner_text("dd[data-field=guest_ips]") == "—"  # no NIC: drawn live as the server draws it
    shot(page, "user-2-vm-up")
    watcher.wait_for_selector(f'{row} [data-field="status"] [data-status="up"]', timeout=10_000)
    assert same_page(watcher)
    watcher.close()
    assert VirtualMachine.objects.get(pk=mine.pk).run_on_host in Host.objects.filter(cluster=cluster)

    # Another VM's page, console and the admin portal's page of it: refused, saying nothing.
    for url in (
        f"/vm-portal/vms/{theirs.pk}/",
        f"/vm-portal/vms/{theirs.pk}/console/",
        f"/vms/{theirs.pk}/",
    ):
        response = page.goto(f"{engine_web}{url}")
        assert response.status in (403, 404), f"{url}: {response.status}"
        assert "other-vm-1" not in page.content()
    shot(page, "user-3-other-vm-refused")
    assert VirtualMachine.objects.get(pk=theirs.pk).status == VmStatus.DOWN
    assert page.js_errors == []


def test_an_administrator_migrates_a_vm_and_evacuates_its_host(lab_engine, celery_worker, engine_web, page):
    cluster, tiny, admin = lab_engine["cluster"], lab_engine["tiny"], lab_engine["user"]
    with tasks_inline():
        vm, _ = vm_services.create_vm(
            user=admin, cluster=cluster, name="move-1", template=tiny, kernel_params="console=ttyS0"
        )
        vm_services.start_vm(VirtualMachine.objects.get(pk=vm.pk), user=admin)
    wait_for(lambda: VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.UP, ACTION_TIMEOUT / 1000, "move-1 up")
    source = VirtualMachine.objects.get(pk=vm.pk).run_on_host
    target = Host.objects.filter(cluster=cluster).exclude(pk=source.pk).get()
    web_password(admin, ADMIN_PASSWORD)
    log_in(page, f"{engine_web}/login/", "admin", ADMIN_PASSWORD)

    # Migrate from the VM's page: the destination list offers the other host; the progress
    # shows live on the VM's page, which ends with the VM up on the other host.
    open_live(page, f"{engine_web}/vms/{vm.pk}/")
    page.click("[data-vm-actions] a[data-action=migrate]")
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/migrate/")
    assert page.locator(f'#id_host option[value="{target.pk}"]').count() == 1
    assert page.locator(f'#id_host option[value="{source.pk}"]').count() == 0
    shot(page, "migrate-1-form")
    page.select_option("#id_host", str(target.pk))
    page.click(".olvm-card form button[type=submit]")
    page.wait_for_url(f"{engine_web}/vms/{vm.pk}/")
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.wait_for_selector(f'[data-vm-migration="{vm.pk}"]:not(.d-none)', timeout=ACTION_TIMEOUT)
    shot(page, "migrate-2-progress")
    page.wait_for_selector(f'[data-vm-migration="{vm.pk}"].d-none', state="attached", timeout=ACTION_TIMEOUT)
    wait_for(lambda: VirtualMachine.objects.get(pk=vm.pk).run_on_host_id == target.pk, 30, "move-1 on the target")
    page.wait_for_selector('.olvm-page-head [data-status="up"]', timeout=30_000)
    shot(page, "migrate-3-done")

    # Maintenance of its new host, confirmed: the VM is migrated back and the host switches.
    page.goto(f"{engine_web}/hosts/{target.pk}/maintenance/")
    assert "Its running VMs are live-migrated to other hosts first" in page.inner_text("body")
    page.click(".olvm-card form button[type=submit]")
    page.wait_for_url(f"{engine_web}/hosts/{target.pk}/")
    page.wait_for_selector("#olvm-live[data-synced=true]", timeout=15_000)
    page.wait_for_selector('.olvm-page-head [data-status="maintenance"]', timeout=ACTION_TIMEOUT)
    shot(page, "migrate-4-host-maintenance")
    moved = VirtualMachine.objects.get(pk=vm.pk)
    assert (moved.status, moved.run_on_host_id) == (VmStatus.UP, source.pk)
    assert page.js_errors == []
    with tasks_inline():
        vm_services.stop_vm(moved, user=admin)
