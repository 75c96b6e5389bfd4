"""The administration portal: server-rendered pages over the engine's services.

Reads go through the querysets declared here (select_related and annotations fixed per
page, so a page costs the same number of queries at 3 or 20,000 VMs); every write calls
one service function and turns its errors into form errors (ValidationError) or a
message banner (ConflictError).
"""

import copy
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.core.exceptions import ValidationError
from django.db.models import Count, Prefetch, Q, Sum
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views import View
from django.views.generic import DetailView, TemplateView
from django_filters.views import FilterView
from django_tables2 import RequestConfig, SingleTableMixin

from compute import services as compute_services
from compute.choices import VmStatus
from compute.models import AffinityGroup, Snapshot, Template, VirtualMachine
from compute.statemachine import ACTIONS, RUNNING
from inventory import services as inventory_services
from inventory.choices import HostStatus, JobStatus
from inventory.exceptions import ConflictError
from inventory.models import Cluster, DataCenter, Event, Host, Job, Permission
from networking import services as networking_services
from networking.models import ClusterNetwork, LogicalNetwork, VmNic, VnicProfile
from storage import services as storage_services
from storage.models import Disk, DiskAttachment, StorageDomain

from . import filtersets, forms, tables
from .context_processors import (
    PAGE_OBJECT_FIELDS,
    PANE_EVENTS,
    ClusterNode,
    HostNode,
    PaneFilter,
    cluster_hosts,
    focus_tree_on,
    host_vms,
    pane_events,
    show_page_object,
)
from .queries import count_of
from .search import HOST_FIELDS, VM_FIELDS

PAGE_SIZE = 50
TAB_PAGE_SIZE = 50


class StaffRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    """Anonymous users are sent to the login page; signed-in non-staff users get a 403."""

    permission_denied_message = (
        "The administration portal is for administrators. Your account is not one; "
        "your virtual machines are in the VM portal."
    )

    def test_func(self) -> bool:
        return self.request.user.is_staff


def permission_denied(request, exception=None):
    """handler403 of the site: templates/403.html with the reason, in the colours of the portal
    it was refused in (VM portal or administration portal). The reason never names an object
    the user may not see (inventory.permissions.refusal)."""
    from django.template import loader

    in_vm_portal = request.path.startswith(reverse("vm_portal:vm-list"))
    message = str(exception) if exception is not None and str(exception) else ""
    body = loader.render_to_string("403.html", {"exception": message, "vm_portal": in_vm_portal}, request)
    return HttpResponse(body, status=403)


