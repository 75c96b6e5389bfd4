"""Serializers of the networking API: logical networks, cluster attachments, vNIC profiles, MAC pools, NICs."""

from rest_framework import serializers

from inventory.api.serializers import SelfUrlField, ValidatedModelSerializer, name_of, with_model_defaults
from inventory.models import Cluster

from ..models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile


class MacPoolSerializer(ValidatedModelSerializer):
    url = SelfUrlField("mac-pool")
    size = serializers.IntegerField(read_only=True, help_text="How many addresses the ranges hold.")

    class Meta:
        model = MacPool
        fields = ("id", "url", "name", "description", "allow_duplicates", "ranges", "size", "created_at", "updated_at")

    def create(self, validated_data):
        from ..services import create_mac_pool

        data = with_model_defaults(MacPool, validated_data, ("description", "allow_duplicates"))
        return self.saved(create_mac_pool(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_mac_pool

        return self.saved(update_mac_pool(instance, user=self.user, **validated_data))


class NetworkSerializer(ValidatedModelSerializer):
    url = SelfUrlField("network")
    data_center_name = name_of("data_center.name")
    clusters = serializers.PrimaryKeyRelatedField(
        queryset=Cluster.objects.all(),
        many=True,
        write_only=True,
        required=False,
        help_text="Attach the new network to these clusters (more later with attach-cluster).",
    )

    class Meta:
        model = LogicalNetwork
        fields = (
            "id",
            "url",
            "data_center",
            "data_center_name",
            "name",
            "description",
            "vlan_tag",
            "mtu",
            "vm_network",
            "required",
            "is_management",
            "is_migration",
            "is_display",
            "clusters",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("is_management",)
        create_only_fields = ("data_center", "clusters")

    def create(self, validated_data):
        from ..services import create_network

        return self.saved(create_network(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_network

        return self.saved(update_network(instance, user=self.user, **validated_data))


class ClusterNetworkSerializer(ValidatedModelSerializer):
    url = SelfUrlField("cluster-network")
    cluster_name = name_of("cluster.name")
    network_name = name_of("network.name")

    class Meta:
        model = ClusterNetwork
        fields = ("id", "url", "cluster", "cluster_name", "network", "network_name", "required")

    def create(self, validated_data):
        from ..services import attach_network_to_cluster

        data = with_model_defaults(ClusterNetwork, dict(validated_data), ("required",))
        return self.saved(
            attach_network_to_cluster(data["network"], data["cluster"], user=self.user, required=data["required"])
        )


class AttachClusterSerializer(serializers.Serializer):
    """The body of `POST /networks/{id}/attach-cluster/`."""

    cluster = serializers.PrimaryKeyRelatedField(queryset=Cluster.objects.all())
    required = serializers.BooleanField(default=True, help_text="Hosts lacking the network become non-operational.")


class VnicProfileSerializer(ValidatedModelSerializer):
    url = SelfUrlField("vnic-profile")
    network_name = name_of("network.name")

    class Meta:
        model = VnicProfile
        fields = (
            "id",
            "url",
            "network",
            "network_name",
            "name",
            "description",
            "port_mirroring",
            "pass_through",
            "created_at",
            "updated_at",
        )
        create_only_fields = ("network",)

    def create(self, validated_data):
        from ..services import create_vnic_profile

        return self.saved(create_vnic_profile(user=self.user, **validated_data))

    def update(self, instance, validated_data):
        from ..services import update_vnic_profile

        return self.saved(update_vnic_profile(instance, user=self.user, **validated_data))


class NicSerializer(ValidatedModelSerializer):
    url = SelfUrlField("nic")
    vm_name = name_of("vm.name")
    profile_name = name_of("profile.name")
    network = serializers.UUIDField(source="profile.network_id", read_only=True, allow_null=True)

    class Meta:
        model = VmNic
        fields = (
            "id",
            "url",
            "vm",
            "vm_name",
            "name",
            "profile",
            "profile_name",
            "network",
            "mac_pool",
            "mac",
            "interface",
            "linked",
            "plugged",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("mac_pool",)
        extra_kwargs = {
            "name": {"required": False, "help_text": "Empty: the next free nicN."},
            "mac": {"required": False, "help_text": "Empty: the next free address of the cluster's MAC pool."},
        }
        create_only_fields = ("vm",)

    def create(self, validated_data):
        from ..services import create_nic

        data = dict(validated_data)
        vm = data.pop("vm")
        return self.saved(create_nic(vm, user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_nic

        return self.saved(update_nic(instance, user=self.user, **validated_data))
