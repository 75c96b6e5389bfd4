"""What the portal pages give static/olvm/live.js and charts.js: the objects to subscribe to,
the cells it keeps current, figures from the hot cache, the dashboard's live fragment and the
events pane's filter. Query counts of what changed are pinned here."""

import json
import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.audit import record_event
from inventory.choices import EventSeverity
from inventory.models import Event
from portals.context_processors import PANE_FILTER_COOKIE
from portals.tests.test_query_counts import DASHBOARD_QUERIES, count_queries, grow
from tests.factories import make_host, make_vm

pytestmark = pytest.mark.django_db

DASHBOARD_FRAGMENT_QUERIES = DASHBOARD_QUERIES - 4  # no tree (2 queries) and no panes (2)
PANE_EVENTS_QUERIES = 3  # session + user + the events


@pytest.fixture
def hot_cache():
    """Samples written to the hot cache as the ingest handler writes them; removed afterwards."""
    from inventory.history import _hot_cache
    from inventory.ingest import STATS_KEY

    client, keys = _hot_cache(), []

    def put(kind, obj_id, sample):
        key = STATS_KEY.format(kind=kind, id=obj_id)
        keys.append(key)
        client.set(key, json.dumps(sample), ex=60)

    yield put
    if keys:
        client.delete(*keys)


def live_keys(body: str) -> list[str]:
    return re.findall(r'data-live="([^"]+)"', body)


def test_list_rows_carry_their_subscription_and_the_cells_live_js_keeps_current(user_client, seeded, hot_cache):
    vm, host = seeded["vm"], seeded["host"]
    hot_cache("vm", vm.pk, {"id": str(vm.pk), "cpu_pct": 42.4, "mem_pct": 5.25, "net_rx_bps": 2048, "net_tx_bps": 10})
    hot_cache(
        "host",
        host.pk,
        {"id": str(host.pk), "cpu": {"user_pct": 20, "system_pct": 5}, "memory": {"used_mib": 1, "total_mib": 4}},
    )

    vms = user_client.get(reverse("portals:vm-list")).content.decode()
    hosts = user_client.get(reverse("portals:host-list")).content.decode()
    domains = user_client.get(reverse("portals:storagedomain-list")).content.decode()

    assert sorted(live_keys(vms)) == sorted([f"vm.{vm.pk}", f"vm.{seeded['vm_down'].pk}"])
    assert live_keys(hosts) == [f"host.{host.pk}"] and live_keys(domains) == [f"storage.{seeded['sd'].pk}"]
    row = vms[vms.index(f'data-live="vm.{vm.pk}"') :].split("</tr>")[0]
    assert 'data-field="status"' in row and 'data-field="run_on_host_name"' in row and 'data-field="guest_ips"' in row
    assert '<td class="text-end text-nowrap" data-stat="cpu">42 %</td>' in row
    assert '<td class="text-end text-nowrap" data-stat="memory">5.2 %</td>' in row
    assert "2.0 KiB/s" in row and "10 B/s" in row
    host_row = hosts[hosts.index(f'data-live="host.{host.pk}"') :].split("</tr>")[0]
    assert 'data-stat="cpu">25 %</td>' in host_row and 'data-stat="memory">25 %</td>' in host_row
    assert 'data-stat="net">—</td>' in host_row


def test_a_detail_page_subscribes_to_its_object_and_shows_its_monitoring(user_client, seeded, hot_cache):
    vm = seeded["vm"]
    hot_cache("vm", vm.pk, {"id": str(vm.pk), "cpu_pct": 7.0, "mem_pct": 60.0})

    response = user_client.get(reverse("portals:vm-detail", args=[vm.pk]))
    body = response.content.decode()

    assert live_keys(body)[0] == f"vm.{vm.pk}"
    assert f'data-history-url="/api/v1/vms/{vm.pk}/history/"' in body
    assert 'data-stat="cpu">7.0 %</strong>' in body
    assert "vendor/chart.js/chart.umd.min.js" in body and "olvm/charts.js" in body
    states = json.loads(re.search(r'id="olvm-vm-action-states" type="application/json">(.*?)</script>', body).group(1))
    assert states["run"] == sorted(["down", "suspended"]) or "down" in states["run"]
    config = response.context["chrome"].live_config
    assert config["pageObject"] == {"kind": "vm", "id": str(vm.pk)}
    assert config["statusLabels"]["wait_for_launch"] == "Wait for launch"

    host_body = user_client.get(reverse("portals:host-detail", args=[seeded["host"].pk])).content.decode()
    sd_body = user_client.get(reverse("portals:storagedomain-detail", args=[seeded["sd"].pk])).content.decode()
    assert live_keys(host_body)[0] == f"host.{seeded['host'].pk}"
    assert f'data-history-url="/api/v1/hosts/{seeded["host"].pk}/history/"' in host_body
    assert f'data-history-url="/api/v1/storage-domains/{seeded["sd"].pk}/history/"' in sd_body


