"""Routine API tests generated from a few attributes, like NetBox's `APIViewTestCases`.

A test class per endpoint subclasses `ReadOnlyAPIViewTests` or `APIViewTests`, names its
route (`basename`) and model, and says how to make an object and what to send; the base
class then tests list, detail, 404s, create, update, PUT-back and delete with exact
assertions on the response, the rows and the audit Events. Hand-written tests are left
for behaviour.
"""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import models
from django.urls import reverse
from rest_framework.test import APIClient

from inventory.models import Event, Job


def db_value(obj: models.Model, name: str):
    """The value of field `name` of `obj` as the API writes it (ids as strings)."""
    field = obj._meta.get_field(name)
    if field.many_to_many:
        return sorted(str(pk) for pk in getattr(obj, name).values_list("pk", flat=True))
    if field.is_relation:
        value = getattr(obj, field.attname)
        return value if value is None or isinstance(value, int) else str(value)
    value = getattr(obj, name)
    return str(value) if isinstance(value, uuid.UUID) else value


def api_value(value):
    """A request value as the response shows it (ids as strings, lists of ids sorted)."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return sorted(value)
    return value


@pytest.mark.django_db
class ReadOnlyAPIViewTests:
    basename: str
    model: type[models.Model]
    # Open to users who are not administrators, within their object permissions.
    user_scoped = False

    def make(self) -> models.Model:
        raise NotImplementedError

    def expected(self, obj) -> dict:
        """Fields of `obj`'s representation and their exact values."""
        raise NotImplementedError

    def list_url(self) -> str:
        return reverse(f"api:{self.basename}-list")

    def detail_url(self, pk) -> str:
        return reverse(f"api:{self.basename}-detail", args=[pk])

    def test_list(self, api_client):
        objs = [self.make(), self.make()]

        response = api_client.get(self.list_url(), {"limit": 500})

        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["count"] == self.model._default_manager.count()
        rows = {str(row["id"]): row for row in body["results"]}
        for obj in objs:
            row = rows[str(obj.pk)]
            assert {name: row[name] for name in self.expected(obj)} == self.expected(obj)

    def test_list_is_paginated(self, api_client):
        self.make()
        self.make()

        response = api_client.get(self.list_url(), {"limit": 1, "offset": 1})

        assert response.status_code == 200
        body = response.json()
        assert len(body["results"]) == 1
        assert body["count"] == self.model._default_manager.count()
        assert body["previous"] is not None

    def test_get(self, api_client):
        obj = self.make()

        response = api_client.get(self.detail_url(obj.pk))

        assert response.status_code == 200, response.json()
        body = response.json()
        assert str(body["id"]) == str(obj.pk)
        assert {name: body[name] for name in self.expected(obj)} == self.expected(obj)

    def test_get_unknown_is_404(self, api_client):
        pk = uuid.uuid4() if isinstance(self.model._meta.pk, models.UUIDField) else 2**31 - 1

        response = api_client.get(self.detail_url(pk))

        assert response.status_code == 404
        assert "detail" in response.json()

    @pytest.mark.parametrize("pk", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "-1", "%00", "%FF"])
    def test_get_malformed_pk_is_404(self, api_client, pk):
        response = api_client.get(self.list_url() + pk + "/")

        assert response.status_code == 404
        assert set(response.json()) == {"detail"}

    def test_anonymous_is_refused(self):
        response = APIClient().get(self.list_url())

        assert (response.status_code, response["WWW-Authenticate"]) == (401, "Token")
        assert response.json() == {"detail": "Authentication credentials were not provided."}

    def test_non_staff_is_refused(self):
        """Users who are not administrators are refused, or, on an endpoint open to them
        (`user_scoped`), see none of the rows when no role of theirs covers them."""
        obj = self.make()
        user = get_user_model().objects.create_user("plain-user", password="plain-password-1")
        client = APIClient()
        client.force_authenticate(user)

        response = client.get(self.list_url())

        if self.user_scoped:
            assert response.status_code == 200
            assert (response.json()["count"], response.json()["results"]) == (0, [])
            assert client.get(self.detail_url(obj.pk)).status_code == 404
            return
        assert response.status_code == 403
        assert response.json() == {"detail": "Administrator rights are needed for this API."}


class ReadOnlyEndpointTests(ReadOnlyAPIViewTests):
    """An endpoint with no writes at all."""

    def test_writes_are_not_allowed(self, api_client):
        obj = self.make()

        assert api_client.post(self.list_url(), {}, format="json").status_code == 405
        assert api_client.patch(self.detail_url(obj.pk), {}, format="json").status_code == 405
        assert api_client.delete(self.detail_url(obj.pk)).status_code == 405
        assert self.model._default_manager.filter(pk=obj.pk).exists()


