"""Fuzz every /api/v1/ operation from the live OpenAPI schema (schemathesis over WSGI).

Schemathesis generates valid and invalid requests (bodies, query strings, path ids) for
each operation of `/api/schema/`, and each one is sent to Django's WSGI application inside
the test's transaction, authenticated with an admin token. For every response:

- no 5xx;
- a 4xx wrote nothing: the row count of every table is what it was before the request,
  and no work (a Celery task, a websocket message) was queued to run on commit.

Path ids and the ids in bodies are mostly swapped for real objects of a small inventory,
so requests reach the services rather than stopping at "not found". Bounded examples per
operation (OLVM_FUZZ_EXAMPLES, default 5) keep the run within a few minutes on 2 cores.
"""

import os
import re
import zlib

import pytest
import schemathesis
from django.apps import apps
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, connection
from hypothesis import HealthCheck, Phase, settings
from rest_framework.authtoken.models import Token

from compute.models import InstanceType, Snapshot, Template
from inventory.audit import create_job, record_event
from inventory.models import Role
from inventory.services import set_quota
from networking.models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile
from storage.models import DiskAttachment
from tests.factories import (
    default_mac_pool,
    grant,
    make_cluster,
    make_data_center,
    make_disk,
    make_host,
    make_storage_domain,
    make_user,
    make_vm,
)

EXAMPLES = int(os.environ.get("OLVM_FUZZ_EXAMPLES", "5"))

