"""The console page (portals/console_views.py) and the Console button of the VM page."""

import json

import pytest
from django.contrib.staticfiles import finders

from compute.choices import VmStatus
from tests.factories import make_vm


def console_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="olvm-console-config" type="application/json">') + len(
        '<script id="olvm-console-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


@pytest.mark.django_db
def test_the_serial_console_page_of_a_running_vm(admin_client, seeded):
    vm = seeded["vm"]
    vm.console_type = "serial"
    vm.save(update_fields=["console_type"])

    response = admin_client.get(f"/vms/{vm.pk}/console/")

    assert response.status_code == 200
    assert console_config(response) == {
        "vmId": str(vm.pk),
        "kind": "serial",
        "ticketUrl": f"/api/v1/vms/{vm.pk}/console/",
        "ticketTtl": 30,
    }
    html = response.content.decode()
    for asset in (
        "/static/vendor/xterm/css/xterm.css",
        "/static/vendor/xterm/lib/xterm.js",
        "/static/vendor/xterm-addon-fit/addon-fit.js",
        'src="/static/olvm/console.js" data-rfb="/static/vendor/novnc/core/rfb.js"',
    ):
        assert asset in html, asset
    assert 'name="csrfmiddlewaretoken"' in html
    assert f'href="/vms/{vm.pk}/"' in html  # back to the VM
    assert "Connecting…" in html
    assert 'aria-label="Console kind"' not in html  # a serial-only VM has one kind


@pytest.mark.django_db
def test_a_vnc_vm_opens_its_display_and_offers_the_serial_console(admin_client, seeded):
    vm = seeded["vm"]  # console type VNC (the default)

    display = admin_client.get(f"/vms/{vm.pk}/console/")
    serial = admin_client.get(f"/vms/{vm.pk}/console/?kind=serial")
    bogus = admin_client.get(f"/vms/{vm.pk}/console/?kind=spice")

    assert console_config(display)["kind"] == "vnc"
    assert console_config(serial)["kind"] == "serial"
    assert console_config(bogus)["kind"] == "vnc"
    assert 'href="?kind=serial"' in display.content.decode()
    assert 'id="olvm-console-cad"' in display.content.decode()


@pytest.mark.django_db
def test_a_vm_that_does_not_run_says_so(admin_client, seeded):
    vm = seeded["vm_down"]

    response = admin_client.get(f"/vms/{vm.pk}/console/")

    assert response.status_code == 200
    assert "VM db-01 is down: a console opens only while it runs." in response.content.decode()


@pytest.mark.django_db
def test_the_admin_console_page_is_for_administrators(client, plain_user_client, seeded):
    url = f"/vms/{seeded['vm'].pk}/console/"

    assert plain_user_client.get(url).status_code == 403
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


@pytest.mark.django_db
def test_an_unknown_vm_is_a_404(admin_client):
    assert admin_client.get("/vms/00000000-0000-0000-0000-00000000abcd/console/").status_code == 404


def console_button(page: str) -> str:
    start = page.index('data-action="console"')
    return page[page.rindex("<a ", 0, start) : page.index(">", start) + 1]


@pytest.mark.django_db
def test_the_vm_page_has_a_console_button_enabled_while_the_vm_runs(admin_client, seeded):
    running = admin_client.get(f"/vms/{seeded['vm'].pk}/").content.decode()
    down = admin_client.get(f"/vms/{seeded['vm_down'].pk}/").content.decode()
    suspended_vm = make_vm(seeded["cluster"], status=VmStatus.SUSPENDED, run_on_host=seeded["host"])
    suspended = admin_client.get(f"/vms/{suspended_vm.pk}/").content.decode()

    assert f'href="/vms/{seeded["vm"].pk}/console/"' in console_button(running)
    assert "disabled" not in console_button(running)
    # Disabled, not left out: live.js enables it when the VM starts (the statuses it allows
    # are in the page's action states, as for the power buttons).
    assert 'aria-disabled="true"' in console_button(down) and " disabled" in console_button(down)
    assert 'aria-disabled="true"' in console_button(suspended)
    states = json.loads(down.split('id="olvm-vm-action-states" type="application/json">')[1].split("</script>")[0])
    assert "up" in states["console"] and "down" not in states["console"] and "suspended" not in states["console"]


def test_the_front_end_libraries_are_served_from_node_modules():
    for path in (
        "vendor/xterm/lib/xterm.js",
        "vendor/xterm/css/xterm.css",
        "vendor/xterm-addon-fit/addon-fit.js",
        "vendor/novnc/core/rfb.js",
        "vendor/novnc/vendor/pako/lib/zlib/inflate.js",  # imported by core/inflator.js as ../vendor/pako/
        "olvm/console.js",
    ):
        assert finders.find(path), path
