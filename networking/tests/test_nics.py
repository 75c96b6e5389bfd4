import pytest
from django.core.exceptions import ValidationError

from hostagent.client import AgentError, SimulatedAgentClient
from inventory.choices import JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event, Job
from networking import services
from networking.models import VmNic
from networking.tasks import hotplug_nic_task, hotunplug_nic_task
from tests.factories import make_cluster, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_tasks(monkeypatch):
    """Celery tasks sent on commit, as (name, args)."""
    from olvm_site.celery import app

    calls = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kwargs: calls.append((name, args)))
    return calls


@pytest.fixture
def pool():
    return services.create_mac_pool(
        user=None, name="lab", ranges=[{"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:ff"}]
    )


@pytest.fixture
def cluster(pool):
    return make_cluster(mac_pool=pool)


@pytest.fixture
def profile(cluster):
    from networking.services import create_network

    network = create_network(user=None, data_center=cluster.data_center, name="blue", clusters=[cluster])
    return network.vnic_profiles.get()


# create_nic -------------------------------------------------------------------------------


def test_create_nic_on_a_down_vm_takes_the_next_mac_and_name_without_a_job(admin_user, cluster, profile, pool):
    vm = make_vm(cluster, name="web")

    nic, job = services.create_nic(vm, user=admin_user, profile=profile)

    assert job is None
    assert (nic.name, nic.mac, nic.mac_pool, nic.interface, nic.linked, nic.plugged) == (
        "nic1",
        "56:6f:00:00:00:00",
        pool,
        "virtio",
        True,
        True,
    )
    assert not Job.objects.exists()
    event = Event.objects.get(code="NETWORK_ADD_VM_INTERFACE")
    assert event.message == "Interface nic1 (virtio, 56:6f:00:00:00:00) was added to VM web by admin."
    assert event.vm_id == vm.pk


def test_create_nic_names_fill_the_first_gap(cluster):
    vm = make_vm(cluster)
    services.create_nic(vm, user=None, name="nic1")
    services.create_nic(vm, user=None, name="nic3")

    nic, _ = services.create_nic(vm, user=None)

    assert nic.name == "nic2"


def test_create_nic_refuses_a_name_the_vm_already_has(cluster):
    vm = make_vm(cluster, name="web")
    services.create_nic(vm, user=None, name="eth0")

    with pytest.raises(ValidationError) as exc:
        services.create_nic(vm, user=None, name="eth0")

    assert exc.value.message_dict == {"name": ["VM web already has a NIC named eth0."]}


def test_create_nic_without_profile_has_no_network(cluster):
    nic, _ = services.create_nic(make_vm(cluster), user=None)

    assert nic.profile is None


def test_create_nic_refuses_a_profile_whose_network_is_not_on_the_vm_cluster(cluster):
    # given a network attached to another cluster of the same data center
    from networking.services import create_network

    other = make_cluster(cluster.data_center, name="other")
    network = create_network(user=None, data_center=cluster.data_center, name="red", clusters=[other])
    vm = make_vm(cluster, name="web")

    with pytest.raises(ValidationError) as exc:
        services.create_nic(vm, user=None, profile=network.vnic_profiles.get())

    assert exc.value.message_dict == {
        "profile": [f"Network red of profile red is not attached to cluster {cluster.name} of VM web."]
    }


def test_create_nic_accepts_a_manual_mac_outside_the_pool_ranges(cluster):
    nic, _ = services.create_nic(make_vm(cluster), user=None, mac="02:00:00:AA:BB:CC")

    assert nic.mac == "02:00:00:aa:bb:cc"


def test_create_nic_refuses_a_manual_mac_another_nic_of_the_pool_has(cluster):
    services.create_nic(make_vm(cluster, name="web"), user=None, mac="02:00:00:aa:bb:cc")

    with pytest.raises(ValidationError) as exc:
        services.create_nic(make_vm(cluster), user=None, mac="02:00:00:aa:bb:cc")

    assert exc.value.message_dict == {
        "mac": ["MAC 02:00:00:aa:bb:cc is already used by NIC nic1 of VM web (pool lab)."]
    }


