import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from inventory.models import OlvmModel, name_validator

from .choices import (
    AffinityRule,
    ConsoleType,
    HaPriority,
    OsType,
    PlacementPolicy,
    ResumeBehavior,
    SnapshotStatus,
    VmStatus,
)

BLANK_TEMPLATE_ID = "00000000-0000-0000-0000-000000000000"
# A path or a kernel command line is one line of printable text.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class InstanceType(OlvmModel):
    name = models.CharField(max_length=40, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    memory_mib = models.PositiveIntegerField(validators=[MinValueValidator(128)])
    vcpus = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(512)])

    class Meta:
        ordering = ["memory_mib", "name"]
        verbose_name = "instance type"


class VmShape(models.Model):
    """What a VM and a template share: hardware and OS."""

    description = models.CharField(max_length=255, blank=True)
    os_type = models.CharField(max_length=32, choices=OsType.choices, default=OsType.OTHER)
    vcpus = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(512)])
    memory_mib = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(128)])
    console_type = models.CharField(max_length=16, choices=ConsoleType.choices, default=ConsoleType.VNC)
    # Boot options (direct kernel boot): files on the host, the same path on every host.
    kernel_path = models.CharField(
        max_length=500, blank=True, help_text="Boot this kernel directly (an absolute path on the host)."
    )
    initrd_path = models.CharField(
        max_length=500, blank=True, help_text="The initial ramdisk for the kernel (an absolute path on the host)."
    )
    kernel_params = models.CharField(
        "kernel parameters", max_length=4096, blank=True, help_text="The kernel command line, e.g. console=ttyS0."
    )

    class Meta:
        abstract = True

    def boot_option_errors(self) -> dict[str, str]:
        """What is wrong with the boot options: the kernel and initrd are absolute paths; an
        initrd or kernel parameters need a kernel."""
        errors = {}
        for name in ("kernel_path", "initrd_path"):
            path = getattr(self, name) or ""
            if not path:
                continue
            if not path.startswith("/"):
                errors[name] = "Give an absolute path (starting with /)."
            elif ".." in path.split("/"):
                errors[name] = "The path must not contain '..'."
            elif CONTROL_CHARACTERS.search(path):
                errors[name] = "The path must not contain control characters."
        if self.kernel_params and CONTROL_CHARACTERS.search(self.kernel_params):
            errors["kernel_params"] = "Kernel parameters are one line, without control characters."
        if not self.kernel_path:
            if self.initrd_path and "initrd_path" not in errors:
                errors["initrd_path"] = "An initrd needs a kernel path (direct kernel boot)."
            if self.kernel_params and "kernel_params" not in errors:
                errors["kernel_params"] = "Kernel parameters need a kernel path (direct kernel boot)."
        return errors


class Template(OlvmModel, VmShape):
    """A template version; the base template is version 1 and names the chain."""

    name = models.CharField(max_length=64, validators=[name_validator])
    cluster = models.ForeignKey(
        "inventory.Cluster", null=True, blank=True, on_delete=models.PROTECT, related_name="templates"
    )
    base_template = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="versions",
        help_text="The version-1 template this one is a version of; empty for a base template.",
    )
    version_number = models.PositiveIntegerField(default=1)
    version_name = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["name", "version_number"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(base_template__isnull=True), name="base_template_name_unique"
            ),
            models.UniqueConstraint(fields=["base_template", "version_number"], name="template_version_unique"),
        ]

    @property
    def is_blank(self) -> bool:
        return str(self.pk) == BLANK_TEMPLATE_ID

    def __str__(self) -> str:
        return self.name if self.version_number == 1 else f"{self.name} (v{self.version_number})"

    def clean(self) -> None:
        errors = self.boot_option_errors()
        if self.base_template_id is None and self.version_number != 1:
            errors["version_number"] = "A base template is version 1."
        if self.base_template_id and self.base_template.base_template_id:
            errors["base_template"] = "Versions hang from the base template, not from a version."
        if errors:
            raise ValidationError(errors)

    def get_absolute_url(self) -> str:
        return reverse("portals:template-detail", args=[self.pk])


