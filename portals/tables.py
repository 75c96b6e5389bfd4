"""django-tables2 tables of the portal: sortable columns, rendered in Bootstrap 5.

Every column reads only what the view's queryset selected (select_related or an
annotation): a table never adds a query per row. Links to detail pages are built from
a URL pattern resolved once per object type (`detail_url`), not with a reverse() per cell.
"""

import inspect
import uuid
from dataclasses import dataclass

import django_tables2 as tables
from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.html import format_html, format_html_join

from compute.models import AffinityGroup, Snapshot, Template, VirtualMachine
from inventory.models import Cluster, DataCenter, Event, Host, Job, Permission, Step
from networking.models import ClusterNetwork, LogicalNetwork, VmNic, VnicProfile
from storage.models import Disk, DiskAttachment, StorageDomain

from .templatetags.olvm import gib, mib, progress_html, severity_icon_html, stat_html, status_badge_html

ATTRS = {"class": "table table-sm table-hover align-middle olvm-table"}

# ObjectType code -> URL name of the detail page, for links from events and jobs.
OBJECT_URLS = {
    "data_center": "portals:datacenter-detail",
    "cluster": "portals:cluster-detail",
    "host": "portals:host-detail",
    "vm": "portals:vm-detail",
    "template": "portals:template-detail",
    "storage_domain": "portals:storagedomain-detail",
    "disk": "portals:disk-detail",
    "network": "portals:network-detail",
    "vnic_profile": "portals:vnicprofile-detail",
}


# Model -> URL name of its detail page (the pages `get_absolute_url()` points at).
MODEL_URLS = {
    DataCenter: "portals:datacenter-detail",
    Cluster: "portals:cluster-detail",
    Host: "portals:host-detail",
    VirtualMachine: "portals:vm-detail",
    Template: "portals:template-detail",
    StorageDomain: "portals:storagedomain-detail",
    Disk: "portals:disk-detail",
    LogicalNetwork: "portals:network-detail",
    Job: "portals:job-detail",
}
_ZERO = str(uuid.UUID(int=0))
_URL_PATTERNS: dict[tuple[str, str], tuple[str, str]] = {}


def detail_url(obj) -> str:
    """`obj.get_absolute_url()`, from a pattern reversed once per type (a table has hundreds of links)."""
    url_name = MODEL_URLS.get(type(obj))
    if url_name is None:
        return obj.get_absolute_url()
    return pk_url(url_name, obj.pk)


def pk_url(url_name: str, pk) -> str:
    """`reverse(url_name, args=[pk])` from a pattern reversed once per URL name."""
    key = (get_script_prefix(), url_name)
    pattern = _URL_PATTERNS.get(key)
    if pattern is None:
        head, _, tail = reverse(url_name, args=[_ZERO]).partition(_ZERO)
        pattern = _URL_PATTERNS[key] = (head, tail)
    return f"{pattern[0]}{pk}{pattern[1]}"


_ONE = str(uuid.UUID(int=1))
_ROW_PATTERNS: dict[tuple, str] = {}


def vm_row_url(url_name: str, vm_id, pk, *args) -> str:
    """`reverse(url_name, args=[vm_id, pk, *args])` for a row of a VM's tab (a NIC, a snapshot,
    a disk attachment), from a pattern reversed once per URL name and action."""
    key = (get_script_prefix(), url_name, *args)
    pattern = _ROW_PATTERNS.get(key)
    if pattern is None:
        url = reverse(url_name, args=[_ZERO, _ONE, *args])
        pattern = _ROW_PATTERNS[key] = url.replace(_ZERO, "{vm}").replace(_ONE, "{pk}")
    return pattern.format(vm=vm_id, pk=pk)


def object_url(object_type: str, object_id) -> str | None:
    name = OBJECT_URLS.get(object_type)
    if not name or not object_id:
        return None
    try:
        return reverse(name, args=[object_id])
    except NoReverseMatch:
        return None


