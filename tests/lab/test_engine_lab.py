"""The engine on real lab hosts: deploy through the agent daemon, the whole VM lifecycle on
libvirt + QEMU (software emulation), the agent's push to the ingest listener, external VMs
and re-sync after an agent restart. Needs root (the lab); runs in CI."""

import json
import os
import subprocess
import time
import uuid

import pytest

from compute import services as vm_services
from compute.choices import VmStatus
from compute.models import Template, VirtualMachine
from hostagent.lab import core
from inventory import services as host_services
from inventory.audit import create_job
from inventory.choices import HostStatus, JobStatus
from inventory.models import Event, Host, Job
from inventory.servicekit import agent_for
from inventory.tasks import reap_stale_jobs_task
from networking import services as net_services
from networking.models import VnicProfile
from olvm_site.celery import tasks_inline
from storage import services as storage_services
from storage.models import Disk, StorageDomain
from tests.listen import GroupListener

from .conftest import libvirt, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

BOOT_TIMEOUT = 90  # TCG guest to a guest agent that answers, under CI load
ACTION_TIMEOUT = 120
GUEST_PARAMS = "console=ttyS0 olvm.hostname=life-1 olvm.ip=10.213.1.5/24"
RUN = {"capture_output": True, "text": True, "check": True, "timeout": 30}


def vm_status(vm) -> str:
    return VirtualMachine.objects.values_list("status", flat=True).get(pk=vm.pk)


def wait_status(vm, status, timeout=ACTION_TIMEOUT):
    wait_for(lambda: vm_status(vm) == status, timeout, f"VM {vm.name} to be {status} (it is {vm_status(vm)})")


def finished(job):
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED, f"{job.description}: {job.status} {job.error}"


def test_deploy_brings_the_lab_hosts_up_through_their_agents(engine):
    hosts = list(Host.objects.order_by("name"))
    assert [(h.name, h.address, h.status) for h in hosts] == [
        ("h1", "10.213.0.11", HostStatus.UP),
        ("h2", "10.213.0.12", HostStatus.UP),
    ]
    for host in hosts:
        assert not host.simulated and host.cert_fingerprint and host.cert_expires_at
        assert host.memory_mib > 0 and host.cpu_threads > 0
        caps = agent_for(host).capabilities()
        assert caps["hostname"] == host.name and not caps.get("simulated")
        assert Event.objects.filter(host_id=host.pk, code="VDS_AGENT_INSTALLED").exists()
    # The agents push heartbeats to the ingest listener: last_heartbeat keeps moving.
    before = {h.pk: h.last_heartbeat for h in hosts}
    wait_for(
        lambda: all(h.last_heartbeat > before[h.pk] for h in Host.objects.all()),
        20,
        "heartbeats from both agents",
    )


def test_a_deploy_that_cannot_reach_its_agent_ends_install_failed_with_the_reason(engine, settings):
    settings.OLVM_DEPLOY_AGENT_WAIT = 3.0
    h2 = Host.objects.get(name="h2")
    with tasks_inline():
        host_services.deactivate_host(h2, user=engine["user"])
        host_services.remove_host(Host.objects.get(pk=h2.pk), user=engine["user"])
    core.fail("h2", "net", engine["state_dir"])
    try:
        with tasks_inline():
            host, job = host_services.add_host(
                user=engine["user"], cluster=Host.objects.get(name="h1").cluster, name="h2", address="10.213.0.12"
            )
    except Exception:  # the inline task re-raises the failure the Job recorded
        host = Host.objects.get(name="h2")
        job = Job.objects.filter(host_id=host.pk, action_type="AddVds").latest("started_at")
    finally:
        core.heal("h2", engine["state_dir"])
    host.refresh_from_db()
    job.refresh_from_db()
    assert host.status == HostStatus.INSTALL_FAILED
    assert job.status == JobStatus.FAILED and "10.213.0.12" in job.error
    event = Event.objects.get(host_id=host.pk, code="VDS_INSTALL_FAILED")
    assert event.severity == "error" and "cannot reach the agent" in event.message


