"""FilterSets of the portal list pages: the search box and the filters.

A filter on a related object (`RelatedFilter`) takes the object's id (the links of the
tree and the detail pages use it) or its name. It renders as a select of every object
while there are at most MAX_FILTER_OPTIONS of them, and as a text box beyond that (hosts
always: there can be thousands), so no filter form grows with the inventory: one query
of at most MAX_FILTER_OPTIONS + 1 rows per select, none for a text box.
"""

import uuid

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Q

from compute.choices import OsType, VmStatus
from compute.models import Template, VirtualMachine
from inventory.choices import EventSeverity, HostStatus, JobStatus, ObjectType
from inventory.models import Cluster, DataCenter, Event, Host, Job
from networking.models import LogicalNetwork, VnicProfile
from storage.choices import DiskStatus, StorageDomainRole, StorageDomainStatus, StorageDomainType
from storage.models import Disk, StorageDomain

from .forms import bootstrap_widget
from .search import HOST_FIELDS, VM_FIELDS, SearchError, parse_search, search_q

MAX_FILTER_OPTIONS = 200


class RelatedFilter(django_filters.Filter):
    """Rows whose `field_name` is one object, given by id or by name (`name*`: a prefix).

    `queryset` lists the objects a select offers; without one (or with more than
    `max_options`, by default MAX_FILTER_OPTIONS, objects) the filter is a text box.
    """

    field_class = forms.CharField

    def __init__(self, *, queryset=None, max_options: int | None = None, placeholder: str = "", **kwargs):
        self.queryset = queryset
        self.max_options = max_options
        self.placeholder = placeholder or "Name, or prefix*"
        kwargs.setdefault("max_length", 255)
        super().__init__(**kwargs)

    def filter(self, qs, value):
        value = (value or "").strip()
        if not value:
            return qs
        try:
            lookup = {self.field_name: uuid.UUID(value)}
        except ValueError:
            if value.endswith("*") and value[:-1]:
                lookup = {f"{self.field_name}__name__istartswith": value[:-1]}
            else:
                lookup = {f"{self.field_name}__name__iexact": value}
        qs = self.get_method(qs)(**lookup)
        return qs.distinct() if self.distinct else qs

    def options(self) -> list[tuple[str, str]] | None:
        """(id, name) of every object, or None when there are more than `max_options`."""
        if self.queryset is None:
            return None
        limit = self.max_options or MAX_FILTER_OPTIONS
        rows = list(self.queryset.order_by("name").values_list("pk", "name")[: limit + 1])
        if len(rows) > limit:
            return None
        return [(str(pk), name) for pk, name in rows]

    def widget(self, value) -> forms.Widget:
        """A select of the options, or a text box; `value` is what the request asked for."""
        options = self.options()
        if options is None:
            return forms.TextInput(attrs={"placeholder": self.placeholder, "type": "search"})
        value = (value or "").strip() if isinstance(value, str) else ""
        if value and value not in {pk for pk, _ in options}:
            options.append((value, value))  # a name (or an unknown id) typed in the URL: keep it visible
        return forms.Select(choices=[("", "Any"), *options])