class _Render:
    """A column's render callable with its signature computed once: django-tables2 reads the
    signature of the callable for every cell, to know which arguments it takes."""

    __slots__ = ("__signature__", "render")

    def __init__(self, render):
        self.render = render
        self.__signature__ = inspect.signature(render)

    def __call__(self, **kwargs):
        return self.render(**kwargs)


class PortalTable(tables.Table):
    """Base of the portal tables, rendered with portals/inc/table.html.

    That template writes each column's `td` attributes once per table rather than once per
    cell (`table_cells`), so they must be static (no callables in a column's td attrs), and
    writes cells as they render (no column uses `localize`). A page of 50 rows has hundreds
    of cells: what is the same for every cell is computed once.
    """

    template_name = "portals/inc/table.html"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("template_name", self.template_name)
        super().__init__(*args, **kwargs)
        for bound_column in self.columns.iterall():
            bound_column.render = _Render(bound_column.render)

    def usage_of(self, kind: str, pk) -> dict:
        """The monitoring figures of a row's object (LiveStatColumn), read once for the page."""
        from inventory.history import latest_samples, usage

        samples = self.__dict__.get("_olvm_samples")
        if samples is None:
            rows = self.page.object_list if getattr(self, "page", None) is not None else self.rows
            ids = [getattr(getattr(row, "record", row), "pk", None) for row in rows]
            samples = self.__dict__["_olvm_samples"] = latest_samples(kind, [i for i in ids if i is not None])
        return usage(kind, samples.get(str(pk)))


class StatusColumn(tables.Column):
    def __init__(self, **kwargs):
        kwargs.setdefault("attrs", {"td": {"class": "text-nowrap"}})
        super().__init__(**kwargs)

    def render(self, value, record, bound_column):
        code = bound_column.accessor.resolve(record)
        return status_badge_html(code, value)


def live_field(name: str, css: str = "", th_css: str = "") -> dict:
    """Attributes of a column whose cells static/olvm/live.js keeps current (the row carries `data-live`)."""
    attrs = {"td": {"class": css, "data-field": name} if css else {"data-field": name}}
    if th_css:
        attrs["th"] = {"class": th_css}
    return attrs


class LiveStatColumn(tables.Column):
    """A monitoring figure of the row's host or VM (`cpu`, `memory` or `net`): from the hot
    cache when the page is drawn (one read for the whole page, no query), then kept current
    by static/olvm/live.js from the stats stream."""

    def __init__(self, kind: str, stat: str, **kwargs):
        kwargs.setdefault("empty_values", ())
        kwargs.setdefault("orderable", False)
        kwargs.setdefault(
            "attrs", {"td": {"class": "text-end text-nowrap", "data-stat": stat}, "th": {"class": "text-end"}}
        )
        super().__init__(**kwargs)
        self.kind, self.stat = kind, stat

    def render(self, record, table):
        return stat_html(self.stat, table.usage_of(self.kind, record.pk))


class MibColumn(tables.Column):
    def __init__(self, **kwargs):
        kwargs.setdefault("attrs", {"td": {"class": "text-end text-nowrap"}, "th": {"class": "text-end"}})
        super().__init__(**kwargs)

    def render(self, value):
        return mib(value)


class BytesColumn(MibColumn):
    def render(self, value):
        return gib(value)


class NumberColumn(tables.Column):
    def __init__(self, **kwargs):
        kwargs.setdefault("attrs", {"td": {"class": "text-end"}, "th": {"class": "text-end"}})
        super().__init__(**kwargs)


class DetailLinkColumn(tables.Column):
    """The value linked to its detail page: the related object of the cell, or else the row's
    own (as `linkify=True` does)."""

    def render(self, value, record):
        target = value if type(value) in MODEL_URLS or hasattr(value, "get_absolute_url") else record
        return format_html('<a href="{}">{}</a>', detail_url(target), value)


def link_column(**kwargs) -> tables.Column:
    return DetailLinkColumn(**kwargs)


@dataclass(frozen=True)
class RowLink:
    label: str
    icon: str  # a Bootstrap icon name
    url_name: str  # a route taking the VM's id, the row's id, then `args`
    args: tuple = ()
    danger: bool = False


