"""The engine's handling of agent pushes (inventory/ingest.py, contract in docs/ingest.md)."""

import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import DatabaseError

from compute.choices import VmStatus
from inventory import ingest
from inventory.choices import HostStatus
from inventory.models import Event, Host
from tests.factories import make_host, make_vm

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
    ingest._boot_ids.clear()
    ingest._heartbeat_written.clear()


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
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"vm.{vm.pk}", channel)
    event = {"kind": "vm_event", "at": time.time(), "vm_id": str(vm.pk), "name": vm.name, "status": "down",
             "event": "stopped", "detail": "shutdown"}  # fmt: skip
    assert ingest.handle(str(vm.run_on_host_id), batch(event))[0] == 200
    message = async_to_sync(layer.receive)(channel)
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


def test_a_database_outage_answers_503_so_the_agent_retries(monkeypatch):
    host = make_host()

    def broken(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(ingest, "apply_batch", broken)
    assert ingest.handle(str(host.pk), batch(heartbeat()))[0] == 503
    assert Host.objects.get(pk=host.pk).status == HostStatus.UP
