"""Data center, cluster and host services: rules, audit events, jobs and host deploy."""

import pytest
from django.core.exceptions import ValidationError

from hostagent.client import AgentUnavailable
from inventory import services
from inventory.choices import HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Cluster, DataCenter, Event, Host, Job
from inventory.tasks import activate_host_task, deploy_host_task, maintenance_host_task, reap_stale_jobs_task
from networking.models import ClusterNetwork, LogicalNetwork, VnicProfile
from tests.factories import make_cluster, make_host, make_vm

pytestmark = pytest.mark.django_db


def test_a_data_center_comes_with_the_management_network(admin_user):
    dc = services.create_data_center(user=admin_user, name="DC1", description="first")
    network = LogicalNetwork.objects.get(data_center=dc)
    assert (network.name, network.is_management, network.vm_network) == ("ovirtmgmt", True, True)
    assert VnicProfile.objects.filter(network=network, name="ovirtmgmt").exists()
    event = Event.objects.get(code="USER_ADD_STORAGE_POOL")
    assert (event.data_center_id, event.username) == (dc.pk, "admin")


def test_bad_data_center_input_writes_nothing(admin_user):
    with pytest.raises(ValidationError) as refused:
        services.create_data_center(user=admin_user, name="bad name!", storage_type="tape")
    assert set(refused.value.message_dict) == {"name", "storage_type"}
    assert DataCenter.objects.count() == 0
    assert LogicalNetwork.objects.count() == 0 and Event.objects.count() == 0


def test_unknown_fields_are_refused(admin_user):
    with pytest.raises(ValidationError) as refused:
        services.create_data_center(user=admin_user, name="dc", status="up")
    assert "status" in refused.value.message_dict


def test_cluster_names_are_unique_per_data_center(admin_user):
    dc = services.create_data_center(user=admin_user, name="A")
    other = services.create_data_center(user=admin_user, name="B")
    cluster = services.create_cluster(user=admin_user, data_center=dc, name="Default")
    services.create_cluster(user=admin_user, data_center=other, name="Default")
    with pytest.raises(ValidationError):
        services.create_cluster(user=admin_user, data_center=dc, name="Default")
    assert ClusterNetwork.objects.filter(cluster=cluster, network__name="ovirtmgmt", required=True).exists()
    assert cluster.mac_pool.name == "Default"


def test_scheduling_properties_are_checked(admin_user):
    dc = services.create_data_center(user=admin_user, name="A")
    with pytest.raises(ValidationError) as refused:
        services.create_cluster(
            user=admin_user,
            data_center=dc,
            name="c",
            scheduling_properties={"HighUtilization": 50, "LowUtilization": 80, "Bogus": 1},
        )
    messages = refused.value.message_dict["scheduling_properties"]
    assert any("Unknown property 'Bogus'" in m for m in messages)
    assert "LowUtilization must be below HighUtilization." in messages
    assert not Cluster.objects.exists()


def test_a_data_center_with_clusters_cannot_be_removed(admin_user):
    cluster = make_cluster()
    with pytest.raises(ConflictError, match="still has clusters"):
        services.remove_data_center(cluster.data_center, user=admin_user)
    services.remove_cluster(cluster, user=admin_user)
    services.remove_data_center(cluster.data_center, user=admin_user)
    assert not DataCenter.objects.exists() and not LogicalNetwork.objects.exists()


def test_a_cluster_with_hosts_or_vms_cannot_be_removed(admin_user):
    cluster = make_cluster()
    host = make_host(cluster=cluster, status=HostStatus.MAINTENANCE)
    with pytest.raises(ConflictError, match="still has hosts"):
        services.remove_cluster(cluster, user=admin_user)
    host.delete()
    make_vm(cluster=cluster)
    with pytest.raises(ConflictError, match="still has VMs"):
        services.remove_cluster(cluster, user=admin_user)


