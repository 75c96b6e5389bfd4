"""The live websocket (/ws/live/): authentication, per-object permission, what each
subscription receives through the Redis channel layer, and the replay after a reconnect."""

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from compute.choices import VmStatus
from inventory import publish
from inventory.audit import create_job, record_event
from inventory.choices import HostStatus
from portals import consumers
from portals.consumers import LiveConsumer
from tests.factories import make_cluster, make_host, make_storage_domain, make_vm

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _a_channel_layer_of_its_own():
    """Every test here runs in an event loop of its own: each gets a fresh layer (the
    consumers and the publisher look the layer up each time), so no subscription or queued
    message of an earlier test's consumer can reach it."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield


db = database_sync_to_async


async def connected(user):
    comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    comm.scope["user"] = user
    ok, _ = await comm.connect()
    assert ok
    return comm


async def subscribe(comm, *names, since=None) -> dict:
    message = {"subscribe": list(names)}
    if since is not None:
        message["since"] = since
    await comm.send_json_to(message)
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=5)
        frames.append(frame)
        if frame["type"] == "subscribed":
            return {"granted": frame["subscriptions"], "errors": [f for f in frames if f["type"] == "error"]}


async def next_frame(comm, type_: str, timeout: float = 5) -> dict:
    """The next frame of `type_` (other frames are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        frame = await comm.receive_json_from(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
        if frame["type"] == type_:
            return frame


async def silent(comm, timeout: float = 0.5) -> bool:
    await db(publish.flush)()
    return await comm.receive_nothing(timeout=timeout)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="bob-password-123")


async def test_a_websocket_needs_a_signed_in_user():
    comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    comm.scope["user"] = AnonymousUser()

    connected_, code = await comm.connect()

    assert (connected_, code) == (False, 4401)


async def test_a_user_without_rights_is_refused_each_object_and_the_streams(plain_user):
    vm = await db(make_vm)()
    comm = await connected(plain_user)

    answer = await subscribe(comm, f"vm.{vm.pk}", "events", "cluster.not-a-uuid", "tasks")

    assert answer["granted"] == []
    assert [(e["error"], e["subscription"]) for e in answer["errors"]] == [
        ("invalid", "cluster.not-a-uuid"),
        ("invalid", "tasks"),
        ("forbidden", f"vm.{vm.pk}"),
        ("forbidden", "events"),
    ]
    await db(record_event)("USER_ADD_VM", "Nobody may see this.", obj=vm)
    assert await silent(comm)
    await comm.disconnect()


async def test_a_user_granted_a_vm_watches_that_vm_only(plain_user):
    """Object permissions (inventory.permissions) decide for users who are not administrators."""
    from inventory.models import Role, RoleAction
    from inventory.services import grant_permission

    def grant():
        host = make_host()
        mine, other = make_vm(host.cluster, status=VmStatus.UP, run_on_host=host), make_vm(host.cluster)
        role = Role.objects.create(name="LiveWatcher")
        RoleAction.objects.create(role=role, action="vm.view")
        grant_permission(user=None, principal=plain_user, role=role, obj=mine)
        return mine, other, host

    mine, other, host = await db(grant)()
    comm = await connected(plain_user)

    answer = await subscribe(comm, f"vm.{mine.pk}", f"vm.{other.pk}", f"host.{host.pk}", "events")

    assert answer["granted"] == [f"vm.{mine.pk}"]
    assert sorted(e["subscription"] for e in answer["errors"]) == sorted(
        [f"vm.{other.pk}", f"host.{host.pk}", "events"]
    )
    await comm.disconnect()


async def test_a_vm_portal_user_follows_their_own_and_granted_vms_and_nothing_else(plain_user):
    """What the VM portal's pages subscribe to: an owned VM and one granted UserRole reach the
    user (statuses; stats of those VMs only, without their host's); a neighbour's VM does not."""
    from compute.services import set_vm_status
    from tests.factories import grant

    def inventory():
        host = make_host()
        owned = make_vm(host.cluster, name="mine", owner=plain_user, status=VmStatus.UP, run_on_host=host)
        shared = make_vm(host.cluster, name="shared", status=VmStatus.UP, run_on_host=host)
        grant(plain_user, "UserRole", shared)
        other = make_vm(host.cluster, name="other", status=VmStatus.UP, run_on_host=host)
        return host, owned, shared, other

    host, owned, shared, other = await db(inventory)()
    comm = await connected(plain_user)

    answer = await subscribe(comm, f"vm.{owned.pk}", f"vm.{shared.pk}", f"vm.{other.pk}", f"cluster.{host.cluster_id}")

    assert sorted(answer["granted"]) == sorted([f"vm.{owned.pk}", f"vm.{shared.pk}"])
    assert sorted(e["subscription"] for e in answer["errors"]) == sorted(
        [f"vm.{other.pk}", f"cluster.{host.cluster_id}"]
    )
    await db(set_vm_status)(other, VmStatus.POWERING_DOWN)
    assert await silent(comm)
    await db(set_vm_status)(owned, VmStatus.POWERING_DOWN)
    frame = await next_frame(comm, "vm.status")
    assert (frame["vm"]["id"], frame["vm"]["status"]) == (str(owned.pk), "powering_down")
    samples = [{"id": str(vm.pk), "cpu_pct": 5.0} for vm in (owned, shared, other)]
    payload = {"id": str(host.pk), "at": 3.0, "host": {"id": str(host.pk), "cpu_pct": 50.0}, "vms": samples}
    await db(publish.send_now)(f"host.{host.pk}", "host.stats", payload)
    frame = await next_frame(comm, "host.stats")
    assert ("host" in frame, sorted(s["id"] for s in frame["vms"])) == (False, sorted([str(owned.pk), str(shared.pk)]))
    await comm.disconnect()


async def test_can_watch_is_the_one_switch(plain_user, monkeypatch):
    vm = await db(make_vm)()
    monkeypatch.setattr(consumers, "can_watch", lambda user, kind, obj_id=None: kind == "vm")
    comm = await connected(plain_user)

    answer = await subscribe(comm, f"vm.{vm.pk}", "events")

    assert (answer["granted"], [e["subscription"] for e in answer["errors"]]) == ([f"vm.{vm.pk}"], ["events"])
    await comm.disconnect()


async def test_a_vm_status_change_reaches_the_vm_and_its_cluster_once(admin_user):
    from compute.services import set_vm_status

    host = await db(make_host)()
    vm = await db(make_vm)(host.cluster, name="web-9")
    comm = await connected(admin_user)
    assert (await subscribe(comm, f"vm.{vm.pk}", f"cluster.{vm.cluster_id}"))["errors"] == []

    def start():
        from django.db import transaction

        with transaction.atomic():
            set_vm_status(vm, VmStatus.WAIT_FOR_LAUNCH, host=host)

    await db(start)()

    frame = await next_frame(comm, "vm.status")
    assert frame["previous"] == {"status": "down", "run_on_host": None}
    assert {k: frame["vm"][k] for k in ("id", "name", "status", "run_on_host", "run_on_host_name")} == {
        "id": str(vm.pk),
        "name": "web-9",
        "status": "wait_for_launch",
        "run_on_host": str(host.pk),
        "run_on_host_name": host.name,
    }
    assert await silent(comm)  # the copy sent to the cluster's group was dropped
    await comm.disconnect()


async def test_a_cluster_subscription_gets_host_status_changes(admin_user):
    from inventory.services import set_host_status

    cluster = await db(make_cluster)()
    host = await db(make_host)(cluster, status=HostStatus.UP)
    comm = await connected(admin_user)
    await subscribe(comm, f"cluster.{cluster.pk}")

    await db(set_host_status)(host, HostStatus.NON_RESPONSIVE, detail="No heartbeat")

    frame = await next_frame(comm, "host.status")
    assert (frame["host"]["id"], frame["host"]["status"], frame["host"]["status_detail"]) == (
        str(host.pk),
        "non_responsive",
        "No heartbeat",
    )
    assert frame["previous"] == {"status": "up"}
    await comm.disconnect()


async def test_events_and_jobs_reach_their_streams(admin_user):
    vm = await db(make_vm)()
    comm = await connected(admin_user)
    await subscribe(comm, "events", "jobs")

    await db(record_event)("USER_ADD_VM", "VM added.", obj=vm)
    event = await next_frame(comm, "event.created")
    await db(create_job)("RunVm", "Launching", obj=vm, steps=["one"])
    job = await next_frame(comm, "job.updated")

    assert (event["event"]["code"], event["event"]["vm_id"]) == ("USER_ADD_VM", str(vm.pk))
    assert (job["job"]["action_type"], job["job"]["steps"][0]["description"]) == ("RunVm", "one")
    assert "ts" in event and "ts" in job
    await comm.disconnect()


async def test_stats_of_a_watched_vm_come_with_its_hosts_and_follow_it_to_another_host(admin_user):
    from compute.services import set_vm_status

    cluster = await db(make_cluster)()
    first, second = await db(make_host)(cluster), await db(make_host)(cluster)
    vm = await db(make_vm)(cluster, status=VmStatus.UP, run_on_host=first)
    other = await db(make_vm)(cluster, status=VmStatus.UP, run_on_host=first)
    comm = await connected(admin_user)
    await subscribe(comm, f"vm.{vm.pk}")

    def stats(host, *vms):
        samples = [{"id": str(v.pk), "cpu_pct": 12.5} for v in vms]
        host_sample = {"id": str(host.pk), "cpu_pct": 40.0}
        publish.send_now(
            f"host.{host.pk}", "host.stats", {"id": str(host.pk), "at": 1.0, "host": host_sample, "vms": samples}
        )

    await db(stats)(first, vm, other)
    frame = await next_frame(comm, "host.stats")
    assert (frame["id"], "host" in frame, frame["vms"]) == (str(first.pk), False, [{"id": str(vm.pk), "cpu_pct": 12.5}])

    await db(set_vm_status)(vm, VmStatus.MIGRATING, host=second)
    await next_frame(comm, "vm.status")
    await db(stats)(second, vm)
    frame = await next_frame(comm, "host.stats")
    assert frame["id"] == str(second.pk)
    await db(stats)(first, other)  # nothing watched there any more
    assert await silent(comm)
    await comm.disconnect()


async def test_a_host_subscription_gets_the_hosts_own_sample(admin_user):
    host = await db(make_host)()
    comm = await connected(admin_user)
    await subscribe(comm, f"host.{host.pk}")

    payload = {"id": str(host.pk), "at": 2.0, "host": {"id": str(host.pk), "cpu_pct": 3.0}, "vms": [{"id": "x"}]}
    await db(publish.send_now)(f"host.{host.pk}", "host.stats", payload)

    frame = await next_frame(comm, "host.stats")
    assert (frame["host"], "vms" in frame) == ({"id": str(host.pk), "cpu_pct": 3.0}, False)
    await comm.disconnect()


async def test_a_storage_domain_change_reaches_its_subscribers(admin_user):
    from storage.services import update_storage_domain

    sd = await db(make_storage_domain)()
    comm = await connected(admin_user)
    await subscribe(comm, f"storage.{sd.pk}")

    await db(update_storage_domain)(sd, user=admin_user, description="fast disks")

    frame = await next_frame(comm, "storage.status")
    assert (frame["storage_domain"]["id"], frame["storage_domain"]["free_bytes"]) == (str(sd.pk), sd.free_bytes)
    await comm.disconnect()


async def test_after_a_reconnect_the_page_catches_up(admin_user):
    """The page was away (an engine restart): events, job changes and statuses since its last frame."""
    host = await db(make_host)()
    vm = await db(make_vm)(host.cluster, status=VmStatus.UP, run_on_host=host)
    last_seen = timezone.now() - dt.timedelta(minutes=5)
    await db(record_event)("USER_ADD_VM", "Seen before the outage.", obj=vm)

    def backdate():
        from inventory.models import Event

        Event.objects.update(time=last_seen - dt.timedelta(minutes=1))

    await db(backdate)()
    await db(record_event)("VM_DOWN", "Missed while away.", obj=vm)
    job = await db(create_job)("RunVm", "Missed job", obj=vm)
    comm = await connected(admin_user)

    await comm.send_json_to(
        {"subscribe": ["events", "jobs", f"vm.{vm.pk}", f"host.{host.pk}"], "since": last_seen.isoformat()}
    )
    frames = []
    while not frames or frames[-1]["type"] != "caught_up":
        frames.append(await comm.receive_json_from(timeout=5))

    replayed = [(f["type"], f.get("event", f.get("job", f.get("vm", f.get("host", {})))).get("id")) for f in frames]
    assert replayed[0] == ("subscribed", None)
    assert sorted(replayed[1:-1], key=str) == sorted(
        [
            ("vm.status", str(vm.pk)),
            ("host.status", str(host.pk)),
            ("job.updated", str(job.pk)),
            ("event.created", frames[-2]["event"]["id"]),
        ],
        key=str,
    )
    assert frames[-2]["event"]["message"] == "Missed while away."
    vm_frame = next(f for f in frames if f["type"] == "vm.status")
    assert (vm_frame["vm"]["status"], vm_frame["vm"]["run_on_host_name"], vm_frame["previous"]) == (
        "up",
        host.name,
        None,
    )
    await comm.disconnect()


async def test_a_cluster_that_changed_too_much_asks_for_a_resync(admin_user, monkeypatch):
    monkeypatch.setattr(consumers, "MAX_REPLAY_CLUSTER_ROWS", 1)
    cluster = await db(make_cluster)()
    await db(make_vm)(cluster)
    await db(make_vm)(cluster)
    comm = await connected(admin_user)

    await comm.send_json_to({"subscribe": [f"cluster.{cluster.pk}"], "since": timezone.now().isoformat()})

    assert (await next_frame(comm, "resync"))["detail"]
    assert (await comm.receive_json_from(timeout=5))["type"] == "caught_up"
    await comm.disconnect()


async def test_a_malformed_message_gets_an_error_frame(admin_user):
    comm = await connected(admin_user)

    await comm.send_json_to({"hello": 1})
    first = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"subscribe": ["events"], "since": "yesterday"})
    second = await comm.receive_json_from(timeout=5)
    await comm.send_json_to(
        {"subscribe": [f"vm.{i:08d}-0000-0000-0000-000000000000" for i in range(consumers.MAX_SUBSCRIPTIONS + 1)]}
    )
    third = await comm.receive_json_from(timeout=5)

    assert [f["error"] for f in (first, second, third)] == ["bad_request", "bad_request", "too_many"]
    await comm.disconnect()


async def test_unsubscribe_stops_the_stream(admin_user):
    comm = await connected(admin_user)
    await subscribe(comm, "events")

    await comm.send_json_to({"unsubscribe": ["events"]})
    await asyncio.sleep(0.2)
    await db(record_event)("USER_ADD_VM", "Not for this page any more.")

    assert await silent(comm)
    await comm.disconnect()


async def test_a_migrations_progress_reaches_the_vms_watchers_only(admin_user):
    vm, other = await db(make_vm)(status=VmStatus.UP), await db(make_vm)(status=VmStatus.UP)
    comm = await connected(admin_user)
    await subscribe(comm, f"vm.{vm.pk}")

    figures = {"id": str(vm.pk), "job": "j1", "target": "h2", "state": "running", "progress": 40}
    await db(publish.send_now)(f"vm.{other.pk}", "vm.migration", {**figures, "id": str(other.pk)})
    await db(publish.send_now)(f"vm.{vm.pk}", "vm.migration", figures)

    frame = await next_frame(comm, "vm.migration")
    assert frame["migration"] == figures
    assert await silent(comm)
    await comm.disconnect()
