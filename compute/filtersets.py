"""django-filter FilterSets of the compute objects (the API's ?field=value filters)."""

import django_filters as filters

from inventory.filtersets import NameFilterMixin
from inventory.models import Cluster, DataCenter, Host

from .choices import OsType, SnapshotStatus, VmStatus
from .models import InstanceType, Snapshot, Template, VirtualMachine


class InstanceTypeFilterSet(NameFilterMixin):
    class Meta:
        model = InstanceType
        fields = ("name", "vcpus", "memory_mib")


class TemplateFilterSet(NameFilterMixin):
    cluster = filters.ModelMultipleChoiceFilter(queryset=Cluster.objects.all())
    base_template = filters.ModelMultipleChoiceFilter(queryset=Template.objects.all())
    os_type = filters.MultipleChoiceFilter(choices=OsType.choices)

    class Meta:
        model = Template
        fields = ("name", "cluster", "base_template", "os_type", "version_number")


class VmFilterSet(NameFilterMixin):
    status = filters.MultipleChoiceFilter(choices=VmStatus.choices)
    cluster = filters.ModelMultipleChoiceFilter(queryset=Cluster.objects.all())
    data_center = filters.ModelMultipleChoiceFilter(queryset=DataCenter.objects.all())
    host = filters.ModelMultipleChoiceFilter(
        field_name="run_on_host", queryset=Host.objects.all(), help_text="Running on this host."
    )
    template = filters.ModelMultipleChoiceFilter(queryset=Template.objects.all())
    os_type = filters.MultipleChoiceFilter(choices=OsType.choices)

    class Meta:
        model = VirtualMachine
        fields = ("name", "status", "cluster", "data_center", "host", "template", "os_type", "ha_enabled")


class SnapshotFilterSet(filters.FilterSet):
    vm = filters.ModelMultipleChoiceFilter(queryset=VirtualMachine.objects.all())
    status = filters.MultipleChoiceFilter(choices=SnapshotStatus.choices)
    description = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Snapshot
        fields = ("vm", "status", "description", "with_memory")