class VmRowActionsColumn(tables.Column):
    """The action links at the end of a row of a VM's tab; the row's `vm_id` and `pk` fill them."""

    owner_field = "vm_id"  # the row's field naming the object whose tab the row is on

    def __init__(self, links: tuple[RowLink, ...], **kwargs):
        kwargs.setdefault("empty_values", ())
        kwargs.setdefault("orderable", False)
        kwargs.setdefault("verbose_name", "")
        kwargs.setdefault("attrs", {"td": {"class": "text-end text-nowrap"}})
        super().__init__(**kwargs)
        self.links = links

    def render(self, record):
        rows = (
            (
                " text-danger" if link.danger else "",
                vm_row_url(link.url_name, getattr(record, self.owner_field), record.pk, *link.args),
                link.icon,
                link.label,
            )
            for link in self.links
        )
        return format_html_join(
            " ", '<a class="btn btn-link btn-sm py-0 px-1{}" href="{}"><i class="bi bi-{}"></i> {}</a>', rows
        )


class DataCenterTable(PortalTable):
    status = StatusColumn()
    name = link_column()
    cluster_count = NumberColumn(verbose_name="Clusters")

    class Meta:
        model = DataCenter
        attrs = ATTRS
        fields = ("status", "name", "storage_type", "compatibility_version", "cluster_count", "description")
        empty_text = "No data centers."


class ClusterTable(PortalTable):
    name = link_column()
    data_center = link_column(accessor="data_center", order_by=("data_center__name",))
    host_count = NumberColumn(verbose_name="Hosts")
    vm_count = NumberColumn(verbose_name="VMs")

    class Meta:
        model = Cluster
        attrs = ATTRS
        fields = ("name", "data_center", "cpu_type", "host_count", "vm_count", "description")
        empty_text = "No clusters."


class HostTable(PortalTable):
    status = StatusColumn(attrs=live_field("status", "text-nowrap"))
    name = link_column()
    cluster = link_column(order_by=("cluster__name",))
    data_center = link_column(
        accessor="cluster__data_center", verbose_name="Data center", order_by=("cluster__data_center__name",)
    )
    vm_count = NumberColumn(verbose_name="VMs")
    memory_mib = MibColumn(verbose_name="Memory")
    cpu_threads = NumberColumn(verbose_name="CPUs")
    cpu_usage = LiveStatColumn("host", "cpu", verbose_name="CPU use")
    memory_usage = LiveStatColumn("host", "memory", verbose_name="Memory use")
    network = LiveStatColumn("host", "net", verbose_name="Network")

    class Meta:
        model = Host
        attrs = ATTRS
        fields = ("status", "name", "address", "cluster", "data_center", "vm_count", "cpu_threads", "memory_mib")
        sequence = ("...", "cpu_usage", "memory_usage", "network")
        empty_text = "No hosts."
        row_attrs = {"data-live": lambda record: f"host.{record.pk}"}

    def render_name(self, value, record):
        badge = ' <span class="badge text-bg-light border">sim</span>' if record.simulated else ""
        spm = ' <span class="badge text-bg-primary" title="Storage pool manager">SPM</span>' if record.is_spm else ""
        return format_html('<a href="{}">{}</a>' + badge + spm, detail_url(record), value)


class VmTable(PortalTable):
    status = StatusColumn(attrs=live_field("status", "text-nowrap"))
    name = link_column()
    cluster = link_column(order_by=("cluster__name",))
    data_center = link_column(verbose_name="Data center", order_by=("data_center__name",))
    run_on_host = link_column(
        verbose_name="Host", order_by=("run_on_host__name",), attrs=live_field("run_on_host_name")
    )
    guest_ips = tables.Column(verbose_name="IP addresses", orderable=False, attrs=live_field("guest_ips"))
    vcpus = NumberColumn(verbose_name="vCPUs")
    memory_mib = MibColumn(verbose_name="Memory")
    os_type = tables.Column(verbose_name="OS")
    cpu_usage = LiveStatColumn("vm", "cpu", verbose_name="CPU use")
    memory_usage = LiveStatColumn("vm", "memory", verbose_name="Memory use")
    network = LiveStatColumn("vm", "net", verbose_name="Network")

    class Meta:
        model = VirtualMachine
        attrs = ATTRS
        fields = (
            "status",
            "name",
            "cluster",
            "data_center",
            "run_on_host",
            "guest_ips",
            "vcpus",
            "memory_mib",
            "cpu_usage",
            "memory_usage",
            "network",
            "os_type",
            "description",
        )
        empty_text = "No virtual machines."
        row_attrs = {"data-live": lambda record: f"vm.{record.pk}"}

    def render_guest_ips(self, value):
        return ", ".join(str(ip) for ip in value[:3]) if isinstance(value, list) else value


