"""oVirt's predefined roles (a frozen copy of inventory.constants.PREDEFINED_ROLES)."""

from django.db import migrations

USER_VM = ["vm.view", "vm.operate", "vm.console", "vm.snapshot"]
EVERYTHING = [
    "system.manage",
    "data_center.manage",
    "cluster.manage",
    "host.manage",
    "inventory.view",
    "template.view",
    "template.use",
    "template.manage",
    *USER_VM,
    "vm.create",
    "vm.edit",
    "vm.remove",
]
ROLES = {
    "SuperUser": (True, "System administrator: every action on every object.", EVERYTHING),
    "ClusterAdmin": (
        True,
        "Cluster administrator: the hosts, templates and VMs of the clusters it is granted on.",
        [
            "cluster.manage",
            "host.manage",
            "inventory.view",
            "template.view",
            "template.use",
            "template.manage",
            *USER_VM,
            "vm.create",
            "vm.edit",
            "vm.remove",
        ],
    ),
    "ReadOnlyAdmin": (
        True,
        "Read-only administrator: sees everything below the object, changes nothing.",
        ["inventory.view", "template.view", "vm.view"],
    ),
    "UserRole": (False, "Uses the VMs granted: start, shut down, power off, reboot, console, snapshots.", USER_VM),
    "PowerUserRole": (
        False,
        "A UserRole that also creates VMs from the templates it may use, within its quota.",
        [*USER_VM, "vm.create", "template.view", "template.use"],
    ),
    "UserVmManager": (
        False,
        "A UserRole that also edits and removes the VMs granted.",
        [*USER_VM, "vm.edit", "vm.remove"],
    ),
}


def seed(apps, schema_editor):
    Role = apps.get_model("inventory", "Role")
    RoleAction = apps.get_model("inventory", "RoleAction")
    for name, (administrative, description, actions) in ROLES.items():
        role, _ = Role.objects.get_or_create(
            name=name, defaults={"administrative": administrative, "description": description}
        )
        for action in actions:
            RoleAction.objects.get_or_create(role=role, action=action)


def unseed(apps, schema_editor):
    apps.get_model("inventory", "Role").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [("inventory", "0003_roles_permissions_quotas")]
    operations = [migrations.RunPython(seed, unseed)]
