"""Roles, permissions and quotas, as in oVirt.

A Role is a named set of action groups (`vm.operate`, `template.use`, ...). A Permission
grants one role to one user or one group on one object: the system, a data center, a
cluster, a VM or a template; it holds on everything below that object (system -> data
center -> cluster -> VM / template). The object is named by type and id rather than by a
foreign key, as oVirt does, so one table holds the grants on every kind of object; the
remove services of those objects delete their grants. What a user may do is answered by
`inventory.permissions`.

A Quota caps what one user's own VMs (VirtualMachine.owner) may use; a group's quota
applies to each of its members.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from ..choices import ActionGroup, PermissionObjectType
from .base import OlvmModel
from .datacenter import name_validator


class Role(OlvmModel):
    name = models.CharField(max_length=64, unique=True, validators=[name_validator])
    description = models.CharField(max_length=255, blank=True)
    administrative = models.BooleanField(
        default=False, help_text="An administrator's role (oVirt's Admin type); otherwise a user role."
    )

    class Meta:
        ordering = ["name"]

    @property
    def action_names(self) -> list[str]:
        """The role's action groups (read through a prefetch of `actions` where there are many roles)."""
        return sorted(row.action for row in self.actions.all())


class RoleAction(models.Model):
    """One action group of a role: a row, so that "which roles allow X" is a plain indexed lookup."""

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=32, choices=ActionGroup.choices)

    class Meta:
        ordering = ["role", "action"]
        constraints = [models.UniqueConstraint(fields=["role", "action"], name="role_action_unique")]
        indexes = [models.Index(fields=["action", "role"], name="role_action_by_action")]

    def __str__(self) -> str:
        return self.action


class Permission(OlvmModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="olvm_permissions"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="olvm_permissions"
    )
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="permissions")
    object_type = models.CharField(max_length=16, choices=PermissionObjectType.choices)
    object_id = models.UUIDField(null=True, blank=True, help_text="Empty for the system.")

    class Meta:
        ordering = ["object_type", "created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="permission_one_principal",
                violation_error_message="A permission is granted to a user or to a group: exactly one of the two.",
            ),
            models.CheckConstraint(
                condition=Q(object_type=PermissionObjectType.SYSTEM, object_id__isnull=True)
                | (~Q(object_type=PermissionObjectType.SYSTEM) & Q(object_id__isnull=False)),
                name="permission_object_id",
                violation_error_message="A permission on the system names no object; on any other level it names one.",
            ),
            models.UniqueConstraint(
                fields=["user", "role", "object_type", "object_id"],
                condition=Q(user__isnull=False, object_id__isnull=False),
                name="permission_user_unique",
                violation_error_message="This user already has this role on this object.",
            ),
            models.UniqueConstraint(
                fields=["group", "role", "object_type", "object_id"],
                condition=Q(group__isnull=False, object_id__isnull=False),
                name="permission_group_unique",
                violation_error_message="This group already has this role on this object.",
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=Q(user__isnull=False, object_type=PermissionObjectType.SYSTEM),
                name="permission_user_system_unique",
                violation_error_message="This user already has this role on the system.",
            ),
            models.UniqueConstraint(
                fields=["group", "role"],
                condition=Q(group__isnull=False, object_type=PermissionObjectType.SYSTEM),
                name="permission_group_system_unique",
                violation_error_message="This group already has this role on the system.",
            ),
        ]
        indexes = [models.Index(fields=["object_type", "object_id"], name="permission_object")]

    def __str__(self) -> str:
        where = (
            "the system" if self.object_type == PermissionObjectType.SYSTEM else f"{self.object_type} {self.object_id}"
        )
        return f"{self.role_id and self.role.name} on {where} for {self.principal_name}"

    @property
    def principal(self):
        return self.user if self.user_id else self.group

    @property
    def principal_name(self) -> str:
        if self.user_id:
            return self.user.get_username()
        return self.group.name if self.group_id else ""


class Quota(OlvmModel):
    """Limits on the VMs a user owns (empty: unlimited). On a group: a limit for each member;
    a user's own quota wins over their groups' (docs/services.md)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="olvm_quota"
    )
    group = models.OneToOneField(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="olvm_quota"
    )
    max_vcpus = models.PositiveIntegerField("max vCPUs", null=True, blank=True, help_text="Empty: unlimited.")
    max_memory_mib = models.PositiveIntegerField(
        "max memory (MiB)", null=True, blank=True, help_text="Empty: unlimited."
    )
    max_disk_gib = models.PositiveIntegerField("max disk (GiB)", null=True, blank=True, help_text="Empty: unlimited.")

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="quota_one_principal",
                violation_error_message="A quota is set for a user or for a group: exactly one of the two.",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user.get_username() if self.user_id else (self.group.name if self.group_id else "?")
        return f"Quota of {owner}"
