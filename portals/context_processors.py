"""What every portal page shows around its content: the system tree and the bottom panes
(administration portal), and the live updates' settings (both portals).

Both are computed lazily, on first use by `base.html`, and with a fixed number of
queries whatever the size of the inventory. The tree of a page holds the data centers and
their clusters only (two queries); the hosts of a cluster and the VMs of a host are
fetched by htmx when the node is expanded (`cluster_hosts` and `host_vms`, one query
each, a bounded page of rows), except along the branch of the object a detail page shows
(`focus_tree_on`): that cluster's first hosts and that host's first VMs, one query each.
The panes take two queries (the events pane shows what its filter, kept in a cookie, lets
through: a minimum severity and the object of the page or a kind of object).
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import unquote

from django.db.models import Case, Count, IntegerField, Value, When, Window
from django.urls import reverse
from django.utils import timezone

from compute.choices import VmStatus
from compute.models import VirtualMachine
from compute.statemachine import RUNNING
from inventory.choices import EventSeverity, HostStatus, JobStatus, ObjectType
from inventory.models import Cluster, DataCenter, Event, Host, Job

from .queries import count_of
from .tables import OBJECT_URLS
from .templatetags.olvm import SEVERITY_STYLES, STATUS_STYLES

TREE_HOSTS_PER_CLUSTER = 50
TREE_VMS_PER_HOST = 20
PANE_EVENTS = 20
PANE_JOBS = 20

# The top navigation: (menu label, icon, [(item label, URL name, icon), ...]).
NAVIGATION = [
    (
        "Compute",
        "cpu",
        [
            ("Data Centers", "portals:datacenter-list", "building"),
            ("Clusters", "portals:cluster-list", "diagram-3"),
            ("Hosts", "portals:host-list", "hdd-rack"),
            ("Virtual Machines", "portals:vm-list", "display"),
            ("Templates", "portals:template-list", "layers"),
        ],
    ),
    (
        "Network",
        "diagram-2",
        [
            ("Networks", "portals:network-list", "ethernet"),
            ("vNIC Profiles", "portals:vnicprofile-list", "plug"),
        ],
    ),
    (
        "Storage",
        "database",
        [
            ("Domains", "portals:storagedomain-list", "database"),
            ("Disks", "portals:disk-list", "device-hdd"),
        ],
    ),
    (
        "Administration",
        "gear",
        [
            ("Users", "portals:user-list", "people"),
            ("System Permissions", "portals:permission-list", "shield-lock"),
            ("Events", "portals:event-list", "journal-text"),
            ("Tasks", "portals:job-list", "list-task"),
        ],
    ),
]


@dataclass
class HostNode:
    """A host of the tree; `vms` is None until its VMs are read (on expansion)."""

    host: Host
    vm_count: int = 0
    vms: list[VirtualMachine] | None = None

    @property
    def more(self) -> int:
        return self.vm_count - len(self.vms or ())


@dataclass
class ClusterNode:
    """A cluster of the tree; `hosts` is None until its hosts are read (on expansion)."""

    cluster: Cluster
    hosts: list[HostNode] | None = None
    host_count: int = 0

    @property
    def more(self) -> int:
        return self.host_count - len(self.hosts or ())


@dataclass
class DataCenterNode:
    data_center: DataCenter
    clusters: list[ClusterNode] = field(default_factory=list)


@dataclass(frozen=True)
class TreeFocus:
    """The branch of the tree to show expanded: the object of the page and its parents."""

    data_center_id: uuid.UUID | None = None  # always open: only marked as the current node
    cluster_id: uuid.UUID | None = None
    host_id: uuid.UUID | None = None
    vm_id: uuid.UUID | None = None


def tree_focus(obj) -> TreeFocus | None:
    """The branch of a data center, cluster, host or VM (None for other objects)."""
    if isinstance(obj, DataCenter):
        return TreeFocus(data_center_id=obj.pk)
    if isinstance(obj, Cluster):
        return TreeFocus(cluster_id=obj.pk)
    if isinstance(obj, Host):
        return TreeFocus(cluster_id=obj.cluster_id, host_id=obj.pk)
    if isinstance(obj, VirtualMachine):
        host = obj.run_on_host if VirtualMachine.run_on_host.is_cached(obj) else None
        if host is not None:
            return TreeFocus(cluster_id=host.cluster_id, host_id=host.pk, vm_id=obj.pk)
        return TreeFocus(cluster_id=obj.cluster_id, vm_id=obj.pk)
    return None


def focus_tree_on(request, obj) -> None:
    """Show the tree of this request's page expanded along `obj`'s branch."""
    request.olvm_tree_focus = tree_focus(obj)


def _first(focus_id) -> list:
    """An ordering that puts the row `focus_id` first, so that a page of rows always holds it."""
    if focus_id is None:
        return []
    return [Case(When(pk=focus_id, then=Value(0)), default=Value(1), output_field=IntegerField())]


def cluster_hosts(cluster_id, *, limit: int | None = None, focus_id=None) -> tuple[list[HostNode], int]:
    """The first `limit` (TREE_HOSTS_PER_CLUSTER) hosts of a cluster by name, and the host
    `focus_id` whatever its rank, with how many VMs run on each, and how many hosts the
    cluster has: one query."""
    limit = limit or TREE_HOSTS_PER_CLUSTER
    rows = (
        Host.objects.filter(cluster_id=cluster_id)
        .only("id", "name", "status", "cluster_id")
        .annotate(vm_count=count_of(VirtualMachine, "run_on_host"), total=Window(Count("*")))
        .order_by(*_first(focus_id), "name", "id")[:limit]
    )
    hosts = sorted(rows, key=lambda host: (host.name, str(host.pk)))
    total = hosts[0].total if hosts else 0
    return [HostNode(host, vm_count=host.vm_count) for host in hosts], total


def host_vms(host_id, *, limit: int | None = None, focus_id=None) -> tuple[list[VirtualMachine], int]:
    """The first `limit` (TREE_VMS_PER_HOST) VMs running on a host by name, and the VM
    `focus_id` whatever its rank, and how many run there: one query."""
    limit = limit or TREE_VMS_PER_HOST
    rows = (
        VirtualMachine.objects.filter(run_on_host_id=host_id)
        .only("id", "name", "status", "run_on_host_id")
        .annotate(total=Window(Count("*")))
        .order_by(*_first(focus_id), "name", "id")[:limit]
    )
    vms = sorted(rows, key=lambda vm: (vm.name, str(vm.pk)))
    return vms, (vms[0].total if vms else 0)


def system_tree(focus: TreeFocus | None = None) -> list[DataCenterNode]:
    """Data centers -> clusters, in two queries; with a focus, also the first hosts of its
    cluster and the first VMs of its host (one query each)."""
    dcs = {dc.pk: DataCenterNode(dc) for dc in DataCenter.objects.only("id", "name", "status")}
    clusters = {}
    for cluster in Cluster.objects.only("id", "name", "data_center_id"):
        clusters[cluster.pk] = node = ClusterNode(cluster)
        if cluster.data_center_id in dcs:
            dcs[cluster.data_center_id].clusters.append(node)
    cluster_node = clusters.get(focus.cluster_id) if focus is not None else None
    if cluster_node is not None:
        cluster_node.hosts, cluster_node.host_count = cluster_hosts(cluster_node.cluster.pk, focus_id=focus.host_id)
        for host_node in cluster_node.hosts:
            if host_node.host.pk == focus.host_id:
                host_node.vms, host_node.vm_count = host_vms(focus.host_id, focus_id=focus.vm_id)
    return list(dcs.values())


# The events pane's filter -------------------------------------------------------------------

PANE_FILTER_COOKIE = "olvm_pane_events"
SEVERITY_ORDER = [EventSeverity.NORMAL, EventSeverity.WARNING, EventSeverity.ERROR, EventSeverity.ALERT]
# The Event field naming the object of a page of each kind (live.js filters new events the same way).
PAGE_OBJECT_FIELDS = {
    "vm": "vm_id",
    "host": "host_id",
    "cluster": "cluster_id",
    "storage": "storage_domain_id",
    "data_center": "data_center_id",
    "object": "object_id",
}


@dataclass(frozen=True)
class PaneFilter:
    """What the events pane shows: `severity` = the lowest shown ("" all); `scope` = "" (every
    object), "page" (the object of the page, on a detail page) or an ObjectType code."""

    severity: str = ""
    scope: str = ""

    @classmethod
    def of(cls, severity: str = "", scope: str = "") -> "PaneFilter":
        """Unknown values count as "no filter"."""
        severity = severity if severity in SEVERITY_ORDER[1:] else ""
        scope = scope if scope == "page" or scope in ObjectType.values else ""
        return cls(severity, scope)

    @classmethod
    def from_request(cls, request) -> "PaneFilter":
        severity, _, scope = unquote(request.COOKIES.get(PANE_FILTER_COOKIE, "")).partition("|")
        return cls.of(severity, scope)

    def apply(self, events, page_object: tuple[str, uuid.UUID] | None):
        if self.severity:
            events = events.filter(severity__in=SEVERITY_ORDER[SEVERITY_ORDER.index(self.severity) :])
        if self.scope == "page" and page_object is not None:
            events = events.filter(**{PAGE_OBJECT_FIELDS[page_object[0]]: page_object[1]})
        elif self.scope and self.scope != "page":
            events = events.filter(object_type=self.scope)
        return events


def page_object(obj) -> tuple[str, uuid.UUID]:
    """(kind, id) of the object a detail page shows: how its events and live updates are found."""
    from storage.models import StorageDomain

    kinds = {
        VirtualMachine: "vm",
        Host: "host",
        Cluster: "cluster",
        StorageDomain: "storage",
        DataCenter: "data_center",
    }
    return kinds.get(type(obj), "object"), obj.pk


def show_page_object(request, obj) -> None:
    """Note the object of this request's detail page (the events pane's "this object" filter)."""
    request.olvm_page_object = page_object(obj)


def pane_events(limit: int = PANE_EVENTS, pane_filter: PaneFilter | None = None, page_obj=None) -> list[Event]:
    events = Event.objects.order_by("-time", "-id")
    if pane_filter is not None:
        events = pane_filter.apply(events, page_obj)
    return list(events[:limit])


def pane_jobs(limit: int = PANE_JOBS) -> list[Job]:
    """Active Jobs first, then the most recent ended ones."""
    active_first = Case(When(status=JobStatus.STARTED, then=Value(0)), default=Value(1), output_field=IntegerField())
    return list(Job.objects.order_by(active_first, "-started_at")[:limit])


class PortalChrome:
    """The lazily computed parts of `base.html` for one request."""

    def __init__(self, request):
        self.request = request

    @cached_property
    def tree_focus(self) -> TreeFocus | None:
        return getattr(self.request, "olvm_tree_focus", None)

    @cached_property
    def tree(self) -> list[DataCenterNode]:
        return system_tree(self.tree_focus)

    @cached_property
    def page_object(self) -> tuple[str, uuid.UUID] | None:
        return getattr(self.request, "olvm_page_object", None)

    @cached_property
    def pane_filter(self) -> PaneFilter:
        return PaneFilter.from_request(self.request)

    @cached_property
    def events(self) -> list[Event]:
        return pane_events(pane_filter=self.pane_filter, page_obj=self.page_object)

    @cached_property
    def pane_severities(self) -> list[tuple[str, str]]:
        return [
            ("", "All severities"),
            ("warning", "Warnings and worse"),
            ("error", "Errors and alerts"),
            ("alert", "Alerts"),
        ]

    @cached_property
    def pane_scopes(self) -> list[tuple[str, str]]:
        """The object filters of the events pane: every object, this page's object, a kind."""
        this = [("page", "This object")] if self.page_object else []
        kinds = [(code, f"{label}s") for code, label in ObjectType.choices if code not in ("system", "user")]
        return [("", "All objects"), *this, *kinds]

    @cached_property
    def jobs(self) -> list[Job]:
        return pane_jobs()

    @cached_property
    def active_job_count(self) -> int:
        return sum(1 for job in self.jobs if job.status == JobStatus.STARTED)

    @cached_property
    def live_config(self) -> dict:
        """What static/olvm/live.js needs on an administration page: the common part, the
        object of the page, the events pane's filter."""
        return {
            **base_live_config({**OBJECT_URLS, "job": "portals:job-detail"}, self.page_object),
            "maxEvents": PANE_EVENTS,
            "maxJobs": PANE_JOBS,
            "severityStyles": SEVERITY_STYLES,
            "severityOrder": list(SEVERITY_ORDER),
            "pageObjectFields": PAGE_OBJECT_FIELDS,
            "paneFilter": {"severity": self.pane_filter.severity, "scope": self.pane_filter.scope},
            "paneFilterCookie": PANE_FILTER_COOKIE,
            "paneEventsUrl": reverse("portals:pane-events"),
        }


