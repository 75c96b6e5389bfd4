"""The live streams' payloads are exactly the REST API's representation."""

import pytest

from inventory.api.serializers import EventSerializer, JobSerializer
from inventory.audit import JobProgress, create_job, event_payload, job_payload, record_event
from tests.factories import make_vm

pytestmark = pytest.mark.django_db


def test_event_payload_is_the_serializers_output(admin_user):
    vm = make_vm()
    event = record_event("USER_RUN_VM", 'VM <x> & "y" started.', user=admin_user, obj=vm, correlation_id="c-1")
    event.refresh_from_db()
    assert event_payload(event) == dict(EventSerializer(event).data)


def test_job_payload_is_the_serializers_output_at_every_stage(admin_user):
    vm = make_vm()
    job = create_job("RunVm", "Launching", user=admin_user, obj=vm, steps=["one", "two"])
    progress = JobProgress(job.pk)
    for stage in (lambda: None, lambda: progress.step(1), lambda: progress.step(2), progress.finish):
        stage()
        job.refresh_from_db()
        assert job_payload(job) == dict(JobSerializer(job).data)
    created = create_job("AddVds", "Adding", obj=None, steps=["a"])
    rows = list(created.steps.all())
    assert job_payload(created, rows) == dict(JobSerializer(created).data)
