"""django-filter FilterSets of the storage objects (the API's ?field=value filters)."""

import django_filters as filters

from compute.models import Template, VirtualMachine
from inventory.filtersets import NameFilterMixin
from inventory.models import DataCenter

from .choices import DiskFormat, DiskStatus, StorageDomainRole, StorageDomainStatus, StorageDomainType
from .models import Disk, DiskAttachment, StorageDomain


class StorageDomainFilterSet(NameFilterMixin):
    data_center = filters.ModelMultipleChoiceFilter(distinct=False, queryset=DataCenter.objects.all())
    status = filters.MultipleChoiceFilter(distinct=False, choices=StorageDomainStatus.choices)
    type = filters.MultipleChoiceFilter(distinct=False, choices=StorageDomainType.choices)
    role = filters.MultipleChoiceFilter(distinct=False, choices=StorageDomainRole.choices)

    class Meta:
        model = StorageDomain
        fields = ("name", "data_center", "status", "type", "role", "shared")


class DiskFilterSet(filters.FilterSet):
    alias = filters.CharFilter(lookup_expr="icontains", help_text="Alias contains (case-insensitive).")
    storage_domain = filters.ModelMultipleChoiceFilter(distinct=False, queryset=StorageDomain.objects.all())
    status = filters.MultipleChoiceFilter(distinct=False, choices=DiskStatus.choices)
    format = filters.MultipleChoiceFilter(distinct=False, choices=DiskFormat.choices)
    vm = filters.ModelMultipleChoiceFilter(
        field_name="attachments__vm", queryset=VirtualMachine.objects.all(), distinct=True, help_text="Attached to."
    )
    template = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Template.objects.all())

    class Meta:
        model = Disk
        fields = ("alias", "storage_domain", "status", "format", "allocation", "shareable", "vm", "template")


class DiskAttachmentFilterSet(filters.FilterSet):
    vm = filters.ModelMultipleChoiceFilter(distinct=False, queryset=VirtualMachine.objects.all())
    disk = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Disk.objects.all())

    class Meta:
        model = DiskAttachment
        fields = ("vm", "disk", "bootable", "active")
