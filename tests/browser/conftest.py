"""Browser tests: the real engine web process (daphne, HTTP + websockets) on the test
database, driven by Playwright through Debian's chromium (Playwright's own browser
download cannot work here). Screenshots go to var/test-artifacts/ (kept by CI)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("OLVM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "test-artifacts"


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs root, libvirt and qemu: builds lab hosts in network namespaces")


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def engine_web(transactional_db, settings):
    """daphne serving olvm_site.asgi on a free port of 127.0.0.1, on the test database."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
        "OLVM_PLAIN_STATIC": "1",
        "OLVM_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "OLVM_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        # The test run's engine CA (conftest.py): the web process reaches host agents with it
        # (consoles) and never touches var/pki of a `make run` on the same checkout.
        "OLVM_PKI_DIR": str(settings.OLVM_PKI_DIR),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "daphne.log", "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "olvm_site.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"daphne did not start (see {ARTIFACTS / 'daphne.log'})")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (make setup)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (Debian package chromium; make setup installs it as root)")
    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM
    # calls are still plain synchronous code, so Django's async-safety check is lifted here.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            yield browser
            browser.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def browser_admin(admin_user):
    """admin_user with a password hash the daphne process can check (tests hash with MD5
    in-process; the web process has the production hashers)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from conftest import ADMIN_PASSWORD

    hasher = PBKDF2PasswordHasher()
    admin_user.password = hasher.encode(ADMIN_PASSWORD, hasher.salt())
    admin_user.save(update_fields=["password"])
    return admin_user
