"""Serializers of the storage API: storage domains, disks, disk attachments."""

from rest_framework import serializers

from compute.models import VirtualMachine
from inventory.api.serializers import SelfUrlField, ValidatedModelSerializer, name_of, with_model_defaults

from ..choices import DiskInterface
from ..models import Disk, DiskAttachment, StorageDomain


class StorageDomainSerializer(ValidatedModelSerializer):
    url = SelfUrlField("storage-domain")
    data_center_name = name_of("data_center.name")
    used_bytes = serializers.IntegerField(read_only=True)

    class Meta:
        model = StorageDomain
        fields = (
            "id",
            "url",
            "data_center",
            "data_center_name",
            "name",
            "description",
            "type",
            "role",
            "path",
            "shared",
            "status",
            "total_bytes",
            "free_bytes",
            "used_bytes",
            "committed_bytes",
            "max_overcommit_percent",
            "critical_space_gib",
            "warning_low_space_percent",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("status", "total_bytes", "free_bytes", "committed_bytes")
        create_only_fields = ("role",)

    def create(self, validated_data):
        from ..services import create_storage_domain

        data = with_model_defaults(StorageDomain, validated_data, ("type", "role"))
        return self.saved(create_storage_domain(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_storage_domain

        return self.saved(update_storage_domain(instance, user=self.user, **validated_data))


class DiskSerializer(ValidatedModelSerializer):
    url = SelfUrlField("disk")
    storage_domain_name = name_of("storage_domain.name")
    vm = serializers.PrimaryKeyRelatedField(
        queryset=VirtualMachine.objects.all(),
        write_only=True,
        required=False,
        allow_null=True,
        help_text="Attach the new disk to this VM.",
    )
    interface = serializers.ChoiceField(
        choices=DiskInterface.choices,
        write_only=True,
        required=False,
        help_text="How the disk is attached to `vm` (default virtio).",
    )
    bootable = serializers.BooleanField(write_only=True, required=False, help_text="Boot `vm` from this disk.")

    class Meta:
        model = Disk
        fields = (
            "id",
            "url",
            "alias",
            "description",
            "storage_domain",
            "storage_domain_name",
            "provisioned_size",
            "actual_size",
            "format",
            "allocation",
            "backing_disk",
            "template",
            "shareable",
            "status",
            "vm",
            "interface",
            "bootable",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("actual_size", "backing_disk", "template", "status")
        create_only_fields = ("storage_domain", "format", "allocation", "vm", "interface", "bootable")

    def create(self, validated_data):
        from ..services import create_disk

        data = with_model_defaults(Disk, validated_data, ("format", "allocation"))
        return self.saved(create_disk(user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_disk

        return self.saved(update_disk(instance, user=self.user, **validated_data))


class DiskAttachmentSerializer(ValidatedModelSerializer):
    url = SelfUrlField("disk-attachment")
    vm_name = name_of("vm.name")
    disk_alias = name_of("disk.alias")

    class Meta:
        model = DiskAttachment
        fields = (
            "id",
            "url",
            "vm",
            "vm_name",
            "disk",
            "disk_alias",
            "interface",
            "bootable",
            "active",
            "read_only",
            "created_at",
            "updated_at",
        )
        create_only_fields = ("vm", "disk")

    def validate(self, attrs):
        if self.instance is None and attrs.get("read_only"):
            raise serializers.ValidationError({"read_only": ["Attach the disk first, then make it read-only."]})
        attrs = super().validate(attrs)
        if self.instance is None:
            attrs.pop("read_only", None)
        return attrs

    def create(self, validated_data):
        from ..services import attach_disk

        data = dict(validated_data)
        vm, disk = data.pop("vm"), data.pop("disk")
        return self.saved(attach_disk(vm, disk, user=self.user, **data))

    def update(self, instance, validated_data):
        from ..services import update_disk_attachment

        return self.saved(update_disk_attachment(instance, user=self.user, **validated_data))
