"""The administration portal in a real browser (chromium via Playwright)."""

import pytest

from conftest import ADMIN_PASSWORD
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db(transaction=True)


def login(page, base, username="admin", password=ADMIN_PASSWORD):
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_an_administrator_logs_in_and_sees_the_inventory(engine_web, page, browser_admin):
    cluster = make_cluster()
    make_host(cluster, name="kvm-browser-1")
    make_vm(cluster, name="vm-browser-1")
    login(page, engine_web)
    assert "/login" not in page.url
    page.goto(f"{engine_web}/vms/")
    assert page.locator("text=vm-browser-1").first.is_visible()
    page.goto(f"{engine_web}/hosts/")
    assert page.locator("text=kvm-browser-1").first.is_visible()
    # Styles and scripts come from npm through whitenoise: the page is styled.
    assert page.evaluate("getComputedStyle(document.body).fontFamily") != "Times New Roman"
    assert page.js_errors == []


def test_a_wrong_password_is_refused_with_a_message(engine_web, page, browser_admin):
    login(page, engine_web, password="wrong-password")
    assert "/login" in page.url
    assert page.locator(".alert, .errorlist, .invalid-feedback").first.is_visible()
