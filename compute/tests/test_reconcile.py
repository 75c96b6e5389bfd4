"""The reconciler: engine VM state driven from host reports (compute/reconcile.py)."""

import uuid

import pytest

from compute.choices import VmStatus
from compute.reconcile import apply_guest_info, apply_vm_event, guest_facts, reconcile_host
from inventory.audit import create_job
from inventory.choices import JobStatus
from inventory.models import Event
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


def report(vm, status, **extra):
    return {"id": str(vm.pk), "name": vm.name, "status": status, "olvm": True, **extra}


def codes(vm):
    return list(Event.objects.filter(vm_id=vm.pk).order_by("id").values_list("code", flat=True))


def test_a_vm_that_went_down_on_its_host_goes_down_with_a_warning():
    vm = make_vm(status=VmStatus.UP)
    host = vm.run_on_host
    assert reconcile_host(host, [report(vm, "down")]) == 1
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN and vm.run_on_host is None
    assert codes(vm) == ["VM_DOWN_ERROR"]


def test_a_vm_missing_from_its_hosts_full_report_goes_down():
    vm = make_vm(status=VmStatus.UP)
    other = make_vm(cluster=vm.cluster, status=VmStatus.UP, run_on_host=vm.run_on_host)
    reconcile_host(vm.run_on_host, [report(other, "up")])
    vm.refresh_from_db()
    other.refresh_from_db()
    assert vm.status == VmStatus.DOWN and other.status == VmStatus.UP
    assert "no longer runs it" in Event.objects.get(vm_id=vm.pk).message


def test_an_unchanged_report_changes_nothing_and_writes_nothing(django_assert_max_num_queries):
    vm = make_vm(status=VmStatus.UP)
    with django_assert_max_num_queries(2):
        assert reconcile_host(vm.run_on_host, [report(vm, "up")]) == 0
    assert codes(vm) == []


def test_a_paused_report_pauses_and_up_again_resumes():
    vm = make_vm(status=VmStatus.UP)
    reconcile_host(vm.run_on_host, [report(vm, "paused")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.PAUSED
    reconcile_host(vm.run_on_host, [report(vm, "up")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP


def test_a_vm_in_a_transition_owned_by_a_started_job_is_left_to_its_task():
    vm = make_vm(status=VmStatus.POWERING_DOWN)
    create_job("ShutdownVm", "Shutting down", obj=vm)
    reconcile_host(vm.run_on_host, [report(vm, "up")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.POWERING_DOWN
    # Even a host that no longer lists it: the task is still on it.
    reconcile_host(vm.run_on_host, [])
    vm.refresh_from_db()
    assert vm.status == VmStatus.POWERING_DOWN


def test_when_the_job_of_a_dead_worker_has_ended_the_report_settles_the_transition():
    vm = make_vm(status=VmStatus.WAIT_FOR_LAUNCH)
    job = create_job("RunVm", "Starting", obj=vm)
    job.status = JobStatus.FAILED
    job.save()
    reconcile_host(vm.run_on_host, [report(vm, "up")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP


def test_a_transitional_vm_without_a_job_and_absent_from_the_host_goes_down():
    vm = make_vm(status=VmStatus.WAIT_FOR_LAUNCH)
    reconcile_host(vm.run_on_host, [])
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_a_stopped_definition_on_another_host_says_nothing():
    vm = make_vm(status=VmStatus.UP)
    elsewhere = make_host(vm.cluster)
    reconcile_host(elsewhere, [report(vm, "down")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP and vm.run_on_host_id != elsewhere.pk


def test_a_vm_reported_running_on_a_second_host_raises_an_alert_and_keeps_the_first():
    vm = make_vm(status=VmStatus.UP)
    first = vm.run_on_host
    second = make_host(vm.cluster)
    reconcile_host(second, [report(vm, "up")])
    vm.refresh_from_db()
    assert vm.run_on_host == first
    assert Event.objects.get(code="VM_RUNNING_ON_TWO_HOSTS").severity == "alert"


def test_a_suspended_vm_is_not_woken_by_reports():
    vm = make_vm(status=VmStatus.SUSPENDED)
    host = make_host(vm.cluster)
    reconcile_host(host, [report(vm, "down")])
    vm.refresh_from_db()
    assert vm.status == VmStatus.SUSPENDED


def test_an_unknown_running_domain_becomes_an_external_vm_once():
    cluster = make_cluster()
    host = make_host(cluster)
    vm_id = str(uuid.uuid4())
    domain = {"id": vm_id, "name": "hand made <vm>", "status": "up", "olvm": False}
    reconcile_host(host, [domain])
    reconcile_host(host, [domain])
    from compute.models import VirtualMachine

    vm = VirtualMachine.objects.get(pk=vm_id)
    assert vm.external and vm.status == VmStatus.UP and vm.run_on_host == host
    assert vm.name == "external-hand-made-vm" and vm.cluster == cluster
    assert codes(vm) == ["VM_EXTERNAL_FOUND"]
    # It stops behind the engine's back too: down, kept in the inventory.
    reconcile_host(host, [])
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_an_unknown_stopped_domain_is_not_adopted():
    host = make_host(make_cluster())
    reconcile_host(host, [{"id": str(uuid.uuid4()), "name": "old", "status": "down", "olvm": False}])
    from compute.models import VirtualMachine

    assert not VirtualMachine.objects.filter(external=True).exists()


def test_lifecycle_events_settle_one_vm_at_once():
    vm = make_vm(status=VmStatus.UP)
    event = {"vm_id": str(vm.pk), "name": vm.name, "status": "down", "event": "stopped", "detail": "shutdown"}
    assert apply_vm_event(vm.run_on_host, event)
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN
    assert "libvirt event stopped/shutdown" in Event.objects.get(vm_id=vm.pk).message


def test_guest_facts_map_the_guest_agent_answer():
    info = {
        "guest_agent": "ok",
        "hostname": "tiny",
        "os": {"pretty-name": "OLVM tiny guest 1", "kernel-release": "6.1.0-28-cloud-amd64"},
        "timezone": "UTC",
        "users": ["root"],
        "interfaces": [
            {"name": "lo", "addresses": ["127.0.0.1/8", "::1/128"]},
            {"name": "eth0", "addresses": ["10.213.1.5/24", "fe80::1/64"]},
        ],
    }
    assert guest_facts(info) == {
        "guest_hostname": "tiny",
        "guest_os": "OLVM tiny guest 1",
        "guest_kernel": "6.1.0-28-cloud-amd64",
        "guest_ips": ["10.213.1.5"],
        "guest_timezone": "UTC",
        "guest_users": ["root"],
    }
    vm = make_vm(status=VmStatus.UP)
    assert apply_guest_info(vm.run_on_host, str(vm.pk), info)
    assert not apply_guest_info(vm.run_on_host, str(vm.pk), info)  # unchanged: no write
    vm.refresh_from_db()
    assert vm.guest_hostname == "tiny" and vm.guest_ips == ["10.213.1.5"]
    # From a host the VM does not run on: ignored.
    assert not apply_guest_info(make_host(vm.cluster), str(vm.pk), {**info, "hostname": "evil"})
