"""Websocket consumers: thin, authenticated from scope, no synchronous ORM.

`LiveConsumer` (`/ws/live/`) is the one connection of a portal page. Protocol, in JSON frames:

page -> engine
  {"subscribe": ["vm.<id>", "host.<id>", "cluster.<id>", "storage.<id>", "events", "jobs"],
   "since": "<ISO time>"}            `since` (optional): the `ts` of the last frame the page saw
  {"unsubscribe": [...]}

engine -> page (every frame has `type` and `ts`, the engine's time when it was sent)
  {"type": "subscribed", "subscriptions": [...]}     what was granted by this subscribe
  {"type": "error", "error": "forbidden" | "invalid" | "too_many" | "bad_request", "subscription": ..., "detail": ...}
  {"type": "vm.status", "vm": {...}, "previous": {"status", "run_on_host"} | null}
  {"type": "vm.guest", "vm": {"id", "guest_ips", ...}}
  {"type": "vm.migration", "migration": {"id", "job", "target", "state", "progress", "data_total", ...}}
  {"type": "host.status", "host": {...}, "previous": {"status"} | null}
  {"type": "storage.status", "storage_domain": {...}}
  {"type": "host.stats", "id": <host id>, "at": <epoch s>, "host": {...}?, "vms": [{...}]?}
  {"type": "event.created", "event": {...}}            {"type": "job.updated", "job": {...}}
  {"type": "caught_up"}                               the replay after `since` is complete
  {"type": "resync", "detail": ...}                   too much changed to replay: reload the page

Every object subscription is checked with `portals.live_access.can_watch` (a refused one gets
an error frame, the others are granted) and joins the Channels group of the same name, where
the services publish after commit: `vm.<id>` and `cluster.<id>` get VM status changes, `host.<id>`
and `cluster.<id>` host status changes, `host.<id>` the host's stats (inventory/ingest.py),
`storage.<id>` the domain's space and status, `events` and `jobs` the audit streams. Payloads are
the REST serializers' (their status fields only for objects). A VM's stats arrive with its
host's: the consumer also joins the group of the host each watched VM runs on (moving with
the VM) and passes on only the samples of watched VMs. `previous` is null in a replayed frame.

With `since`, the consumer replays what the page may have missed (a restarted engine, a
network outage): the events and job changes since then (a few seconds of overlap, bounded),
the current state of every watched object, and what changed in a watched cluster (bounded;
beyond, `resync`). Frames may repeat: pages apply them idempotently.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .live_access import can_watch, parse

EVENTS_GROUP = "events"
JOBS_GROUP = "jobs"
MAX_SUBSCRIPTIONS = 1000  # the dashboard watches every cluster
CATCH_UP_OVERLAP = dt.timedelta(seconds=10)  # a change stamped before it committed is still replayed
MAX_REPLAY_EVENTS = 200
MAX_REPLAY_JOBS = 100
MAX_REPLAY_CLUSTER_ROWS = 500  # VMs or hosts of watched clusters changed since; more -> resync
RECENT_KEYS = 512  # status frames remembered to drop the copy arriving through a second group


def now_text() -> str:
    return timezone.now().astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """The live stream of a portal page: see the module's docstring for the protocol."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.subscriptions: set[str] = set()
        self.vm_hosts: dict[str, str | None] = {}  # watched VM id -> the host whose stats carry it
        self.groups_in: set[str] = set()
        self.recent: OrderedDict = OrderedDict()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_in", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def forward(self, frame: dict) -> None:
        frame["ts"] = now_text()
        await self.send_json(frame)

    async def error(self, error: str, detail: str, subscription=None) -> None:
        frame = {"type": "error", "error": error, "detail": detail}
        if subscription is not None:
            frame["subscription"] = subscription
        await self.forward(frame)

    # What the page asks --------------------------------------------------------------------

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or not ({"subscribe", "unsubscribe"} & set(content)):
            await self.error("bad_request", 'Send {"subscribe": [...], "since": "<time>"} or {"unsubscribe": [...]}.')
            return
        if "unsubscribe" in content:
            await self.unsubscribe(content["unsubscribe"])
        if "subscribe" in content:
            await self.subscribe(content["subscribe"], content.get("since"))

    async def subscribe(self, names, since) -> None:
        if not isinstance(names, list):
            await self.error("bad_request", "subscribe takes a list of subscriptions.")
            return
        since_time = None
        if since is not None:
            since_time = parse_datetime(since) if isinstance(since, str) else None
            if since_time is None or timezone.is_naive(since_time):
                await self.error("bad_request", "since must be an ISO 8601 time with its offset (a frame's ts).")
                return
        wanted: dict[str, tuple] = {}
        for name in names:
            parsed = parse(name)
            if parsed is None:
                await self.error("invalid", "Not a subscription: vm.<id>, host.<id>, cluster.<id>, storage.<id>, "
                                 "events or jobs.", subscription=str(name)[:100])  # fmt: skip
            else:
                wanted[name] = parsed
        if len(self.subscriptions | set(wanted)) > MAX_SUBSCRIPTIONS:
            await self.error("too_many", f"At most {MAX_SUBSCRIPTIONS} subscriptions per connection.")
            return
        granted, vm_hosts = await self.check(wanted)
        for name in wanted:
            if name not in granted:
                await self.error(
                    "forbidden", "You may not watch this object (or it does not exist).", subscription=name
                )
        self.subscriptions |= granted
        self.vm_hosts.update(vm_hosts)
        await self.sync_groups()  # joined before the replay is read: nothing falls in between
        await self.forward({"type": "subscribed", "subscriptions": sorted(granted)})
        if since_time is not None:
            for frame in await self.catch_up(granted, since_time):
                await self.forward(frame)
            await self.forward({"type": "caught_up"})

    async def unsubscribe(self, names) -> None:
        if not isinstance(names, list):
            await self.error("bad_request", "unsubscribe takes a list of subscriptions.")
            return
        for name in names:
            if name in self.subscriptions:
                self.subscriptions.discard(name)
                if isinstance(name, str) and name.startswith("vm."):
                    self.vm_hosts.pop(name[3:], None)
        await self.sync_groups()

    async def sync_groups(self) -> None:
        wanted = self.subscriptions | {f"host.{host}" for host in self.vm_hosts.values() if host}
        for group in wanted - self.groups_in:
            await self.channel_layer.group_add(group, self.channel_name)
        for group in self.groups_in - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_in = wanted

    @database_sync_to_async
    def check(self, wanted: dict[str, tuple]) -> tuple[set[str], dict[str, str | None]]:
        """The subscriptions `can_watch` grants, and the host each granted VM runs on."""
        from compute.models import VirtualMachine

        granted = {name for name, (kind, obj_id) in wanted.items() if can_watch(self.user, kind, obj_id)}
        vm_ids = [wanted[name][1] for name in granted if wanted[name][0] == "vm"]
        hosts = {}
        if vm_ids:
            rows = VirtualMachine.objects.filter(pk__in=vm_ids).values_list("pk", "run_on_host_id")
            hosts = {str(vm_id): str(host_id) if host_id else None for vm_id, host_id in rows}
        return granted, hosts

    @database_sync_to_async
    def catch_up(self, granted: set[str], since: dt.datetime) -> list[dict]:
        """What the page may have missed since `since` (see the module docstring)."""
        from compute.models import VirtualMachine
        from compute.services import vm_payload
        from inventory.audit import event_payload, job_payload
        from inventory.models import Event, Host, Job
        from inventory.services import host_payload
        from storage.models import StorageDomain
        from storage.services import storage_domain_payload

        start = since - CATCH_UP_OVERLAP
        ids: dict[str, list[str]] = {"vm": [], "host": [], "cluster": [], "storage": []}
        for name in granted:
            kind, _, obj_id = name.partition(".")
            if kind in ids:
                ids[kind].append(obj_id)
        frames: list[dict] = []
        if ids["cluster"]:
            vms = list(
                VirtualMachine.objects.filter(cluster_id__in=ids["cluster"], updated_at__gte=start)
                .select_related("run_on_host")
                .order_by("updated_at")[: MAX_REPLAY_CLUSTER_ROWS + 1]
            )
            hosts = list(
                Host.objects.filter(cluster_id__in=ids["cluster"], updated_at__gte=start).order_by("updated_at")[
                    : MAX_REPLAY_CLUSTER_ROWS + 1
                ]
            )
            if len(vms) > MAX_REPLAY_CLUSTER_ROWS or len(hosts) > MAX_REPLAY_CLUSTER_ROWS:
                return [{"type": "resync", "detail": "Too much changed while the page was away."}]
            frames += [{"type": "host.status", "host": host_payload(host), "previous": None} for host in hosts]
            frames += [{"type": "vm.status", "vm": vm_payload(vm), "previous": None} for vm in vms]
        if ids["vm"]:
            vms = VirtualMachine.objects.filter(pk__in=ids["vm"]).select_related("run_on_host")
            frames += [{"type": "vm.status", "vm": vm_payload(vm), "previous": None} for vm in vms]
        if ids["host"]:
            frames += [
                {"type": "host.status", "host": host_payload(host), "previous": None}
                for host in Host.objects.filter(pk__in=ids["host"])
            ]
        if ids["storage"]:
            frames += [
                {"type": "storage.status", "storage_domain": storage_domain_payload(sd)}
                for sd in StorageDomain.objects.filter(pk__in=ids["storage"])
            ]
        if "jobs" in granted:
            jobs = Job.objects.filter(updated_at__gte=start).prefetch_related("steps").order_by("-updated_at")
            frames += [{"type": "job.updated", "job": job_payload(job)} for job in reversed(jobs[:MAX_REPLAY_JOBS])]
        if "events" in granted:
            events = Event.objects.filter(time__gte=start).order_by("-time", "-id")[:MAX_REPLAY_EVENTS]
            frames += [{"type": "event.created", "event": event_payload(event)} for event in reversed(events)]
        return frames

    # What the groups send ----------------------------------------------------------------------

    def seen(self, key: tuple) -> bool:
        """True for a status change already passed on (it reaches us through two groups)."""
        if key in self.recent:
            return True
        self.recent[key] = True
        if len(self.recent) > RECENT_KEYS:
            self.recent.popitem(last=False)
        return False

    async def event_created(self, message: dict) -> None:
        if EVENTS_GROUP in self.subscriptions:
            await self.forward({"type": "event.created", "event": message["payload"]})

    async def job_updated(self, message: dict) -> None:
        if JOBS_GROUP in self.subscriptions:
            await self.forward({"type": "job.updated", "job": message["payload"]})

    async def vm_status(self, message: dict) -> None:
        vm = message["payload"]
        watched = f"vm.{vm['id']}" in self.subscriptions
        if watched and self.vm_hosts.get(vm["id"]) != vm.get("run_on_host"):
            self.vm_hosts[vm["id"]] = vm.get("run_on_host")  # its stats now come with another host's
            await self.sync_groups()
        if not watched and f"cluster.{vm.get('cluster')}" not in self.subscriptions:
            return
        if not self.seen(("vm", vm["id"], vm.get("updated_at"), vm.get("status"))):
            await self.forward({"type": "vm.status", "vm": vm, "previous": message.get("previous")})

    async def vm_guest(self, message: dict) -> None:
        facts = message["payload"]
        if f"vm.{facts.get('id')}" in self.subscriptions:
            await self.forward({"type": "vm.guest", "vm": facts})

    async def vm_migration(self, message: dict) -> None:
        figures = message["payload"]
        if f"vm.{figures.get('id')}" in self.subscriptions:
            await self.forward({"type": "vm.migration", "migration": figures})

    async def host_status(self, message: dict) -> None:
        host = message["payload"]
        if (
            f"host.{host['id']}" not in self.subscriptions
            and f"cluster.{host.get('cluster')}" not in self.subscriptions
        ):
            return
        if not self.seen(("host", host["id"], host.get("updated_at"), host.get("status"))):
            await self.forward({"type": "host.status", "host": host, "previous": message.get("previous")})

    async def storage_status(self, message: dict) -> None:
        sd = message["payload"]
        if f"storage.{sd['id']}" in self.subscriptions:
            await self.forward({"type": "storage.status", "storage_domain": sd})

    async def host_stats(self, message: dict) -> None:
        stats = message["payload"]
        host_id = stats.get("id")
        frame = {"type": "host.stats", "id": host_id, "at": stats.get("at")}
        if f"host.{host_id}" in self.subscriptions:
            frame["host"] = stats.get("host")
        subscriptions = self.subscriptions
        vms = [sample for sample in stats.get("vms") or () if f"vm.{sample.get('id')}" in subscriptions]
        if vms:
            frame["vms"] = vms
        if "host" in frame or vms:
            await self.forward(frame)


class EventStreamConsumer(LiveConsumer):
    """`/ws/events/`, kept for older pages: administrators only, subscribed to the event and
    job streams on connect."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        await super().connect()
        self.subscriptions = {EVENTS_GROUP, JOBS_GROUP}
        await self.sync_groups()