class TemplateTable(PortalTable):
    name = link_column()
    version_number = NumberColumn(verbose_name="Version")
    cluster = link_column(order_by=("cluster__name",))
    vcpus = NumberColumn(verbose_name="vCPUs")
    memory_mib = MibColumn(verbose_name="Memory")
    os_type = tables.Column(verbose_name="OS")

    class Meta:
        model = Template
        attrs = ATTRS
        fields = ("name", "version_number", "version_name", "cluster", "os_type", "vcpus", "memory_mib", "description")
        empty_text = "No templates."

    def render_name(self, value, record):
        return format_html('<a href="{}">{}</a>', detail_url(record), record.name)


class LogicalNetworkTable(PortalTable):
    name = link_column()
    data_center = link_column(order_by=("data_center__name",))
    vlan_tag = NumberColumn(verbose_name="VLAN")
    mtu = NumberColumn(verbose_name="MTU")
    vm_network = tables.BooleanColumn(verbose_name="VM network")
    required = tables.BooleanColumn()
    roles = tables.Column(empty_values=(), orderable=False)

    class Meta:
        model = LogicalNetwork
        attrs = ATTRS
        fields = ("name", "data_center", "vlan_tag", "mtu", "vm_network", "required", "roles", "description")
        empty_text = "No networks."

    def render_mtu(self, value):
        return value or "default"

    def render_roles(self, record):
        roles = [
            label
            for flag, label in (
                (record.is_management, "management"),
                (record.is_migration, "migration"),
                (record.is_display, "display"),
            )
            if flag
        ]
        return ", ".join(roles) or "—"


class VnicProfileTable(PortalTable):
    name = tables.Column(linkify=("portals:vnicprofile-detail", [tables.A("pk")]))
    network = link_column(order_by=("network__name",))
    data_center = link_column(
        accessor="network__data_center", verbose_name="Data center", order_by=("network__data_center__name",)
    )
    port_mirroring = tables.BooleanColumn()
    pass_through = tables.BooleanColumn()

    class Meta:
        model = VnicProfile
        attrs = ATTRS
        fields = ("name", "network", "data_center", "port_mirroring", "pass_through", "description")
        empty_text = "No vNIC profiles."


class StorageDomainTable(PortalTable):
    status = StatusColumn(attrs=live_field("status", "text-nowrap"))
    name = link_column()
    data_center = link_column(order_by=("data_center__name",))
    total_bytes = BytesColumn(verbose_name="Total", attrs=live_field("total_bytes", "text-end text-nowrap", "text-end"))
    free_bytes = BytesColumn(verbose_name="Free", attrs=live_field("free_bytes", "text-end text-nowrap", "text-end"))
    committed_bytes = BytesColumn(
        verbose_name="Committed", attrs=live_field("committed_bytes", "text-end text-nowrap", "text-end")
    )

    class Meta:
        model = StorageDomain
        attrs = ATTRS
        fields = (
            "status",
            "name",
            "type",
            "role",
            "data_center",
            "total_bytes",
            "free_bytes",
            "committed_bytes",
            "description",
        )
        empty_text = "No storage domains."
        row_attrs = {"data-live": lambda record: f"storage.{record.pk}"}


