"""django-filter FilterSets of the compute objects (the API's ?field=value filters)."""

import django_filters as filters

from inventory.filtersets import NameFilterMixin
from inventory.models import Cluster, DataCenter, Host

from .choices import AffinityRule, OsType, SnapshotStatus, VmStatus
from .models import AffinityGroup, InstanceType, Snapshot, Template, VirtualMachine


class InstanceTypeFilterSet(NameFilterMixin):
    class Meta:
        model = InstanceType
        fields = ("name", "vcpus", "memory_mib")


class TemplateFilterSet(NameFilterMixin):
    cluster = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Cluster.objects.all())
    base_template = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Template.objects.all())
    os_type = filters.MultipleChoiceFilter(distinct=False, choices=OsType.choices)

    class Meta:
        model = Template
        fields = ("name", "cluster", "base_template", "os_type", "version_number")


class VmFilterSet(NameFilterMixin):
    status = filters.MultipleChoiceFilter(distinct=False, choices=VmStatus.choices)
    cluster = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Cluster.objects.all())
    data_center = filters.ModelMultipleChoiceFilter(distinct=False, queryset=DataCenter.objects.all())
    host = filters.ModelMultipleChoiceFilter(
        distinct=False, field_name="run_on_host", queryset=Host.objects.all(), help_text="Running on this host."
    )
    template = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Template.objects.all())
    os_type = filters.MultipleChoiceFilter(distinct=False, choices=OsType.choices)
    # A plain id, not a choice among the users: a filter tells nobody which users exist.
    owner = filters.NumberFilter(field_name="owner_id", help_text="Owned by this user (id).")

    class Meta:
        model = VirtualMachine
        fields = ("name", "status", "cluster", "data_center", "host", "template", "os_type", "ha_enabled", "owner")


class SnapshotFilterSet(filters.FilterSet):
    vm = filters.ModelMultipleChoiceFilter(distinct=False, queryset=VirtualMachine.objects.all())
    status = filters.MultipleChoiceFilter(distinct=False, choices=SnapshotStatus.choices)
    description = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Snapshot
        fields = ("vm", "status", "description", "with_memory")


class AffinityGroupFilterSet(NameFilterMixin):
    cluster = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Cluster.objects.all())
    vm = filters.ModelMultipleChoiceFilter(
        field_name="vms", queryset=VirtualMachine.objects.all(), help_text="Groups this VM belongs to."
    )
    host = filters.ModelMultipleChoiceFilter(
        field_name="hosts", queryset=Host.objects.all(), help_text="Groups whose host rule names this host."
    )
    vm_rule = filters.MultipleChoiceFilter(distinct=False, choices=AffinityRule.choices)
    host_rule = filters.MultipleChoiceFilter(distinct=False, choices=AffinityRule.choices)

    class Meta:
        model = AffinityGroup
        fields = ("name", "cluster", "vm", "host", "vm_rule", "vm_enforcing", "host_rule", "host_enforcing")
