from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.urls import reverse

from ..choices import (
    CompatibilityVersion,
    CpuType,
    DataCenterStatus,
    HostStatus,
    MigrationPolicy,
    PowerManagementType,
    SchedulingPolicy,
    StorageType,
)
from .base import OlvmModel

name_validator = RegexValidator(
    r"^[A-Za-z0-9_.\-]+$", "Use letters, digits, '_', '-' and '.' only (as oVirt names do)."
)


class DataCenter(OlvmModel):
    name = models.CharField(max_length=40, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    storage_type = models.CharField(max_length=16, choices=StorageType.choices, default=StorageType.SHARED)
    compatibility_version = models.CharField(
        max_length=8, choices=CompatibilityVersion.choices, default=CompatibilityVersion.V4_8
    )
    status = models.CharField(max_length=24, choices=DataCenterStatus.choices, default=DataCenterStatus.UNINITIALIZED)

    class Meta:
        ordering = ["name"]
        verbose_name = "data center"

    def get_absolute_url(self) -> str:
        return reverse("portals:datacenter-detail", args=[self.pk])


class Cluster(OlvmModel):
    data_center = models.ForeignKey(DataCenter, on_delete=models.PROTECT, related_name="clusters")
    name = models.CharField(max_length=40, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    cpu_type = models.CharField(max_length=64, choices=CpuType.choices, default=CpuType.QEMU64)
    memory_overcommit_percent = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(100), MaxValueValidator(400)],
        help_text="Memory optimisation: 100 = none, 150 = server load, 200 = desktop load.",
    )
    scheduling_policy = models.CharField(
        max_length=32, choices=SchedulingPolicy.choices, default=SchedulingPolicy.EVENLY_DISTRIBUTED
    )
    scheduling_properties = models.JSONField(default=dict, blank=True)
    migration_policy = models.CharField(
        max_length=32, choices=MigrationPolicy.choices, default=MigrationPolicy.MINIMAL_DOWNTIME
    )
    migration_max_concurrent = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(16)],
        help_text="Most live migrations a host of the cluster runs at once, outgoing and incoming each.",
    )
    migration_bandwidth_mibps = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(100_000)],
        help_text="Bandwidth limit of one migration, MiB/s (0: none).",
    )
    migration_compression = models.BooleanField(default=False, help_text="Compress memory pages (XBZRLE).")
    ha_reservation = models.BooleanField(default=False)
    fencing_enabled = models.BooleanField(default=True)
    fencing_skip_if_sd_active = models.BooleanField(default=False)
    fencing_skip_if_connectivity_broken = models.BooleanField(default=False)
    fencing_connectivity_threshold = models.PositiveIntegerField(
        default=50, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    mac_pool = models.ForeignKey("networking.MacPool", on_delete=models.PROTECT, related_name="clusters")
    max_vm_vcpus = models.PositiveIntegerField(
        default=64, validators=[MinValueValidator(1), MaxValueValidator(512)], help_text="Most vCPUs one VM may have."
    )
    max_vm_memory_mib = models.PositiveIntegerField(
        default=256 * 1024,
        validators=[MinValueValidator(128), MaxValueValidator(6 * 1024 * 1024)],
        help_text="Most memory one VM may have, in MiB.",
    )

    SCHEDULING_PROPERTY_KEYS = {
        "HighUtilization": (0, 100),
        "LowUtilization": (0, 100),
        "CpuOverCommitDurationMinutes": (1, 1440),
        "MaxFreeMemoryForOverUtilized": (0, 10**7),
        "MinFreeMemoryForUnderUtilized": (0, 10**7),
        "HostsInReserve": (0, 1000),
        "HighVmCount": (0, 10000),
        "MigrationThreshold": (0, 10000),
        "SpmVmGrace": (0, 1000),
        "MigrationHoldOffMinutes": (0, 1440),
        "BalanceMarginPercent": (0, 100),
    }

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["data_center", "name"], name="cluster_name_unique_per_dc")]

    def clean(self) -> None:
        props = self.scheduling_properties
        if not isinstance(props, dict):
            raise ValidationError({"scheduling_properties": "Must be an object of property: value."})
        errors = []
        for key, value in props.items():
            bounds = self.SCHEDULING_PROPERTY_KEYS.get(key)
            if bounds is None:
                errors.append(f"Unknown property '{key}'; known: {', '.join(sorted(self.SCHEDULING_PROPERTY_KEYS))}.")
            elif isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
                errors.append(f"'{key}' must be a whole number from {bounds[0]} to {bounds[1]}.")
        low, high = props.get("LowUtilization"), props.get("HighUtilization")
        if isinstance(low, int) and isinstance(high, int) and low >= high:
            errors.append("LowUtilization must be below HighUtilization.")
        if errors:
            raise ValidationError({"scheduling_properties": errors})

    def get_absolute_url(self) -> str:
        return reverse("portals:cluster-detail", args=[self.pk])


class Host(OlvmModel):
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="hosts")
    name = models.CharField(max_length=64, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=255, help_text="FQDN or IP address the engine reaches the agent on.")
    agent_port = models.PositiveIntegerField(default=54321, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    status = models.CharField(max_length=32, choices=HostStatus.choices, default=HostStatus.INSTALLING, db_index=True)
    status_detail = models.CharField(max_length=500, blank=True)
    simulated = models.BooleanField(
        default=False, help_text="Served by the simulated host driver: no real hypervisor behind it."
    )
    cpu_model = models.CharField(max_length=128, blank=True)
    cpu_sockets = models.PositiveIntegerField(default=0)
    cpu_cores = models.PositiveIntegerField(default=0, help_text="Cores in all sockets.")
    cpu_threads = models.PositiveIntegerField(default=0, help_text="Logical CPUs (threads) in all sockets.")
    memory_mib = models.PositiveIntegerField(default=0)
    is_spm = models.BooleanField(default=False)
    pm_enabled = models.BooleanField(default=False)
    pm_type = models.CharField(max_length=16, choices=PowerManagementType.choices, blank=True)
    pm_address = models.CharField(max_length=255, blank=True)
    pm_username = models.CharField(max_length=64, blank=True)
    pm_password = models.CharField(max_length=128, blank=True)
    cert_fingerprint = models.CharField(max_length=128, blank=True)
    cert_expires_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # From the agent's capabilities at deploy: the host's interfaces and their addresses.
    nics = models.JSONField(default=list, blank=True, editable=False)
    # Logical networks whose bridge the host carries (set up at deploy and VM start).
    networks = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["address", "agent_port"], name="host_address_port_unique"),
        ]

    def clean(self) -> None:
        if self.pm_enabled and (not self.pm_type or not self.pm_address):
            raise ValidationError({"pm_address": "Power management needs a fence agent type and address when enabled."})

    def get_absolute_url(self) -> str:
        return reverse("portals:host-detail", args=[self.pk])
