"""django-filter FilterSets of the networking objects (the API's ?field=value filters)."""

import django_filters as filters

from compute.models import VirtualMachine
from inventory.filtersets import NameFilterMixin
from inventory.models import Cluster, DataCenter

from .models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile


class MacPoolFilterSet(NameFilterMixin):
    class Meta:
        model = MacPool
        fields = ("name", "allow_duplicates")


class NetworkFilterSet(NameFilterMixin):
    data_center = filters.ModelMultipleChoiceFilter(distinct=False, queryset=DataCenter.objects.all())
    cluster = filters.ModelMultipleChoiceFilter(
        field_name="cluster_attachments__cluster", queryset=Cluster.objects.all(), distinct=True
    )

    class Meta:
        model = LogicalNetwork
        fields = ("name", "data_center", "cluster", "vlan_tag", "vm_network", "required", "is_management")


class ClusterNetworkFilterSet(filters.FilterSet):
    cluster = filters.ModelMultipleChoiceFilter(distinct=False, queryset=Cluster.objects.all())
    network = filters.ModelMultipleChoiceFilter(distinct=False, queryset=LogicalNetwork.objects.all())

    class Meta:
        model = ClusterNetwork
        fields = ("cluster", "network", "required")


class VnicProfileFilterSet(NameFilterMixin):
    network = filters.ModelMultipleChoiceFilter(distinct=False, queryset=LogicalNetwork.objects.all())
    data_center = filters.ModelMultipleChoiceFilter(
        distinct=False, field_name="network__data_center", queryset=DataCenter.objects.all()
    )

    class Meta:
        model = VnicProfile
        fields = ("name", "network", "data_center")


class NicFilterSet(NameFilterMixin):
    vm = filters.ModelMultipleChoiceFilter(distinct=False, queryset=VirtualMachine.objects.all())
    profile = filters.ModelMultipleChoiceFilter(distinct=False, queryset=VnicProfile.objects.all())
    mac = filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = VmNic
        fields = ("name", "vm", "profile", "mac", "interface", "linked", "plugged")
