from django.db import models


class StorageDomainType(models.TextChoices):
    LOCALFS = "localfs", "Local on host"
    POSIXFS = "posixfs", "POSIX compliant FS"
    NFS = "nfs", "NFS"


class StorageDomainRole(models.TextChoices):
    DATA = "data", "Data"
    ISO = "iso", "ISO"
    EXPORT = "export", "Export"


class StorageDomainStatus(models.TextChoices):
    UNATTACHED = "unattached", "Unattached"
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    MAINTENANCE = "maintenance", "Maintenance"
    LOCKED = "locked", "Locked"
    UNKNOWN = "unknown", "Unknown"


class DiskFormat(models.TextChoices):
    QCOW2 = "qcow2", "QCOW2"
    RAW = "raw", "Raw"


class DiskAllocation(models.TextChoices):
    THIN = "thin", "Thin provision"
    PREALLOCATED = "preallocated", "Preallocated"


class DiskStatus(models.TextChoices):
    OK = "ok", "OK"
    LOCKED = "locked", "Locked"
    ILLEGAL = "illegal", "Illegal"


class DiskInterface(models.TextChoices):
    VIRTIO = "virtio", "VirtIO"
    VIRTIO_SCSI = "virtio_scsi", "VirtIO-SCSI"
    SATA = "sata", "SATA"