def test_create_nic_allows_a_duplicate_mac_when_the_pool_allows_duplicates(pool, cluster):
    services.update_mac_pool(pool, user=None, allow_duplicates=True)
    services.create_nic(make_vm(cluster), user=None, mac="02:00:00:aa:bb:cc")

    nic, _ = services.create_nic(make_vm(cluster), user=None, mac="02:00:00:aa:bb:cc")

    assert VmNic.objects.filter(mac="02:00:00:aa:bb:cc").count() == 2
    assert nic.mac == "02:00:00:aa:bb:cc"


def test_create_nic_refuses_malformed_and_multicast_macs(cluster):
    vm = make_vm(cluster)

    with pytest.raises(ValidationError) as bad:
        services.create_nic(vm, user=None, mac="56:6f:zz")
    with pytest.raises(ValidationError) as multicast:
        services.create_nic(vm, user=None, mac="01:00:5e:00:00:01")

    assert bad.value.message_dict == {"mac": ["'56:6f:zz' is not a MAC address like 56:6f:1a:2b:00:01."]}
    assert multicast.value.message_dict == {
        "mac": ["01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC."]
    }


@pytest.mark.parametrize("interface", ["virtio", "e1000", "rtl8139"])
def test_create_nic_takes_each_known_interface(cluster, interface):
    nic, _ = services.create_nic(make_vm(cluster), user=None, interface=interface)

    assert nic.interface == interface


def test_create_nic_refuses_an_unknown_interface(cluster):
    with pytest.raises(ValidationError) as exc:
        services.create_nic(make_vm(cluster), user=None, interface="ne2k")

    assert list(exc.value.message_dict) == ["interface"]


def test_create_nic_on_a_running_vm_hot_plugs_it_through_a_job(
    cluster, profile, sent_tasks, django_capture_on_commit_callbacks
):
    vm = make_vm(cluster, status="up", name="web")

    with django_capture_on_commit_callbacks(execute=True):
        nic, job = services.create_nic(vm, user=None, profile=profile)

    assert (job.action_type, job.status, job.vm_id) == ("ActivateVmNic", JobStatus.STARTED, vm.pk)
    assert list(job.steps.values_list("description", flat=True)) == ["Plug the NIC"]
    assert sent_tasks == [("networking.tasks.hotplug_nic_task", [str(job.pk), str(nic.pk)])]
    event = Event.objects.get(code="NETWORK_ADD_VM_INTERFACE")
    assert event.message.endswith("was added to VM web by the system and is being hot-plugged.")
    assert event.correlation_id == job.correlation_id


@pytest.mark.parametrize("status", ["down", "suspended", "image_locked"])
def test_create_nic_on_a_vm_that_is_not_running_opens_no_job(cluster, sent_tasks, status):
    _, job = services.create_nic(make_vm(cluster, status=status), user=None)

    assert job is None
    assert sent_tasks == []


def test_create_unplugged_nic_on_a_running_vm_opens_no_job(cluster):
    nic, job = services.create_nic(make_vm(cluster, status="up"), user=None, plugged=False)

    assert job is None
    assert nic.plugged is False


# update_nic -------------------------------------------------------------------------------


def test_update_nic_on_a_down_vm_changes_mac_and_interface_without_a_job(cluster):
    nic, _ = services.create_nic(make_vm(cluster, name="web"), user=None)

    nic, job = services.update_nic(nic, user=None, mac="02:00:00:00:00:01", interface="e1000")

    assert job is None
    nic.refresh_from_db()
    assert (nic.mac, nic.interface) == ("02:00:00:00:00:01", "e1000")
    assert (
        Event.objects.get(code="NETWORK_UPDATE_VM_INTERFACE").message
        == "Interface nic1 of VM web was updated (mac, interface) by the system."
    )


def test_update_nic_keeps_its_own_mac_without_a_duplicate_error(cluster):
    nic, _ = services.create_nic(make_vm(cluster), user=None)

    nic, _ = services.update_nic(nic, user=None, mac=nic.mac.upper(), linked=False)

    nic.refresh_from_db()
    assert nic.linked is False


def test_update_nic_refuses_a_mac_of_another_nic(cluster):
    vm = make_vm(cluster, name="web")
    first, _ = services.create_nic(vm, user=None)
    second, _ = services.create_nic(vm, user=None)

    with pytest.raises(ValidationError) as exc:
        services.update_nic(second, user=None, mac=first.mac)

    assert exc.value.message_dict == {"mac": [f"MAC {first.mac} is already used by NIC nic1 of VM web (pool lab)."]}


