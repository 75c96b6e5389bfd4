"""Who may open the portal: staff only; others are sent to sign in or refused with a 403."""

import pytest
from django.test import Client
from django.urls import reverse

from conftest import ADMIN_PASSWORD

PAGES = [
    "portals:dashboard",
    "portals:datacenter-list",
    "portals:cluster-list",
    "portals:host-list",
    "portals:vm-list",
    "portals:template-list",
    "portals:network-list",
    "portals:vnicprofile-list",
    "portals:storagedomain-list",
    "portals:disk-list",
    "portals:user-list",
    "portals:event-list",
    "portals:job-list",
    "portals:vm-add",
    "portals:host-add",
]


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGES)
def test_anonymous_users_are_sent_to_the_login_page(client, name):
    url = reverse(name)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('portals:login')}?next={url}"


@pytest.mark.django_db
def test_anonymous_post_to_an_action_writes_nothing(client, seeded):
    vm = seeded["vm_down"]

    response = client.post(reverse("portals:vm-action", args=[vm.pk, "run"]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portals:login"))
    vm.refresh_from_db()
    assert vm.status == "down"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["portals:dashboard", "portals:vm-list", "portals:vm-add"])
def test_non_staff_users_get_a_clear_403(plain_user_client, name):
    response = plain_user_client.get(reverse(name))

    assert response.status_code == 403
    body = response.content.decode()
    assert "Access denied (403)" in body
    assert "The administration portal is for administrators." in body
    assert "alice" in body


@pytest.mark.django_db
def test_login_page_renders_our_template(client):
    response = client.get(reverse("portals:login"))

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "registration/login.html"
    assert "Sign in" in response.content.decode()


@pytest.mark.django_db
def test_login_then_dashboard_then_logout(admin_user):
    client = Client()

    bad = client.post(reverse("portals:login"), {"username": "admin", "password": "wrong"})
    assert bad.status_code == 200
    assert "Please enter a correct username and password" in bad.content.decode()

    good = client.post(reverse("portals:login"), {"username": "admin", "password": ADMIN_PASSWORD})
    assert good.status_code == 302
    assert good["Location"] == reverse("portals:dashboard")
    assert client.get(reverse("portals:dashboard")).status_code == 200

    out = client.post(reverse("portals:logout"))
    assert out.status_code == 302
    assert out["Location"] == reverse("portals:login")
    assert client.get(reverse("portals:dashboard")).status_code == 302
