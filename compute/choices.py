from django.db import models


class VmStatus(models.TextChoices):
    DOWN = "down", "Down"
    WAIT_FOR_LAUNCH = "wait_for_launch", "Wait for launch"
    POWERING_UP = "powering_up", "Powering up"
    UP = "up", "Up"
    POWERING_DOWN = "powering_down", "Powering down"
    PAUSED = "paused", "Paused"
    SUSPENDED = "suspended", "Suspended"
    MIGRATING = "migrating", "Migrating"
    NOT_RESPONDING = "not_responding", "Not responding"
    UNKNOWN = "unknown", "Unknown"
    IMAGE_LOCKED = "image_locked", "Image locked"
    REBOOT_IN_PROGRESS = "reboot_in_progress", "Reboot in progress"


class OsType(models.TextChoices):
    OTHER = "other", "Other OS"
    OTHER_LINUX = "other_linux", "Linux"
    RHEL_9 = "rhel_9x64", "Red Hat Enterprise Linux 9.x x64"
    OL_9 = "ol_9x64", "Oracle Linux 9.x x64"
    DEBIAN_12 = "debian_12", "Debian 12"
    UBUNTU_24 = "ubuntu_24_04", "Ubuntu 24.04"
    WINDOWS_2022 = "windows_2022", "Windows Server 2022"
    WINDOWS_11 = "windows_11", "Windows 11"


class HaPriority(models.IntegerChoices):
    LOW = 1, "Low"
    MEDIUM = 50, "Medium"
    HIGH = 100, "High"


class ResumeBehavior(models.TextChoices):
    AUTO_RESUME = "auto_resume", "Auto resume"
    LEAVE_PAUSED = "leave_paused", "Leave paused"
    KILL = "kill", "Kill"


class PlacementPolicy(models.TextChoices):
    MIGRATABLE = "migratable", "Allow manual and automatic migration"
    USER_MIGRATABLE = "user_migratable", "Allow manual migration only"
    PINNED = "pinned", "Do not allow migration"


class AffinityRule(models.TextChoices):
    """oVirt's affinity polarity; `disabled` switches that half of the group off."""

    DISABLED = "disabled", "Disabled"
    POSITIVE = "positive", "Positive (together)"
    NEGATIVE = "negative", "Negative (apart)"


class ConsoleType(models.TextChoices):
    VNC = "vnc", "VNC"
    SPICE = "spice", "SPICE"
    SERIAL = "serial", "Serial console only"
    HEADLESS = "headless", "Headless"


class SnapshotStatus(models.TextChoices):
    OK = "ok", "OK"
    LOCKED = "locked", "Locked"
    IN_PREVIEW = "in_preview", "In preview"