CONFIG = schemathesis.Config.from_dict(
    {
        # Authentication is the token header below, not generated session cookies (a garbage
        # `sessionid` cookie is a framework matter: see tests/api/test_auth_and_errors.py).
        "generation": {"with-security-parameters": False},
        # The coverage phase sends every boundary value of every parameter: kept for POST and
        # PATCH bodies; over the many filters of a list it multiplies into thousands of GETs,
        # and PUT goes through PATCH's validation: those get the random phase only.
        "operations": [
            {"include-method": method, "phases": {"coverage": {"enabled": False}}} for method in ("GET", "PUT")
        ],
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=CONFIG)
# Bodies as JSON only: the form and multipart encodings the schema also lists (for the
# browsable API's forms) cannot carry the non-object bodies the negative mode generates.
for _path in schema.raw_schema["paths"].values():
    for _operation in _path.values():
        _content = _operation.get("requestBody", {}).get("content")
        if _content:
            for _media_type in set(_content) - {"application/json"}:
                del _content[_media_type]


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def wsgi_requests_keep_the_test_transaction():
    """Django closes the connection at the end of each request (request_finished); the test's
    transaction must outlive the requests, as Django's own test client arranges."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(db, admin_user) -> dict[str, list[str]]:
    """A small inventory; resource name (as in the URL) -> ids of real objects."""
    dc = make_data_center()
    cluster = make_cluster(dc)
    hosts = [make_host(cluster, status="up"), make_host(cluster, status="maintenance")]
    sd = make_storage_domain(dc)
    template = Template.objects.create(name="fuzz-template", cluster=cluster)
    vms = [make_vm(cluster), make_vm(cluster, status="up", run_on_host=hosts[0])]
    disks = [make_disk(sd), make_disk(sd)]
    attachment = DiskAttachment.objects.create(vm=vms[0], disk=disks[0], bootable=True)
    network = LogicalNetwork.objects.create(data_center=dc, name="fuzznet", vlan_tag=42)
    profile = VnicProfile.objects.create(network=network, name="fuzzprofile")
    ClusterNetwork.objects.create(cluster=make_cluster(dc), network=network)
    pool = MacPool.objects.create(name="fuzzpool", ranges=[{"from": "56:6f:00:00:00:00", "to": "56:6f:00:00:00:ff"}])
    nic = VmNic.objects.create(vm=vms[0], name="nic1", mac_pool=default_mac_pool(), mac="56:6f:1a:2b:00:10")
    snapshot = Snapshot.objects.create(vm=vms[0], description="fuzz")
    event = record_event("FUZZ", "A fuzz event.", obj=vms[0])
    job = create_job("RunVm", "A fuzz job", obj=vms[0], steps=["one"])
    alice = make_user("fuzz-alice")

    def ids(*objs):
        return [str(o.pk) for o in objs]

    return {
        "data-centers": ids(dc, make_data_center()),
        "clusters": ids(cluster, make_cluster(dc)),
        "hosts": ids(*hosts),
        "vms": ids(*vms),
        "templates": ids(template),
        "instance-types": ids(*InstanceType.objects.all()[:2]),
        "snapshots": ids(snapshot),
        "storage-domains": ids(sd, make_storage_domain(dc)),
        "disks": ids(*disks),
        "disk-attachments": ids(attachment),
        "networks": ids(network, LogicalNetwork.objects.get(data_center=dc, is_management=True)),
        "cluster-networks": ids(*ClusterNetwork.objects.filter(network__data_center=dc)),
        "vnic-profiles": ids(profile),
        "mac-pools": ids(pool),
        "nics": ids(nic),
        "events": ids(event),
        "jobs": ids(job),
        "users": ids(admin_user),
        "roles": ids(*Role.objects.all()[:3]),
        "permissions": ids(grant(alice, "UserRole", vms[0]), grant(alice, "PowerUserRole")),
        "quotas": ids(set_quota(user=None, principal=alice, max_vcpus=4)),
    }


# Body keys naming another object, and the resource their ids come from.
REFERENCES = {
    "data_center": "data-centers",
    "cluster": "clusters",
    "clusters": "clusters",
    "vm": "vms",
    "template": "templates",
    "base_template": "templates",
    "instance_type": "instance-types",
    "storage_domain": "storage-domains",
    "disk": "disks",
    "network": "networks",
    "profile": "vnic-profiles",
    "mac_pool": "mac-pools",
    "pinned_hosts": "hosts",
    "role": "roles",
}


def pick(value, ids: list[str]):
    """Mostly a real id in place of a generated one (4 times in 5), chosen from the value."""
    digest = zlib.crc32(repr(value).encode())
    if not ids or digest % 5 == 0:
        return value
    return ids[digest % len(ids)]


def use_real_ids(case, world: dict[str, list[str]]) -> None:
    resource = re.match(r"^/api/v1/([^/{]+)", case.operation.path)
    if case.path_parameters and "id" in case.path_parameters and resource:
        case.path_parameters["id"] = pick(case.path_parameters["id"], world.get(resource.group(1), []))
    if isinstance(case.body, dict):
        for key, target in REFERENCES.items():
            value = case.body.get(key)
            if isinstance(value, str):
                case.body[key] = pick(value, world[target])
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                case.body[key] = [pick(v, world[target]) for v in value]


def table_counts() -> tuple[int, ...]:
    """The row count of every table of every model, in one query."""
    tables = sorted({m._meta.db_table for m in apps.get_models(include_auto_created=True) if m._meta.managed})
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {connection.ops.quote_name(t)})" for t in tables))
        return tuple(cursor.fetchone())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db
def test_api_fuzz(case, world, admin_user, wsgi_requests_keep_the_test_transaction):
    token, _ = Token.objects.get_or_create(user=admin_user)
    use_real_ids(case, world)
    before = table_counts()
    queued = len(connection.run_on_commit)

    response = case.call(headers={"Authorization": f"Token {token.key}"})

    reproduce = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"
    assert response.status_code < 500, f"{response.status_code} for {reproduce}: {response.text[:2000]}"
    if 400 <= response.status_code < 500:
        assert table_counts() == before, f"{response.status_code} left rows behind: {reproduce}"
        assert len(connection.run_on_commit) == queued, f"{response.status_code} left work queued: {reproduce}"
