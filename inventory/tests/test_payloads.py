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


# Status payloads of objects: the serializers' rendering of the fields a page shows --------------


def rendered(serializer) -> dict:
    """What the REST API sends: the serializer's output through the JSON renderer."""
    import json

    from rest_framework.renderers import JSONRenderer

    return json.loads(JSONRenderer().render(serializer.data))


def test_the_vm_status_payload_is_the_serializers_output_at_every_change():
    from compute.api.serializers import VmSerializer
    from compute.models import VirtualMachine
    from compute.services import VM_LIVE_FIELDS, set_vm_status, vm_payload
    from tests.factories import make_host

    host = make_host()
    vm = make_vm(host.cluster, name="web-7")
    for status, on in (("wait_for_launch", host), ("up", host), ("powering_down", False), ("down", None)):
        set_vm_status(vm, status, host=on)
        sent = vm_payload(vm)
        vm = VirtualMachine.objects.get(pk=vm.pk)  # as the API reads it
        api = rendered(VmSerializer(vm))
        assert sent == {name: api[name] for name in (*VM_LIVE_FIELDS, "run_on_host_name")}, status
    vm.guest_ips = ["10.0.0.5", "fe80::1"]
    assert vm_payload(vm)["guest_ips"] == ["10.0.0.5", "fe80::1"]


def test_a_vm_payload_reads_the_host_name_only_when_its_row_is_not_at_hand(django_assert_num_queries):
    from compute.models import VirtualMachine
    from compute.services import vm_payload
    from tests.factories import make_host

    host = make_host(name="h-payload")
    vm = make_vm(host.cluster, run_on_host=host, status="up")
    bare = VirtualMachine.objects.get(pk=vm.pk)
    joined = VirtualMachine.objects.select_related("run_on_host").get(pk=vm.pk)

    with django_assert_num_queries(1):
        assert vm_payload(bare)["run_on_host_name"] == "h-payload"
    with django_assert_num_queries(0):
        assert vm_payload(joined)["run_on_host_name"] == "h-payload"


def test_the_host_status_payload_is_the_serializers_output():
    from inventory.api.serializers import HostSerializer
    from inventory.models import Host
    from inventory.services import HOST_LIVE_FIELDS, host_payload, set_host_status
    from tests.factories import make_host

    host = make_host(status="up")
    set_host_status(host, "non_responsive", detail="No heartbeat")
    sent = host_payload(host)
    api = rendered(HostSerializer(Host.objects.select_related("cluster").get(pk=host.pk)))

    assert sent == {name: api[name] for name in HOST_LIVE_FIELDS}
    assert (sent["status"], sent["status_detail"]) == ("non_responsive", "No heartbeat")


def test_the_storage_domain_payload_is_the_serializers_output():
    from storage.api.serializers import StorageDomainSerializer
    from storage.services import STORAGE_DOMAIN_LIVE_FIELDS, storage_domain_payload
    from tests.factories import make_storage_domain

    sd = make_storage_domain()
    api = rendered(StorageDomainSerializer(sd))

    assert storage_domain_payload(sd) == {name: api[name] for name in STORAGE_DOMAIN_LIVE_FIELDS}
