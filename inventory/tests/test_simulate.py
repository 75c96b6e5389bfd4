"""`manage.py simulate`: simulated hosts with certificates and running VMs, and their manifest."""

import io
import json
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from compute.choices import VmStatus
from compute.models import VirtualMachine
from hostagent import pki
from hostagent.client import RemoteAgentClient, SimulatedAgentClient
from inventory.certs import host_cert_paths
from inventory.choices import HostStatus
from inventory.models import Event, Host
from inventory.servicekit import agent_for
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def simulate(tmp_path, **options) -> dict:
    manifest = tmp_path / "manifest.json"
    options = {"hosts": 3, "vms_per_host": 2, "port_base": 61500, "manifest": str(manifest), **options}
    call_command("simulate", engine_url="https://127.0.0.1:54322/ingest", stdout=io.StringIO(), **options)
    return json.loads(manifest.read_text())


def test_hosts_certificates_vms_and_the_manifest_are_made(tmp_path):
    manifest = simulate(tmp_path)

    hosts = list(Host.objects.order_by("name"))
    assert [(h.name, h.address, h.agent_port, h.simulated, h.status) for h in hosts] == [
        ("sim-0001", "127.0.0.1", 61500, True, HostStatus.UP),
        ("sim-0002", "127.0.0.1", 61501, True, HostStatus.UP),
        ("sim-0003", "127.0.0.1", 61502, True, HostStatus.UP),
    ]
    for host in hosts:
        info = pki.certificate_info(host_cert_paths(host).cert_file)
        assert (info["common_name"], info["addresses"], info["fingerprint_sha256"]) == (
            str(host.pk),
            ["127.0.0.1"],
            host.cert_fingerprint,
        )
        assert host.memory_mib > 0 and host.cpu_threads > 0
    vms = list(VirtualMachine.objects.order_by("name").values_list("name", "status", "run_on_host__name"))
    assert vms == [(f"sim-000{h}-vm-0{v}", VmStatus.UP, f"sim-000{h}") for h in (1, 2, 3) for v in (1, 2)]
    assert manifest["engine_url"] == "https://127.0.0.1:54322/ingest"
    assert [(h["id"], h["name"], h["port"]) for h in manifest["hosts"]] == [
        (str(h.pk), h.name, h.agent_port) for h in hosts
    ]
    first = manifest["hosts"][0]
    paths = host_cert_paths(hosts[0])
    assert (first["cert_file"], first["key_file"]) == (paths.cert_file, paths.key_file)
    assert [vm["name"] for vm in first["vms"]] == ["sim-0001-vm-01", "sim-0001-vm-02"]
    assert first["vms"][0] == {
        "id": str(VirtualMachine.objects.get(name="sim-0001-vm-01").pk),
        "name": "sim-0001-vm-01",
        "vcpus": 1,
        "memory_mib": 512,
    }
    # The cluster Default and its data center were missing: made through their services too.
    assert sorted(Event.objects.values_list("code", flat=True)) == [
        "USER_ADD_CLUSTER",
        "USER_ADD_STORAGE_POOL",
        "USER_ADD_VDS",
        "USER_ADD_VM",
    ]
    assert Event.objects.get(code="USER_ADD_VDS").message == (
        "3 simulated host(s) (sim-0001 ... sim-0003) were added to cluster Default by the system, "
        "to be served by a simulator process."
    )


def test_running_it_again_changes_nothing_and_can_add_more(tmp_path):
    first = simulate(tmp_path)
    events = Event.objects.count()

    again = simulate(tmp_path)
    assert again == first
    assert (Host.objects.count(), VirtualMachine.objects.count(), Event.objects.count()) == (3, 6, events)

    more = simulate(tmp_path, hosts=4, vms_per_host=3)
    assert [h["id"] for h in more["hosts"][:3]] == [h["id"] for h in first["hosts"]]
    assert [len(h["vms"]) for h in more["hosts"]] == [3, 3, 3, 3]
    assert (Host.objects.count(), VirtualMachine.objects.count()) == (4, 12)


def test_a_vm_the_engine_has_down_is_not_in_the_manifest(tmp_path):
    simulate(tmp_path)
    VirtualMachine.objects.filter(name="sim-0002-vm-01").update(status=VmStatus.DOWN, run_on_host=None)

    manifest = simulate(tmp_path)
    assert [vm["name"] for vm in manifest["hosts"][1]["vms"]] == ["sim-0002-vm-02"]


def test_a_real_host_of_the_same_name_is_refused(tmp_path):
    make_host(name="sim-0002", simulated=False)

    with pytest.raises(CommandError, match="sim-0002 exist and are not simulated"):
        simulate(tmp_path)
    assert not VirtualMachine.objects.exists()


def test_a_port_of_another_host_is_refused(tmp_path):
    make_host(name="elsewhere", address="127.0.0.1", agent_port=61501)

    with pytest.raises(CommandError, match="Port 61501 of 127.0.0.1 is host elsewhere's"):
        simulate(tmp_path)


def test_the_engine_reaches_simulator_hosts_over_mtls_and_seed_demo_hosts_in_process(tmp_path):
    simulate(tmp_path, hosts=1)
    served = Host.objects.get(name="sim-0001")
    in_process = make_host(name="sim-host-01", simulated=True)

    client = agent_for(served)
    assert isinstance(client, RemoteAgentClient)
    assert (client.host.address, client.host.port, client.host.simulated) == ("127.0.0.1", 61500, True)
    assert isinstance(agent_for(in_process), SimulatedAgentClient)
    assert isinstance(agent_for(make_host(name="real-01", simulated=False)), RemoteAgentClient)


def test_run_refuses_a_second_simulator_before_changing_anything(tmp_path):
    (tmp_path / "simulate.pid").write_text(f"{os.getpid()}\n")  # a live process: this one

    with pytest.raises(CommandError, match=f"A simulator already runs \\(pid {os.getpid()}\\)"):
        simulate(tmp_path, run=True)
    assert not Host.objects.exists()