@pytest.mark.parametrize("change", [{"mac": "02:00:00:00:00:09"}, {"interface": "e1000"}])
def test_update_nic_refuses_mac_or_interface_change_on_a_running_plugged_nic(cluster, change):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None)

    with pytest.raises(ConflictError, match="unplug first"):
        services.update_nic(nic, user=None, **change)


def test_update_nic_changes_the_mac_of_an_unplugged_nic_on_a_running_vm(cluster):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None, plugged=False)

    nic, job = services.update_nic(nic, user=None, mac="02:00:00:00:00:09")

    assert job is None
    assert VmNic.objects.get(pk=nic.pk).mac == "02:00:00:00:00:09"


def test_update_nic_unplug_on_a_running_vm_opens_a_hot_unplug_job(
    cluster, sent_tasks, django_capture_on_commit_callbacks
):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None, plugged=False)
    services.update_nic(nic, user=None, plugged=True)
    sent_tasks.clear()

    with django_capture_on_commit_callbacks(execute=True):
        nic, job = services.update_nic(nic, user=None, plugged=False)

    assert job.action_type == "DeactivateVmNic"
    assert sent_tasks == [("networking.tasks.hotunplug_nic_task", [str(job.pk), str(nic.pk)])]
    assert VmNic.objects.get(pk=nic.pk).plugged is False


def test_update_nic_plug_on_a_running_vm_opens_a_hot_plug_job(cluster, sent_tasks, django_capture_on_commit_callbacks):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None, plugged=False)

    with django_capture_on_commit_callbacks(execute=True):
        nic, job = services.update_nic(nic, user=None, plugged=True)

    assert job.action_type == "ActivateVmNic"
    assert sent_tasks == [("networking.tasks.hotplug_nic_task", [str(job.pk), str(nic.pk)])]


def test_update_nic_link_toggle_on_a_running_vm_opens_an_update_job(
    cluster, sent_tasks, django_capture_on_commit_callbacks
):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None)
    sent_tasks.clear()

    with django_capture_on_commit_callbacks(execute=True):
        nic, job = services.update_nic(nic, user=None, linked=False)

    assert job.action_type == "UpdateVmInterface"
    assert sent_tasks == [("networking.tasks.hotplug_nic_task", [str(job.pk), str(nic.pk)])]


def test_update_nic_toggles_on_a_down_vm_open_no_job(cluster, sent_tasks):
    nic, _ = services.create_nic(make_vm(cluster), user=None)

    nic, job = services.update_nic(nic, user=None, linked=False, plugged=False)

    assert job is None
    assert sent_tasks == []


def test_update_nic_refuses_a_profile_of_a_network_not_on_the_cluster(cluster):
    from networking.services import create_network

    network = create_network(user=None, data_center=cluster.data_center, name="red")
    nic, _ = services.create_nic(make_vm(cluster), user=None)

    with pytest.raises(ValidationError) as exc:
        services.update_nic(nic, user=None, profile=network.vnic_profiles.get())

    assert list(exc.value.message_dict) == ["profile"]


# remove_nic -------------------------------------------------------------------------------


def test_remove_nic_refused_while_plugged_into_a_running_vm(cluster):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None)

    with pytest.raises(ConflictError, match="unplug first"):
        services.remove_nic(nic, user=None)
    assert VmNic.objects.filter(pk=nic.pk).exists()


def test_remove_unplugged_nic_of_a_running_vm(cluster):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None, plugged=False)

    services.remove_nic(nic, user=None)

    assert not VmNic.objects.filter(pk=nic.pk).exists()


def test_remove_nic_of_a_down_vm_frees_its_mac_and_records_event(cluster):
    vm = make_vm(cluster, name="web")
    nic, _ = services.create_nic(vm, user=None)

    services.remove_nic(nic, user=None)

    assert not vm.nics.exists()
    assert (
        Event.objects.get(code="NETWORK_REMOVE_VM_INTERFACE").message
        == "Interface nic1 (56:6f:00:00:00:00) was removed from VM web by the system."
    )


# Tasks ------------------------------------------------------------------------------------


