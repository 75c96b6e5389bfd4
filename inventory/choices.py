"""Choices of the inventory app, one TextChoices class per field, in oVirt's vocabulary."""

from django.db import models


class StorageType(models.TextChoices):
    SHARED = "shared", "Shared"
    LOCAL = "local", "Local"


class DataCenterStatus(models.TextChoices):
    UNINITIALIZED = "uninitialized", "Uninitialized"
    UP = "up", "Up"
    MAINTENANCE = "maintenance", "Maintenance"
    NOT_OPERATIONAL = "not_operational", "Not operational"
    PROBLEMATIC = "problematic", "Problematic"
    CONTEND = "contend", "Contend"


class CompatibilityVersion(models.TextChoices):
    V4_6 = "4.6", "4.6"
    V4_7 = "4.7", "4.7"
    V4_8 = "4.8", "4.8"


class CpuType(models.TextChoices):
    INTEL_NEHALEM = "Intel Nehalem Family", "Intel Nehalem Family"
    INTEL_SANDYBRIDGE = "Intel SandyBridge Family", "Intel SandyBridge Family"
    INTEL_HASWELL = "Intel Haswell Family", "Intel Haswell Family"
    INTEL_SKYLAKE = "Intel Skylake Client Family", "Intel Skylake Client Family"
    INTEL_ICELAKE = "Intel Icelake Server Family", "Intel Icelake Server Family"
    AMD_OPTERON_G5 = "AMD Opteron G5", "AMD Opteron G5"
    AMD_EPYC = "AMD EPYC", "AMD EPYC"
    QEMU64 = "QEMU x86_64", "QEMU x86_64 (software emulation)"


class SchedulingPolicy(models.TextChoices):
    NONE = "none", "None"
    EVENLY_DISTRIBUTED = "evenly_distributed", "Evenly distributed"
    POWER_SAVING = "power_saving", "Power saving"
    VM_EVENLY_DISTRIBUTED = "vm_evenly_distributed", "VM evenly distributed"
    CLUSTER_MAINTENANCE = "cluster_maintenance", "Cluster maintenance"


class MigrationPolicy(models.TextChoices):
    MINIMAL_DOWNTIME = "minimal_downtime", "Minimal downtime"
    POST_COPY = "post_copy", "Post-copy migration"
    SUSPEND_WORKLOAD = "suspend_workload", "Suspend workload if needed"
    LEGACY = "legacy", "Legacy"


class HostStatus(models.TextChoices):
    INSTALLING = "installing", "Installing"
    INSTALL_FAILED = "install_failed", "Install failed"
    CONNECTING = "connecting", "Connecting"
    UP = "up", "Up"
    MAINTENANCE = "maintenance", "Maintenance"
    PREPARING_FOR_MAINTENANCE = "preparing_for_maintenance", "Preparing for maintenance"
    NON_RESPONSIVE = "non_responsive", "Non responsive"
    NON_OPERATIONAL = "non_operational", "Non operational"
    DOWN = "down", "Down"


class PowerManagementType(models.TextChoices):
    IPMILAN = "ipmilan", "IPMI LAN"
    ILO = "ilo", "HP iLO"
    DRAC = "drac", "Dell DRAC"
    LAB = "lab", "Lab (namespace power)"


class EventSeverity(models.TextChoices):
    NORMAL = "normal", "Normal"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    ALERT = "alert", "Alert"


class ObjectType(models.TextChoices):
    DATA_CENTER = "data_center", "Data center"
    CLUSTER = "cluster", "Cluster"
    HOST = "host", "Host"
    VM = "vm", "Virtual machine"
    TEMPLATE = "template", "Template"
    INSTANCE_TYPE = "instance_type", "Instance type"
    STORAGE_DOMAIN = "storage_domain", "Storage domain"
    DISK = "disk", "Disk"
    SNAPSHOT = "snapshot", "Snapshot"
    NETWORK = "network", "Logical network"
    VNIC_PROFILE = "vnic_profile", "vNIC profile"
    MAC_POOL = "mac_pool", "MAC pool"
    NIC = "nic", "VM NIC"
    USER = "user", "User"
    SYSTEM = "system", "System"


class JobStatus(models.TextChoices):
    STARTED = "started", "Started"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTED = "started", "Started"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"