class LoginView(auth_views.LoginView):
    """The administration portal's sign-in: administrators land on the dashboard, everyone else
    in the VM portal (their VMs) unless they asked for a page."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        if self.request.user.is_staff:
            return super().get_default_redirect_url()
        return reverse("vm_portal:vm-list")


class PortalMixin(StaffRequiredMixin):
    title = ""
    section = ""  # the top-navigation entry to highlight: its URL name

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.setdefault("title", self.title)
        context["section"] = self.section
        return context


def label(obj) -> str:
    """How the portal names an object: disks by their alias, the rest by str()."""
    return getattr(obj, "alias", None) or str(obj)


def split_result(result) -> tuple[Any, Job | None]:
    """Services return an object, a Job, or (object, Job): give both, either may be None."""
    if isinstance(result, tuple):
        return result[0], result[1]
    if isinstance(result, Job):
        return None, result
    return result, None


def job_started(request, job: Job | None, text: str = "") -> None:
    if job is None:
        if text:
            messages.success(request, text)
        return
    messages.success(
        request,
        format_html(
            '{}Job started: <a href="{}" class="alert-link">{}</a>.',
            f"{text} " if text else "",
            job.get_absolute_url(),
            job.description,
        ),
    )


# Querysets of every page: the related rows each table shows, fetched in the same query ----


def datacenter_queryset():
    return DataCenter.objects.annotate(cluster_count=count_of(Cluster, "data_center"))


def cluster_queryset():
    return Cluster.objects.select_related("data_center").annotate(
        host_count=count_of(Host, "cluster"), vm_count=count_of(VirtualMachine, "cluster")
    )


def host_queryset():
    return Host.objects.select_related("cluster__data_center").annotate(
        vm_count=count_of(VirtualMachine, "run_on_host")
    )


def vm_queryset():
    return VirtualMachine.objects.select_related("cluster", "data_center", "run_on_host")


def template_queryset():
    return Template.objects.select_related("cluster")


def network_queryset():
    return LogicalNetwork.objects.select_related("data_center")


def vnic_profile_queryset():
    return VnicProfile.objects.select_related("network__data_center")


def storage_domain_queryset():
    return StorageDomain.objects.select_related("data_center")


def disk_queryset():
    return Disk.objects.select_related("storage_domain", "template")


# Dashboard ---------------------------------------------------------------------------------


class DashboardView(PortalMixin, TemplateView):
    """The system at a glance. Its counts and capacity follow the status changes of every
    cluster's hosts and VMs live (static/olvm/live.js); `?fragment=live` answers just that
    part, which the page fetches again after a reconnect or when objects come or go."""

    template_name = "portals/dashboard.html"
    title = "Dashboard"
    section = "portals:dashboard"

    def get_template_names(self):
        if self.request.GET.get("fragment") == "live":
            return ["portals/inc/dashboard_live.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        totals = DataCenter.objects.aggregate(data_centers=Count("pk"))
        totals.update(Cluster.objects.aggregate(clusters=Count("pk")))
        totals.update(StorageDomain.objects.aggregate(storage_domains=Count("pk")))
        # One scan of the hosts and one of the VMs, grouped by cluster and status: the counts
        # by status and the capacity of every cluster both come from them.
        hosts = (
            Host.objects.order_by()
            .values_list("cluster_id", "status")
            .annotate(n=Count("pk"), memory=Sum("memory_mib"), threads=Sum("cpu_threads"))
        )
        vms = (
            VirtualMachine.objects.order_by()
            .values_list("cluster_id", "status")
            .annotate(n=Count("pk"), memory=Sum("memory_mib"), vcpus=Sum("vcpus"))
        )
        host_counts, vm_counts = defaultdict(int), defaultdict(int)
        per_cluster = defaultdict(lambda: defaultdict(int))
        for cluster_id, status, n, memory, threads in hosts:
            host_counts[status] += n
            usage = per_cluster[cluster_id]
            usage["host_count"] += n
            if status == HostStatus.UP:
                usage["hosts_up"] += n
                usage["host_memory"] += memory or 0
                usage["host_threads"] += threads or 0
        for cluster_id, status, n, memory, vcpus in vms:
            vm_counts[status] += n
            usage = per_cluster[cluster_id]
            usage["vm_count"] += n
            if status in RUNNING:
                usage["vms_running"] += n
                usage["vm_memory"] += memory or 0
                usage["vm_vcpus"] += vcpus or 0
        capacity = list(Cluster.objects.select_related("data_center").order_by("data_center__name", "name"))
        for cluster in capacity:
            usage = per_cluster[cluster.pk]
            for name in CAPACITY_FIELDS:
                setattr(cluster, name, usage[name])
        context.update(
            totals=totals,
            host_total=sum(host_counts.values()),
            vm_total=sum(vm_counts.values()),
            host_statuses=_status_rows(HostStatus.choices, host_counts),
            vm_statuses=_status_rows(VmStatus.choices, vm_counts),
            vms_running=sum(n for status, n in vm_counts.items() if status in RUNNING),
            hosts_up=host_counts.get(HostStatus.UP, 0),
            capacity=capacity,
        )
        return context


CAPACITY_FIELDS = (
    "host_count",
    "hosts_up",
    "host_memory",
    "host_threads",
    "vm_count",
    "vms_running",
    "vm_memory",
    "vm_vcpus",
)


def _status_rows(choices, counts: dict) -> list[dict]:
    return [{"code": code, "label": label, "count": counts.get(code, 0)} for code, label in choices if counts.get(code)]


# The system tree: what htmx fetches when a cluster or a host is expanded ----------------------


class TreePartialView(StaffRequiredMixin, View):
    """A fragment of the system tree (`<li>` items), for htmx; a fixed number of queries."""

    template_name = ""

    def handle_no_permission(self):
        # htmx follows a redirect and would put the sign-in page inside the tree: ask it to
        # load the sign-in page as the whole page instead (HX-Redirect), back to where it was.
        if self.request.headers.get("HX-Request") and not self.request.user.is_authenticated:
            response = HttpResponse(status=204)
            current = urlsplit(self.request.headers.get("HX-Current-URL", ""))
            next_url = (current.path or reverse("portals:dashboard")) + (f"?{current.query}" if current.query else "")
            response["HX-Redirect"] = f"{reverse('portals:login')}?{urlencode({'next': next_url})}"
            return response
        return super().handle_no_permission()

    def get(self, request, pk):
        return render(request, self.template_name, self.get_context(pk))

    def get_context(self, pk) -> dict:
        raise NotImplementedError


class TreeClusterView(TreePartialView):
    """The first hosts of a cluster, then a "more" link to the host list of that cluster."""

    template_name = "portals/inc/tree_hosts.html"

    def get_context(self, pk) -> dict:
        cluster = get_object_or_404(Cluster.objects.only("id", "name"), pk=pk)
        node = ClusterNode(cluster)
        node.hosts, node.host_count = cluster_hosts(cluster.pk)
        return {"cluster_node": node}


class PaneEventsView(StaffRequiredMixin, View):
    """The rows of the events pane for a filter (`severity`, `scope`, and `page` = "<kind>:<id>"
    of the page's object), for live.js when the filter changes: one query."""

    def get(self, request):
        pane_filter = PaneFilter.of(request.GET.get("severity", ""), request.GET.get("scope", ""))
        page_obj = None
        kind, _, obj_id = request.GET.get("page", "").partition(":")
        if kind and _is_uuid(obj_id):
            page_obj = (kind, uuid.UUID(obj_id))
        if page_obj is not None and page_obj[0] not in PAGE_OBJECT_FIELDS:
            page_obj = None
        events = pane_events(PANE_EVENTS, pane_filter, page_obj)
        filtered = bool(pane_filter.severity or pane_filter.scope)
        return render(request, "portals/inc/pane_events.html", {"events": events, "filtered": filtered})


class TreeHostView(TreePartialView):
    """The first VMs running on a host, then a "more" link to the VM list of that host."""

    template_name = "portals/inc/tree_vms.html"

    def get_context(self, pk) -> dict:
        host = get_object_or_404(Host.objects.only("id", "name"), pk=pk)
        node = HostNode(host)
        node.vms, node.vm_count = host_vms(host.pk)
        return {"host_node": node}


# Generic list / detail / edit / remove / action views --------------------------------------


class ObjectListView(PortalMixin, SingleTableMixin, FilterView):
    """A django-tables2 table over a FilterSet, paged on the server."""

    template_name = "portals/object_list.html"
    table_pagination = {"per_page": PAGE_SIZE}
    queryset_factory = None
    add_url_name: str | None = None
    add_label = "New"
    search_help: str | None = None  # a template included as the help of the search box

    def get_queryset(self):
        return type(self).queryset_factory()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["add_url"] = reverse(self.add_url_name) if self.add_url_name else None
        context["add_label"] = self.add_label
        context["search_help"] = self.search_help
        return context


@dataclass
class Tab:
    name: str
    label: str


class ObjectDetailView(PortalMixin, DetailView):
    """General tab plus related tabs; only the selected tab's data is read."""

    tabs: tuple[Tab, ...] = (Tab("general", "General"),)
    queryset_factory = None
    event_field = "object_id"  # how this object's events are found
    edit_url_name: str | None = None
    remove_url_name: str | None = None

    def get_queryset(self):
        return type(self).queryset_factory()

    def get_template_names(self):
        return [f"portals/{self.model._meta.model_name}_detail.html", "portals/object_detail.html"]

    def current_tab(self) -> Tab:
        name = self.request.GET.get("tab", "general")
        for tab in self.tabs:
            if tab.name == name:
                return tab
        raise Http404(f"No tab {name!r}.")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tab = self.current_tab()
        obj = self.object
        focus_tree_on(self.request, obj)
        show_page_object(self.request, obj)
        context.update(
            live_key=self.live_key(obj),
            title=label(obj),
            tabs=self.tabs,
            tab=tab.name,
            verbose_name=self.model._meta.verbose_name,
            edit_url=reverse(self.edit_url_name, args=[obj.pk]) if self.edit_url_name else None,
            remove_url=reverse(self.remove_url_name, args=[obj.pk]) if self.remove_url_name else None,
        )
        method = getattr(self, f"tab_{tab.name}", None)
        if method is not None:
            context.update(method(obj))
        return context

    def live_key(self, obj) -> str | None:
        """The live subscription of the page's object (`vm.<id>`...), None when it has none."""
        return None

    def paged(self, table) -> dict:
        RequestConfig(self.request, paginate={"per_page": TAB_PAGE_SIZE}).configure(table)
        return {"table": table}

    def monitoring(self, kind: str, obj) -> dict:
        """The general tab's current figures (hot cache, no query) and its charts' series URL."""
        from inventory.history import latest_samples, usage

        return {
            "usage": usage(kind, latest_samples(kind, [obj.pk]).get(str(obj.pk))),
            "history_url": reverse(f"api:{kind}-history", args=[obj.pk]),
        }

    def tab_events(self, obj) -> dict:
        events = Event.objects.filter(**{self.event_field: obj.pk})
        context = self.paged(tables.EventTable(events))
        context["all_events_url"] = f"{reverse('portals:event-list')}?{self.event_field}={obj.pk}"
        return context


class PermissionsTabMixin:
    """The Permissions tab of a data center, cluster, VM or template: every grant that holds on
    it (made on it, or inherited from above), adding and removing grants made on it."""

    def tab_permissions(self, obj):
        from inventory.permissions import grants_on, object_type_of

        context = self.paged(tables.PermissionTable(grants_on(obj)))
        context["permission_form"] = forms.PermissionForm(
            initial={"object_type": object_type_of(obj), "object_id": obj.pk}
        )
        return context


class ObjectEditView(PortalMixin, View):
    """Create (no pk) or edit (pk) one object through its service."""

    model = None
    form_class: type[forms.ServiceForm]
    queryset_factory = None
    template_name = "portals/object_edit.html"
    list_url_name = ""

    def get_object(self):
        pk = self.kwargs.get("pk")
        if pk is None:
            return None
        return get_object_or_404(type(self).queryset_factory(), pk=pk)

    def get_initial(self) -> dict:
        initial = {}
        for name in self.request.GET:
            initial[name] = self.request.GET.get(name)
        return initial

    def make_form(self, obj, data=None):
        instance = copy.copy(obj) if obj is not None else self.model()
        return self.form_class(data, instance=instance, initial=None if data is not None else self.get_initial())

    def get(self, request, *args, **kwargs):
        obj = self.get_object()
        return self.render(obj, self.make_form(obj))

    def post(self, request, *args, **kwargs):
        obj = self.get_object()
        form = self.make_form(obj, request.POST)
        if not form.is_valid():
            return self.render(obj, form)
        try:
            if obj is None:
                result = self.create(form)
            else:
                result = self.update(obj, form)
        except ValidationError as exc:
            form.add_service_errors(exc)
            return self.render(obj, form)
        except ConflictError as exc:
            messages.error(request, exc.message)
            return self.render(obj, form)
        saved, job = split_result(result)
        saved = saved or obj
        text = self.success_text(saved, created=obj is None) + self.extra_message(saved)
        job_started(request, job, text)
        return redirect(saved.get_absolute_url() if hasattr(saved, "get_absolute_url") else self.success_url(saved))

    def create(self, form):
        raise NotImplementedError

    def update(self, obj, form):
        raise NotImplementedError

    def success_text(self, saved, *, created: bool) -> str:
        if not saved:
            return ""
        verb = "created" if created else "saved"
        return f"{self.model._meta.verbose_name.capitalize()} {label(saved)} was {verb}."

    def extra_message(self, saved) -> str:
        return ""

    def success_url(self, saved) -> str:
        return reverse(self.list_url_name)

    def render(self, obj, form, status: int = 200):
        verbose = self.model._meta.verbose_name
        context = {
            "form": form,
            "object": obj,
            "title": f"Edit {verbose} {label(obj)}" if obj is not None else f"New {verbose}",
            "verbose_name": verbose,
            "cancel_url": (obj.get_absolute_url() if obj is not None and hasattr(obj, "get_absolute_url") else None)
            or reverse(self.list_url_name),
            "section": self.list_url_name,
        }
        context.update(self.extra_context(obj, form))
        return render(self.request, self.template_name, context, status=status)

    def extra_context(self, obj, form) -> dict:
        return {}


class ObjectRemoveView(PortalMixin, View):
    """GET: "Are you sure?"; POST: the remove service."""

    model = None
    list_url_name = ""
    template_name = "portals/confirm.html"
    form_class = None

    def remove(self, obj, form):
        raise NotImplementedError

    def get_object(self):
        return get_object_or_404(self.model._default_manager.all(), pk=self.kwargs["pk"])

    def get(self, request, pk):
        obj = self.get_object()
        return self.confirm(obj, self.form_class() if self.form_class else None)

    def confirm(self, obj, form):
        verbose = self.model._meta.verbose_name
        return render(
            self.request,
            self.template_name,
            {
                "title": f"Remove {verbose}",
                "question": f"Are you sure you want to remove the {verbose} {label(obj)}?",
                "detail": "This cannot be undone.",
                "object": obj,
                "form": form,
                "confirm_label": "Remove",
                "danger": True,
                "cancel_url": obj.get_absolute_url()
                if hasattr(obj, "get_absolute_url")
                else reverse(self.list_url_name),
                "section": self.list_url_name,
            },
        )

    def post(self, request, pk):
        obj = self.get_object()
        form = self.form_class(request.POST) if self.form_class else None
        if form is not None and not form.is_valid():
            return self.confirm(obj, form)
        name = label(obj)
        try:
            result = self.remove(obj, form)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, _error_text(exc))
            return redirect(obj.get_absolute_url() if hasattr(obj, "get_absolute_url") else self.list_url_name)
        _, job = split_result(result)
        job_started(request, job, f"{self.model._meta.verbose_name.capitalize()} {name} was removed.")
        return redirect(self.list_url_name)