class DiskTable(PortalTable):
    status = StatusColumn()
    alias = link_column()
    storage_domain = link_column(order_by=("storage_domain__name",))
    provisioned_size = BytesColumn(verbose_name="Virtual size")
    actual_size = BytesColumn(verbose_name="Actual size")
    template = link_column(order_by=("template__name",))

    class Meta:
        model = Disk
        attrs = ATTRS
        fields = (
            "status",
            "alias",
            "storage_domain",
            "provisioned_size",
            "actual_size",
            "format",
            "allocation",
            "shareable",
            "template",
            "description",
        )
        empty_text = "No disks."


class DiskAttachmentTable(PortalTable):
    """The disks tab of a VM."""

    status = StatusColumn(accessor="disk__status", verbose_name="Status")
    disk = tables.Column(
        accessor="disk__alias", verbose_name="Alias", linkify=lambda record: record.disk.get_absolute_url()
    )
    storage_domain = link_column(accessor="disk__storage_domain", verbose_name="Storage domain")
    size = BytesColumn(accessor="disk__provisioned_size", verbose_name="Virtual size")
    actual = BytesColumn(accessor="disk__actual_size", verbose_name="Actual size")
    format = tables.Column(accessor="disk__format", verbose_name="Format")
    bootable = tables.BooleanColumn()
    active = tables.BooleanColumn()
    actions = VmRowActionsColumn(
        (
            RowLink("Detach", "eject", "portals:vm-disk-action", ("detach",)),
            RowLink("Remove", "trash", "portals:vm-disk-action", ("remove",), danger=True),
        )
    )

    class Meta:
        model = DiskAttachment
        attrs = ATTRS
        fields = (
            *("status", "disk", "storage_domain", "size", "actual", "format", "interface", "bootable", "active"),
            "actions",
        )
        empty_text = "No disks attached."


class DiskVmTable(PortalTable):
    """The VMs tab of a disk."""

    vm = link_column(verbose_name="Virtual machine", order_by=("vm__name",))
    status = StatusColumn(accessor="vm__status", verbose_name="VM status")
    bootable = tables.BooleanColumn()
    active = tables.BooleanColumn()

    class Meta:
        model = DiskAttachment
        attrs = ATTRS
        fields = ("vm", "status", "interface", "bootable", "active", "read_only")
        empty_text = "Not attached to any VM."


class VmNicTable(PortalTable):
    network = tables.Column(accessor="profile__network", linkify=True, verbose_name="Network")
    profile = tables.Column(linkify=("portals:vnicprofile-detail", [tables.A("profile_id")]), verbose_name="Profile")
    linked = tables.BooleanColumn()
    plugged = tables.BooleanColumn()
    actions = VmRowActionsColumn(
        (
            RowLink("Edit", "pencil", "portals:vm-nic-edit"),
            RowLink("Remove", "trash", "portals:vm-nic-action", ("remove",), danger=True),
        )
    )

    class Meta:
        model = VmNic
        attrs = ATTRS
        fields = ("name", "network", "profile", "mac", "interface", "linked", "plugged", "actions")
        empty_text = "No network interfaces."


class ProfileNicTable(PortalTable):
    vm = link_column(verbose_name="Virtual machine", order_by=("vm__name",))

    class Meta:
        model = VmNic
        attrs = ATTRS
        fields = ("vm", "name", "mac", "interface", "linked", "plugged")
        empty_text = "No VM uses this profile."


class SnapshotTable(PortalTable):
    status = StatusColumn()
    created_at = tables.DateTimeColumn(verbose_name="Date", format="Y-m-d H:i")
    with_memory = tables.BooleanColumn(verbose_name="Memory")
    actions = VmRowActionsColumn(
        (
            RowLink("Revert", "arrow-counterclockwise", "portals:vm-snapshot-action", ("revert",)),
            RowLink("Delete", "trash", "portals:vm-snapshot-action", ("remove",), danger=True),
        )
    )

    class Meta:
        model = Snapshot
        attrs = ATTRS
        fields = ("status", "created_at", "description", "with_memory", "actions")
        empty_text = "No snapshots."


