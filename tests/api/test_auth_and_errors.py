"""Token authentication, the schema and docs, the browsable API, and error shapes."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import ADMIN_PASSWORD
from tests.factories import make_user, make_vm

pytestmark = pytest.mark.django_db


def test_obtain_token_and_use_it(admin_user):
    client = APIClient()

    response = client.post(reverse("api:auth-token"), {"username": "admin", "password": ADMIN_PASSWORD}, format="json")

    assert response.status_code == 200
    key = response.json()["token"]
    assert key == Token.objects.get(user=admin_user).key
    make_vm(name="tokened")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    listing = client.get(reverse("api:vm-list"))
    assert listing.status_code == 200
    assert [row["name"] for row in listing.json()["results"]] == ["tokened"]


def test_token_write_needs_no_csrf(admin_user):
    token = Token.objects.create(user=admin_user)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.post(reverse("api:instance-type-list"), {"name": "T1", "memory_mib": 512, "vcpus": 1})

    assert response.status_code == 201


def test_wrong_password_gets_no_token(admin_user):
    response = APIClient().post(reverse("api:auth-token"), {"username": "admin", "password": "wrong"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    assert not Token.objects.exists()


def test_bad_token_is_refused_as_unauthenticated():
    """401 with the scheme to use, not 403: TokenAuthentication comes first in settings."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(reverse("api:vm-list"))
    inactive = Token.objects.create(user=make_user("gone", is_active=False))
    client.credentials(HTTP_AUTHORIZATION=f"Token {inactive.key}")
    refused = client.get(reverse("api:vm-list"))

    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Token")
    assert response.json() == {"detail": "Invalid token."}
    assert (refused.status_code, refused["WWW-Authenticate"]) == (401, "Token")
    assert refused.json() == {"detail": "User inactive or deleted."}


def test_session_login_works_with_csrf(admin_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.get(reverse("api:vm-list")).status_code == 200
    response = client.post(reverse("api:instance-type-list"), {"name": "T1", "memory_mib": 512, "vcpus": 1})
    assert response.status_code == 403
    assert response.json()["detail"].startswith("CSRF Failed")


def test_api_root_lists_every_endpoint(api_client):
    response = api_client.get("/api/v1/")

    assert response.status_code == 200
    assert sorted(response.json()) == sorted(
        [
            "data-centers",
            "clusters",
            "hosts",
            "events",
            "jobs",
            "users",
            "roles",
            "permissions",
            "quotas",
            "vms",
            "templates",
            "instance-types",
            "snapshots",
            "storage-domains",
            "disks",
            "disk-attachments",
            "networks",
            "cluster-networks",
            "vnic-profiles",
            "mac-pools",
            "nics",
            "affinity-groups",
        ]
    )


def test_browsable_api_renders(api_client):
    vm = make_vm()

    listing = api_client.get(reverse("api:vm-list"), HTTP_ACCEPT="text/html")
    detail = api_client.get(reverse("api:vm-detail", args=[vm.pk]), HTTP_ACCEPT="text/html")

    assert (listing.status_code, detail.status_code) == (200, 200)
    assert listing["Content-Type"].startswith("text/html")
    assert vm.name in detail.content.decode()


def test_openapi_schema_and_docs(user_client):
    schema = user_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = user_client.get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/vms/{id}/start/" in paths
    assert "/api/v1/networks/{id}/attach-cluster/" in paths
    assert "/api/v1/auth/token/" in paths
    assert set(paths["/api/v1/vms/{id}/start/"]["post"]["responses"]) == {"202", "409"}
    assert docs.status_code == 200


def test_unknown_route_is_404(api_client):
    assert api_client.get("/api/v1/nothing-here/").status_code == 404


def test_method_not_allowed_is_405(api_client):
    response = api_client.put(reverse("api:vm-list"), {}, format="json")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "PUT" not allowed.'}


def test_unsupported_media_type_is_415(api_client):
    response = api_client.post(reverse("api:vm-list"), b"<vm/>", content_type="application/xml")

    assert response.status_code == 415


def test_session_cookie_with_a_nul_byte_is_not_a_server_error():
    client = APIClient(raise_request_exception=False)

    response = client.get(reverse("api:vm-list"), HTTP_COOKIE="sessionid=abcdefgh\x00ijkl")

    assert response.status_code == 401  # no session: anonymous


def test_schema_validates(tmp_path):
    """`manage.py spectacular --validate` finds no error (warnings: see ENUM_NAME_OVERRIDES)."""
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/v1/vms/{id}/start/:" in (tmp_path / "schema.yaml").read_text()
