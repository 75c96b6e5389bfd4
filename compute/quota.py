"""Quotas: what the VMs a user owns may add up to.

A user's limits are their own Quota if they have one; otherwise, over the quotas of their
groups, the most generous value of each limit (a group without a limit on it: unlimited);
no quota at all: unlimited. Usage is the sum over the VMs the user owns
(`VirtualMachine.owner`): vCPUs, memory, and the virtual size of their disks.

`refusal(limits, usage)` is plain logic over plain data; `limits_of` and `usage_of` read
the database (one and two queries).
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Q, Sum

from inventory.models import Quota
from storage.models import GIB

from .models import VirtualMachine


@dataclass(frozen=True)
class Limits:
    vcpus: int | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.vcpus is None and self.memory_mib is None and self.disk_gib is None


@dataclass(frozen=True)
class Usage:
    vcpus: int = 0
    memory_mib: int = 0
    disk_bytes: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.vcpus + other.vcpus, self.memory_mib + other.memory_mib, self.disk_bytes + other.disk_bytes)

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(self.vcpus - other.vcpus, self.memory_mib - other.memory_mib, self.disk_bytes - other.disk_bytes)


@dataclass(frozen=True)
class QuotaRow:
    """One limit as the VM portal shows it."""

    label: str
    unit: str
    used: int
    limit: int | None

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def percent(self) -> int:
        if not self.limit:
            return 0
        return min(100, round(self.used * 100 / self.limit))


def combine(own: Limits | None, group_limits: list[Limits]) -> Limits:
    """The user's own limits win; else the most generous of their groups' (None: unlimited)."""
    if own is not None:
        return own
    if not group_limits:
        return Limits()

    def most(values):
        return None if any(v is None for v in values) else max(values)

    return Limits(
        vcpus=most([g.vcpus for g in group_limits]),
        memory_mib=most([g.memory_mib for g in group_limits]),
        disk_gib=most([g.disk_gib for g in group_limits]),
    )


def gib(size_bytes: int) -> int:
    """Bytes as whole GiB, rounded up (a 1.5 GiB disk takes 2 GiB of a quota's room)."""
    return -(-size_bytes // GIB)


def refusal(limits: Limits, total: Usage, new: Usage) -> str | None:
    """Why the VM `new` does not fit when the user's VMs, it included, use `total`; None when it fits."""
    before = total - new
    dimensions = (
        ("vCPUs", "", limits.vcpus, total.vcpus, before.vcpus, new.vcpus),
        ("memory", " MiB", limits.memory_mib, total.memory_mib, before.memory_mib, new.memory_mib),
        (
            "disk",
            " GiB",
            limits.disk_gib,
            total.disk_bytes / GIB,
            gib(before.disk_bytes),
            gib(new.disk_bytes),
        ),
    )
    problems = [
        f"{label}: it needs {needed}{unit}, {max(0, limit - used)}{unit} of your {limit}{unit} are left"
        for label, unit, limit, after, used, needed in dimensions
        if limit is not None and after > limit
    ]
    if not problems:
        return None
    return "Your quota does not allow this VM (" + "; ".join(problems) + "). Ask an administrator for more."


def limits_of(user) -> Limits:
    """The user's effective limits: one query."""
    groups = get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")
    own, of_groups = None, []
    for quota in Quota.objects.filter(Q(user_id=user.pk) | Q(group_id__in=groups)):
        limits = Limits(quota.max_vcpus, quota.max_memory_mib, quota.max_disk_gib)
        if quota.user_id is not None:
            own = limits
        else:
            of_groups.append(limits)
    return combine(own, of_groups)


def usage_of(user) -> Usage:
    """What the VMs the user owns use: two queries (the VMs, their disks)."""
    from storage.models import Disk, DiskAttachment

    vms = VirtualMachine.objects.filter(owner_id=user.pk).aggregate(vcpus=Sum("vcpus"), memory=Sum("memory_mib"))
    disks = Disk.objects.filter(pk__in=DiskAttachment.objects.filter(vm__owner_id=user.pk).values("disk_id")).aggregate(
        size=Sum("provisioned_size")
    )
    return Usage(vms["vcpus"] or 0, vms["memory"] or 0, disks["size"] or 0)


def quota_rows(user) -> list[QuotaRow]:
    """The user's usage against their limits, as the VM portal shows it."""
    limits, used = limits_of(user), usage_of(user)
    return [
        QuotaRow("vCPUs", "", used.vcpus, limits.vcpus),
        QuotaRow("Memory", "MiB", used.memory_mib, limits.memory_mib),
        QuotaRow("Disk", "GiB", gib(used.disk_bytes), limits.disk_gib),
    ]