class VirtualMachine(OlvmModel, VmShape):
    name = models.CharField(max_length=64, validators=[name_validator])
    comment = models.CharField(max_length=255, blank=True)
    cluster = models.ForeignKey("inventory.Cluster", on_delete=models.PROTECT, related_name="vms")
    # Denormalised from cluster so the database itself keeps names unique per data center.
    data_center = models.ForeignKey(
        "inventory.DataCenter", on_delete=models.PROTECT, related_name="vms", editable=False
    )
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="vms")
    instance_type = models.ForeignKey(
        InstanceType, null=True, blank=True, on_delete=models.SET_NULL, related_name="vms"
    )
    guaranteed_memory_mib = models.PositiveIntegerField(default=1024)
    ha_enabled = models.BooleanField("highly available", default=False)
    ha_priority = models.PositiveSmallIntegerField(choices=HaPriority.choices, default=HaPriority.LOW)
    resume_behavior = models.CharField(
        max_length=16, choices=ResumeBehavior.choices, default=ResumeBehavior.AUTO_RESUME
    )
    placement_policy = models.CharField(
        max_length=16, choices=PlacementPolicy.choices, default=PlacementPolicy.MIGRATABLE
    )
    pinned_hosts = models.ManyToManyField("inventory.Host", blank=True, related_name="pinned_vms")
    status = models.CharField(max_length=24, choices=VmStatus.choices, default=VmStatus.DOWN, db_index=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    run_on_host = models.ForeignKey(
        "inventory.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="running_vms"
    )
    # Set while a live migration runs (status migrating): the host the VM is moving to.
    migrating_to_host = models.ForeignKey(
        "inventory.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="incoming_vms", editable=False
    )
    last_migrated_at = models.DateTimeField(null=True, blank=True, editable=False)
    external = models.BooleanField(default=False, help_text="Found running on a host, not started by the engine.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_vms",
        help_text="The user the VM belongs to: they may use it (UserRole) and it counts in their quota.",
    )
    next_run_config = models.JSONField(
        default=dict, blank=True, help_text="Changes saved on a running VM that apply at its next start."
    )
    guest_hostname = models.CharField(max_length=255, blank=True)
    guest_os = models.CharField(max_length=255, blank=True)
    guest_kernel = models.CharField(max_length=255, blank=True)
    guest_ips = models.JSONField(default=list, blank=True)
    guest_timezone = models.CharField(max_length=64, blank=True)
    guest_users = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "virtual machine"
        constraints = [models.UniqueConstraint(fields=["data_center", "name"], name="vm_name_unique_per_dc")]
        indexes = [
            models.Index(fields=["cluster", "status"], name="vm_cluster_status"),
            models.Index(fields=["name"], name="vm_name"),
        ]

    def clean(self) -> None:
        errors = self.boot_option_errors()
        if self.guaranteed_memory_mib is not None and self.memory_mib is not None:
            if self.guaranteed_memory_mib > self.memory_mib:
                errors["guaranteed_memory_mib"] = "Guaranteed memory cannot exceed the VM's memory."
        if self.cluster_id:
            cluster = self.cluster
            if self.vcpus and self.vcpus > cluster.max_vm_vcpus:
                errors["vcpus"] = f"At most {cluster.max_vm_vcpus} vCPUs per VM in cluster {cluster.name}."
            if self.memory_mib and self.memory_mib > cluster.max_vm_memory_mib:
                errors["memory_mib"] = f"At most {cluster.max_vm_memory_mib} MiB per VM in cluster {cluster.name}."
        if errors:
            raise ValidationError(errors)

    def get_absolute_url(self) -> str:
        return reverse("portals:vm-detail", args=[self.pk])


class AffinityGroup(OlvmModel):
    """oVirt's affinity group: VMs that should run together (positive) or apart (negative),
    and on or off a set of hosts; each rule enforcing (a scheduler filter, and the
    enforcer migrates violators) or soft (a weight)."""

    cluster = models.ForeignKey("inventory.Cluster", on_delete=models.CASCADE, related_name="affinity_groups")
    name = models.CharField(max_length=64, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    priority = models.PositiveSmallIntegerField(
        default=1, validators=[MaxValueValidator(100)], help_text="Higher first when the enforcer picks a group."
    )
    vm_rule = models.CharField(max_length=16, choices=AffinityRule.choices, default=AffinityRule.DISABLED)
    vm_enforcing = models.BooleanField(default=True)
    host_rule = models.CharField(max_length=16, choices=AffinityRule.choices, default=AffinityRule.DISABLED)
    host_enforcing = models.BooleanField(default=False)
    vms = models.ManyToManyField(VirtualMachine, blank=True, related_name="affinity_groups")
    hosts = models.ManyToManyField("inventory.Host", blank=True, related_name="affinity_groups")

    class Meta:
        ordering = ["cluster", "name"]
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="affinity_group_name_unique")]

    def __str__(self) -> str:
        return self.name


class Snapshot(OlvmModel):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="snapshots")
    description = models.CharField(max_length=255)
    with_memory = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.OK)

    class Meta:
        ordering = ["vm", "created_at"]

    def __str__(self) -> str:
        return self.description
