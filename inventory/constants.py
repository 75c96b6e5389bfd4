"""Constants of the inventory app."""

from .choices import ActionGroup as A

# The predefined roles, as oVirt names them: name -> (administrative, description, action groups).
# Seeded by migration 0004_seed_roles (a frozen copy: a change here needs a data migration; a
# test holds the two equal).
_USER_VM = (A.VM_VIEW, A.VM_OPERATE, A.VM_CONSOLE, A.VM_SNAPSHOT)
PREDEFINED_ROLES: dict[str, tuple[bool, str, tuple[str, ...]]] = {
    "SuperUser": (True, "System administrator: every action on every object.", tuple(A.values)),
    "ClusterAdmin": (
        True,
        "Cluster administrator: the hosts, templates and VMs of the clusters it is granted on.",
        (
            A.CLUSTER_MANAGE,
            A.HOST_MANAGE,
            A.INVENTORY_VIEW,
            A.TEMPLATE_VIEW,
            A.TEMPLATE_USE,
            A.TEMPLATE_MANAGE,
            *_USER_VM,
            A.VM_CREATE,
            A.VM_EDIT,
            A.VM_REMOVE,
        ),
    ),
    "ReadOnlyAdmin": (
        True,
        "Read-only administrator: sees everything below the object, changes nothing.",
        (
            A.INVENTORY_VIEW,
            A.TEMPLATE_VIEW,
            A.VM_VIEW,
        ),
    ),
    "UserRole": (False, "Uses the VMs granted: start, shut down, power off, reboot, console, snapshots.", _USER_VM),
    "PowerUserRole": (
        False,
        "A UserRole that also creates VMs from the templates it may use, within its quota.",
        (*_USER_VM, A.VM_CREATE, A.TEMPLATE_VIEW, A.TEMPLATE_USE),
    ),
    "UserVmManager": (
        False,
        "A UserRole that also edits and removes the VMs granted.",
        (*_USER_VM, A.VM_EDIT, A.VM_REMOVE),
    ),
}
# What the owner of a VM may do on it: UserRole's action groups.
OWNER_ACTIONS = frozenset(PREDEFINED_ROLES["UserRole"][2])