def test_the_whole_vm_lifecycle_on_real_hosts(engine):
    user = engine["user"]
    tiny = Template.objects.get(name="tiny")
    domain = StorageDomain.objects.get(name="lab-shared")
    h1 = Host.objects.get(name="h1")
    with tasks_inline():
        vm, job = vm_services.create_vm(
            user=user,
            cluster=h1.cluster,
            name="life-1",
            template=tiny,
            kernel_params=GUEST_PARAMS,
        )
    finished(job)
    # A thin qcow2 overlay on the template's disk, on the shared domain.
    disk = vm.disk_attachments.get().disk
    assert disk.backing_disk is not None and disk.backing_disk.template_id == tiny.pk
    info = agent_for(h1).image_info(_image_ref(disk))
    assert info["format"] == "qcow2" and info["backing_id"] == str(disk.backing_disk_id)
    assert info["path"].startswith(domain.path)

    # Run: placement on an up host, the agent starts QEMU, the host's push reports it up.
    with tasks_inline():
        finished(vm_services.start_vm(vm, user=user))
    wait_status(vm, VmStatus.UP)
    vm.refresh_from_db()
    assert vm.run_on_host.name in ("h1", "h2")

    # Guest-agent facts arrive through the ingest listener.
    wait_for(
        lambda: VirtualMachine.objects.filter(pk=vm.pk, guest_hostname="life-1").exists(),
        BOOT_TIMEOUT,
        "the guest agent's hostname",
    )
    vm.refresh_from_db()
    assert vm.guest_os == "OLVM tiny guest 1" and vm.guest_kernel.endswith("-cloud-amd64")

    # Hot-plug a disk and a NIC (the NIC on the bridge of its logical network in the host).
    with tasks_inline():
        extra, job = storage_services.create_disk(
            user=user,
            storage_domain=domain,
            alias="life-1-data",
            provisioned_size=64 * 1024**2,
            format="qcow2",
            allocation="thin",
            vm=VirtualMachine.objects.get(pk=vm.pk),
        )
    finished(job)
    profile = VnicProfile.objects.get(network__name="ovirtmgmt", network__data_center=vm.data_center)
    with tasks_inline():
        nic, nic_job = net_services.create_nic(VirtualMachine.objects.get(pk=vm.pk), user=user, profile=profile)
    finished(nic_job)
    agent = agent_for(VirtualMachine.objects.get(pk=vm.pk).run_on_host)
    stats = agent.vm_stats(str(vm.pk))["vms"][0]
    assert str(extra.pk) in " ".join(d.get("path") or "" for d in stats["disks"])
    assert nic.mac in [n["mac"] for n in stats["nics"]]

    # Snapshot and revert (a running VM: internal snapshot of its disks).
    with tasks_inline():
        snapshot, job = vm_services.create_snapshot(
            VirtualMachine.objects.get(pk=vm.pk), user=user, description="before"
        )
    finished(job)

    # Reboot: the guest comes back with the plugged NIC configured, and says so.
    with tasks_inline():
        finished(vm_services.reboot_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)
    wait_for(
        lambda: "10.213.1.5" in VirtualMachine.objects.get(pk=vm.pk).guest_ips,
        BOOT_TIMEOUT,
        "the guest's IP address on its plugged NIC",
    )

    # Suspend to shared storage and resume.
    with tasks_inline():
        finished(vm_services.suspend_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    assert vm_status(vm) == VmStatus.SUSPENDED
    assert os.path.exists(os.path.join(engine["state_dir"], "shared", "states", f"{vm.pk}.state"))
    with tasks_inline():
        finished(vm_services.resume_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)

    # Graceful shutdown through the guest (agent or ACPI), then revert while down.
    wait_for(
        lambda: agent_for(VirtualMachine.objects.get(pk=vm.pk).run_on_host).guest_info(str(vm.pk))["guest_agent"]
        == "ok",
        BOOT_TIMEOUT,
        "the guest agent after resume",
        interval=1,
    )
    with tasks_inline():
        finished(vm_services.shutdown_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    assert vm_status(vm) == VmStatus.DOWN
    with tasks_inline():
        finished(vm_services.revert_snapshot(snapshot, user=user))
    time.sleep(3)  # a heartbeat or two: the revert left the domain down, the engine agrees
    assert vm_status(vm) == VmStatus.DOWN

    # Run again and power off.
    with tasks_inline():
        finished(vm_services.start_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)
    with tasks_inline():
        finished(vm_services.stop_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    assert vm_status(vm) == VmStatus.DOWN

    # Remove: its disks leave the storage domain.
    paths = [agent_for(h1).image_info(_image_ref(d))["path"] for d in Disk.objects.filter(attachments__vm=vm)]
    assert paths and all(os.path.exists(p) for p in paths)
    with tasks_inline():
        job = vm_services.remove_vm(VirtualMachine.objects.get(pk=vm.pk), user=user)
    if job is not None:
        finished(job)
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not any(os.path.exists(p) for p in paths)


def test_a_vm_cloned_from_the_template_runs_on_its_own_copy(engine):
    user = engine["user"]
    tiny = Template.objects.get(name="tiny")
    h1 = Host.objects.get(name="h1")
    with tasks_inline():
        vm, job = vm_services.create_vm(user=user, cluster=h1.cluster, name="clone-1", template=tiny, clone=True)
    finished(job)
    # A qcow2 copy of the template's disk on the shared domain, with no backing file.
    disk = vm.disk_attachments.get().disk
    path = agent_for(h1).image_info(_image_ref(disk))["path"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", path], **RUN).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert disk.backing_disk_id is None and VirtualMachine.objects.get(pk=vm.pk).template.is_blank

    with tasks_inline():
        finished(vm_services.start_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)
    wait_for(
        lambda: VirtualMachine.objects.filter(pk=vm.pk).exclude(guest_os="").exists(),
        BOOT_TIMEOUT,
        "the guest agent of the cloned VM",
    )
    with tasks_inline():
        finished(vm_services.stop_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
        job = vm_services.remove_vm(VirtualMachine.objects.get(pk=vm.pk), user=user)
    finished(job)
    assert not os.path.exists(path) and not Disk.objects.filter(pk=disk.pk).exists()


def _image_ref(disk):
    from storage.tasks import domain_spec

    return {"id": str(disk.pk), "storage_domain": domain_spec(disk.storage_domain)}


def test_a_vm_started_behind_the_engines_back_shows_up_as_external(engine):
    h2 = next(h for h in engine["lab"] if h.name == "h2")
    vm_id = str(uuid.uuid4())
    xml = core.tiny_guest_xml(f"handmade-{vm_id[:4]}", memory_mib=128, vm_uuid=vm_id)
    conn = libvirt.open(h2.libvirt_uri)
    try:
        dom = conn.createXML(xml, 0)
        vm = wait_for(
            lambda: VirtualMachine.objects.filter(pk=vm_id, status=VmStatus.UP).first(), 20, "the external VM, up"
        )
        assert vm.external and vm.run_on_host.name == "h2"
        assert Event.objects.filter(vm_id=vm_id, code="VM_EXTERNAL_FOUND").exists()

        # Killed behind the engine's back too: libvirt's lifecycle event is pushed at once,
        # recorded and published to the VM's group.
        with GroupListener(f"vm.{vm_id}") as listener:
            started = time.monotonic()
            dom.destroy()
            destroyed = time.monotonic() - started
            message = {}
            while message.get("payload", {}).get("status") != "down":  # powering_down may come first
                message = listener.receive(timeout=10)
            delay = time.monotonic() - started
    finally:
        conn.close()
    assert message["type"] == "vm.status" and message["payload"]["status"] == "down"
    assert vm_status(vm) == VmStatus.DOWN
    print(f"destroy() returned after {destroyed * 1000:.0f} ms; 'down' published {delay * 1000:.0f} ms after the call")


def test_an_agent_restart_keeps_vms_running_and_the_engine_resyncs_without_flapping(engine):
    user = engine["user"]
    h1 = Host.objects.get(name="h1")
    with tasks_inline():
        vm, job = vm_services.create_vm(
            user=user, cluster=h1.cluster, name="survivor", template=Template.objects.get(name="tiny")
        )
        finished(vm_services.start_vm(VirtualMachine.objects.get(pk=vm.pk), user=user))
    wait_status(vm, VmStatus.UP)
    host = VirtualMachine.objects.get(pk=vm.pk).run_on_host
    core.stop_agent(host.name, engine["state_dir"])
    time.sleep(3)  # more than a heartbeat interval without the agent
    with tasks_inline():
        host_services.renew_host_certificate(Host.objects.get(pk=host.pk), user=user)  # reinstall + start
    wait_for(
        lambda: Event.objects.filter(host_id=host.pk, code="VDS_AGENT_RESTARTED").exists(),
        20,
        "the engine to notice the agent's restart",
    )
    time.sleep(3)  # a few reports from the new agent
    assert vm_status(vm) == VmStatus.UP
    assert not Event.objects.filter(vm_id=vm.pk, code__startswith="VM_DOWN").exists(), "the VM flapped to down"
    assert Host.objects.get(pk=host.pk).status == HostStatus.UP
    assert Event.objects.filter(host_id=host.pk, code="VDS_CERTIFICATE_RENEWED").exists()


def test_a_worker_that_died_mid_start_leaves_no_vm_stuck_in_wait_for_launch(engine, settings):
    """The worker called the agent's create_vm and died before recording the outcome: the
    Job is reaped as stale and the host's next report settles the VM."""
    user = engine["user"]
    h1 = Host.objects.get(name="h1")
    with tasks_inline():
        vm, _ = vm_services.create_vm(
            user=user, cluster=h1.cluster, name="orphan", template=Template.objects.get(name="tiny")
        )
    from django.db import transaction

    from compute.services import set_vm_status
    from compute.tasks import vm_spec

    with transaction.atomic():
        locked = VirtualMachine.objects.select_for_update().get(pk=vm.pk)
        set_vm_status(locked, VmStatus.WAIT_FOR_LAUNCH, host=h1)
        job = create_job("RunVm", "Launching VM orphan", obj=locked, steps=["Create the VM on the host"])
    agent_for(h1).create_vm(vm_spec(VirtualMachine.objects.get(pk=vm.pk)))  # ... and the worker dies here
    time.sleep(4)
    assert vm_status(vm) == VmStatus.WAIT_FOR_LAUNCH  # the Job still owns it
    settings.OLVM_JOB_STALE_SECONDS = 0
    assert reap_stale_jobs_task() >= 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    wait_status(vm, VmStatus.UP, timeout=15)
