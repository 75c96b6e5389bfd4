"""The engine's handling of agent pushes (inventory/ingest.py, contract in docs/ingest.md)."""

import time
import uuid

import pytest
from django.db import DatabaseError

from compute.choices import VmStatus
from compute.models import VirtualMachine
from inventory import ingest
from inventory.choices import HostStatus, JobStatus
from inventory.models import Event, Host, Job
from tests.factories import make_host, make_vm
from tests.listen import GroupListener

pytestmark = pytest.mark.django_db(transaction=True)


def batch(*messages, boot_id="boot-1", seq=1):
    return {
        "agent": {"version": "0.1", "driver": "libvirt", "simulated": False, "boot_id": boot_id, "hostname": "h1"},
        "seq": seq,
        "sent_at": time.time(),
        "messages": list(messages),
    }


def heartbeat():
    return {"kind": "heartbeat", "at": time.time()}


def vm_report(*vms):
    return {"kind": "vm_report", "at": time.time(), "full": True, "vms": list(vms)}


@pytest.fixture(autouse=True)
def _fresh_ingest_state():
    ingest.forget_state()


def test_a_heartbeat_is_recorded_and_the_intervals_come_back():
    host = make_host(last_heartbeat=None)
    status, answer = ingest.handle(str(host.pk), batch(heartbeat(), vm_report()))
    assert status == 200
    assert answer == {
        "ok": True,
        "accepted": 2,
        "heartbeat_interval": 2.0,
        "stats_interval": 5.0,
        "guest_info_interval": 10.0,
    }
    host.refresh_from_db()
    assert host.last_heartbeat is not None


def test_a_non_responsive_host_that_speaks_again_comes_back_up():
    host = make_host(status=HostStatus.NON_RESPONSIVE)
    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 200
    host.refresh_from_db()
    assert host.status == HostStatus.UP
    assert Event.objects.filter(host_id=host.pk, code="VDS_RECOVERED").exists()


def test_a_certificate_naming_no_host_is_refused_with_403():
    assert ingest.handle(str(uuid.uuid4()), batch(heartbeat()))[0] == 403
    assert ingest.handle("not-a-uuid", batch(heartbeat()))[0] == 403


def test_a_malformed_message_rejects_the_whole_batch_and_applies_nothing():
    vm = make_vm(status=VmStatus.UP)
    down = {"kind": "vm_event", "at": time.time(), "vm_id": str(vm.pk), "name": vm.name, "status": "down",
            "event": "stopped", "detail": "destroyed"}  # fmt: skip
    status, answer = ingest.handle(str(vm.run_on_host_id), batch(down, {"kind": "vm_event", "at": "soon"}))
    assert status == 400 and answer["field"].startswith("messages[1]")
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP


def test_a_lifecycle_event_is_applied_and_published_to_the_vm_group():
    vm = make_vm(status=VmStatus.UP)
    event = {"kind": "vm_event", "at": time.time(), "vm_id": str(vm.pk), "name": vm.name, "status": "down",
             "event": "stopped", "detail": "shutdown"}  # fmt: skip
    with GroupListener(f"vm.{vm.pk}") as listener:
        assert ingest.handle(str(vm.run_on_host_id), batch(event))[0] == 200
        message = listener.receive()
    assert message["type"] == "vm.status" and message["payload"]["status"] == "down"
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_stats_go_to_the_hot_cache():
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    stats = {
        "kind": "stats",
        "at": time.time(),
        "host": {"cpu": {"used_pct": 12.5}, "memory": {"total_kib": 1024, "free_kib": 512}},
        "vms": [{"vm_id": str(vm.pk), "name": vm.name, "status": "up", "cpu_time_ns": 5, "vcpus": 1}],
    }
    assert ingest.handle(host_id, batch(stats))[0] == 200
    assert ingest.latest_stats("host", host_id)["cpu"] == {"used_pct": 12.5}
    assert ingest.latest_stats("vm", vm.pk)["cpu_time_ns"] == 5


