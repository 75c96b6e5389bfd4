"""/api/v1/roles/, /api/v1/permissions/ and /api/v1/quotas/: administrators only."""

import itertools

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.test import APIClient

from inventory.models import Event, Permission, Quota, Role
from inventory.services import set_quota
from tests.factories import grant, make_cluster, make_user, make_vm, role

from .base import APIViewTests, ReadOnlyEndpointTests

_n = itertools.count(1)


class TestRoles(ReadOnlyEndpointTests):
    basename = "role"
    model = Role

    def make(self):
        return Role.objects.create(name=f"CustomRole{next(_n)}", description="A custom role")

    def expected(self, obj):
        return {"name": obj.name, "description": "A custom role", "administrative": False, "actions": []}


class TestPermissions(APIViewTests):
    basename = "permission"
    model = Permission
    required_fields = {"role", "object_type"}
    create_event = "USER_ADD_PERMISSION"
    delete_event = "USER_REMOVE_PERMISSION"
    allow_update = False

    def make(self):
        return grant(make_user(), "UserRole", make_vm())

    def event_object_id(self, obj):
        return obj.object_id

    def expected(self, obj):
        return {
            "user": obj.user_id,
            "username": obj.user.username,
            "group": None,
            "group_name": None,
            "role": str(obj.role_id),
            "role_name": "UserRole",
            "object_type": "vm",
            "object_id": str(obj.object_id),
        }

    def create_data(self):
        return {
            "user": make_user().pk,
            "role": str(role("PowerUserRole").pk),
            "object_type": "cluster",
            "object_id": str(make_cluster().pk),
        }

    def test_list(self, api_client):
        """The rows name the object each grant is on (one query for all of them)."""
        vm = make_vm(name="named-vm")
        permission = grant(make_user("bob"), "UserRole", vm)
        grant(Group.objects.create(name="ops"), "ReadOnlyAdmin")

        body = api_client.get(self.list_url()).json()

        rows = {row["id"]: row for row in body["results"]}
        assert body["count"] == 2
        assert {k: rows[str(permission.pk)][k] for k in ("username", "object_name", "role_name")} == {
            "username": "bob",
            "object_name": "named-vm",
            "role_name": "UserRole",
        }
        system = next(row for row in body["results"] if row["object_type"] == "system")
        assert (system["group_name"], system["object_id"], system["object_name"]) == ("ops", None, "")

    def test_get(self, api_client):
        permission = grant(make_user("carol"), "UserRole", make_vm(name="carols-vm"))

        body = api_client.get(self.detail_url(permission.pk)).json()

        assert (body["username"], body["object_name"], body["object_type"]) == ("carol", "carols-vm", "vm")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (
            {"object_type": "cluster", "object_id": None},
            {"non_field_errors": ["A permission is granted to a user or to a group: exactly one of the two."]},
        ),
        (
            {"user": "me", "object_type": "system", "object_id": "00000000-0000-0000-0000-000000000001"},
            {"non_field_errors": ["A permission on the system names no object; on any other level it names one."]},
        ),
        (
            {"user": "me", "object_type": "vm", "object_id": "00000000-0000-0000-0000-000000000001"},
            {"object_id": ["No vm has this id."]},
        ),
        ({"user": "me", "object_type": "host", "object_id": None}, {"object_type": ['"host" is not a valid choice.']}),
    ],
)
def test_a_bad_grant_is_a_400_and_writes_nothing(api_client, data, errors):
    user = make_user()
    body = {**data, "role": str(role("UserRole").pk)}
    if body.get("user") == "me":
        body["user"] = user.pk

    response = api_client.post(reverse("api:permission-list"), body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert not Permission.objects.exists()


@pytest.mark.django_db
def test_a_grant_on_the_system_and_one_to_a_group(api_client):
    group = Group.objects.create(name="admins")

    response = api_client.post(
        reverse("api:permission-list"),
        {"group": group.pk, "role": str(role("SuperUser").pk), "object_type": "system", "object_id": None},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert (response.json()["group_name"], response.json()["object_type"]) == ("admins", "system")
    assert Permission.objects.get().group == group


@pytest.mark.django_db
def test_the_same_grant_twice_is_a_400(api_client):
    user, cluster = make_user(), make_cluster()
    grant(user, "UserRole", cluster)
    data = {"user": user.pk, "role": str(role("UserRole").pk), "object_type": "cluster", "object_id": str(cluster.pk)}

    response = api_client.post(reverse("api:permission-list"), data, format="json")

    assert response.status_code == 400
    assert response.json() == {"object_id": ["This user already has this role on this object."]}


class TestQuotas(APIViewTests):
    basename = "quota"
    model = Quota
    create_event = "USER_SET_QUOTA"
    update_event = "USER_SET_QUOTA"
    delete_event = "USER_REMOVE_QUOTA"

    def make(self):
        return set_quota(user=None, principal=make_user(), max_vcpus=4, max_memory_mib=8192, max_disk_gib=100)

    def event_object_id(self, obj):
        return None  # about a user or a group, not an inventory object

    def expected(self, obj):
        return {"user": obj.user_id, "max_vcpus": 4, "max_memory_mib": 8192, "max_disk_gib": 100, "group": None}

    def create_data(self):
        return {"user": make_user().pk, "max_vcpus": 8, "max_memory_mib": 16384, "max_disk_gib": None}

    def update_data(self, obj):
        return {"max_vcpus": 16, "max_disk_gib": None}

    def test_create_empty_body_is_400(self, api_client):
        response = api_client.post(self.list_url(), {}, format="json")

        assert response.status_code == 400
        assert response.json() == {
            "non_field_errors": ["A quota is set for a user or for a group: exactly one of the two."]
        }
        assert not Quota.objects.exists()

    def assert_event(self, code, obj):
        latest = Event.objects.filter(code=code).order_by("-id").first()
        assert latest is not None and f"Quota of user {obj.user.username}:" in latest.message

    def test_a_second_quota_for_the_same_user_is_a_400(self, api_client):
        quota = self.make()

        response = api_client.post(self.list_url(), {"user": quota.user_id, "max_vcpus": 1}, format="json")

        assert response.status_code == 400
        assert response.json() == {"user": ["Quota with this User already exists."]}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:role-list", "api:permission-list", "api:quota-list"])
def test_users_who_are_not_administrators_cannot_see_or_grant(name):
    user = make_user()
    grant(user, "PowerUserRole")  # even a wide user role is not an administrator
    client = APIClient()
    client.force_authenticate(user)

    assert client.get(reverse(name)).status_code == 403
    assert client.post(reverse(name), {}, format="json").status_code == 403