class VmPortalChrome:
    """What `vm_portal/base.html` draws around a VM portal page: its live updates (VM statuses
    and guest facts of the VMs the page shows; no panes, no tree)."""

    def __init__(self, request):
        self.request = request

    @cached_property
    def live_config(self) -> dict:
        return base_live_config({"vm": "vm_portal:vm-detail"}, getattr(self.request, "olvm_page_object", None))


def base_live_config(urls: dict[str, str], page_obj: tuple[str, uuid.UUID] | None) -> dict:
    """What static/olvm/live.js needs on any page: the websocket path, the time the page was
    drawn (its first catch-up starts there), status styles and labels, the object of a detail
    page, and the pattern of each kind's page (`urls`: kind -> URL name taking the id)."""
    from storage.choices import StorageDomainStatus

    zero = uuid.UUID(int=0)
    return {
        "path": "/ws/live/",
        "renderedAt": timezone.now().astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "statusStyles": STATUS_STYLES,
        "statusLabels": {
            **dict(StorageDomainStatus.choices),
            **dict(HostStatus.choices),
            **dict(VmStatus.choices),
            **dict(JobStatus.choices),
        },
        "runningStatuses": sorted(RUNNING),
        "pageObject": {"kind": page_obj[0], "id": str(page_obj[1])} if page_obj else None,
        "urls": {kind: reverse(name, args=[zero]).replace(str(zero), "{id}") for kind, name in urls.items()},
    }


def portal(request):
    user = getattr(request, "user", None)
    context = {"portal_name": "OLVM", "navigation": NAVIGATION}
    if user is not None and user.is_authenticated:
        context["vm_portal_chrome"] = VmPortalChrome(request)
        if user.is_staff:
            context["chrome"] = PortalChrome(request)
    return context
