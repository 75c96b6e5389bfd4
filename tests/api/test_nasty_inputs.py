"""Hand-picked hostile inputs (some first found by tests/test_api_fuzz.py): a 4xx, never a 5xx."""

import pytest

from tests.factories import make_cluster, make_vm

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("url", "params", "status"),
    [
        # Fuzz finding: ?limit= beyond bigint reached PostgreSQL as LIMIT (DataError, 500).
        ("/api/v1/vms/", {"limit": HUGE}, 200),
        ("/api/v1/events/", {"limit": HUGE, "offset": HUGE}, 200),
        ("/api/v1/vms/", {"offset": "9223372036854775807"}, 200),
        ("/api/v1/vms/", {"limit": "-5", "offset": "-5"}, 200),
        # Fuzz finding: a time-zone offset past ±15:59 was a DataError (500).
        ("/api/v1/events/", {"since": "4547-01-14T14:29:32+17:41"}, 200),
        ("/api/v1/vms/", {"search": "\x00"}, 400),
        ("/api/v1/vms/", {"name": "\x00"}, 400),
        ("/api/v1/vms/", {"ordering": "\x00,-nope"}, 200),
        ("/api/v1/networks/", {"vlan_tag": HUGE}, 200),
        ("/api/v1/instance-types/", {"vcpus": "1e400"}, 400),
        ("/api/v1/instance-types/", {"memory_mib": "NaN"}, 400),
        ("/api/v1/jobs/", {"object_id": "\x00"}, 400),
        (f"/api/v1/cluster-networks/{HUGE}/", {}, 404),
        (f"/api/v1/users/{HUGE}/", {}, 404),
        (f"/api/v1/events/{HUGE}/", {}, 404),
    ],
)
def test_hostile_queries(api_client, url, params, status):
    response = api_client.get(url, params)

    assert response.status_code == status, response.content[:500]


def test_limit_is_capped_at_a_thousand(api_client):
    make_vm()

    response = api_client.get("/api/v1/vms/", {"limit": HUGE})

    assert response.json()["count"] == 1
    assert "limit=1000" not in (response.json()["next"] or "")


@pytest.mark.parametrize(
    ("url", "body", "errors"),
    [
        (
            "/api/v1/mac-pools/",
            {"name": "p1", "ranges": [{"from": "\u0000", "to": "x"}]},
            {"ranges": ["Range 1: '\x00' is not a MAC address like 56:6f:1a:2b:00:01."]},
        ),
        (
            "/api/v1/data-centers/",
            {"name": "x" * 100_000},
            {"name": ["Ensure this field has no more than 40 characters."]},
        ),
        ("/api/v1/data-centers/", {"name": "dc\x00"}, None),
        ("/api/v1/hosts/", {"cluster": "{cluster}", "name": "h", "address": "a", "agent_port": 1.5}, None),
        ("/api/v1/clusters/", {"name": "c", "data_center": "{dc}", "scheduling_properties": []}, None),
        ("/api/v1/clusters/", {"name": "c", "data_center": "{dc}", "scheduling_properties": {"\u0000": 1}}, None),
        ("/api/v1/vms/", {"name": "x", "cluster": "{cluster}", "memory_mib": 10**20}, None),
        ("/api/v1/disks/", {"alias": "d", "storage_domain": "{cluster}", "provisioned_size": 10**30}, None),
        ("/api/v1/vms/", {"name": ["a"], "cluster": {"id": "{cluster}"}}, None),
        ("/api/v1/vms/", {"name": "x", "cluster": "{cluster}", "pinned_hosts": "not-a-list"}, None),
    ],
)
def test_hostile_bodies_are_400(api_client, url, body, errors):
    cluster = make_cluster()

    def fill(value):
        if isinstance(value, str):
            return value.replace("{cluster}", str(cluster.pk)).replace("{dc}", str(cluster.data_center_id))
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    response = api_client.post(url, fill(body), format="json")

    assert response.status_code == 400, response.content[:500]
    if errors is not None:
        assert response.json() == errors