@dataclass(frozen=True)
class Action:
    label: str
    service: Any
    confirm: bool = False
    question: str = ""
    danger: bool = False
    detail: str = ""  # the confirmation page's second line
    done: str = ""  # the banner once the service accepted it (default: "<label>: <object>.")


class ObjectActionView(PortalMixin, View):
    """A POST button that calls one service on one object; some ask for confirmation first."""

    model = None
    actions: dict[str, Action] = {}
    list_url_name = ""

    def get_action(self) -> Action:
        action = self.actions.get(self.kwargs["action"])
        if action is None:
            raise Http404("No such action.")
        return action

    def get(self, request, pk, action):
        act = self.get_action()
        obj = get_object_or_404(self.model._default_manager.all(), pk=pk)
        if not act.confirm:
            return HttpResponseNotAllowed(["POST"])
        return render(
            request,
            "portals/confirm.html",
            {
                "title": f"{act.label} {self.model._meta.verbose_name}",
                "question": act.question.format(obj=label(obj)),
                "detail": act.detail,
                "object": obj,
                "confirm_label": act.label,
                "danger": act.danger,
                "cancel_url": obj.get_absolute_url(),
                "section": self.list_url_name,
            },
        )

    def post(self, request, pk, action):
        act = self.get_action()
        obj = get_object_or_404(self.model._default_manager.all(), pk=pk)
        try:
            result = act.service(obj, user=request.user)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, _error_text(exc))
        else:
            _, job = split_result(result)
            job_started(request, job, f"{act.label}: {label(obj)}.")
        return redirect(obj.get_absolute_url())


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ConflictError):
        return exc.message
    return " ".join(getattr(exc, "messages", [str(exc)]))


# Data centers ------------------------------------------------------------------------------


class DataCenterListView(ObjectListView):
    model = DataCenter
    table_class = tables.DataCenterTable
    filterset_class = filtersets.DataCenterFilterSet
    queryset_factory = datacenter_queryset
    title = "Data Centers"
    section = "portals:datacenter-list"
    add_url_name = "portals:datacenter-add"


class DataCenterDetailView(PermissionsTabMixin, ObjectDetailView):
    model = DataCenter
    queryset_factory = datacenter_queryset
    event_field = "data_center_id"
    section = "portals:datacenter-list"
    edit_url_name = "portals:datacenter-edit"
    remove_url_name = "portals:datacenter-remove"
    tabs = (
        Tab("general", "General"),
        Tab("clusters", "Clusters"),
        Tab("storage", "Storage"),
        Tab("networks", "Logical Networks"),
        Tab("permissions", "Permissions"),
        Tab("events", "Events"),
    )

    def tab_clusters(self, obj):
        return self.paged(tables.ClusterTable(cluster_queryset().filter(data_center=obj)))

    def tab_storage(self, obj):
        return self.paged(tables.StorageDomainTable(storage_domain_queryset().filter(data_center=obj)))

    def tab_networks(self, obj):
        return self.paged(tables.LogicalNetworkTable(network_queryset().filter(data_center=obj)))