class PortalFilterSet(django_filters.FilterSet):
    """A FilterSet whose form renders with small Bootstrap widgets and "Any" as the empty choice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for filter_ in self.filters.values():
            if isinstance(filter_, django_filters.ChoiceFilter | django_filters.ModelChoiceFilter):
                filter_.extra["empty_label"] = "Any"

    @property
    def form(self):
        form = super().form
        if not getattr(form, "olvm_styled", False):
            for name, filter_ in self.filters.items():
                if isinstance(filter_, RelatedFilter) and name in form.fields:
                    value = form.data.get(form.add_prefix(name)) if form.is_bound else None
                    form.fields[name].widget = filter_.widget(value)
            for field in form.fields.values():
                bootstrap_widget(field.widget, small=True)
                _any_choice(field)
            form.olvm_styled = True
        return form


def _any_choice(field: forms.Field) -> None:
    """Label the empty choice of a yes / no filter "Any" rather than "Unknown"."""
    if isinstance(field, forms.NullBooleanField):
        field.widget.choices = [("unknown", "Any"), ("true", "Yes"), ("false", "No")]


class SearchFormField(forms.CharField):
    """A text box whose value is parsed with the oVirt-style grammar into search terms."""

    def __init__(self, *, search_fields, **kwargs):
        self.search_fields = search_fields
        super().__init__(**kwargs)

    def clean(self, value):
        text = super().clean(value)
        try:
            return parse_search(text or "", self.search_fields)
        except SearchError as exc:
            raise ValidationError(f"Invalid search: {exc}", code="search") from None


class SearchFilter(django_filters.Filter):
    field_class = SearchFormField

    def __init__(self, *, search_fields, **kwargs):
        self.search_fields = search_fields
        super().__init__(search_fields=search_fields, **kwargs)

    def filter(self, qs, value):
        if not value:
            return qs
        return qs.filter(search_q(value, self.search_fields))


def text_search(*fields: str):
    """A `method` for a plain `q` CharFilter: any of `fields` contains the text."""

    def method(queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        query = Q()
        for field_name in fields:
            query |= Q(**{f"{field_name}__icontains": value})
        return queryset.filter(query)

    return staticmethod(method)


def search_box(placeholder: str = "Search", **kwargs) -> django_filters.CharFilter:
    return django_filters.CharFilter(
        label="Search", widget=forms.TextInput(attrs={"placeholder": placeholder, "type": "search"}), **kwargs
    )


class DataCenterFilterSet(PortalFilterSet):
    q = search_box("Name or description", method="search")
    search = text_search("name", "description")

    class Meta:
        model = DataCenter
        fields = ["status", "storage_type", "compatibility_version"]


class ClusterFilterSet(PortalFilterSet):
    q = search_box("Name or description", method="search")
    search = text_search("name", "description")
    data_center = RelatedFilter(label="Data center", queryset=DataCenter.objects.all())

    class Meta:
        model = Cluster
        fields = ["data_center", "cpu_type"]


class HostFilterSet(PortalFilterSet):
    q = SearchFilter(
        search_fields=HOST_FIELDS,
        label="Search",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Hosts: status=up and cluster=Default", "type": "search"}),
    )
    status = django_filters.ChoiceFilter(choices=HostStatus.choices)
    cluster = RelatedFilter(label="Cluster", queryset=Cluster.objects.all())
    data_center = RelatedFilter(
        field_name="cluster__data_center", label="Data center", queryset=DataCenter.objects.all()
    )

    class Meta:
        model = Host
        fields = ["status", "cluster", "data_center"]


class VmFilterSet(PortalFilterSet):
    q = SearchFilter(
        search_fields=VM_FIELDS,
        label="Search",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Vms: status=up and cluster=Default", "type": "search"}),
    )
    status = django_filters.ChoiceFilter(choices=VmStatus.choices)
    cluster = RelatedFilter(label="Cluster", queryset=Cluster.objects.all())
    data_center = RelatedFilter(label="Data center", queryset=DataCenter.objects.all())
    host = RelatedFilter(field_name="run_on_host", label="Host", placeholder="Host name, or prefix*")
    os_type = django_filters.ChoiceFilter(label="OS", choices=OsType.choices)
    template = django_filters.UUIDFilter(field_name="template_id", widget=forms.HiddenInput)

    class Meta:
        model = VirtualMachine
        fields = ["status", "cluster", "data_center", "host", "os_type"]


class TemplateFilterSet(PortalFilterSet):
    q = search_box("Name or description", method="search")
    search = text_search("name", "description", "version_name")
    cluster = RelatedFilter(label="Cluster", queryset=Cluster.objects.all())
    os_type = django_filters.ChoiceFilter(label="OS", choices=OsType.choices)

    class Meta:
        model = Template
        fields = ["cluster", "os_type"]


class LogicalNetworkFilterSet(PortalFilterSet):
    q = search_box("Name or description", method="search")
    search = text_search("name", "description")
    data_center = RelatedFilter(label="Data center", queryset=DataCenter.objects.all())
    cluster = RelatedFilter(field_name="cluster_attachments__cluster", label="Cluster", queryset=Cluster.objects.all())

    class Meta:
        model = LogicalNetwork
        fields = ["data_center", "cluster", "vm_network", "required"]


class VnicProfileFilterSet(PortalFilterSet):
    q = search_box("Name or description", method="search")
    search = text_search("name", "description", "network__name")
    network = RelatedFilter(label="Network", queryset=LogicalNetwork.objects.all())
    data_center = RelatedFilter(
        field_name="network__data_center", label="Data center", queryset=DataCenter.objects.all()
    )

    class Meta:
        model = VnicProfile
        fields = ["network", "data_center"]


class StorageDomainFilterSet(PortalFilterSet):
    q = search_box("Name, description or path", method="search")
    search = text_search("name", "description", "path")
    status = django_filters.ChoiceFilter(choices=StorageDomainStatus.choices)
    type = django_filters.ChoiceFilter(choices=StorageDomainType.choices)
    role = django_filters.ChoiceFilter(choices=StorageDomainRole.choices)
    data_center = RelatedFilter(label="Data center", queryset=DataCenter.objects.all())

    class Meta:
        model = StorageDomain
        fields = ["status", "type", "role", "data_center"]


class DiskFilterSet(PortalFilterSet):
    q = search_box("Alias or description", method="search")
    search = text_search("alias", "description")
    status = django_filters.ChoiceFilter(choices=DiskStatus.choices)
    storage_domain = RelatedFilter(label="Storage domain", queryset=StorageDomain.objects.all())
    vm = django_filters.UUIDFilter(field_name="attachments__vm_id", widget=forms.HiddenInput)

    class Meta:
        model = Disk
        fields = ["status", "storage_domain", "format", "allocation"]


class EventFilterSet(PortalFilterSet):
    q = search_box("Message, code, object or user", method="search")
    search = text_search("message", "code", "object_name", "username")
    severity = django_filters.ChoiceFilter(choices=EventSeverity.choices)
    object_type = django_filters.ChoiceFilter(label="Object type", choices=ObjectType.choices)
    # The events of one object (the "all events" links of the detail pages).
    object_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    data_center_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    cluster_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    host_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    vm_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    storage_domain_id = django_filters.UUIDFilter(widget=forms.HiddenInput)
    correlation_id = django_filters.CharFilter(widget=forms.HiddenInput)

    class Meta:
        model = Event
        fields = ["severity", "object_type"]


class JobFilterSet(PortalFilterSet):
    q = search_box("Description or action", method="search")
    search = text_search("description", "action_type", "object_name")
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)

    class Meta:
        model = Job
        fields = ["status"]


class UserFilterSet(PortalFilterSet):
    q = search_box("User name, name or e-mail", method="search")
    search = text_search("username", "first_name", "last_name", "email")

    class Meta:
        model = get_user_model()
        fields = ["is_staff", "is_active"]
