"""django-filter FilterSets of the inventory objects (the API's ?field=value filters)."""

from datetime import UTC

import django_filters as filters
from django import forms
from django_filters.fields import IsoDateTimeField

from .choices import ActionGroup, EventSeverity, HostStatus, JobStatus, ObjectType, PermissionObjectType
from .models import Cluster, DataCenter, Event, Host, Job, Permission, Quota, Role


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, turned to UTC: PostgreSQL refuses offsets beyond ±15:59 (a 500)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Enter a date-time between years 1 and 9999.", code="invalid") from None


class UtcIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class NameFilterMixin(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", help_text="Name contains (case-insensitive).")


class DataCenterFilterSet(NameFilterMixin):
    class Meta:
        model = DataCenter
        fields = ("name", "status", "storage_type", "compatibility_version")


class ClusterFilterSet(NameFilterMixin):
    data_center = filters.ModelMultipleChoiceFilter(distinct=False, queryset=DataCenter.objects.all())

    class Meta:
        model = Cluster
        fields = ("name", "data_center", "cpu_type", "scheduling_policy")


class HostFilterSet(NameFilterMixin):
    status = filters.MultipleChoiceFilter(distinct=False, choices=HostStatus.choices)
    cluster = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Cluster.objects.all())
    data_center = filters.ModelMultipleChoiceFilter(
        distinct=False, field_name="cluster__data_center", queryset=DataCenter.objects.all()
    )

    class Meta:
        model = Host
        fields = ("name", "status", "cluster", "data_center", "simulated", "is_spm")


class ObjectRefsFilterSet(filters.FilterSet):
    """Filters on the object an Event or Job concerns and the objects above it."""

    object_type = filters.MultipleChoiceFilter(distinct=False, choices=ObjectType.choices)
    object_id = filters.UUIDFilter()
    data_center = filters.UUIDFilter(field_name="data_center_id")
    cluster = filters.UUIDFilter(field_name="cluster_id")
    host = filters.UUIDFilter(field_name="host_id")
    vm = filters.UUIDFilter(field_name="vm_id")
    storage_domain = filters.UUIDFilter(field_name="storage_domain_id")
    correlation_id = filters.CharFilter()


class EventFilterSet(ObjectRefsFilterSet):
    severity = filters.MultipleChoiceFilter(distinct=False, choices=EventSeverity.choices)
    code = filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="time", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="time", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ("severity", "code", "object_type", "object_id", "correlation_id")


class JobFilterSet(ObjectRefsFilterSet):
    status = filters.MultipleChoiceFilter(distinct=False, choices=JobStatus.choices)
    action_type = filters.CharFilter()

    class Meta:
        model = Job
        fields = ("status", "action_type", "object_type", "object_id", "correlation_id")


class RoleFilterSet(NameFilterMixin):
    action = filters.ChoiceFilter(
        field_name="actions__action", choices=ActionGroup.choices, help_text="Roles allowing this action group."
    )

    class Meta:
        model = Role
        fields = ("name", "administrative", "action")


class PermissionFilterSet(filters.FilterSet):
    # Plain ids, not choices among the rows: a filter says nothing about what exists.
    user = filters.NumberFilter(field_name="user_id")
    group = filters.NumberFilter(field_name="group_id")
    role = filters.UUIDFilter(field_name="role_id")
    object_type = filters.MultipleChoiceFilter(distinct=False, choices=PermissionObjectType.choices)
    object_id = filters.UUIDFilter()

    class Meta:
        model = Permission
        fields = ("user", "group", "role", "object_type", "object_id")


class QuotaFilterSet(filters.FilterSet):
    user = filters.NumberFilter(field_name="user_id")
    group = filters.NumberFilter(field_name="group_id")

    class Meta:
        model = Quota
        fields = ("user", "group")
