"""What every portal page shows around its content: the system tree and the bottom panes.

Both are computed lazily, on first use by `base.html`, and with a fixed number of
queries whatever the size of the inventory: the tree takes four (data centers, clusters,
hosts, and the first VMs of every host through a window function), the panes two.
"""

import uuid
from dataclasses import dataclass, field
from functools import cached_property

from django.db.models import Case, Count, F, IntegerField, Value, When, Window
from django.db.models.functions import RowNumber
from django.urls import reverse

from compute.models import VirtualMachine
from inventory.choices import JobStatus
from inventory.models import Cluster, DataCenter, Event, Host, Job

from .tables import OBJECT_URLS
from .templatetags.olvm import SEVERITY_STYLES, STATUS_STYLES

TREE_VMS_PER_HOST = 10
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
            ("Events", "portals:event-list", "journal-text"),
            ("Tasks", "portals:job-list", "list-task"),
        ],
    ),
]


@dataclass
class HostNode:
    host: Host
    vms: list = field(default_factory=list)
    vm_count: int = 0

    @property
    def more(self) -> int:
        return self.vm_count - len(self.vms)


@dataclass
class ClusterNode:
    cluster: Cluster
    hosts: list[HostNode] = field(default_factory=list)


@dataclass
class DataCenterNode:
    data_center: DataCenter
    clusters: list[ClusterNode] = field(default_factory=list)


def system_tree(vms_per_host: int = TREE_VMS_PER_HOST) -> list[DataCenterNode]:
    """Data centers -> clusters -> hosts -> the first `vms_per_host` VMs running there."""
    dcs = {dc.pk: DataCenterNode(dc) for dc in DataCenter.objects.only("id", "name", "status")}
    clusters = {}
    for cluster in Cluster.objects.only("id", "name", "data_center_id"):
        clusters[cluster.pk] = node = ClusterNode(cluster)
        if cluster.data_center_id in dcs:
            dcs[cluster.data_center_id].clusters.append(node)
    hosts = {}
    for host in Host.objects.only("id", "name", "status", "cluster_id"):
        hosts[host.pk] = node = HostNode(host)
        if host.cluster_id in clusters:
            clusters[host.cluster_id].hosts.append(node)
    ranked = (
        VirtualMachine.objects.filter(run_on_host__isnull=False)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("run_on_host_id")], order_by=[F("name").asc(), F("id").asc()]),
            total=Window(Count("id"), partition_by=[F("run_on_host_id")]),
        )
        .filter(rank__lte=vms_per_host)
        .only("id", "name", "status", "run_on_host_id")
        .order_by("run_on_host_id", "rank")
    )
    for vm in ranked:
        node = hosts.get(vm.run_on_host_id)
        if node is not None:
            node.vms.append(vm)
            node.vm_count = vm.total
    return list(dcs.values())


def pane_events(limit: int = PANE_EVENTS) -> list[Event]:
    return list(Event.objects.order_by("-time", "-id")[:limit])


def pane_jobs(limit: int = PANE_JOBS) -> list[Job]:
    """Active Jobs first, then the most recent ended ones."""
    active_first = Case(When(status=JobStatus.STARTED, then=Value(0)), default=Value(1), output_field=IntegerField())
    return list(Job.objects.order_by(active_first, "-started_at")[:limit])


class PortalChrome:
    """The lazily computed parts of `base.html` for one request."""

    def __init__(self, request):
        self.request = request

    @cached_property
    def tree(self) -> list[DataCenterNode]:
        return system_tree()

    @cached_property
    def events(self) -> list[Event]:
        return pane_events()

    @cached_property
    def jobs(self) -> list[Job]:
        return pane_jobs()

    @cached_property
    def active_job_count(self) -> int:
        return sum(1 for job in self.jobs if job.status == JobStatus.STARTED)

    @cached_property
    def live_config(self) -> dict:
        """What static/olvm/live.js needs: the websocket path, styles and URL patterns."""
        zero = uuid.UUID(int=0)
        return {
            "path": "/ws/events/",
            "maxEvents": PANE_EVENTS,
            "maxJobs": PANE_JOBS,
            "statusStyles": STATUS_STYLES,
            "severityStyles": SEVERITY_STYLES,
            "urls": {
                kind: reverse(name, args=[zero]).replace(str(zero), "{id}")
                for kind, name in {**OBJECT_URLS, "job": "portals:job-detail"}.items()
            },
        }


def portal(request):
    user = getattr(request, "user", None)
    context = {"portal_name": "OLVM", "navigation": NAVIGATION}
    if user is not None and user.is_authenticated and user.is_staff:
        context["chrome"] = PortalChrome(request)
    return context
