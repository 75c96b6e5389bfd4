"""VM, template and snapshot services: the engine's rules, with simulated hosts."""

import pytest
from django.core.exceptions import ValidationError

from compute import services
from compute.choices import VmStatus
from compute.models import BLANK_TEMPLATE_ID, InstanceType, Snapshot, Template, VirtualMachine
from compute.tasks import snapshot_task, vm_action_task
from hostagent.client import AgentError, SimulatedAgentClient
from inventory.choices import HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Event, Job
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Celery tasks enqueued on commit, recorded instead of sent."""
    calls = []
    from olvm_site.celery import app

    monkeypatch.setattr(app, "send_task", lambda name, args=(), **kw: calls.append((name, list(args))))
    return calls


def run_enqueued(sent):
    import compute.tasks as ct

    for name, args in sent:
        if name.startswith("compute.tasks."):
            getattr(ct, name.rsplit(".", 1)[1])(*args)
    sent.clear()


def test_create_vm_from_blank_takes_template_defaults(admin_user):
    cluster = make_cluster()
    vm, job = services.create_vm(user=admin_user, cluster=cluster, name="web-1")
    assert job is None
    assert vm.template_id is not None and str(vm.template_id) == BLANK_TEMPLATE_ID
    assert (vm.vcpus, vm.memory_mib, vm.guaranteed_memory_mib, vm.status) == (1, 1024, 1024, "down")
    assert vm.data_center_id == cluster.data_center_id
    event = Event.objects.get(code="USER_ADD_VM")
    assert event.vm_id == vm.pk and event.username == "admin"


def test_instance_type_sets_hardware_and_conflicting_values_are_refused(admin_user):
    cluster = make_cluster()
    medium = InstanceType.objects.get(name="Medium")
    vm, _ = services.create_vm(user=admin_user, cluster=cluster, name="m1", instance_type=medium)
    assert (vm.vcpus, vm.memory_mib) == (2, 4096)
    with pytest.raises(ValidationError) as refused:
        services.create_vm(user=admin_user, cluster=cluster, name="m2", instance_type=medium, vcpus=8)
    assert "vcpus" in refused.value.message_dict
    assert not VirtualMachine.objects.filter(name="m2").exists()


def test_vm_names_are_unique_per_data_center_not_globally(admin_user):
    cluster = make_cluster()
    other_dc_cluster = make_cluster()
    services.create_vm(user=admin_user, cluster=cluster, name="dup")
    services.create_vm(user=admin_user, cluster=other_dc_cluster, name="dup")
    with pytest.raises(ValidationError) as refused:
        services.create_vm(user=admin_user, cluster=cluster, name="dup")
    assert "already exists" in refused.value.message_dict["name"][0]
    assert VirtualMachine.objects.filter(name="dup").count() == 2


def test_vcpus_and_memory_stay_within_cluster_limits(admin_user):
    cluster = make_cluster()
    cluster.max_vm_vcpus, cluster.max_vm_memory_mib = 4, 8192
    cluster.save()
    with pytest.raises(ValidationError) as refused:
        services.create_vm(user=admin_user, cluster=cluster, name="big", vcpus=5, memory_mib=16384)
    assert set(refused.value.message_dict) >= {"vcpus", "memory_mib"}
    with pytest.raises(ValidationError):
        services.create_vm(user=admin_user, cluster=cluster, name="g", memory_mib=1024, guaranteed_memory_mib=2048)
    assert VirtualMachine.objects.count() == 0
    assert Event.objects.filter(code="USER_ADD_VM").count() == 0


def test_pinned_hosts_must_belong_to_the_cluster(admin_user):
    cluster = make_cluster()
    stranger = make_host(cluster=make_cluster())
    with pytest.raises(ValidationError) as refused:
        services.create_vm(
            user=admin_user, cluster=cluster, name="p", placement_policy="pinned", pinned_hosts=[stranger]
        )
    assert "pinned_hosts" in refused.value.message_dict


def test_start_places_on_an_up_host_and_the_task_brings_it_up(admin_user, sent, django_capture_on_commit_callbacks):
    cluster = make_cluster()
    make_host(cluster=cluster, name="down-host", status=HostStatus.MAINTENANCE)
    host = make_host(cluster=cluster, name="good-host")
    vm = make_vm(cluster=cluster)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.start_vm(vm, user=admin_user)
    vm.refresh_from_db()
    assert (vm.status, vm.run_on_host_id) == (VmStatus.WAIT_FOR_LAUNCH, host.pk)
    assert sent == [("compute.tasks.vm_action_task", [str(job.pk), str(vm.pk), "start"])]
    run_enqueued(sent)
    vm.refresh_from_db()
    job.refresh_from_db()
    assert (vm.status, job.status, job.progress) == (VmStatus.UP, JobStatus.FINISHED, 100)
    assert list(job.steps.values_list("status", flat=True)) == ["finished", "finished"]
    assert Event.objects.filter(code="VM_START_DONE", vm_id=vm.pk, host_id=host.pk).exists()


def test_starting_an_up_vm_is_a_conflict_naming_the_state(admin_user):
    vm = make_vm(status=VmStatus.UP, run_on_host=make_host())
    with pytest.raises(ConflictError, match="Cannot start a VM whose status is 'up'"):
        services.start_vm(vm, user=admin_user)
    assert Job.objects.count() == 0


def test_no_host_fits_explains_every_host(admin_user):
    cluster = make_cluster()
    make_host(cluster=cluster, name="small", memory_mib=512)
    make_host(cluster=cluster, name="off", status=HostStatus.MAINTENANCE)
    vm = make_vm(cluster=cluster, memory_mib=4096, guaranteed_memory_mib=4096)
    with pytest.raises(ConflictError) as refused:
        services.start_vm(vm, user=admin_user)
    message = refused.value.message
    assert "off: filtered by status: host is maintenance" in message
    assert "small: filtered by memory: needs 4096 MiB guaranteed, 512 MiB available" in message
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_memory_of_running_vms_counts_against_the_host(admin_user):
    cluster = make_cluster()
    host = make_host(cluster=cluster, memory_mib=4096)
    make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=host, guaranteed_memory_mib=3072, memory_mib=3072)
    vm = make_vm(cluster=cluster, memory_mib=2048, guaranteed_memory_mib=2048)
    with pytest.raises(ConflictError, match="1024 MiB available"):
        services.start_vm(vm, user=admin_user)
    cluster.memory_overcommit_percent = 150
    cluster.save()
    services.start_vm(vm, user=admin_user)


@pytest.mark.parametrize(("policy", "chosen"), [("power_saving", "busy"), ("evenly_distributed", "idle")])
def test_the_clusters_scheduling_policy_picks_the_host(policy, chosen):
    cluster = make_cluster(scheduling_policy=policy)
    busy = make_host(cluster=cluster, name="busy", memory_mib=16384)
    make_host(cluster=cluster, name="idle", memory_mib=16384)
    make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=busy, guaranteed_memory_mib=8192, memory_mib=8192)
    vm = make_vm(cluster=cluster, guaranteed_memory_mib=1024)
    assert services.choose_host(vm).name == chosen


def test_vm_evenly_distributed_counts_the_vms_on_each_host():
    cluster = make_cluster(scheduling_policy="vm_evenly_distributed")
    crowded = make_host(cluster=cluster, name="crowded", memory_mib=65536)
    roomy = make_host(cluster=cluster, name="roomy", memory_mib=16384)
    for _ in range(3):
        make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=crowded, guaranteed_memory_mib=512)
    make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=roomy, guaranteed_memory_mib=8192)
    assert services.choose_host(make_vm(cluster=cluster, guaranteed_memory_mib=512)).name == "roomy"


def test_cluster_maintenance_starts_only_highly_available_vms():
    cluster = make_cluster(scheduling_policy="cluster_maintenance")
    make_host(cluster=cluster, name="h1")
    with pytest.raises(ConflictError, match="h1: filtered by cluster maintenance"):
        services.choose_host(make_vm(cluster=cluster))
    assert services.choose_host(make_vm(cluster=cluster, ha_enabled=True)).name == "h1"


def test_ha_reservation_of_the_cluster_keeps_room_for_ha_vms():
    cluster = make_cluster(ha_reservation=True)
    a = make_host(cluster=cluster, name="a", memory_mib=8192)
    make_host(cluster=cluster, name="b", memory_mib=8192)
    make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=a, ha_enabled=True, guaranteed_memory_mib=4096)
    vm = make_vm(cluster=cluster, guaranteed_memory_mib=6144, memory_mib=6144)
    with pytest.raises(ConflictError) as refused:
        services.choose_host(vm)
    assert "a: filtered by memory: needs 6144 MiB guaranteed, 4096 MiB available" in refused.value.message
    assert "b: filtered by HA reservation: the HA VMs of host a would no longer fit" in refused.value.message
    cluster.ha_reservation = False
    cluster.save()
    vm.refresh_from_db()
    assert services.choose_host(vm).name == "b"


def test_placement_reads_the_cluster_in_a_few_queries(django_assert_max_num_queries):
    cluster = make_cluster(scheduling_policy="power_saving", scheduling_properties={"HighUtilization": 90})
    hosts = [make_host(cluster=cluster) for _ in range(4)]
    for host in hosts:
        for _ in range(3):
            make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=host, guaranteed_memory_mib=512)
    vm = VirtualMachine.objects.get(pk=make_vm(cluster=cluster).pk)
    # cluster, hosts, cluster networks, running VMs, their pins, their networks, affinity
    # groups, the VM's own pins and networks: the same for any cluster size
    with django_assert_max_num_queries(9):
        services.choose_host(vm)


def test_a_refused_placement_names_each_host_and_its_filter(admin_user):
    cluster = make_cluster()
    off = make_host(cluster=cluster, name="off", status=HostStatus.MAINTENANCE)
    small = make_host(cluster=cluster, name="small", memory_mib=2048)
    narrow = make_host(cluster=cluster, name="narrow", cpu_threads=2)
    full = make_host(cluster=cluster, name="full", memory_mib=8192)
    make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=full, guaranteed_memory_mib=6144)
    elsewhere = make_host(cluster=cluster, name="elsewhere")
    vm = make_vm(cluster=cluster, vcpus=4, guaranteed_memory_mib=4096, memory_mib=4096)
    vm.pinned_hosts.set([off, small, narrow, full])
    with pytest.raises(ConflictError) as refused:
        services.start_vm(vm, user=admin_user)
    error = refused.value
    assert error.code == "no_host"
    assert error.message.startswith(f"Cannot run VM {vm.name}: no host of cluster {cluster.name} fits. ")
    for line in (
        "elsewhere: filtered by pinning: the VM is pinned to other hosts",
        "full: filtered by memory: needs 4096 MiB guaranteed, 2048 MiB available",
        "narrow: filtered by CPU: 4 vCPUs > 2 host threads",
        "off: filtered by status: host is maintenance",
        "small: filtered by memory: needs 4096 MiB guaranteed, 2048 MiB available",
    ):
        assert line in error.message
    assert error.details["host_id"] is None
    assert error.details["policy"] == "evenly_distributed"
    assert sorted((r["host"], r["host_id"], r["filter"]) for r in error.details["rejected"]) == [
        ("elsewhere", str(elsewhere.pk), "pin_to_host"),
        ("full", str(full.pk), "memory"),
        ("narrow", str(narrow.pk), "cpu"),
        ("off", str(off.pk), "status"),
        ("small", str(small.pk), "memory"),
    ]
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_failed_start_puts_the_vm_down_and_fails_the_job(
    admin_user, sent, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(self, spec):
        raise AgentError("qemu: could not allocate memory")

    monkeypatch.setattr(SimulatedAgentClient, "create_vm", broken)
    cluster = make_cluster()
    make_host(cluster=cluster)
    vm = make_vm(cluster=cluster)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.start_vm(vm, user=admin_user)
    run_enqueued(sent)
    vm.refresh_from_db()
    job.refresh_from_db()
    assert (vm.status, vm.run_on_host_id) == (VmStatus.DOWN, None)
    assert job.status == JobStatus.FAILED and job.error == "qemu: could not allocate memory"
    assert Event.objects.get(code="USER_FAILED_START_VM").severity == "error"


def test_a_redelivered_task_does_nothing(admin_user, sent, django_capture_on_commit_callbacks):
    cluster = make_cluster()
    make_host(cluster=cluster)
    vm = make_vm(cluster=cluster)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.start_vm(vm, user=admin_user)
    args = sent[0][1]
    run_enqueued(sent)
    events = Event.objects.count()
    vm_action_task(*args)
    assert Event.objects.count() == events
    vm.refresh_from_db()
    assert vm.status == VmStatus.UP
    assert Job.objects.get(pk=job.pk).status == JobStatus.FINISHED


def test_a_second_action_while_a_job_runs_is_refused(admin_user):
    cluster = make_cluster()
    host = make_host(cluster=cluster)
    vm = make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=host)
    services.reboot_vm(vm, user=admin_user)
    vm.refresh_from_db()
    with pytest.raises(ConflictError):
        services.stop_vm(vm, user=admin_user)


@pytest.mark.parametrize(
    ("action", "start", "transitional", "end"),
    [
        ("shutdown_vm", VmStatus.UP, VmStatus.POWERING_DOWN, VmStatus.DOWN),
        ("stop_vm", VmStatus.UP, VmStatus.UP, VmStatus.DOWN),
        ("reboot_vm", VmStatus.UP, VmStatus.REBOOT_IN_PROGRESS, VmStatus.UP),
        ("suspend_vm", VmStatus.UP, VmStatus.UP, VmStatus.SUSPENDED),
        ("resume_vm", VmStatus.PAUSED, VmStatus.PAUSED, VmStatus.UP),
        ("resume_vm", VmStatus.SUSPENDED, VmStatus.WAIT_FOR_LAUNCH, VmStatus.UP),
        ("stop_vm", VmStatus.SUSPENDED, VmStatus.SUSPENDED, VmStatus.DOWN),
    ],
)
def test_vm_actions_move_through_their_statuses(
    admin_user, sent, django_capture_on_commit_callbacks, action, start, transitional, end
):
    cluster = make_cluster()
    host = make_host(cluster=cluster)
    on_host = host if start != VmStatus.SUSPENDED else None
    vm = make_vm(cluster=cluster, status=start, run_on_host=on_host)
    with django_capture_on_commit_callbacks(execute=True):
        job = getattr(services, action)(vm, user=admin_user)
    vm.refresh_from_db()
    assert vm.status == transitional
    run_enqueued(sent)
    vm.refresh_from_db()
    assert vm.status == end
    assert (vm.run_on_host_id is None) == (end in (VmStatus.DOWN, VmStatus.SUSPENDED))
    assert Job.objects.get(pk=job.pk).status == JobStatus.FINISHED


def test_edit_of_a_running_vm_applies_live_fields_and_keeps_the_rest_for_next_run(
    admin_user, sent, django_capture_on_commit_callbacks
):
    cluster = make_cluster()
    host = make_host(cluster=cluster)
    vm = make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=host, memory_mib=1024, guaranteed_memory_mib=1024)
    vm = services.update_vm(vm, user=admin_user, description="db server", memory_mib=2048, vcpus=2)
    vm.refresh_from_db()
    assert vm.description == "db server"
    assert (vm.memory_mib, vm.vcpus) == (1024, 1)
    assert vm.next_run_config == {"memory_mib": 2048, "vcpus": 2}
    assert "next run: memory_mib, vcpus" in Event.objects.get(code="USER_UPDATE_VM").message
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_vm(vm, user=admin_user)
    run_enqueued(sent)
    vm.refresh_from_db()
    assert (vm.status, vm.memory_mib, vm.vcpus, vm.next_run_config) == (VmStatus.DOWN, 2048, 2, {})


def test_edit_of_a_running_vm_validates_the_next_run_values(admin_user):
    vm = make_vm(status=VmStatus.UP, run_on_host=make_host())
    with pytest.raises(ValidationError):
        services.update_vm(vm, user=admin_user, guaranteed_memory_mib=999999)
    vm.refresh_from_db()
    assert vm.next_run_config == {}


def test_edit_of_a_down_vm_applies_everything(admin_user):
    vm = make_vm()
    services.update_vm(vm, user=admin_user, vcpus=4, name="renamed")
    vm.refresh_from_db()
    assert (vm.vcpus, vm.name, vm.next_run_config) == (4, "renamed", {})


def test_a_vm_that_is_not_down_cannot_be_removed(admin_user):
    vm = make_vm(status=VmStatus.UP, run_on_host=make_host())
    with pytest.raises(ConflictError, match="only a VM that is down can be removed"):
        services.remove_vm(vm, user=admin_user)
    assert VirtualMachine.objects.filter(pk=vm.pk).exists()


def test_remove_a_down_vm(admin_user):
    vm = make_vm()
    assert services.remove_vm(vm, user=admin_user) is None
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert Event.objects.filter(code="USER_REMOVE_VM", vm_id=vm.pk).exists()


def test_templates_are_versioned_and_blank_is_protected(admin_user):
    cluster = make_cluster()
    base, job = services.create_template(user=admin_user, name="rhel9", cluster=cluster, vcpus=2)
    assert job is None and base.version_number == 1
    v2, _ = services.create_template(user=admin_user, name="ignored", base_template=base, version_name="patched")
    v3, _ = services.create_template(user=admin_user, name="ignored", base_template=v2)
    assert (v2.name, v2.version_number, v3.version_number, v3.base_template_id) == ("rhel9", 2, 3, base.pk)
    with pytest.raises(ConflictError, match="has versions"):
        services.remove_template(base, user=admin_user)
    with pytest.raises(ConflictError, match="Blank template cannot be removed"):
        services.remove_template(Template.objects.get(pk=BLANK_TEMPLATE_ID), user=admin_user)
    vm, _ = services.create_vm(user=admin_user, cluster=cluster, name="from-v3", template=v3)
    assert vm.vcpus == 2
    with pytest.raises(ConflictError, match="used by 1 VM"):
        services.remove_template(v3, user=admin_user)


def test_snapshot_create_and_revert(admin_user, sent, django_capture_on_commit_callbacks):
    cluster = make_cluster()
    make_host(cluster=cluster)
    vm = make_vm(cluster=cluster)
    with pytest.raises(ValidationError):
        services.create_snapshot(vm, user=admin_user, description="mem", with_memory=True)
    with django_capture_on_commit_callbacks(execute=True):
        snapshot, job = services.create_snapshot(vm, user=admin_user, description="before upgrade")
    assert snapshot.status == "locked"
    run_enqueued(sent)
    snapshot.refresh_from_db()
    assert snapshot.status == "ok"
    with django_capture_on_commit_callbacks(execute=True):
        services.revert_snapshot(snapshot, user=admin_user)
    vm.refresh_from_db()
    assert vm.status == VmStatus.IMAGE_LOCKED
    run_enqueued(sent)
    vm.refresh_from_db()
    assert vm.status == VmStatus.DOWN


def test_failed_snapshot_is_removed_and_job_fails(admin_user, sent, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(
        SimulatedAgentClient, "snapshot_create", lambda self, vm_id, snap: (_ for _ in ()).throw(AgentError("no space"))
    )
    cluster = make_cluster()
    make_host(cluster=cluster)
    vm = make_vm(cluster=cluster)
    with django_capture_on_commit_callbacks(execute=True):
        snapshot, job = services.create_snapshot(vm, user=admin_user, description="s")
    snapshot_task(str(job.pk), str(snapshot.pk), "create")
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert Job.objects.get(pk=job.pk).error == "no space"


def test_edit_of_a_running_vm_with_unchanged_values_changes_nothing(admin_user):
    vm = make_vm(status=VmStatus.UP, run_on_host=make_host(), memory_mib=1024, guaranteed_memory_mib=1024)
    services.update_vm(vm, user=admin_user, memory_mib=1024, vcpus=vm.vcpus)
    vm.refresh_from_db()
    assert vm.next_run_config == {}
    assert not Event.objects.filter(code="USER_UPDATE_VM").exists()


# Boot options -----------------------------------------------------------------------------

KERNEL, INITRD = "/var/lib/olvm/images/vmlinuz", "/var/lib/olvm/images/initrd.img"


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"kernel_path": "vmlinuz"}, {"kernel_path": ["Give an absolute path (starting with /)."]}),
        ({"kernel_path": "/boot/../etc/shadow"}, {"kernel_path": ["The path must not contain '..'."]}),
        (
            {"kernel_path": KERNEL, "initrd_path": "/boot/initrd\n.img"},
            {"initrd_path": ["The path must not contain control characters."]},
        ),
        ({"initrd_path": INITRD}, {"initrd_path": ["An initrd needs a kernel path (direct kernel boot)."]}),
        (
            {"kernel_params": "console=ttyS0"},
            {"kernel_params": ["Kernel parameters need a kernel path (direct kernel boot)."]},
        ),
        (
            {"kernel_path": KERNEL, "kernel_params": "console=ttyS0\nroot=/dev/vda"},
            {"kernel_params": ["Kernel parameters are one line, without control characters."]},
        ),
    ],
)
def test_boot_options_are_validated_on_vms_and_templates(admin_user, fields, errors):
    cluster = make_cluster()

    with pytest.raises(ValidationError) as vm_refused:
        services.create_vm(user=admin_user, cluster=cluster, name="direct", **fields)
    with pytest.raises(ValidationError) as template_refused:
        services.create_template(user=admin_user, name="direct", cluster=cluster, **fields)

    assert vm_refused.value.message_dict == errors
    assert template_refused.value.message_dict == errors
    assert not VirtualMachine.objects.filter(name="direct").exists()
    assert not Template.objects.filter(name="direct").exists()


def test_vm_from_a_template_takes_its_boot_options_unless_given(admin_user):
    cluster = make_cluster()
    template, _ = services.create_template(
        user=admin_user, name="tiny", cluster=cluster, kernel_path=KERNEL, initrd_path=INITRD, kernel_params="quiet"
    )

    inherited, _ = services.create_vm(user=admin_user, cluster=cluster, name="t1", template=template)
    own, _ = services.create_vm(
        user=admin_user, cluster=cluster, name="t2", template=template, kernel_params="console=ttyS0"
    )
    blank, _ = services.create_vm(user=admin_user, cluster=cluster, name="t3")

    assert (inherited.kernel_path, inherited.initrd_path, inherited.kernel_params) == (KERNEL, INITRD, "quiet")
    assert (own.kernel_path, own.initrd_path, own.kernel_params) == (KERNEL, INITRD, "console=ttyS0")
    assert (blank.kernel_path, blank.initrd_path, blank.kernel_params) == ("", "", "")


def test_template_from_a_vm_and_a_new_version_keep_the_boot_options(admin_user):
    cluster = make_cluster()
    vm = make_vm(cluster=cluster, kernel_path=KERNEL, initrd_path=INITRD, kernel_params="console=ttyS0")

    template, _ = services.create_template(user=admin_user, name="golden", vm=vm)
    version, _ = services.create_template(user=admin_user, name="golden", base_template=template)

    assert (template.kernel_path, template.initrd_path, template.kernel_params) == (KERNEL, INITRD, "console=ttyS0")
    assert (version.kernel_path, version.initrd_path, version.kernel_params) == (KERNEL, INITRD, "console=ttyS0")


def test_boot_options_of_a_running_vm_wait_for_the_next_run(admin_user, sent, django_capture_on_commit_callbacks):
    cluster = make_cluster()
    vm = make_vm(cluster=cluster, status=VmStatus.UP, run_on_host=make_host(cluster=cluster))

    vm = services.update_vm(vm, user=admin_user, kernel_path=KERNEL, kernel_params="console=ttyS0")
    vm.refresh_from_db()

    assert (vm.kernel_path, vm.kernel_params) == ("", "")
    assert vm.next_run_config == {"kernel_path": KERNEL, "kernel_params": "console=ttyS0"}
    assert "next run: kernel_params, kernel_path" in Event.objects.get(code="USER_UPDATE_VM").message
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_vm(vm, user=admin_user)
    run_enqueued(sent)
    vm.refresh_from_db()
    assert (vm.status, vm.kernel_path, vm.kernel_params, vm.next_run_config) == (
        VmStatus.DOWN,
        KERNEL,
        "console=ttyS0",
        {},
    )


def test_next_run_boot_options_are_validated_as_a_whole(admin_user):
    vm = make_vm(status=VmStatus.UP, run_on_host=make_host())

    with pytest.raises(ValidationError) as refused:
        services.update_vm(vm, user=admin_user, initrd_path=INITRD)

    assert refused.value.message_dict == {"initrd_path": ["An initrd needs a kernel path (direct kernel boot)."]}
    vm.refresh_from_db()
    assert vm.next_run_config == {}


def test_vm_spec_carries_the_boot_options_as_the_agent_expects():
    from compute.tasks import vm_spec
    from hostagent.agent.verbs import VERBS

    direct = make_vm(kernel_path=KERNEL, initrd_path=INITRD, kernel_params="console=ttyS0 olvm.hostname=t1")
    from_disk = make_vm()

    specs = [vm_spec(direct), vm_spec(from_disk)]

    assert [(s["kernel"], s["initrd"], s["cmdline"]) for s in specs] == [
        (KERNEL, INITRD, "console=ttyS0 olvm.hostname=t1"),
        (None, None, ""),
    ]
    for spec in specs:
        cleaned = VERBS["create_vm"].validate({"spec": spec})["spec"]
        assert (cleaned["kernel"], cleaned["initrd"], cleaned["cmdline"]) == (
            spec["kernel"],
            spec["initrd"],
            spec["cmdline"],
        )


# VMs from a template: thin overlays or full clones ----------------------------------------


@pytest.fixture
def golden(admin_user):
    """Template golden of a cluster with an up simulated host: a 10 GiB boot disk and a 2 GiB data disk."""
    from storage.models import GIB
    from tests.factories import make_disk, make_storage_domain

    cluster = make_cluster()
    make_host(cluster=cluster, name="kvm1")
    template = Template.objects.create(name="golden", cluster=cluster, vcpus=2, memory_mib=2048)
    sd = make_storage_domain(cluster.data_center, name="data1")
    make_disk(sd, provisioned_size=10 * GIB, alias="golden_Disk1", template=template)
    make_disk(sd, provisioned_size=2 * GIB, alias="golden_Disk2", template=template)
    return template


@pytest.fixture
def images(monkeypatch):
    """The images the simulated agent was asked to create, in order."""
    calls = []
    real = SimulatedAgentClient.image_create
    monkeypatch.setattr(
        SimulatedAgentClient, "image_create", lambda self, image: calls.append(image) or real(self, image)
    )
    return calls


def test_a_cloned_vm_gets_independent_copies_of_the_template_disks(
    admin_user, golden, sent, images, django_capture_on_commit_callbacks
):
    from storage.models import GIB, Disk, StorageDomain

    base1, base2 = golden.disks.order_by("created_at")
    committed = StorageDomain.objects.get(name="data1").committed_bytes
    with django_capture_on_commit_callbacks(execute=True):
        vm, job = services.create_vm(user=admin_user, cluster=golden.cluster, name="web", template=golden, clone=True)

    disks = list(Disk.objects.filter(attachments__vm=vm).order_by("alias"))
    assert [(d.alias, d.backing_disk_id, d.provisioned_size, d.format, d.allocation, d.status) for d in disks] == [
        ("web_Disk1", None, 10 * GIB, "qcow2", "thin", "locked"),
        ("web_Disk2", None, 2 * GIB, "qcow2", "thin", "locked"),
    ]
    assert {d.storage_domain_id for d in disks} == {base1.storage_domain_id}
    assert disks[0].description == "Cloned from golden_Disk1 of template golden"
    assert StorageDomain.objects.get(name="data1").committed_bytes == committed + 12 * GIB
    assert (vm.status, vm.template_id, vm.vcpus) == (VmStatus.IMAGE_LOCKED, golden.pk, 2)
    assert (job.action_type, job.description) == (
        "AddVmFromTemplate",
        "Creating VM web from template golden (disks cloned)",
    )
    assert list(job.steps.order_by("number").values_list("description", flat=True)) == [
        "Clone disk web_Disk1 from template disk",
        "Clone disk web_Disk2 from template disk",
    ]
    assert sent == [
        (
            "compute.tasks.create_vm_disks_task",
            [str(job.pk), str(vm.pk), [[str(base1.pk), str(disks[0].pk)], [str(base2.pk), str(disks[1].pk)]]],
        )
    ]
    assert (
        Event.objects.get(code="USER_ADD_VM").message
        == "VM web was created by admin from template golden, its disks cloned."
    )

    run_enqueued(sent)

    assert [(i["id"], i["copy_from_id"], i["backing_id"], i["format"], i["size"]) for i in images] == [
        (str(disks[0].pk), str(base1.pk), None, "qcow2", 10 * GIB),
        (str(disks[1].pk), str(base2.pk), None, "qcow2", 2 * GIB),
    ]
    assert images[0]["storage_domain"]["path"] == base1.storage_domain.path
    assert set(Disk.objects.filter(attachments__vm=vm).values_list("status", flat=True)) == {"ok"}
    vm.refresh_from_db()
    job.refresh_from_db()
    # Nothing of the VM depends on the template any more: its template is Blank, as in oVirt.
    assert (vm.status, str(vm.template_id), vm.vcpus) == (VmStatus.DOWN, BLANK_TEMPLATE_ID, 2)
    assert (job.status, job.progress) == (JobStatus.FINISHED, 100)
    assert list(job.steps.values_list("status", flat=True)) == ["finished", "finished"]
    assert Event.objects.filter(code="USER_ADD_VM_FINISHED_SUCCESS", vm_id=vm.pk).count() == 1


def test_a_thin_vm_gets_overlays_and_keeps_its_template(
    admin_user, golden, sent, images, django_capture_on_commit_callbacks
):
    from storage.models import Disk

    base1, base2 = golden.disks.order_by("created_at")
    with django_capture_on_commit_callbacks(execute=True):
        vm, job = services.create_vm(user=admin_user, cluster=golden.cluster, name="thin", template=golden)

    assert list(job.steps.order_by("number").values_list("description", flat=True)) == [
        "Create disk thin_Disk1 on template disk",
        "Create disk thin_Disk2 on template disk",
    ]
    assert sent == [("compute.tasks.create_vm_disks_task", [str(job.pk), str(vm.pk)])]
    assert Event.objects.get(code="USER_ADD_VM").message == "VM thin was created by admin from template golden."
    run_enqueued(sent)

    assert [(i["backing_id"], i.get("copy_from_id")) for i in images] == [(str(base1.pk), None), (str(base2.pk), None)]
    assert list(Disk.objects.filter(attachments__vm=vm).order_by("alias").values_list("backing_disk", flat=True)) == [
        base1.pk,
        base2.pk,
    ]
    vm.refresh_from_db()
    assert (vm.status, vm.template_id) == (VmStatus.DOWN, golden.pk)
    with pytest.raises(ConflictError, match="used by 1 VM"):
        services.remove_template(golden, user=admin_user)


def test_a_cloned_vm_does_not_block_the_removal_of_its_template_once_copied(
    admin_user, golden, sent, images, django_capture_on_commit_callbacks
):
    from storage.models import Disk

    with django_capture_on_commit_callbacks(execute=True):
        vm, _ = services.create_vm(user=admin_user, cluster=golden.cluster, name="copy", template=golden, clone=True)
    # While its disks are being copied, the VM still needs the template.
    with pytest.raises(ConflictError, match="used by 1 VM"):
        services.remove_template(Template.objects.get(pk=golden.pk), user=admin_user)
    run_enqueued(sent)

    with django_capture_on_commit_callbacks(execute=True):
        job = services.remove_template(Template.objects.get(pk=golden.pk), user=admin_user)

    assert job is not None and job.action_type == "RemoveDisk"
    assert not Template.objects.filter(pk=golden.pk).exists()
    copies = Disk.objects.filter(attachments__vm=vm)
    assert copies.count() == 2 and set(copies.values_list("status", flat=True)) == {"ok"}
    assert VirtualMachine.objects.get(pk=vm.pk).status == VmStatus.DOWN


def test_a_redelivered_clone_task_does_not_copy_finished_disks_again(
    admin_user, golden, sent, images, django_capture_on_commit_callbacks
):
    from compute.tasks import create_vm_disks_task
    from storage.models import Disk

    with django_capture_on_commit_callbacks(execute=True):
        vm, job = services.create_vm(user=admin_user, cluster=golden.cluster, name="again", template=golden, clone=True)
    args = sent[0][1]
    first = Disk.objects.get(alias="again_Disk1")
    Disk.objects.filter(pk=first.pk).update(status="ok")  # copied before the worker died

    create_vm_disks_task(*args)
    create_vm_disks_task(*args)  # and once more after the Job finished

    assert [i["id"] for i in images] == [str(Disk.objects.get(alias="again_Disk2").pk)]
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert Event.objects.filter(code="USER_ADD_VM_FINISHED_SUCCESS", vm_id=vm.pk).count() == 1


def test_a_failed_clone_leaves_illegal_disks_and_the_vm_on_its_template(
    admin_user, golden, sent, monkeypatch, django_capture_on_commit_callbacks
):
    from storage.models import Disk

    def refuse(self, image):
        raise AgentError("qemu-img: No space left on device")

    monkeypatch.setattr(SimulatedAgentClient, "image_create", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        vm, job = services.create_vm(
            user=admin_user, cluster=golden.cluster, name="broken", template=golden, clone=True
        )
    run_enqueued(sent)

    vm.refresh_from_db()
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "qemu-img: No space left on device")
    assert set(Disk.objects.filter(attachments__vm=vm).values_list("status", flat=True)) == {"illegal"}
    assert (vm.status, vm.template_id) == (VmStatus.DOWN, golden.pk)


def test_clone_from_the_blank_template_is_a_vm_without_disks(admin_user, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        vm, job = services.create_vm(user=admin_user, cluster=make_cluster(), name="empty", clone=True)

    assert job is None and sent == []
    assert (vm.status, str(vm.template_id), vm.disk_attachments.count()) == (VmStatus.DOWN, BLANK_TEMPLATE_ID, 0)
    assert Event.objects.get(code="USER_ADD_VM").message == "VM empty was created by admin from template Blank."