def test_the_dashboard_subscribes_to_every_cluster_and_serves_its_live_part(user_client, seeded):
    page = user_client.get(reverse("portals:dashboard")).content.decode()

    assert f'data-subscribe="cluster.{seeded["cluster"].pk}"' in page
    assert 'data-count="vm:up">1<' in page and 'data-count="host:up">1<' in page
    assert 'data-vm-memory="2048"' in page and 'data-host-memory="65536"' in page

    fragment = user_client.get(reverse("portals:dashboard"), {"fragment": "live"}).content.decode()
    assert fragment.lstrip().startswith('<div id="dashboard-live"') or 'id="dashboard-live"' in fragment[:400]
    assert "olvm-tree" not in fragment and 'data-count="vms">2<' in fragment


@pytest.mark.parametrize("size", [3, 30])
def test_the_dashboard_fragment_costs_the_same_with_more_rows(user_client, size):
    grow(size, clusters=size // 3 + 1)

    assert count_queries(user_client, reverse("portals:dashboard"), {"fragment": "live"}) == DASHBOARD_FRAGMENT_QUERIES


def test_the_events_pane_filters_by_severity_and_by_the_pages_object(user_client):
    vm, other, host = make_vm(name="web-5"), make_vm(name="db-5"), make_host()
    Event.objects.all().delete()  # what making them recorded
    record_event("USER_ADD_VM", "web-5 normal", obj=vm)
    record_event("VM_DOWN_ERROR", "web-5 error", obj=vm, severity=EventSeverity.ERROR)
    record_event("VM_DOWN_ERROR", "db-5 error", obj=other, severity=EventSeverity.ERROR)
    record_event("VDS_FAILURE", "host alert", obj=host, severity=EventSeverity.ALERT)
    url = reverse("portals:pane-events")

    def shown(**params) -> list[str]:
        body = user_client.get(url, params).content.decode()
        return re.findall(r"<td>([^<]*)</td>", body)

    assert shown() == ["host alert", "db-5 error", "web-5 error", "web-5 normal"]
    assert shown(severity="error") == ["host alert", "db-5 error", "web-5 error"]
    assert shown(severity="alert") == ["host alert"]
    assert shown(scope="vm") == ["db-5 error", "web-5 error", "web-5 normal"]
    assert shown(scope="page", page=f"vm:{vm.pk}") == ["web-5 error", "web-5 normal"]
    assert shown(severity="error", scope="page", page=f"vm:{vm.pk}") == ["web-5 error"]
    assert shown(severity="bogus", scope="page", page="vm:not-an-id") == shown()
    with CaptureQueriesContext(connection) as queries:
        user_client.get(url, {"severity": "warning", "scope": "page", "page": f"vm:{uuid.uuid4()}"})
    assert len(queries) == PANE_EVENTS_QUERIES


def test_pages_draw_the_events_pane_with_the_filter_of_the_cookie(user_client):
    vm = make_vm(name="web-6")
    record_event("USER_ADD_VM", "web-6 normal", obj=vm)
    record_event("VM_DOWN_ERROR", "web-6 error", obj=vm, severity=EventSeverity.ERROR)
    record_event("VDS_FAILURE", "elsewhere", severity=EventSeverity.ERROR)
    user_client.cookies[PANE_FILTER_COOKIE] = "error%7Cpage"

    detail = user_client.get(reverse("portals:vm-detail", args=[vm.pk])).content.decode()
    dashboard = user_client.get(reverse("portals:dashboard")).content.decode()

    pane = detail[detail.index('id="pane-events-body"') :].split("</tbody>")[0]
    assert "web-6 error" in pane and "web-6 normal" not in pane and "elsewhere" not in pane
    assert '<option value="page" selected>This object</option>' in detail
    dashboard_pane = dashboard[dashboard.index('id="pane-events-body"') :].split("</tbody>")[0]
    assert "elsewhere" in dashboard_pane and "web-6 error" in dashboard_pane  # no object there: severity only
    assert "web-6 normal" not in dashboard_pane
