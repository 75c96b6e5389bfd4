"""Behaviour of /api/v1/hosts/: add (a Job), password handling, activate/deactivate, removal."""

import pytest
from django.urls import reverse

from inventory.models import Event, Host, Job
from tests.factories import make_host, make_vm

pytestmark = pytest.mark.django_db


def host_url(host, action: str | None = None) -> str:
    if action:
        return reverse(f"api:host-{action}", args=[host.pk])
    return reverse("api:host-detail", args=[host.pk])


def test_add_host_is_201_with_its_deploy_job(api_client, cluster):
    response = api_client.post(
        reverse("api:host-list"),
        {"cluster": str(cluster.pk), "name": "kvm1", "address": "kvm1.example.com", "pm_password": "s3cret"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    host = Host.objects.get(name="kvm1")
    job = Job.objects.get(action_type="AddVds")
    assert (body["id"], body["job"], body["status"]) == (str(host.pk), str(job.pk), "installing")
    assert "pm_password" not in body
    assert host.pm_password == "s3cret"
    assert job.host_id == host.pk
    assert [s.description for s in job.steps.all()] == [
        "Issue the host's certificate",
        "Install and start the host agent",
        "Connect to the host agent",
        "Check host capabilities",
        "Activate the host",
    ]


def test_power_management_needs_type_and_address(api_client, cluster):
    response = api_client.post(
        reverse("api:host-list"),
        {"cluster": str(cluster.pk), "name": "kvm1", "address": "kvm1", "pm_enabled": True},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"pm_address": ["Power management needs a fence agent type and address when enabled."]}
    assert not Host.objects.exists()


def test_duplicate_address_and_port_is_400(api_client, cluster):
    make_host(cluster, address="10.9.9.9", agent_port=54321)

    response = api_client.post(
        reverse("api:host-list"), {"cluster": str(cluster.pk), "name": "kvm2", "address": "10.9.9.9"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"agent_port": ["Host with this Address and Agent port already exists."]}


def test_status_is_read_only(api_client):
    host = make_host(status="up")

    response = api_client.patch(host_url(host), {"status": "maintenance", "memory_mib": 1}, format="json")

    assert response.status_code == 200
    host.refresh_from_db()
    assert (host.status, host.memory_mib) == ("up", 65536)


def test_address_change_needs_maintenance_409(api_client):
    host = make_host(status="up")

    response = api_client.patch(host_url(host), {"address": "10.200.0.1"}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Put the host in maintenance before changing its address or agent port.",
        "code": "conflict",
    }


def test_remove_host_not_in_maintenance_is_409(api_client):
    host = make_host(status="up")

    response = api_client.delete(host_url(host))

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Host {host.name} is 'up'; a host can be removed only in maintenance (or after a failed install).",
        "code": "conflict",
    }
    assert Host.objects.filter(pk=host.pk).exists()


def test_deactivate_is_202_with_the_job(api_client):
    host = make_host(status="up")

    response = api_client.post(host_url(host, "deactivate"))

    assert response.status_code == 202, response.json()
    assert response.json()["action_type"] == "MaintenanceVds"
    host.refresh_from_db()
    assert host.status == "preparing_for_maintenance"
    assert Event.objects.filter(code="USER_VDS_MAINTENANCE", object_id=host.pk).count() == 1


def test_deactivate_with_running_vms_starts_their_evacuation(api_client):
    vm = make_vm(status="up")

    response = api_client.post(host_url(vm.run_on_host, "deactivate"))

    assert response.status_code == 202
    assert response.json()["action_type"] == "MaintenanceVds"
    assert [s["description"] for s in response.json()["steps"]][0] == "Migrate the host's VMs away (1)"


def test_activate_from_maintenance_is_202(api_client):
    host = make_host(status="maintenance")

    response = api_client.post(host_url(host, "activate"))

    assert response.status_code == 202
    assert response.json()["action_type"] == "ActivateVds"
    host.refresh_from_db()
    assert host.status == "connecting"


def test_activate_an_up_host_is_409(api_client):
    host = make_host(status="up")

    response = api_client.post(host_url(host, "activate"))

    assert response.status_code == 409
    assert response.json()["detail"] == (f"Host {host.name} is 'up'; only a host in maintenance can be activated.")


def test_host_filters(api_client, cluster):
    make_host(cluster, status="up", name="a1")
    make_host(status="maintenance", name="b1")

    def names(**params):
        response = api_client.get(reverse("api:host-list"), params)
        assert response.status_code == 200
        return [row["name"] for row in response.json()["results"]]

    assert names(status="maintenance") == ["b1"]
    assert names(cluster=str(cluster.pk)) == ["a1"]
    assert names(data_center=str(cluster.data_center_id)) == ["a1"]
    assert names(name="B") == ["b1"]