def test_add_host_opens_a_job_and_deploy_brings_it_up(admin_user, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from olvm_site.celery import app

    monkeypatch.setattr(app, "send_task", lambda name, args=(), **kw: sent.append((name, args)))
    cluster = make_cluster()
    with django_capture_on_commit_callbacks(execute=True):
        host, job = services.add_host(user=admin_user, cluster=cluster, name="h1", address="10.0.0.1", simulated=True)
    assert host.status == HostStatus.INSTALLING
    assert sent == [("inventory.tasks.deploy_host_task", [str(job.pk), str(host.pk)])]
    deploy_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    job.refresh_from_db()
    assert host.status == HostStatus.UP and host.cpu_model.startswith("Simulated")
    assert job.status == JobStatus.FINISHED
    assert list(Event.objects.filter(host_id=host.pk).order_by("id").values_list("code", flat=True)) == [
        "USER_ADD_VDS",
        "VDS_DETECTED",
    ]


def test_deploy_failure_leaves_install_failed_with_the_reason(admin_user):
    cluster = make_cluster()
    host, job = services.add_host(user=admin_user, cluster=cluster, name="real", address="192.0.2.10")
    deploy_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    job.refresh_from_db()
    assert host.status == HostStatus.INSTALL_FAILED
    assert job.status == JobStatus.FAILED and "OLVM_DEPLOY_SSH_KEY" in job.error
    failed = Event.objects.get(code="VDS_INSTALL_FAILED")
    assert failed.severity == "error" and "192.0.2.10" in failed.message


def test_host_address_and_port_are_unique(admin_user):
    cluster = make_cluster()
    services.add_host(user=admin_user, cluster=cluster, name="a", address="10.0.0.1", simulated=True)
    with pytest.raises(ValidationError):
        services.add_host(user=admin_user, cluster=cluster, name="b", address="10.0.0.1", simulated=True)
    assert Host.objects.count() == 1 and Job.objects.count() == 1


def test_a_host_is_removed_only_in_maintenance(admin_user):
    host = make_host(status=HostStatus.UP)
    with pytest.raises(ConflictError, match="only in maintenance"):
        services.remove_host(host, user=admin_user)
    job = services.deactivate_host(host, user=admin_user)
    host.refresh_from_db()
    assert host.status == HostStatus.PREPARING_FOR_MAINTENANCE
    maintenance_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE
    services.remove_host(host, user=admin_user)
    assert not Host.objects.filter(pk=host.pk).exists()


def test_maintenance_of_a_host_with_running_vms_evacuates_them_first(admin_user):
    """(The evacuation itself: compute/tests/test_migration.py.)"""
    host = make_host()
    make_vm(cluster=host.cluster, status="up", run_on_host=host)
    job = services.deactivate_host(host, user=admin_user)
    host.refresh_from_db()
    assert host.status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert list(job.steps.values_list("description", flat=True)) == [
        "Migrate the host's VMs away (1)",
        "Move the host to maintenance",
    ]


def test_activate_goes_through_connecting_to_up(admin_user):
    host = make_host(status=HostStatus.MAINTENANCE)
    with pytest.raises(ConflictError):
        services.activate_host(make_host(status=HostStatus.UP), user=admin_user)
    job = services.activate_host(host, user=admin_user)
    host.refresh_from_db()
    assert host.status == HostStatus.CONNECTING
    activate_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    assert host.status == HostStatus.UP


def test_activate_of_an_unreachable_host_ends_non_responsive(admin_user, monkeypatch):
    from hostagent.client import SimulatedAgentClient

    def unreachable(self):
        raise AgentUnavailable("connection refused")

    monkeypatch.setattr(SimulatedAgentClient, "ping", unreachable)
    host = make_host(status=HostStatus.MAINTENANCE)
    job = services.activate_host(host, user=admin_user)
    activate_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    assert host.status == HostStatus.NON_RESPONSIVE and host.status_detail == "connection refused"
    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILED


def test_reinstall_deploys_the_agent_again_for_a_host_in_maintenance(admin_user):
    host = make_host(status=HostStatus.MAINTENANCE)
    with pytest.raises(ConflictError, match="maintenance first"):
        services.reinstall_host(make_host(status=HostStatus.UP), user=admin_user)

    job = services.reinstall_host(host, user=admin_user)

    host.refresh_from_db()
    assert (host.status, job.action_type) == (HostStatus.INSTALLING, "UpdateVds")
    assert Event.objects.filter(host_id=host.pk, code="USER_VDS_REINSTALL").exists()
    deploy_host_task(str(job.pk), str(host.pk))
    host.refresh_from_db()
    assert host.status == HostStatus.UP
    assert Job.objects.get(pk=job.pk).status == JobStatus.FINISHED


def test_reinstall_of_a_host_whose_agent_is_known_gone_marks_it_non_responsive_first(admin_user):
    host = make_host(status=HostStatus.UP)

    services.reinstall_host(host, user=admin_user, agent_gone="the lab tool finds its agent not running")

    host.refresh_from_db()
    assert host.status == HostStatus.INSTALLING
    failure = Event.objects.get(host_id=host.pk, code="VDS_FAILURE")
    assert "agent not running" in failure.message and failure.severity == "alert"


def test_stale_jobs_are_reaped(admin_user, settings):
    from inventory.audit import create_job

    settings.OLVM_JOB_STALE_SECONDS = -1
    job = create_job("RunVm", "stuck", user=admin_user)
    assert reap_stale_jobs_task() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "no progress" in job.error