def test_stats_reach_the_hosts_group_as_one_message_with_every_vm():
    host = make_host()
    vms = [make_vm(status=VmStatus.UP, run_on_host=host, cluster=host.cluster) for _ in range(3)]
    at = time.time()
    stats = {
        "kind": "stats",
        "at": at,
        "host": {"cpu": {"user_pct": 3.0}},
        "vms": [{"vm_id": str(vm.pk), "name": vm.name, "status": "up", "cpu_time_ns": i} for i, vm in enumerate(vms)],
    }
    body = batch(stats)

    with GroupListener(f"host.{host.pk}") as listener:
        assert ingest.handle(str(host.pk), body)[0] == 200
        message = listener.receive()

    assert message["type"] == "host.stats"
    payload = message["payload"]
    assert (payload["id"], payload["at"], payload["sent_at"]) == (str(host.pk), at, body["sent_at"])
    # What the agent sent, plus the rates the history module derives (none yet: one sample).
    derived = {"cpu_pct", "mem_pct", "net_rx_bps", "net_tx_bps"}
    assert {k: v for k, v in payload["host"].items() if k not in derived} == {
        "id": str(host.pk),
        "at": at,
        "cpu": {"user_pct": 3.0},
    }
    assert payload["host"]["cpu_pct"] == 3.0
    assert [{k: v for k, v in vm.items() if k not in derived} for vm in payload["vms"]] == [
        {
            "id": str(vm.pk),
            "host_id": str(host.pk),
            "at": at,
            "vm_id": str(vm.pk),
            "name": vm.name,
            "status": "up",
            "cpu_time_ns": i,
        }  # fmt: skip
        for i, vm in enumerate(vms)
    ]
    assert ingest.latest_stats("vm", vms[2].pk) == payload["vms"][2]


def test_an_unchanged_report_is_compared_with_the_database_at_most_every_few_seconds(
    django_assert_num_queries, monkeypatch
):
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    running = {"id": str(vm.pk), "name": vm.name, "status": "up", "olvm": True}
    ingest.handle(host_id, batch(vm_report(running)))

    with django_assert_num_queries(0):
        assert ingest.handle(host_id, batch(vm_report(running)))[0] == 200
    monkeypatch.setattr(ingest, "REPORT_RECHECK_SECONDS", 0.0)
    with django_assert_num_queries(1):
        assert ingest.handle(host_id, batch(vm_report(running)))[0] == 200


def test_a_changed_report_is_settled_at_once():
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    running = {"id": str(vm.pk), "name": vm.name, "status": "up", "olvm": True}
    ingest.handle(host_id, batch(vm_report(running)))

    ingest.handle(host_id, batch(vm_report({**running, "status": "paused"})))
    vm.refresh_from_db()
    assert vm.status == VmStatus.PAUSED


def test_what_the_engine_changed_is_settled_by_the_next_report_after_the_recheck_time(monkeypatch):
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    running = {"id": str(vm.pk), "name": vm.name, "status": "up", "olvm": True}
    ingest.handle(host_id, batch(vm_report(running)))
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VmStatus.PAUSED)

    ingest.handle(host_id, batch(vm_report(running)))  # the same report moments later: not compared
    assert VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.PAUSED
    monkeypatch.setattr(ingest, "REPORT_RECHECK_SECONDS", 0.0)
    ingest.handle(host_id, batch(vm_report(running)))
    assert VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.UP


def test_a_report_left_to_a_running_job_is_compared_again_next_time():
    """A VM a Job acts on is not settled from the report; the next report, even unchanged,
    is compared again, so the VM is settled as soon as the Job ends (or is reaped)."""
    from inventory.audit import create_job

    vm = make_vm(status=VmStatus.WAIT_FOR_LAUNCH)
    host_id = str(vm.run_on_host_id)
    job = create_job("RunVm", "Launching", obj=vm, steps=["Start"])
    running = {"id": str(vm.pk), "name": vm.name, "status": "up", "olvm": True}
    ingest.handle(host_id, batch(vm_report(running)))
    assert VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.WAIT_FOR_LAUNCH  # the Job owns it
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    ingest.handle(host_id, batch(vm_report(running)))  # the same report moments later
    assert VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.UP


def guest_infos(*vms):
    return [
        {"kind": "guest_info", "at": time.time(), "vm_id": str(vm.pk),
         "info": {"guest_agent": "ok", "hostname": vm.name, "interfaces": [{"addresses": ["10.0.0.7/24"]}]}}
        for vm in vms
    ]  # fmt: skip