class APIViewTests(ReadOnlyAPIViewTests):
    """An endpoint whose writes go through services: create, update and delete."""

    # The keys a POST of {} reports as missing.
    required_fields: set[str] = set()
    # Sent, never shown (passwords, create-time options).
    write_only: set[str] = set()
    create_event: str
    update_event: str = ""
    delete_event: str
    # None: create answers no `job`; False: `job` is null; True: `job` is the id of a Job.
    create_job: bool | None = None
    allow_update = True
    # 204, or 202 when removing is a Job.
    delete_status = 204
    # False when the row goes later, at the end of the removal Job.
    delete_removes_row = True

    def create_data(self) -> dict:
        raise NotImplementedError

    def update_data(self, obj) -> dict:
        raise NotImplementedError

    def make_deletable(self) -> models.Model:
        return self.make()

    def event_object_id(self, obj):
        """The id the audit Event of a write names (the object itself by default)."""
        return obj.pk

    def assert_event(self, code: str, obj) -> None:
        assert Event.objects.filter(code=code, object_id=self.event_object_id(obj)).count() == 1, list(
            Event.objects.values_list("code", "object_id")
        )

    def test_create(self, api_client):
        data = self.create_data()
        before = self.model._default_manager.count()

        response = api_client.post(self.list_url(), data, format="json")

        assert response.status_code == 201, response.json()
        body = response.json()
        obj = self.model._default_manager.get(pk=body["id"])
        assert self.model._default_manager.count() == before + 1
        model_fields = {f.name for f in self.model._meta.get_fields()}
        for name, value in data.items():
            if name not in self.write_only:
                assert api_value(body[name]) == api_value(value), name
            else:
                assert name not in body
            if name in model_fields:
                assert api_value(db_value(obj, name)) == api_value(value), name
        self.assert_event(self.create_event, obj)
        if self.create_job is None:
            assert "job" not in body
        elif self.create_job:
            assert Job.objects.filter(pk=body["job"]).exists()
        else:
            assert body["job"] is None

    def test_create_empty_body_is_400(self, api_client):
        rows, events = self.model._default_manager.count(), Event.objects.count()

        response = api_client.post(self.list_url(), {}, format="json")

        assert response.status_code == 400
        assert set(response.json()) == self.required_fields
        assert all(messages == ["This field is required."] for messages in response.json().values())
        assert (self.model._default_manager.count(), Event.objects.count()) == (rows, events)

    def test_create_malformed_json_is_400(self, api_client):
        rows = self.model._default_manager.count()

        response = api_client.post(self.list_url(), "{not json", content_type="application/json")

        assert response.status_code == 400
        assert response.json()["detail"].startswith("JSON parse error")
        assert self.model._default_manager.count() == rows

    def test_create_non_object_body_is_400(self, api_client):
        response = api_client.post(self.list_url(), [1, 2], format="json")

        assert response.status_code == 400
        assert response.json() == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}

    def test_update(self, api_client):
        obj = self.make()
        if not self.allow_update:
            # No update service for this object: the API says so, for PATCH and PUT alike.
            assert api_client.patch(self.detail_url(obj.pk), {}, format="json").status_code == 405
            assert api_client.put(self.detail_url(obj.pk), {}, format="json").status_code == 405
            return
        data = self.update_data(obj)

        response = api_client.patch(self.detail_url(obj.pk), data, format="json")

        assert response.status_code == 200, response.json()
        body = response.json()
        obj.refresh_from_db()
        for name, value in data.items():
            assert api_value(body[name]) == api_value(value), name
            assert api_value(db_value(obj, name)) == api_value(value), name
        self.assert_event(self.update_event, obj)

    def test_put_back_unchanged(self, api_client):
        """A GET body PUT back as it is changes nothing (create-only fields included)."""
        obj = self.make()
        body = api_client.get(self.detail_url(obj.pk)).json()
        events = Event.objects.count()
        if not self.allow_update:
            assert api_client.put(self.detail_url(obj.pk), body, format="json").status_code == 405
            assert Event.objects.count() == events
            return

        response = api_client.put(self.detail_url(obj.pk), body, format="json")

        assert response.status_code == 200, response.json()
        assert {k: v for k, v in response.json().items() if k not in {"updated_at", "job"}} == {
            k: v for k, v in body.items() if k != "updated_at"
        }
        assert Event.objects.count() == events

    def test_delete(self, api_client):
        obj = self.make_deletable()
        event_object = self.event_object_id(obj)

        response = api_client.delete(self.detail_url(obj.pk))

        assert response.status_code == self.delete_status, response.content
        if self.delete_status == 202:
            assert Job.objects.filter(pk=response.json()["id"]).exists()
        else:
            assert response.content == b""
        assert self.model._default_manager.filter(pk=obj.pk).exists() is not self.delete_removes_row
        assert Event.objects.filter(code=self.delete_event, object_id=event_object).count() == 1