class DataCenterEditView(ObjectEditView):
    model = DataCenter
    form_class = forms.DataCenterForm
    queryset_factory = datacenter_queryset
    list_url_name = "portals:datacenter-list"

    def create(self, form):
        return inventory_services.create_data_center(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return inventory_services.update_data_center(obj, user=self.request.user, **form.service_changes())


class DataCenterRemoveView(ObjectRemoveView):
    model = DataCenter
    list_url_name = "portals:datacenter-list"

    def remove(self, obj, form):
        return inventory_services.remove_data_center(obj, user=self.request.user)


# Clusters ----------------------------------------------------------------------------------


class ClusterListView(ObjectListView):
    model = Cluster
    table_class = tables.ClusterTable
    filterset_class = filtersets.ClusterFilterSet
    queryset_factory = cluster_queryset
    title = "Clusters"
    section = "portals:cluster-list"
    add_url_name = "portals:cluster-add"


class ClusterDetailView(PermissionsTabMixin, ObjectDetailView):
    model = Cluster
    queryset_factory = cluster_queryset
    event_field = "cluster_id"
    section = "portals:cluster-list"
    edit_url_name = "portals:cluster-edit"
    remove_url_name = "portals:cluster-remove"
    tabs = (
        Tab("general", "General"),
        Tab("hosts", "Hosts"),
        Tab("vms", "Virtual Machines"),
        Tab("networks", "Logical Networks"),
        Tab("affinity", "Affinity Groups"),
        Tab("permissions", "Permissions"),
        Tab("events", "Events"),
    )

    def get_queryset(self):
        return super().get_queryset().select_related("mac_pool")

    def tab_affinity(self, obj):
        context = self.paged(tables.AffinityGroupTable(affinity_group_queryset().filter(cluster=obj)))
        context["add_url"] = reverse("portals:cluster-affinity-group-add", args=[obj.pk])
        context["add_label"] = "New affinity group"
        return context

    def tab_hosts(self, obj):
        return self.paged(tables.HostTable(host_queryset().filter(cluster=obj)))

    def tab_vms(self, obj):
        return self.paged(tables.VmTable(vm_queryset().filter(cluster=obj)))

    def tab_networks(self, obj):
        return self.paged(
            tables.ClusterNetworkTable(
                ClusterNetwork.objects.filter(cluster=obj).select_related("network", "cluster"),
                exclude=("cluster",),
            )
        )


class ClusterEditView(ObjectEditView):
    model = Cluster
    form_class = forms.ClusterForm
    queryset_factory = cluster_queryset
    list_url_name = "portals:cluster-list"

    def create(self, form):
        return inventory_services.create_cluster(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return inventory_services.update_cluster(obj, user=self.request.user, **form.service_changes())


class ClusterRemoveView(ObjectRemoveView):
    model = Cluster
    list_url_name = "portals:cluster-list"

    def remove(self, obj, form):
        return inventory_services.remove_cluster(obj, user=self.request.user)


# Affinity groups (a tab of their cluster) ---------------------------------------------------


def affinity_group_queryset():
    return AffinityGroup.objects.select_related("cluster").prefetch_related(
        Prefetch("vms", queryset=VirtualMachine.objects.only("id", "name")),
        Prefetch("hosts", queryset=Host.objects.only("id", "name")),
    )


def cluster_tab_url(cluster_id, tab: str) -> str:
    return f"{reverse('portals:cluster-detail', args=[cluster_id])}?tab={tab}"


class AffinityGroupEditView(ObjectEditView):
    """New / edit affinity group of a cluster (clusters/<cluster>/affinity-groups/...): back to
    the cluster's Affinity Groups tab."""

    model = AffinityGroup
    form_class = forms.AffinityGroupForm
    list_url_name = "portals:cluster-list"

    @cached_property
    def cluster(self):
        return get_object_or_404(Cluster.objects.all(), pk=self.kwargs["cluster_pk"])

    def get_object(self):
        pk = self.kwargs.get("pk")
        if pk is None:
            return None
        return get_object_or_404(affinity_group_queryset().filter(cluster=self.cluster), pk=pk)

    def make_form(self, obj, data=None):
        instance = copy.copy(obj) if obj is not None else AffinityGroup(cluster=self.cluster)
        return self.form_class(data, instance=instance, initial=None if data is not None else self.get_initial())

    def create(self, form):
        return compute_services.create_affinity_group(
            user=self.request.user, cluster=self.cluster, **form.service_kwargs()
        )

    def update(self, obj, form):
        return compute_services.update_affinity_group(obj, user=self.request.user, **form.service_changes())

    def success_text(self, saved, *, created: bool) -> str:
        verb = "added to" if created else "saved in"
        return f"Affinity group {saved.name} was {verb} cluster {self.cluster.name}."

    def success_url(self, saved) -> str:
        return cluster_tab_url(self.cluster.pk, "affinity")

    def extra_context(self, obj, form) -> dict:
        cluster = self.cluster
        return {
            "title": f"Edit affinity group {obj.name}"
            if obj is not None
            else f"New affinity group in cluster {cluster.name}",
            "cancel_url": cluster_tab_url(cluster.pk, "affinity"),
        }


class AffinityGroupRemoveView(PortalMixin, View):
    """GET: "Are you sure?"; POST: remove_affinity_group, then back to the cluster's tab."""

    def get_object(self):
        rows = AffinityGroup.objects.filter(cluster_id=self.kwargs["cluster_pk"]).select_related("cluster")
        return get_object_or_404(rows, pk=self.kwargs["pk"])

    def get(self, request, cluster_pk, pk):
        group = self.get_object()
        return render(
            request,
            "portals/confirm.html",
            {
                "title": "Remove affinity group",
                "question": f"Are you sure you want to remove affinity group {group.name} "
                f"of cluster {group.cluster.name}?",
                "detail": "Its VMs and hosts stay as they are; the scheduler stops applying its rules. "
                "This cannot be undone.",
                "object": group,
                "confirm_label": "Remove",
                "danger": True,
                "cancel_url": cluster_tab_url(cluster_pk, "affinity"),
                "section": "portals:cluster-list",
            },
        )

    def post(self, request, cluster_pk, pk):
        group = self.get_object()
        name, cluster = group.name, group.cluster
        try:
            compute_services.remove_affinity_group(group, user=request.user)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, _error_text(exc))
        else:
            messages.success(request, f"Affinity group {name} was removed from cluster {cluster.name}.")
        return redirect(cluster_tab_url(cluster_pk, "affinity"))


# Hosts -------------------------------------------------------------------------------------


class HostListView(ObjectListView):
    model = Host
    table_class = tables.HostTable
    filterset_class = filtersets.HostFilterSet
    queryset_factory = host_queryset
    title = "Hosts"
    section = "portals:host-list"
    add_url_name = "portals:host-add"
    add_label = "New host"
    search_help = "portals/inc/search_help.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["search_fields"] = list(HOST_FIELDS)
        context["search_kind"] = "Hosts"
        return context


class HostDetailView(ObjectDetailView):
    model = Host
    queryset_factory = host_queryset
    event_field = "host_id"
    section = "portals:host-list"
    edit_url_name = "portals:host-edit"
    remove_url_name = "portals:host-remove"
    tabs = (Tab("general", "General"), Tab("vms", "Virtual Machines"), Tab("events", "Events"))

    def live_key(self, obj) -> str:
        return f"host.{obj.pk}"

    def tab_general(self, obj):
        return self.monitoring("host", obj)

    def tab_vms(self, obj):
        return self.paged(tables.VmTable(vm_queryset().filter(run_on_host=obj), exclude=("run_on_host",)))

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        host = self.object
        context["can_activate"] = host.status in (HostStatus.MAINTENANCE, HostStatus.NON_OPERATIONAL, HostStatus.DOWN)
        context["can_maintenance"] = host.status not in (HostStatus.MAINTENANCE, HostStatus.PREPARING_FOR_MAINTENANCE)
        context["can_reinstall"] = host.status in inventory_services.REINSTALLABLE
        context["remove_disabled"] = host.status not in (HostStatus.MAINTENANCE, HostStatus.INSTALL_FAILED)
        context["remove_disabled_reason"] = "Move the host to maintenance first."
        return context


class HostEditView(ObjectEditView):
    model = Host
    form_class = forms.HostForm
    queryset_factory = host_queryset
    list_url_name = "portals:host-list"

    def create(self, form):
        return inventory_services.add_host(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return inventory_services.update_host(obj, user=self.request.user, **form.service_changes())


class HostRemoveView(ObjectRemoveView):
    model = Host
    list_url_name = "portals:host-list"

    def remove(self, obj, form):
        return inventory_services.remove_host(obj, user=self.request.user)


class HostActionView(ObjectActionView):
    model = Host
    list_url_name = "portals:host-list"
    actions = {
        "maintenance": Action(
            "Maintenance",
            inventory_services.deactivate_host,
            confirm=True,
            question="Are you sure you want to move host {obj} to maintenance?",
            detail="Its running VMs are live-migrated to other hosts first (the scheduler picks each one). "
            "A VM that cannot move stops the maintenance, and the host stays up.",
        ),
        "activate": Action("Activate", inventory_services.activate_host),
        "reinstall": Action(
            "Reinstall",
            inventory_services.reinstall_host,
            confirm=True,
            question="Reinstall host {obj}? Its agent is configured and restarted with a new certificate.",
        ),
    }


# Virtual machines --------------------------------------------------------------------------

VM_ACTIONS = {
    "run": Action("Run", compute_services.start_vm),
    "shutdown": Action(
        "Shutdown",
        compute_services.shutdown_vm,
        confirm=True,
        question="Are you sure you want to shut down VM {obj}? The guest OS is asked to power off.",
        danger=True,
    ),
    "poweroff": Action(
        "Power Off",
        compute_services.stop_vm,
        confirm=True,
        question="Are you sure you want to power off VM {obj}? This is like pulling the plug: unsaved data is lost.",
        danger=True,
    ),
    "reboot": Action("Reboot", compute_services.reboot_vm),
    "suspend": Action("Suspend", compute_services.suspend_vm),
    "resume": Action("Resume", compute_services.resume_vm),
    "cancel_migration": Action(
        "Cancel migration",
        compute_services.cancel_migration,
        confirm=True,
        question="Cancel the migration of VM {obj}? It keeps running on its current host.",
        danger=True,
    ),
}
# Button name -> the state machine's action name (what statuses allow it).
VM_ACTION_STATES = {
    "run": "start",
    "shutdown": "shutdown",
    "poweroff": "stop",
    "reboot": "reboot",
    "suspend": "suspend",
    "resume": "resume",
    "cancel_migration": "cancel_migration",
}


class VmListView(ObjectListView):
    model = VirtualMachine
    table_class = tables.VmTable
    filterset_class = filtersets.VmFilterSet
    queryset_factory = vm_queryset
    title = "Virtual Machines"
    section = "portals:vm-list"
    add_url_name = "portals:vm-add"
    add_label = "New VM"
    search_help = "portals/inc/search_help.html"

    # What VmTable shows and no more: the rows of the related objects are wide (JSON
    # settings). A column reading another field would cost a query per row (the pinned
    # query counts of the tests catch it).
    list_fields = (
        *("id", "name", "status", "description", "os_type", "vcpus", "memory_mib", "guest_ips"),
        *("cluster__id", "cluster__name", "data_center__id", "data_center__name"),
        *("run_on_host__id", "run_on_host__name"),
    )

    def get_queryset(self):
        return super().get_queryset().only(*self.list_fields)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["search_fields"] = list(VM_FIELDS)
        context["search_kind"] = "Vms"
        return context


class VmDetailView(PermissionsTabMixin, ObjectDetailView):
    model = VirtualMachine
    queryset_factory = vm_queryset
    event_field = "vm_id"
    section = "portals:vm-list"
    edit_url_name = "portals:vm-edit"
    remove_url_name = "portals:vm-remove"
    tabs = (
        Tab("general", "General"),
        Tab("disks", "Disks"),
        Tab("nics", "Network Interfaces"),
        Tab("snapshots", "Snapshots"),
        Tab("affinity", "Affinity Groups"),
        Tab("permissions", "Permissions"),
        Tab("events", "Events"),
    )

    def get_queryset(self):
        return super().get_queryset().select_related("template", "instance_type", "cluster__data_center", "owner")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        vm = self.object
        context["vm_actions"] = [
            (name, action, vm.status in ACTIONS[VM_ACTION_STATES[name]][0]) for name, action in VM_ACTIONS.items()
        ]
        context["remove_disabled"] = vm.status != VmStatus.DOWN
        context["remove_disabled_reason"] = "Only a VM that is down can be removed."
        context["vm_action_states"] = {name: sorted(ACTIONS[VM_ACTION_STATES[name]][0]) for name in VM_ACTIONS}
        # The Console link follows the VM's status live like the buttons (live.js): a VM started
        # from this page gets its console without a reload.
        context["console_allowed"] = vm.status in compute_services.CONSOLE_STATUSES and vm.run_on_host_id is not None
        context["vm_action_states"]["console"] = sorted(compute_services.CONSOLE_STATUSES)
        context["vm_action_states"]["migrate"] = sorted(ACTIONS["migrate"][0])
        context["migrate_allowed"] = vm.status in ACTIONS["migrate"][0]
        return context

    def live_key(self, obj) -> str:
        return f"vm.{obj.pk}"

    def tab_general(self, obj):
        return self.monitoring("vm", obj)

    def tab_disks(self, obj):
        attachments = DiskAttachment.objects.filter(vm=obj).select_related("disk__storage_domain")
        context = self.paged(tables.DiskAttachmentTable(attachments))
        context["add_url"] = f"{reverse('portals:disk-add')}?vm={obj.pk}"
        context["add_label"] = "New disk"
        return context

    def tab_nics(self, obj):
        context = self.paged(tables.VmNicTable(VmNic.objects.filter(vm=obj).select_related("profile__network")))
        context["add_url"] = reverse("portals:vm-nic-add", args=[obj.pk])
        context["add_label"] = "New network interface"
        return context

    def tab_snapshots(self, obj):
        return self.paged(tables.SnapshotTable(Snapshot.objects.filter(vm=obj)))

    def tab_affinity(self, obj):
        """The groups the VM is in (they belong to its cluster, where they are added)."""
        context = self.paged(tables.AffinityGroupTable(affinity_group_queryset().filter(vms=obj)))
        context["add_url"] = reverse("portals:cluster-affinity-group-add", args=[obj.cluster_id])
        context["add_label"] = "New affinity group in the VM's cluster"
        return context


class VmEditView(ObjectEditView):
    model = VirtualMachine
    form_class = forms.VmForm
    queryset_factory = vm_queryset
    list_url_name = "portals:vm-list"

    def create(self, form):
        return compute_services.create_vm(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return compute_services.update_vm(obj, user=self.request.user, **form.service_changes())

    def extra_message(self, saved) -> str:
        pending = sorted((saved.next_run_config or {}).keys()) if saved is not None else []
        if pending and saved.status in RUNNING:
            return f" Changes waiting for the next run: {', '.join(pending)}."
        return ""

    def extra_context(self, obj, form) -> dict:
        return {"next_run_fields": sorted(getattr(form, "next_run_fields", ())), "vm": obj}


class VmRemoveView(ObjectRemoveView):
    model = VirtualMachine
    list_url_name = "portals:vm-list"
    form_class = forms.RemoveVmForm

    def remove(self, obj, form):
        return compute_services.remove_vm(obj, user=self.request.user, remove_disks=form.cleaned_data["remove_disks"])


class VmActionView(ObjectActionView):
    model = VirtualMachine
    list_url_name = "portals:vm-list"
    actions = VM_ACTIONS


class VmMigrateView(PortalMixin, View):
    """Migrate a running VM: to a host the administrator picks, or where the scheduler places
    it. A refusal shows each host and the filter that removed it."""

    template_name = "portals/vm_migrate.html"

    def render_form(self, request, vm, *, error=None, chosen="", status=200):
        hosts = Host.objects.filter(cluster_id=vm.cluster_id).exclude(pk=vm.run_on_host_id).order_by("name")
        context = {
            "object": vm,
            "hosts": hosts,
            "chosen": chosen,
            "error": error.message if error else "",
            "rejected": (error.details or {}).get("rejected", []) if error else [],
            "section": "portals:vm-list",
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request, pk):
        return self.render_form(request, get_object_or_404(vm_queryset(), pk=pk))

    def post(self, request, pk):
        vm = get_object_or_404(vm_queryset(), pk=pk)
        chosen = request.POST.get("host", "")
        target = None
        if chosen:
            try:
                target = Host.objects.filter(pk=uuid.UUID(chosen), cluster_id=vm.cluster_id).first()
            except ValueError:
                target = None
            if target is None:
                return self.render_form(
                    request, vm, error=ConflictError("Choose a host of the VM's cluster."), status=400
                )
        try:
            job = compute_services.migrate_vm(vm, user=request.user, target_host=target)
        except ConflictError as exc:
            return self.render_form(request, vm, error=exc, chosen=chosen, status=409)
        job_started(request, job, f"Migration of VM {vm.name} started.")
        return redirect(vm.get_absolute_url())


class SnapshotCreateView(PortalMixin, View):
    def post(self, request, pk):
        vm = get_object_or_404(VirtualMachine.objects.all(), pk=pk)
        form = forms.SnapshotForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A snapshot needs a description.")
        else:
            try:
                _, job = compute_services.create_snapshot(vm, user=request.user, **form.cleaned_data)
            except (ConflictError, ValidationError) as exc:
                messages.error(request, _error_text(exc))
            else:
                job_started(request, job, f"Snapshot of VM {vm} requested.")
        return redirect(f"{vm.get_absolute_url()}?tab=snapshots")


def vm_tab_url(vm, tab: str) -> str:
    return f"{vm.get_absolute_url()}?tab={tab}"


class VmNicEditView(ObjectEditView):
    """New / edit network interface of a VM (vms/<vm>/nics/...): back to the VM's tab."""

    model = VmNic
    form_class = forms.VmNicForm
    list_url_name = "portals:vm-list"

    @cached_property
    def vm(self):
        return get_object_or_404(vm_queryset(), pk=self.kwargs["vm_pk"])

    def get_object(self):
        vm = self.vm
        pk = self.kwargs.get("pk")
        if pk is None:
            return None
        nic = get_object_or_404(VmNic.objects.filter(vm=vm).select_related("profile__network"), pk=pk)
        nic.vm = vm
        return nic

    def get_initial(self) -> dict:
        initial = super().get_initial()
        if self.kwargs.get("pk") is None:  # a new NIC: the name the service would give it
            names = set(VmNic.objects.filter(vm=self.vm).values_list("name", flat=True))
            initial.setdefault("name", next(f"nic{n}" for n in range(1, len(names) + 2) if f"nic{n}" not in names))
        return initial

    def make_form(self, obj, data=None):
        instance = copy.copy(obj) if obj is not None else VmNic(vm=self.vm)
        return self.form_class(data, instance=instance, initial=None if data is not None else self.get_initial())

    def create(self, form):
        return networking_services.create_nic(self.vm, user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return networking_services.update_nic(obj, user=self.request.user, **form.service_changes())

    def success_text(self, saved, *, created: bool) -> str:
        return f"Network interface {saved.name} was {'added to' if created else 'saved on'} VM {self.vm.name}."

    def success_url(self, saved) -> str:
        return vm_tab_url(self.vm, "nics")

    def extra_context(self, obj, form) -> dict:
        vm = self.vm
        return {
            "nic_vm": vm,
            "nic_vm_running": vm.status in RUNNING,
            "verbose_name": "Network interface",
            "title": f"Edit network interface {obj.name}" if obj is not None else "New network interface",
            "cancel_url": vm_tab_url(vm, "nics"),
        }


class VmItemActionView(PortalMixin, View):
    """A confirmed action on one row of a VM's tab (a NIC, a snapshot, a disk): GET asks,
    POST calls the service, then back to the tab with the outcome or the refusal as a banner."""

    model = None
    noun = ""  # how the confirmation page names the row
    tab = ""
    related: tuple[str, ...] = ()
    actions: dict[str, Action] = {}

    def get_action(self) -> Action:
        action = self.actions.get(self.kwargs["action"])
        if action is None:
            raise Http404("No such action.")
        return action

    def get_object(self):
        rows = self.model._default_manager.filter(vm_id=self.kwargs["vm_pk"]).select_related("vm", *self.related)
        return get_object_or_404(rows, pk=self.kwargs["pk"])

    def item_label(self, obj) -> str:
        return label(obj)

    def get(self, request, vm_pk, pk, action):
        act = self.get_action()
        obj = self.get_object()
        if not act.confirm:
            return HttpResponseNotAllowed(["POST"])
        names = {"obj": self.item_label(obj), "vm": obj.vm.name}
        return render(
            request,
            "portals/confirm.html",
            {
                "title": f"{act.label} {self.noun}",
                "question": act.question.format(**names),
                "detail": act.detail.format(**names),
                "object": obj,
                "confirm_label": act.label,
                "danger": act.danger,
                "cancel_url": vm_tab_url(obj.vm, self.tab),
                "section": "portals:vm-list",
            },
        )

    def post(self, request, vm_pk, pk, action):
        act = self.get_action()
        obj = self.get_object()
        names = {"obj": self.item_label(obj), "vm": obj.vm.name}
        try:
            result = act.service(obj, user=request.user)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, _error_text(exc))
        else:
            _, job = split_result(result)
            text = f"{act.label}: {names['obj']}." if job is not None or not act.done else act.done.format(**names)
            job_started(request, job, text)
        return redirect(vm_tab_url(obj.vm, self.tab))


class VmNicActionView(VmItemActionView):
    model = VmNic
    noun = "network interface"
    tab = "nics"
    actions = {
        "remove": Action(
            "Remove",
            networking_services.remove_nic,
            confirm=True,
            question="Are you sure you want to remove network interface {obj} from VM {vm}?",
            detail="This cannot be undone. On a running VM, unplug the interface first (edit it).",
            danger=True,
            done="Network interface {obj} was removed from VM {vm}.",
        ),
    }


# Snapshot actions, the same in both portals.
SNAPSHOT_ACTIONS = {
    "revert": Action(
        "Revert",
        compute_services.revert_snapshot,
        confirm=True,
        question="Are you sure you want to revert VM {vm} to snapshot '{obj}'?",
        detail="The VM must be down. The current state of its disks is lost: they go back to what they were "
        "when the snapshot was taken.",
        danger=True,
    ),
    "remove": Action(
        "Delete",
        compute_services.remove_snapshot,
        confirm=True,
        question="Are you sure you want to delete snapshot '{obj}' of VM {vm}?",
        detail="This cannot be undone.",
        danger=True,
    ),
}


class VmSnapshotActionView(VmItemActionView):
    model = Snapshot
    noun = "snapshot"
    tab = "snapshots"
    actions = SNAPSHOT_ACTIONS


def _remove_attached_disk(attachment: DiskAttachment, *, user):
    return storage_services.remove_disk(attachment.disk, user=user)


class VmDiskActionView(VmItemActionView):
    model = DiskAttachment
    noun = "disk"
    tab = "disks"
    related = ("disk",)
    actions = {
        "detach": Action(
            "Detach",
            storage_services.detach_disk,
            confirm=True,
            question="Are you sure you want to detach disk {obj} from VM {vm}?",
            detail="The disk and its data stay on the storage domain and can be attached again. On a running VM "
            "it is unplugged first.",
            danger=True,
            done="Disk {obj} was detached from VM {vm}.",
        ),
        "remove": Action(
            "Remove",
            _remove_attached_disk,
            confirm=True,
            question="Are you sure you want to remove disk {obj} of VM {vm}?",
            detail="The disk is deleted from its storage domain with all its data; the VM must be down. "
            "This cannot be undone.",
            danger=True,
        ),
    }

    def item_label(self, obj) -> str:
        return obj.disk.alias


# Templates ---------------------------------------------------------------------------------


class TemplateListView(ObjectListView):
    model = Template
    table_class = tables.TemplateTable
    filterset_class = filtersets.TemplateFilterSet
    queryset_factory = template_queryset
    title = "Templates"
    section = "portals:template-list"
    add_url_name = "portals:template-add"


class TemplateDetailView(PermissionsTabMixin, ObjectDetailView):
    model = Template
    queryset_factory = template_queryset
    section = "portals:template-list"
    edit_url_name = "portals:template-edit"
    remove_url_name = "portals:template-remove"
    tabs = (
        Tab("general", "General"),
        Tab("vms", "Virtual Machines"),
        Tab("disks", "Disks"),
        Tab("versions", "Sub Versions"),
        Tab("permissions", "Permissions"),
        Tab("events", "Events"),
    )

    def get_queryset(self):
        return super().get_queryset().select_related("base_template")

    def tab_vms(self, obj):
        return self.paged(tables.VmTable(vm_queryset().filter(template=obj)))

    def tab_disks(self, obj):
        return self.paged(tables.DiskTable(disk_queryset().filter(template=obj), exclude=("template",)))

    def tab_versions(self, obj):
        base = obj.base_template or obj
        versions = template_queryset().filter(Q(pk=base.pk) | Q(base_template=base))
        return self.paged(tables.TemplateTable(versions))


class TemplateEditView(ObjectEditView):
    model = Template
    form_class = forms.TemplateForm
    queryset_factory = template_queryset
    list_url_name = "portals:template-list"

    def get_initial(self) -> dict:
        initial = super().get_initial()
        vm_id = initial.get("vm")
        if vm_id:
            vm = VirtualMachine.objects.filter(pk=vm_id).first() if _is_uuid(vm_id) else None
            if vm is None:
                initial.pop("vm")
            else:
                initial["vm"] = vm
        return initial

    def create(self, form):
        return compute_services.create_template(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return compute_services.update_template(obj, user=self.request.user, **form.service_changes())

    def extra_context(self, obj, form) -> dict:
        return {"source_vm": getattr(form, "source_vm", None)}


class TemplateRemoveView(ObjectRemoveView):
    model = Template
    list_url_name = "portals:template-list"

    def remove(self, obj, form):
        return compute_services.remove_template(obj, user=self.request.user)


# Networks ----------------------------------------------------------------------------------


class NetworkListView(ObjectListView):
    model = LogicalNetwork
    table_class = tables.LogicalNetworkTable
    filterset_class = filtersets.LogicalNetworkFilterSet
    queryset_factory = network_queryset
    title = "Networks"
    section = "portals:network-list"
    add_url_name = "portals:network-add"

    def get_queryset(self):
        return super().get_queryset().distinct()


class NetworkDetailView(ObjectDetailView):
    model = LogicalNetwork
    queryset_factory = network_queryset
    section = "portals:network-list"
    edit_url_name = "portals:network-edit"
    remove_url_name = "portals:network-remove"
    tabs = (
        Tab("general", "General"),
        Tab("clusters", "Clusters"),
        Tab("profiles", "vNIC Profiles"),
        Tab("events", "Events"),
    )

    def tab_clusters(self, obj):
        attachments = ClusterNetwork.objects.filter(network=obj).select_related("cluster", "network")
        return self.paged(tables.ClusterNetworkTable(attachments, exclude=("network",)))

    def tab_profiles(self, obj):
        context = self.paged(tables.VnicProfileTable(vnic_profile_queryset().filter(network=obj)))
        context["add_url"] = f"{reverse('portals:vnicprofile-add')}?network={obj.pk}"
        context["add_label"] = "New vNIC profile"
        return context


class NetworkEditView(ObjectEditView):
    model = LogicalNetwork
    form_class = forms.LogicalNetworkForm
    queryset_factory = network_queryset
    list_url_name = "portals:network-list"

    def create(self, form):
        return networking_services.create_network(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return networking_services.update_network(obj, user=self.request.user, **form.service_changes())


class NetworkRemoveView(ObjectRemoveView):
    model = LogicalNetwork
    list_url_name = "portals:network-list"

    def remove(self, obj, form):
        return networking_services.remove_network(obj, user=self.request.user)


class VnicProfileListView(ObjectListView):
    model = VnicProfile
    table_class = tables.VnicProfileTable
    filterset_class = filtersets.VnicProfileFilterSet
    queryset_factory = vnic_profile_queryset
    title = "vNIC Profiles"
    section = "portals:vnicprofile-list"
    add_url_name = "portals:vnicprofile-add"


class VnicProfileDetailView(ObjectDetailView):
    model = VnicProfile
    queryset_factory = vnic_profile_queryset
    section = "portals:vnicprofile-list"
    edit_url_name = "portals:vnicprofile-edit"
    remove_url_name = "portals:vnicprofile-remove"
    tabs = (Tab("general", "General"), Tab("nics", "Virtual Machines"), Tab("events", "Events"))

    def tab_nics(self, obj):
        return self.paged(tables.ProfileNicTable(VmNic.objects.filter(profile=obj).select_related("vm")))


class VnicProfileEditView(ObjectEditView):
    model = VnicProfile
    form_class = forms.VnicProfileForm
    queryset_factory = vnic_profile_queryset
    list_url_name = "portals:vnicprofile-list"

    def create(self, form):
        return networking_services.create_vnic_profile(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return networking_services.update_vnic_profile(obj, user=self.request.user, **form.service_changes())

    def success_url(self, saved) -> str:
        return reverse("portals:vnicprofile-detail", args=[saved.pk])


class VnicProfileRemoveView(ObjectRemoveView):
    model = VnicProfile
    list_url_name = "portals:vnicprofile-list"

    def remove(self, obj, form):
        return networking_services.remove_vnic_profile(obj, user=self.request.user)


# Storage -----------------------------------------------------------------------------------


class StorageDomainListView(ObjectListView):
    model = StorageDomain
    table_class = tables.StorageDomainTable
    filterset_class = filtersets.StorageDomainFilterSet
    queryset_factory = storage_domain_queryset
    title = "Storage Domains"
    section = "portals:storagedomain-list"
    add_url_name = "portals:storagedomain-add"


class StorageDomainDetailView(ObjectDetailView):
    model = StorageDomain
    queryset_factory = storage_domain_queryset
    event_field = "storage_domain_id"
    section = "portals:storagedomain-list"
    edit_url_name = "portals:storagedomain-edit"
    remove_url_name = "portals:storagedomain-remove"
    tabs = (Tab("general", "General"), Tab("disks", "Disks"), Tab("events", "Events"))

    def live_key(self, obj) -> str:
        return f"storage.{obj.pk}"

    def tab_general(self, obj):
        return {"history_url": reverse("api:storage-domain-history", args=[obj.pk])}

    def tab_disks(self, obj):
        return self.paged(tables.DiskTable(disk_queryset().filter(storage_domain=obj), exclude=("storage_domain",)))


class StorageDomainEditView(ObjectEditView):
    model = StorageDomain
    form_class = forms.StorageDomainForm
    queryset_factory = storage_domain_queryset
    list_url_name = "portals:storagedomain-list"

    def create(self, form):
        return storage_services.create_storage_domain(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return storage_services.update_storage_domain(obj, user=self.request.user, **form.service_changes())


class StorageDomainRemoveView(ObjectRemoveView):
    model = StorageDomain
    list_url_name = "portals:storagedomain-list"

    def remove(self, obj, form):
        return storage_services.remove_storage_domain(obj, user=self.request.user)


class DiskListView(ObjectListView):
    model = Disk
    table_class = tables.DiskTable
    filterset_class = filtersets.DiskFilterSet
    queryset_factory = disk_queryset
    title = "Disks"
    section = "portals:disk-list"
    add_url_name = "portals:disk-add"


class DiskDetailView(ObjectDetailView):
    model = Disk
    queryset_factory = disk_queryset
    section = "portals:disk-list"
    edit_url_name = "portals:disk-edit"
    remove_url_name = "portals:disk-remove"
    tabs = (Tab("general", "General"), Tab("vms", "Virtual Machines"), Tab("events", "Events"))

    def get_queryset(self):
        return super().get_queryset().select_related("backing_disk")

    def tab_vms(self, obj):
        return self.paged(tables.DiskVmTable(DiskAttachment.objects.filter(disk=obj).select_related("vm")))


class DiskEditView(ObjectEditView):
    model = Disk
    form_class = forms.DiskForm
    queryset_factory = disk_queryset
    list_url_name = "portals:disk-list"

    def get_initial(self) -> dict:
        initial = super().get_initial()
        vm_id = initial.get("vm")
        if vm_id:
            vm = VirtualMachine.objects.filter(pk=vm_id).first() if _is_uuid(vm_id) else None
            if vm is None:
                initial.pop("vm")
            else:
                initial.setdefault("alias", f"{vm.name}_Disk{DiskAttachment.objects.filter(vm=vm).count() + 1}")
        return initial

    def create(self, form):
        return storage_services.create_disk(user=self.request.user, **form.service_kwargs())

    def update(self, obj, form):
        return storage_services.update_disk(obj, user=self.request.user, **form.service_changes())

    def extra_context(self, obj, form) -> dict:
        vm = form["vm"].value() if "vm" in form.fields else None
        target = VirtualMachine.objects.filter(pk=vm).first() if vm and _is_uuid(vm) else None
        return {"attach_vm": target}


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class DiskRemoveView(ObjectRemoveView):
    model = Disk
    list_url_name = "portals:disk-list"

    def remove(self, obj, form):
        return storage_services.remove_disk(obj, user=self.request.user)


# Administration ----------------------------------------------------------------------------


class UserListView(ObjectListView):
    model = get_user_model()
    table_class = tables.UserTable
    filterset_class = filtersets.UserFilterSet
    title = "Users"
    section = "portals:user-list"

    def get_queryset(self):
        grants = Permission.objects.select_related("role").order_by("role__name")
        return get_user_model().objects.order_by("username").prefetch_related(Prefetch("olvm_permissions", grants))


class EventListView(ObjectListView):
    model = Event
    table_class = tables.EventTable
    filterset_class = filtersets.EventFilterSet
    title = "Events"
    section = "portals:event-list"

    def get_queryset(self):
        return Event.objects.order_by("-time", "-id")


class JobListView(ObjectListView):
    model = Job
    table_class = tables.JobTable
    filterset_class = filtersets.JobFilterSet
    title = "Tasks"
    section = "portals:job-list"

    def get_queryset(self):
        return Job.objects.select_related("owner").order_by("-started_at")


class JobDetailView(PortalMixin, DetailView):
    model = Job
    template_name = "portals/job_detail.html"
    section = "portals:job-list"

    def get_queryset(self):
        return Job.objects.select_related("owner")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        job = self.object
        context["title"] = job.description
        context["steps_table"] = tables.StepTable(job.steps.all())
        context["object_url"] = tables.object_url(job.object_type, job.object_id)
        context["events_url"] = f"{reverse('portals:event-list')}?correlation_id={job.correlation_id}"
        context["is_active"] = job.status == JobStatus.STARTED
        return context


# Permissions -------------------------------------------------------------------------------


def permissions_tab_url(obj) -> str:
    """The Permissions tab of `obj`, or the system permissions page for None."""
    if obj is None:
        return reverse("portals:permission-list")
    return f"{obj.get_absolute_url()}?tab=permissions"


class SystemPermissionListView(PortalMixin, TemplateView):
    """The grants on the system (they hold on every object), with add and remove."""

    template_name = "portals/permission_list.html"
    title = "System permissions"
    section = "portals:permission-list"

    def get_context_data(self, **kwargs):
        from inventory.permissions import SYSTEM, grants_on

        context = super().get_context_data(**kwargs)
        table = tables.PermissionTable(grants_on(None))
        RequestConfig(self.request, paginate={"per_page": PAGE_SIZE}).configure(table)
        context.update(table=table, permission_form=forms.PermissionForm(initial={"object_type": SYSTEM}))
        return context


class PermissionAddView(PortalMixin, View):
    """POST: grant a role to a user or group on the object the form names."""

    def post(self, request):
        from inventory.permissions import object_of

        form = forms.PermissionForm(request.POST)
        if not form.is_valid():
            obj = None
            if form.cleaned_data.get("object_type") and form.cleaned_data.get("object_id"):
                obj = object_of(form.cleaned_data["object_type"], form.cleaned_data["object_id"])
            messages.error(request, " ".join(m for errors in form.errors.values() for m in errors))
            return redirect(permissions_tab_url(obj))
        data = form.cleaned_data
        obj = None
        if data["object_type"] != "system":
            obj = object_of(data["object_type"], data["object_id"])
            if obj is None:
                raise Http404("No such object.")
        principal = data.get("user") or data.get("group")
        try:
            inventory_services.grant_permission(user=request.user, principal=principal, role=data["role"], obj=obj)
        except ValidationError as exc:
            messages.error(request, _error_text(exc))
        else:
            messages.success(request, f"Role {data['role'].name} was granted to {principal}.")
        return redirect(permissions_tab_url(obj))


class PermissionRemoveView(PortalMixin, View):
    """GET: "Are you sure?"; POST: revoke the grant."""

    def get_object(self, pk):
        return get_object_or_404(Permission.objects.select_related("user", "group", "role"), pk=pk)

    def get(self, request, pk):
        from inventory.permissions import object_label, object_of

        permission = self.get_object(pk)
        obj = object_of(permission.object_type, permission.object_id)
        return render(
            request,
            "portals/confirm.html",
            {
                "title": "Remove permission",
                "question": f"Are you sure you want to take role {permission.role.name} on {object_label(obj)} "
                f"from {permission.principal_name}?",
                "detail": "They lose what the role allowed on it and on everything below it.",
                "confirm_label": "Remove",
                "danger": True,
                "cancel_url": permissions_tab_url(obj),
                "section": "portals:permission-list",
            },
        )

    def post(self, request, pk):
        from inventory.permissions import object_of

        permission = self.get_object(pk)
        obj = object_of(permission.object_type, permission.object_id)
        inventory_services.revoke_permission(permission, user=request.user)
        messages.success(request, f"Role {permission.role.name} was taken from {permission.principal_name}.")
        return redirect(permissions_tab_url(obj))