class ClusterNetworkTable(PortalTable):
    network = link_column(order_by=("network__name",))
    cluster = link_column(order_by=("cluster__name",))
    required = tables.BooleanColumn()

    class Meta:
        model = ClusterNetwork
        attrs = ATTRS
        fields = ("network", "cluster", "required")
        empty_text = "Not attached to any cluster."


class EventTable(PortalTable):
    severity = tables.Column(verbose_name="", attrs={"td": {"class": "text-center"}})
    time = tables.DateTimeColumn(format="Y-m-d H:i:s", attrs={"td": {"class": "text-nowrap"}})
    message = tables.Column(orderable=False)
    object_name = tables.Column(verbose_name="Object")
    username = tables.Column(verbose_name="User")
    correlation_id = tables.Column(verbose_name="Job", orderable=False)

    class Meta:
        model = Event
        attrs = ATTRS
        fields = ("severity", "time", "message", "object_type", "object_name", "username", "code", "correlation_id")
        empty_text = "No events."

    def render_severity(self, value):
        return severity_icon_html(value)

    def render_object_name(self, value, record):
        url = object_url(record.object_type, record.object_id)
        return format_html('<a href="{}">{}</a>', url, value) if url else value

    def render_correlation_id(self, value):
        try:
            url = reverse("portals:job-detail", args=[value])
        except NoReverseMatch:
            return value
        return format_html('<a href="{}" title="{}"><i class="bi bi-list-task"></i></a>', url, value)


class JobTable(PortalTable):
    status = StatusColumn()
    description = link_column()
    progress = tables.Column(attrs={"td": {"style": "min-width: 9rem"}})
    object_name = tables.Column(verbose_name="Object")
    owner = tables.Column(verbose_name="User", order_by=("owner__username",))
    started_at = tables.DateTimeColumn(verbose_name="Started", format="Y-m-d H:i:s")
    ended_at = tables.DateTimeColumn(verbose_name="Ended", format="Y-m-d H:i:s")

    class Meta:
        model = Job
        attrs = ATTRS
        fields = ("status", "description", "action_type", "progress", "object_name", "owner", "started_at", "ended_at")
        empty_text = "No tasks."
        row_attrs = {"data-job-id": lambda record: str(record.pk)}

    def render_progress(self, value, record):
        return progress_html(value, record.status)

    def render_object_name(self, value, record):
        url = object_url(record.object_type, record.object_id)
        return format_html('<a href="{}">{}</a>', url, value) if url else value


class StepTable(PortalTable):
    status = StatusColumn()
    progress = tables.Column()
    started_at = tables.DateTimeColumn(verbose_name="Started", format="Y-m-d H:i:s")
    ended_at = tables.DateTimeColumn(verbose_name="Ended", format="Y-m-d H:i:s")

    class Meta:
        model = Step
        attrs = ATTRS
        fields = ("number", "status", "description", "progress", "started_at", "ended_at")
        orderable = False
        empty_text = "This task has no steps."
        row_attrs = {"data-step": lambda record: record.number}

    def render_progress(self, value, record):
        return progress_html(value, record.status)


class UserTable(PortalTable):
    is_staff = tables.BooleanColumn(verbose_name="Administrator")
    roles = tables.Column(verbose_name="Roles", empty_values=(), orderable=False)
    is_superuser = tables.BooleanColumn(verbose_name="Superuser")
    is_active = tables.BooleanColumn(verbose_name="Active")
    last_login = tables.DateTimeColumn(format="Y-m-d H:i")
    date_joined = tables.DateTimeColumn(format="Y-m-d H:i")

    class Meta:
        model = get_user_model()
        attrs = ATTRS
        fields = (
            "username",
            "first_name",
            "last_name",
            "email",
            "is_staff",
            "is_superuser",
            "roles",
            "is_active",
            "last_login",
            "date_joined",
        )
        empty_text = "No users."

    def render_roles(self, record):
        """The roles granted to the user (on any object; the view prefetches them), and SuperUser
        for a Django superuser. Roles coming through groups show on the objects' Permissions tabs."""
        names = list(dict.fromkeys(p.role.name for p in record.olvm_permissions.all()))
        if record.is_superuser:
            names.insert(0, "SuperUser (superuser)")
        return ", ".join(names) or "—"


