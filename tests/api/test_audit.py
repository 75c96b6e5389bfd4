"""Events and jobs: filters, nested steps, and the serializers used for websocket payloads."""

import pytest
from django.urls import reverse

from inventory.api.serializers import EventSerializer, JobSerializer
from inventory.audit import create_job, event_payload, job_payload, record_event
from tests.factories import make_data_center, make_vm

pytestmark = pytest.mark.django_db


def test_event_and_job_serialize_without_a_request():
    vm = make_vm()
    event = record_event("USER_STARTED_VM", "VM started.", obj=vm, severity="warning")
    job = create_job("RunVm", "Launching VM", obj=vm, steps=["Create"])

    assert event_payload(event) == dict(EventSerializer(event).data)
    assert event_payload(event)["vm_id"] == str(vm.pk)
    assert "url" not in event_payload(event)
    payload = job_payload(job)
    assert (payload["id"], payload["status"], payload["vm_id"]) == (str(job.pk), "started", str(vm.pk))
    assert [step["description"] for step in payload["steps"]] == ["Create"]
    assert JobSerializer(job).data["steps"][0]["status"] == "started"  # the first step starts with the Job


def test_event_filters(api_client):
    dc = make_data_center()
    vm = make_vm()
    record_event("A_WARNING", "Careful.", obj=vm, severity="warning")

    def codes(**params):
        response = api_client.get(reverse("api:event-list"), params)
        assert response.status_code == 200, response.json()
        return sorted(row["code"] for row in response.json()["results"])

    assert codes(severity="warning") == ["A_WARNING"]
    assert codes(vm=str(vm.pk)) == ["A_WARNING"]
    assert codes(data_center=str(dc.pk)) == ["USER_ADD_STORAGE_POOL"]
    assert codes(object_type="vm", search="careful") == ["A_WARNING"]
    assert codes(since="2000-01-01T00:00:00+17:41") == sorted(
        ["A_WARNING", "USER_ADD_STORAGE_POOL", "USER_ADD_STORAGE_POOL", "USER_ADD_CLUSTER"]
    )
    assert codes(until="2000-01-01T00:00:00Z") == []


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"since": "0001-01-01T00:00:00+17:41"}, {"since": ["Enter a date-time between years 1 and 9999."]}),
        ({"until": "yesterday"}, {"until": ["Enter a valid date/time."]}),
        ({"vm": "nope"}, {"vm": ["Enter a valid UUID."]}),
        (
            {"severity": "boom"},
            {"severity": ["Select a valid choice. boom is not one of the available choices."]},
        ),
    ],
)
def test_bad_event_filters_are_400(api_client, params, errors):
    response = api_client.get(reverse("api:event-list"), params)

    assert response.status_code == 400
    assert response.json() == errors


def test_job_list_has_steps_and_filters(api_client):
    vm = make_vm()
    create_job("RunVm", "Launching", obj=vm, steps=["One", "Two"])
    create_job("AddVds", "Adding", steps=[])

    response = api_client.get(reverse("api:job-list"), {"action_type": "RunVm", "vm": str(vm.pk)})

    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert [(s["number"], s["description"]) for s in row["steps"]] == [(1, "One"), (2, "Two")]
