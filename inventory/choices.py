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


class PermissionObjectType(models.TextChoices):
    """What a permission is granted on; each level inherits from the one above it
    (system -> data center -> cluster -> VM / template). Codes as in ObjectType."""

    SYSTEM = "system", "System"
    DATA_CENTER = "data_center", "Data center"
    CLUSTER = "cluster", "Cluster"
    VM = "vm", "Virtual machine"
    TEMPLATE = "template", "Template"


class ActionGroup(models.TextChoices):
    """What a role allows, in oVirt's action groups (a role is a set of these)."""

    SYSTEM_MANAGE = "system.manage", "Manage the system (users, roles, permissions, data centers)"
    DATA_CENTER_MANAGE = "data_center.manage", "Edit data centers, their storage and networks"
    CLUSTER_MANAGE = "cluster.manage", "Edit clusters"
    HOST_MANAGE = "host.manage", "Add, edit, remove hosts; maintenance"
    INVENTORY_VIEW = "inventory.view", "See data centers, clusters, hosts, storage and networks"
    TEMPLATE_VIEW = "template.view", "See templates"
    TEMPLATE_USE = "template.use", "Create VMs from templates"
    TEMPLATE_MANAGE = "template.manage", "Create, edit, remove templates"
    VM_VIEW = "vm.view", "See VMs"
    VM_OPERATE = "vm.operate", "Start, shut down, power off, reboot, suspend, resume VMs"
    VM_CONSOLE = "vm.console", "Open VM consoles"
    VM_SNAPSHOT = "vm.snapshot", "Create, revert, remove VM snapshots"
    VM_CREATE = "vm.create", "Create VMs"
    VM_EDIT = "vm.edit", "Edit VMs"
    VM_REMOVE = "vm.remove", "Remove VMs"


class SampleResolution(models.IntegerChoices):
    """What one monitoring history row stands for: an agent's sample, or the average of
    every sample of a 5-minute bucket (inventory.history)."""

    RAW = 0, "Sample"
    FIVE_MINUTES = 300, "5-minute average"