class PermissionTable(PortalTable):
    """Grants from inventory.permissions.grants_on(): made on the object, or inherited from above."""

    principal = tables.Column(verbose_name="User or group", empty_values=(), order_by=("user__username", "group__name"))
    role = tables.Column(order_by=("role__name",))
    # Not named `inherited`: django-tables2 would take the queryset's ordering on that
    # annotation for this column's and drop it (the column is not orderable).
    origin = tables.Column(verbose_name="Inherited from", accessor="object_type", orderable=False)
    created_at = tables.DateTimeColumn(verbose_name="Granted", format="Y-m-d H:i")
    actions = tables.Column(verbose_name="", empty_values=(), orderable=False, attrs={"td": {"class": "text-end"}})

    class Meta:
        model = Permission
        attrs = ATTRS
        fields = ("principal", "role", "origin", "created_at", "actions")
        empty_text = "No permissions."

    def render_principal(self, record):
        if record.user_id:
            return format_html('<i class="bi bi-person"></i> {}', record.user.get_username())
        return format_html('<i class="bi bi-people"></i> {}', record.group.name)

    def render_role(self, record):
        if record.role.administrative:
            return format_html('{} <span class="badge text-bg-light border">admin</span>', record.role.name)
        return record.role.name

    def render_origin(self, record):
        if not getattr(record, "inherited", False):
            return "—"
        if record.object_type == "system":
            return "System"
        return f"{record.get_object_type_display()} {getattr(record, 'object_name', '') or record.object_id}"

    def render_actions(self, record):
        if getattr(record, "inherited", False):
            return ""
        return format_html(
            '<a class="btn btn-sm btn-outline-danger" href="{}"><i class="bi bi-trash"></i> Remove</a>',
            pk_url("portals:permission-remove", record.pk),
        )


# Affinity groups (the Affinity Groups tab of a cluster) ----------------------------------------


class ClusterRowActionsColumn(VmRowActionsColumn):
    """The action links of a row of a cluster's tab; the row's `cluster_id` and `pk` fill them."""

    owner_field = "cluster_id"


def _rule_html(rule: str, label: str, enforcing: bool):
    if rule == "disabled":
        return format_html('<span class="text-body-secondary">{}</span>', label)
    kind = "hard" if enforcing else "soft"
    return format_html('{} <span class="badge text-bg-light border">{}</span>', label, kind)


def _member_links(members):
    """Links to the members' pages, from the rows the view prefetched (`vms` / `hosts`)."""
    links = format_html_join(", ", '<a href="{}">{}</a>', ((detail_url(m), m.name) for m in members))
    return links or "—"


class AffinityGroupTable(PortalTable):
    vm_rule = tables.Column(verbose_name="VM rule")
    host_rule = tables.Column(verbose_name="Host rule")
    vms = tables.Column(verbose_name="Virtual machines", empty_values=(), orderable=False)
    hosts = tables.Column(verbose_name="Hosts", empty_values=(), orderable=False)
    priority = NumberColumn()
    actions = ClusterRowActionsColumn(
        (
            RowLink("Edit", "pencil", "portals:cluster-affinity-group-edit"),
            RowLink("Remove", "trash", "portals:cluster-affinity-group-remove", danger=True),
        )
    )

    class Meta:
        model = AffinityGroup
        attrs = ATTRS
        fields = ("name", "vm_rule", "host_rule", "vms", "hosts", "priority", "description", "actions")
        empty_text = "No affinity groups."

    def render_vm_rule(self, record):
        return _rule_html(record.vm_rule, record.get_vm_rule_display(), record.vm_enforcing)

    def render_host_rule(self, record):
        return _rule_html(record.host_rule, record.get_host_rule_display(), record.host_enforcing)

    def render_vms(self, record):
        return _member_links(record.vms.all())

    def render_hosts(self, record):
        return _member_links(record.hosts.all())
