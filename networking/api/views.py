"""Viewsets of the networking API: logical networks, cluster attachments, vNIC profiles, MAC pools, NICs."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from inventory.api.serializers import ConflictSerializer
from inventory.api.views import NoUpdateMixin, ServiceModelViewSet, created_with_job

from ..filtersets import (
    ClusterNetworkFilterSet,
    MacPoolFilterSet,
    NetworkFilterSet,
    NicFilterSet,
    VnicProfileFilterSet,
)
from ..models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile
from .serializers import (
    AttachClusterSerializer,
    ClusterNetworkSerializer,
    MacPoolSerializer,
    NetworkSerializer,
    NicSerializer,
    VnicProfileSerializer,
)


class MacPoolViewSet(ServiceModelViewSet):
    queryset = MacPool.objects.all()
    serializer_class = MacPoolSerializer
    filterset_class = MacPoolFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_mac_pool

        return remove_mac_pool(instance, user=self.request.user)


class NetworkViewSet(ServiceModelViewSet):
    queryset = LogicalNetwork.objects.select_related("data_center")
    serializer_class = NetworkSerializer
    filterset_class = NetworkFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "vlan_tag", "mtu", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_network

        return remove_network(instance, user=self.request.user)

    @extend_schema(
        request=AttachClusterSerializer,
        responses={201: ClusterNetworkSerializer, 409: ConflictSerializer},
        summary="Attach the network to a cluster",
    )
    @action(detail=True, methods=["post"], url_path="attach-cluster", url_name="attach-cluster")
    def attach_cluster(self, request, pk=None):
        from ..services import attach_network_to_cluster

        network = self.get_object()
        body = AttachClusterSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        attachment = attach_network_to_cluster(
            network, body.validated_data["cluster"], user=request.user, required=body.validated_data["required"]
        )
        attachment = ClusterNetwork.objects.select_related("cluster", "network").get(pk=attachment.pk)
        data = ClusterNetworkSerializer(attachment, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)


class ClusterNetworkViewSet(NoUpdateMixin, ServiceModelViewSet):
    """A network's attachment to a cluster; create = attach, delete = detach."""

    queryset = ClusterNetwork.objects.select_related("cluster", "network").order_by("cluster__name", "network__name")
    serializer_class = ClusterNetworkSerializer
    filterset_class = ClusterNetworkFilterSet
    ordering_fields = ("cluster__name", "network__name")

    def perform_remove(self, instance):
        from ..services import detach_network_from_cluster

        return detach_network_from_cluster(instance, user=self.request.user)


class VnicProfileViewSet(ServiceModelViewSet):
    queryset = VnicProfile.objects.select_related("network")
    serializer_class = VnicProfileSerializer
    filterset_class = VnicProfileFilterSet
    search_fields = ("name", "description")
    ordering_fields = ("name", "created_at")

    def perform_remove(self, instance):
        from ..services import remove_vnic_profile

        return remove_vnic_profile(instance, user=self.request.user)


@created_with_job(NicSerializer, updates=True)
class NicViewSet(ServiceModelViewSet):
    queryset = VmNic.objects.select_related("vm", "profile")
    serializer_class = NicSerializer
    filterset_class = NicFilterSet
    search_fields = ("name", "mac")
    ordering_fields = ("name", "mac", "created_at")
    create_returns_job = True
    update_returns_job = True

    def perform_remove(self, instance):
        from ..services import remove_nic

        return remove_nic(instance, user=self.request.user)
