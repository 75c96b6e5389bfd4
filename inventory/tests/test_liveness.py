"""The liveness sweep (host_liveness_task): hosts whose agent stopped pushing go non-responsive."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from inventory.choices import HostStatus
from inventory.models import Event, Host
from inventory.tasks import host_liveness_task
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def long_ago():
    return timezone.now() - timedelta(seconds=settings.OLVM_HOST_HEARTBEAT_TIMEOUT + 30)


def test_a_host_whose_agent_went_quiet_goes_non_responsive_with_an_alert():
    quiet = make_host(simulated=False, last_heartbeat=long_ago(), cert_fingerprint="ab:cd")
    never = make_host(simulated=False, last_heartbeat=None, status=HostStatus.CONNECTING)
    talking = make_host(simulated=False, last_heartbeat=timezone.now(), cert_fingerprint="ef:01")
    in_maintenance = make_host(simulated=False, last_heartbeat=long_ago(), status=HostStatus.MAINTENANCE)

    assert host_liveness_task() == 2

    statuses = dict(Host.objects.values_list("name", "status"))
    assert statuses[quiet.name] == statuses[never.name] == HostStatus.NON_RESPONSIVE
    assert statuses[talking.name] == HostStatus.UP
    assert statuses[in_maintenance.name] == HostStatus.MAINTENANCE
    alerts = Event.objects.filter(code="VDS_FAILURE")
    assert sorted(e.object_name for e in alerts) == sorted([quiet.name, never.name])
    assert all(e.severity == "alert" for e in alerts)
    assert host_liveness_task() == 0  # said once


def test_a_simulated_host_without_an_agent_stays_up_and_one_served_by_a_simulator_must_push():
    in_process = make_host(simulated=True, cert_fingerprint="", last_heartbeat=long_ago())
    simulator = make_host(simulated=True, cert_fingerprint="12:34", last_heartbeat=long_ago())

    assert host_liveness_task() == 1

    in_process.refresh_from_db()
    simulator.refresh_from_db()
    assert in_process.status == HostStatus.UP
    assert timezone.now() - in_process.last_heartbeat < timedelta(seconds=10)
    assert simulator.status == HostStatus.NON_RESPONSIVE