def test_the_guest_information_of_a_batch_is_compared_in_one_query(django_assert_num_queries, monkeypatch):
    host = make_host()
    vms = [make_vm(status=VmStatus.UP, run_on_host=host, cluster=host.cluster) for _ in range(3)]
    ingest.handle(str(host.pk), batch(*guest_infos(*vms)))
    assert [VirtualMachine.objects.get(pk=vm.pk).guest_ips for vm in vms] == [["10.0.0.7"]] * 3

    with django_assert_num_queries(0):  # the same facts moments later
        assert ingest.handle(str(host.pk), batch(*guest_infos(*vms)))[0] == 200
    monkeypatch.setattr(ingest, "GUEST_RECHECK_SECONDS", 0.0)
    with django_assert_num_queries(1):
        assert ingest.handle(str(host.pk), batch(*guest_infos(*vms)))[0] == 200


def test_the_guest_facts_of_a_vm_that_went_down_and_up_again_come_back():
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    ingest.handle(host_id, batch(*guest_infos(vm)))

    def event(status, name):
        return {"kind": "vm_event", "at": time.time(), "vm_id": str(vm.pk), "name": vm.name, "status": status,
                "event": name, "detail": "booted"}  # fmt: skip

    ingest.handle(host_id, batch(event("down", "stopped")))
    assert VirtualMachine.objects.get(pk=vm.pk).guest_ips == []  # cleared on the way down
    ingest.handle(host_id, batch(event("up", "started")))
    ingest.handle(host_id, batch(*guest_infos(vm)))  # the same facts as before it went down
    assert VirtualMachine.objects.get(pk=vm.pk).guest_ips == ["10.0.0.7"]


def test_a_host_marked_non_responsive_while_the_engine_knew_it_up_recovers_at_its_next_heartbeat():
    host = make_host(status=HostStatus.UP)
    ingest.handle(str(host.pk), batch(heartbeat()))  # the ingest has the host, Up
    Host.objects.filter(pk=host.pk).update(status=HostStatus.NON_RESPONSIVE)  # the liveness sweep
    ingest._heartbeat_written.clear()  # the next heartbeat is due

    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 200
    ingest.flush_heartbeats()  # heartbeats are written within a second, all hosts' in one go

    assert Host.objects.get(pk=host.pk).status == HostStatus.UP
    assert Event.objects.filter(host_id=host.pk, code="VDS_RECOVERED").count() == 1


def test_heartbeats_of_many_hosts_are_written_in_one_statement(django_assert_max_num_queries):
    hosts = [make_host(status=HostStatus.UP, last_heartbeat=None) for _ in range(5)]
    for host in hosts:
        assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 200
    assert Host.objects.filter(last_heartbeat__isnull=False).count() == 1  # the first went at once

    with django_assert_max_num_queries(1):
        assert ingest.flush_heartbeats() == 4

    assert not Host.objects.filter(last_heartbeat__isnull=True).exists()


def test_a_removed_host_is_refused_once_its_row_is_read_again(monkeypatch):
    host = make_host()
    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 200
    Host.objects.filter(pk=host.pk).delete()

    monkeypatch.setattr(ingest, "HOST_CACHE_SECONDS", 0.0)
    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 403


def test_a_new_boot_id_is_an_agent_restart_in_the_audit_log_and_changes_no_vm():
    vm = make_vm(status=VmStatus.UP)
    host_id = str(vm.run_on_host_id)
    running = {"id": str(vm.pk), "name": vm.name, "status": "up", "olvm": True}
    ingest.handle(host_id, batch(heartbeat(), vm_report(running), boot_id="a"))
    ingest.handle(host_id, batch(heartbeat(), vm_report(running), boot_id="b"))
    assert Event.objects.filter(host_id=host_id, code="VDS_AGENT_RESTARTED").count() == 1
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP
    assert not Event.objects.filter(vm_id=vm.pk).exists()


def test_an_agent_restart_is_one_event_whichever_listener_process_sees_it():
    host = make_host()
    ingest.handle(str(host.pk), batch(heartbeat(), boot_id="a"))
    ingest.forget_state()  # another listener process, or this one restarted
    ingest.handle(str(host.pk), batch(heartbeat(), boot_id="a"))
    assert not Event.objects.filter(host_id=host.pk, code="VDS_AGENT_RESTARTED").exists()

    ingest.handle(str(host.pk), batch(heartbeat(), boot_id="b"))
    ingest.forget_state()
    ingest.handle(str(host.pk), batch(heartbeat(), boot_id="b"))
    assert Event.objects.filter(host_id=host.pk, code="VDS_AGENT_RESTARTED").count() == 1


def test_a_database_outage_answers_503_so_the_agent_retries(monkeypatch):
    host = make_host()

    def broken(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(ingest, "apply_batch", broken)
    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 503
    assert Host.objects.get(pk=host.pk).status == HostStatus.UP