def test_hotplug_nic_task_plugs_the_nic_through_the_vm_host(cluster, profile, monkeypatch):
    # given
    vm = make_vm(cluster, status="up", name="web")
    nic, job = services.create_nic(vm, user=None, profile=profile)
    calls = []
    monkeypatch.setattr(
        SimulatedAgentClient,
        "hotplug_nic",
        lambda self, vm_id, spec: calls.append((self.host.name, vm_id, spec)) or {"plugged": True},
    )

    # when
    hotplug_nic_task(str(job.pk), str(nic.pk))

    # then
    job.refresh_from_db()
    assert (job.status, job.progress) == (JobStatus.FINISHED, 100)
    host_name, vm_id, spec = calls[0]
    assert (host_name, vm_id) == (vm.run_on_host.name, str(vm.pk))
    assert (spec["mac"], spec["interface"], spec["linked"], spec["network"], spec["profile"]) == (
        nic.mac,
        "virtio",
        True,
        "blue",
        "blue",
    )
    event = Event.objects.get(code="NETWORK_ACTIVATE_VM_INTERFACE_SUCCESS")
    assert event.correlation_id == str(job.pk)


def test_hotplug_nic_task_failure_unplugs_the_nic_and_fails_the_job(cluster, monkeypatch):
    vm = make_vm(cluster, status="up", name="web")
    nic, job = services.create_nic(vm, user=None)

    def refuse(self, vm_id, spec):
        raise AgentError("no free PCI slot")

    monkeypatch.setattr(SimulatedAgentClient, "hotplug_nic", refuse)

    hotplug_nic_task(str(job.pk), str(nic.pk))

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "no free PCI slot")
    assert VmNic.objects.get(pk=nic.pk).plugged is False
    assert (
        Event.objects.get(code="NETWORK_ACTIVATE_VM_INTERFACE_FAILURE").message
        == f"Failed to plug interface nic1 ({nic.mac}) into VM web: no free PCI slot"
    )


def test_hotplug_nic_task_is_a_no_op_when_redelivered(cluster, monkeypatch):
    nic, job = services.create_nic(make_vm(cluster, status="up"), user=None)
    hotplug_nic_task(str(job.pk), str(nic.pk))
    monkeypatch.setattr(SimulatedAgentClient, "hotplug_nic", lambda *a: pytest.fail("called twice"))

    hotplug_nic_task(str(job.pk), str(nic.pk))

    assert Event.objects.filter(code="NETWORK_ACTIVATE_VM_INTERFACE_SUCCESS").count() == 1


def test_hotplug_nic_task_does_nothing_once_the_vm_stopped(cluster, monkeypatch):
    vm = make_vm(cluster, status="up")
    nic, job = services.create_nic(vm, user=None)
    vm.status = "down"
    vm.save()
    monkeypatch.setattr(SimulatedAgentClient, "hotplug_nic", lambda *a: pytest.fail("VM is down"))

    hotplug_nic_task(str(job.pk), str(nic.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert VmNic.objects.get(pk=nic.pk).plugged is True


def test_hotunplug_nic_task_unplugs_by_mac(cluster, monkeypatch):
    vm = make_vm(cluster, status="up", name="web")
    nic, _ = services.create_nic(vm, user=None, plugged=False)
    services.update_nic(nic, user=None, plugged=True)
    nic, job = services.update_nic(nic, user=None, plugged=False)
    calls = []
    monkeypatch.setattr(SimulatedAgentClient, "hotunplug_nic", lambda self, vm_id, mac: calls.append((vm_id, mac)))

    hotunplug_nic_task(str(job.pk), str(nic.pk))

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert calls == [(str(vm.pk), nic.mac)]
    assert Event.objects.filter(code="NETWORK_DEACTIVATE_VM_INTERFACE_SUCCESS").count() == 1


def test_hotunplug_nic_task_failure_marks_the_nic_plugged_again(cluster, monkeypatch):
    nic, _ = services.create_nic(make_vm(cluster, status="up"), user=None)
    nic, job = services.update_nic(nic, user=None, plugged=False)

    def refuse(self, vm_id, mac):
        raise AgentError("guest did not release the device")

    monkeypatch.setattr(SimulatedAgentClient, "hotunplug_nic", refuse)

    hotunplug_nic_task(str(job.pk), str(nic.pk))

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "guest did not release the device")
    assert VmNic.objects.get(pk=nic.pk).plugged is True
