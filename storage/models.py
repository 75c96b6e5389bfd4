from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from hostagent.agent.images import IMAGES_DIR
from inventory.models import OlvmModel, name_validator

from .choices import (
    DiskAllocation,
    DiskFormat,
    DiskInterface,
    DiskStatus,
    StorageDomainRole,
    StorageDomainStatus,
    StorageDomainType,
)

GIB = 1024**3


class StorageDomain(OlvmModel):
    data_center = models.ForeignKey(
        "inventory.DataCenter", null=True, blank=True, on_delete=models.PROTECT, related_name="storage_domains"
    )
    name = models.CharField(max_length=50, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    type = models.CharField(max_length=16, choices=StorageDomainType.choices, default=StorageDomainType.POSIXFS)
    role = models.CharField(max_length=16, choices=StorageDomainRole.choices, default=StorageDomainRole.DATA)
    path = models.CharField(max_length=500, help_text="Directory (localfs, posixfs) or server:/export (nfs).")
    shared = models.BooleanField(default=True, help_text="Seen by every host of the data center.")
    status = models.CharField(
        max_length=16, choices=StorageDomainStatus.choices, default=StorageDomainStatus.UNATTACHED, db_index=True
    )
    total_bytes = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    free_bytes = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    committed_bytes = models.BigIntegerField(
        default=0, editable=False, help_text="Sum of the provisioned sizes of the disks on the domain."
    )
    max_overcommit_percent = models.PositiveIntegerField(
        default=300,
        validators=[MinValueValidator(100), MaxValueValidator(10000)],
        help_text="Committed (provisioned) size of thin disks allowed, as a percentage of the total size.",
    )
    critical_space_gib = models.PositiveIntegerField(
        default=5, help_text="Refuse new allocations that would leave less free space than this (GiB)."
    )
    warning_low_space_percent = models.PositiveIntegerField(
        default=10, validators=[MaxValueValidator(100)], help_text="Warn when free space falls below this."
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "storage domain"

    def clean(self) -> None:
        if self.type == StorageDomainType.NFS:
            if ":/" not in self.path:
                raise ValidationError({"path": "An NFS domain needs an export as server:/path."})
        elif not self.path.startswith("/"):
            raise ValidationError({"path": "Give an absolute directory path."})
        if self.type == StorageDomainType.LOCALFS and self.shared:
            raise ValidationError({"shared": "A local domain is seen by one host only: it cannot be shared."})
        if self.free_bytes > self.total_bytes:
            raise ValidationError({"free_bytes": "Free space cannot exceed the total size."})

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes

    @property
    def overcommit_limit_bytes(self) -> int:
        return self.total_bytes * self.max_overcommit_percent // 100

    def image_path(self, image_id) -> Path:
        """Where a host keeps the image of disk `image_id` on this (file) domain: flat in
        `<path>/images/<disk id>` (the host agent's rule, hostagent.agent.images), as seen
        where the domain is mounted at its path."""
        return Path(self.path) / IMAGES_DIR / str(image_id)

    def get_absolute_url(self) -> str:
        return reverse("portals:storagedomain-detail", args=[self.pk])


class Disk(OlvmModel):
    alias = models.CharField(max_length=255, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    storage_domain = models.ForeignKey(StorageDomain, on_delete=models.PROTECT, related_name="disks")
    provisioned_size = models.BigIntegerField(
        validators=[MinValueValidator(1024**2), MaxValueValidator(64 * 1024 * GIB)], help_text="Virtual size in bytes."
    )
    actual_size = models.BigIntegerField(default=0, help_text="Bytes used on storage.")
    format = models.CharField(max_length=8, choices=DiskFormat.choices, default=DiskFormat.QCOW2)
    allocation = models.CharField(max_length=16, choices=DiskAllocation.choices, default=DiskAllocation.THIN)
    backing_disk = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="overlays",
        help_text="Template disk this thin qcow2 overlay is based on.",
    )
    template = models.ForeignKey(
        "compute.Template",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="disks",
        help_text="Set for a template's own disks.",
    )
    shareable = models.BooleanField(default=False)
    status = models.CharField(max_length=8, choices=DiskStatus.choices, default=DiskStatus.OK, db_index=True)

    class Meta:
        ordering = ["alias"]

    def clean(self) -> None:
        if self.format == DiskFormat.QCOW2 and self.allocation == DiskAllocation.PREALLOCATED:
            raise ValidationError({"allocation": "On file storage a preallocated disk is raw; qcow2 disks are thin."})
        if self.backing_disk_id and self.format != DiskFormat.QCOW2:
            raise ValidationError({"format": "A disk on a template disk is a qcow2 overlay."})
        if self.shareable and self.format != DiskFormat.RAW:
            raise ValidationError({"shareable": "Only raw disks can be shared between VMs."})

    def __str__(self) -> str:
        return self.alias

    @property
    def counts_against_free_space(self) -> bool:
        return self.allocation == DiskAllocation.PREALLOCATED

    def get_absolute_url(self) -> str:
        return reverse("portals:disk-detail", args=[self.pk])


class DiskAttachment(OlvmModel):
    vm = models.ForeignKey("compute.VirtualMachine", on_delete=models.CASCADE, related_name="disk_attachments")
    disk = models.ForeignKey(Disk, on_delete=models.CASCADE, related_name="attachments")
    interface = models.CharField(max_length=16, choices=DiskInterface.choices, default=DiskInterface.VIRTIO)
    bootable = models.BooleanField(default=False)
    active = models.BooleanField(default=True, help_text="Plugged into the VM.")
    read_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["vm", "-bootable", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "disk"], name="disk_attached_once_per_vm"),
            models.UniqueConstraint(fields=["vm"], condition=models.Q(bootable=True), name="one_bootable_disk_per_vm"),
        ]

    def __str__(self) -> str:
        return f"{self.disk} on {self.vm}"
