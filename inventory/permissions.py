"""Who may do what on which object: oVirt's permission model as queries (no writes here).

A user may do `action` (an ActionGroup, e.g. `vm.operate`) on an object when one of their
grants (`Permission`, their own or one of their groups') has a role allowing `action` on
that object or on an object above it:

    system -> data center -> cluster -> host / VM / template (-> the template's versions)

and, on a VM, when they own it and `action` is one of UserRole's (OWNER_ACTIONS). Django
superusers hold SuperUser everywhere; inactive and anonymous users hold nothing.

- `has_permission(user, action, obj)`: one query (none for a superuser, or for an owner
  asking for an owner action);
- `check(user, action, obj)`: the same, raising PermissionDenied with the reason (and
  nothing about an object the user may not even see);
- `visible_vms(user)`, `visible_templates(user)`, `visible_clusters(user)`: querysets
  filtered by uncorrelated subqueries over the user's grants (one query when evaluated,
  whatever the number of grants and rows; the permission lookups use the index on
  (object_type, object_id) and the foreign keys).

`obj` is None (the system), a DataCenter, Cluster, Host, VirtualMachine or Template (any
other object with a `data_center` inherits from it: a storage domain, a network).
"""

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import BooleanField, Case, CharField, Exists, OuterRef, Q, QuerySet, Subquery, Value, When

from .choices import ActionGroup, PermissionObjectType
from .constants import OWNER_ACTIONS
from .models import Cluster, DataCenter, Host, Permission, RoleAction

SYSTEM = PermissionObjectType.SYSTEM
DATA_CENTER = PermissionObjectType.DATA_CENTER
CLUSTER = PermissionObjectType.CLUSTER
VM = PermissionObjectType.VM
TEMPLATE = PermissionObjectType.TEMPLATE

# How a refusal names what was refused: "You may not <verb> <object>".
VERBS = {
    ActionGroup.SYSTEM_MANAGE: "manage",
    ActionGroup.DATA_CENTER_MANAGE: "manage",
    ActionGroup.CLUSTER_MANAGE: "manage",
    ActionGroup.HOST_MANAGE: "manage the hosts of",
    ActionGroup.INVENTORY_VIEW: "see",
    ActionGroup.TEMPLATE_VIEW: "see",
    ActionGroup.TEMPLATE_USE: "create VMs from",
    ActionGroup.TEMPLATE_MANAGE: "manage the templates of",
    ActionGroup.VM_VIEW: "see",
    ActionGroup.VM_OPERATE: "start, shut down, power off or reboot",
    ActionGroup.VM_CONSOLE: "open the console of",
    ActionGroup.VM_SNAPSHOT: "create, revert or remove snapshots of",
    ActionGroup.VM_CREATE: "create VMs in",
    ActionGroup.VM_EDIT: "edit",
    ActionGroup.VM_REMOVE: "remove",
}


def _active(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def grants(user, action: str) -> QuerySet[Permission]:
    """The user's grants, their own and their groups', whose role allows `action` (not evaluated)."""
    if action not in ActionGroup.values:
        raise ValueError(f"Unknown action group {action!r}.")
    groups = get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")
    roles = RoleAction.objects.filter(action=action).values("role_id")
    return Permission.objects.filter(Q(user_id=user.pk) | Q(group_id__in=groups), role_id__in=roles)


def _model_label(obj) -> str:
    return obj._meta.label


def _data_center_of_cluster(obj, cluster_field: str = "cluster"):
    """The data center id of obj's cluster: from the loaded cluster, or as a subquery."""
    cluster_id = getattr(obj, f"{cluster_field}_id")
    if cluster_id is None:
        return None
    cached = obj._meta.get_field(cluster_field).get_cached_value(obj, None)
    if cached is not None:
        return cached.data_center_id
    return Cluster.objects.filter(pk=cluster_id).values("data_center_id")


def levels(obj) -> list[tuple[str, object]]:
    """(object type, id or id subquery) of obj and of every object above it, the system aside."""
    if obj is None:
        return []
    if isinstance(obj, DataCenter):
        return [(DATA_CENTER, obj.pk)]
    if isinstance(obj, Cluster):
        return [(DATA_CENTER, obj.data_center_id), (CLUSTER, obj.pk)]
    if isinstance(obj, Host):
        return [(DATA_CENTER, _data_center_of_cluster(obj)), (CLUSTER, obj.cluster_id)]
    label = _model_label(obj)
    if label == "compute.VirtualMachine":
        return [(DATA_CENTER, obj.data_center_id), (CLUSTER, obj.cluster_id), (VM, obj.pk)]
    if label == "compute.Template":
        found = []
        if obj.cluster_id:
            found += [(DATA_CENTER, _data_center_of_cluster(obj)), (CLUSTER, obj.cluster_id)]
        found.append((TEMPLATE, obj.pk))
        if obj.base_template_id:
            found.append((TEMPLATE, obj.base_template_id))
        return found
    # Other objects (a storage domain, a network) inherit from their data center, if any.
    data_center_id = getattr(obj, "data_center_id", None)
    return [(DATA_CENTER, data_center_id)] if data_center_id else []


def _on(obj) -> Q:
    """The grants that reach obj: on the system or on obj or on an object above it."""
    where = Q(object_type=SYSTEM)
    for object_type, object_id in levels(obj):
        if object_id is None:
            continue
        lookup = "object_id__in" if isinstance(object_id, QuerySet) else "object_id"
        where |= Q(object_type=object_type, **{lookup: object_id})
    return where


def has_permission(user, action: str, obj=None) -> bool:
    """May `user` do `action` on `obj` (None: the system)? At most one query."""
    if not _active(user):
        return False
    if user.is_superuser:
        return True
    if (
        obj is not None
        and action in OWNER_ACTIONS
        and _model_label(obj) == "compute.VirtualMachine"
        and obj.owner_id == user.pk
    ):
        return True
    return grants(user, action).filter(_on(obj)).exists()


def allowed_actions(user, obj=None) -> frozenset[str]:
    """Every action group `user` holds on `obj`: one query (none for a superuser), for a page
    that shows several buttons."""
    if not _active(user):
        return frozenset()
    if user.is_superuser:
        return frozenset(ActionGroup.values)
    groups = get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")
    roles = Permission.objects.filter(Q(user_id=user.pk) | Q(group_id__in=groups)).filter(_on(obj)).values("role_id")
    found = set(RoleAction.objects.filter(role_id__in=roles).values_list("action", flat=True).distinct())
    if obj is not None and _model_label(obj) == "compute.VirtualMachine" and obj.owner_id == user.pk:
        found |= OWNER_ACTIONS
    return frozenset(found)


def kind_of(obj) -> str:
    if obj is None:
        return "the system"
    return str(obj._meta.verbose_name)


def view_action(obj) -> str | None:
    """The action that lets a user see `obj` at all (None: the system, always named)."""
    if obj is None:
        return None
    label = _model_label(obj)
    if label == "compute.VirtualMachine":
        return ActionGroup.VM_VIEW
    if label == "compute.Template":
        return ActionGroup.TEMPLATE_VIEW
    return ActionGroup.INVENTORY_VIEW


def refusal(user, action: str, obj=None) -> str:
    """Why `user` may not do `action` on `obj`, naming obj only when the user may see it."""
    if not _active(user):
        return "Sign in first."
    kind = kind_of(obj)
    seen = view_action(obj)
    if seen is not None and not has_permission(user, seen, obj):
        mine = "it is not yours and " if kind == "virtual machine" else ""
        return f"You have no permission on this {kind}: {mine}no role of yours covers it."
    name = "the system" if obj is None else f"{kind} {obj}"
    above = {
        "virtual machine": "on it, its cluster, its data center or the system",
        "template": "on it, its cluster, its data center or the system",
        "cluster": "on it, its data center or the system",
        "host": "on its cluster, its data center or the system",
        "data center": "on it or on the system",
    }.get(kind, "on the system")
    return f"You may not {VERBS.get(action, action)} {name}: no role of yours {above} allows '{action}'."


def check(user, action: str, obj=None) -> None:
    """Raise PermissionDenied, saying why, unless `user` may do `action` on `obj`."""
    if not has_permission(user, action, obj):
        raise PermissionDenied(refusal(user, action, obj))


# Visible objects: querysets, one query each when evaluated -----------------------------------


def _ids(user_grants: QuerySet[Permission], object_type: str) -> QuerySet:
    return user_grants.filter(object_type=object_type).values("object_id")


def _visible(user, action: str, model, queryset: QuerySet | None, where: Callable[[QuerySet[Permission]], Q]):
    """`queryset` (all of `model`'s rows when None) narrowed to what `user` may do `action` on:
    nothing for an inactive or anonymous user, everything for a superuser, else the rows
    `where(grants)` selects, given the user's grants of `action` (not evaluated)."""
    queryset = model.objects.all() if queryset is None else queryset
    if not _active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(where(grants(user, action)))


def visible_vms(user, action: str = ActionGroup.VM_VIEW, queryset: QuerySet | None = None) -> QuerySet:
    """The VMs on which `user` may do `action`: granted on the system, their data center,
    their cluster or themselves, or owned by the user (for UserRole's actions)."""
    from compute.models import VirtualMachine

    def where(mine: QuerySet[Permission]) -> Q:
        found = (
            Q(Exists(mine.filter(object_type=SYSTEM)))
            | Q(data_center_id__in=_ids(mine, DATA_CENTER))
            | Q(cluster_id__in=_ids(mine, CLUSTER))
            | Q(pk__in=_ids(mine, VM))
        )
        return (found | Q(owner_id=user.pk)) if action in OWNER_ACTIONS else found

    return _visible(user, action, VirtualMachine, queryset, where)


def visible_templates(user, action: str = ActionGroup.TEMPLATE_VIEW, queryset: QuerySet | None = None) -> QuerySet:
    """The templates on which `user` may do `action` (e.g. `template.use` for the VM portal's
    New VM): granted on the system, their cluster's data center, their cluster, themselves
    or their base template."""
    from compute.models import Template

    def where(mine: QuerySet[Permission]) -> Q:
        return (
            Q(Exists(mine.filter(object_type=SYSTEM)))
            | Q(cluster_id__in=Cluster.objects.filter(data_center_id__in=_ids(mine, DATA_CENTER)).values("pk"))
            | Q(cluster_id__in=_ids(mine, CLUSTER))
            | Q(pk__in=_ids(mine, TEMPLATE))
            | Q(base_template_id__in=_ids(mine, TEMPLATE))
        )

    return _visible(user, action, Template, queryset, where)


def visible_clusters(user, action: str = ActionGroup.INVENTORY_VIEW, queryset: QuerySet | None = None) -> QuerySet:
    """The clusters on which `user` may do `action` (e.g. `vm.create`)."""

    def where(mine: QuerySet[Permission]) -> Q:
        return (
            Q(Exists(mine.filter(object_type=SYSTEM)))
            | Q(data_center_id__in=_ids(mine, DATA_CENTER))
            | Q(pk__in=_ids(mine, CLUSTER))
        )

    return _visible(user, action, Cluster, queryset, where)


# The objects permissions are granted on ------------------------------------------------------

# Model label -> the object type of a grant on it.
OBJECT_TYPES = {
    "inventory.DataCenter": DATA_CENTER,
    "inventory.Cluster": CLUSTER,
    "compute.VirtualMachine": VM,
    "compute.Template": TEMPLATE,
}


def object_type_of(obj) -> str:
    """The object type of a grant on `obj` (None: the system); ValidationError for anything else."""
    if obj is None:
        return SYSTEM
    object_type = OBJECT_TYPES.get(_model_label(obj))
    if object_type is None:
        raise ValidationError(
            {"object_type": "Permissions are granted on the system, a data center, a cluster, a VM or a template."}
        )
    return object_type


def object_model(object_type: str):
    """The model of an object type (None for the system)."""
    from django.apps import apps

    for label, kind in OBJECT_TYPES.items():
        if kind == object_type:
            return apps.get_model(label)
    return None


def object_of(object_type: str, object_id):
    """The object a grant names (None for the system, or when it is gone)."""
    model = object_model(object_type)
    if model is None or object_id is None:
        return None
    return model._default_manager.filter(pk=object_id).first()


def object_label(obj) -> str:
    """How an event names what a grant is on: "VM web-01", "the system"."""
    if obj is None:
        return "the system"
    kind = "VM" if _model_label(obj) == "compute.VirtualMachine" else str(obj._meta.verbose_name)
    return f"{kind} {obj}"


def with_object_names(queryset: QuerySet[Permission]) -> QuerySet[Permission]:
    """Annotate `object_name`: the name of the object each grant is on, in the same query."""
    whens = []
    for object_type in (DATA_CENTER, CLUSTER, VM, TEMPLATE):
        model = object_model(object_type)
        names = model._default_manager.filter(pk=OuterRef("object_id")).order_by().values("name")[:1]
        whens.append(When(object_type=object_type, then=Subquery(names)))
    return queryset.annotate(object_name=Case(*whens, default=Value(""), output_field=CharField()))


# Grants as the admin portal lists them -----------------------------------------------------


def grants_on(obj) -> QuerySet[Permission]:
    """Every grant that holds on `obj`: on it and on the objects above it (and the system's),
    with user, group and role; `inherited` is True for those made on another object."""
    own_type = levels(obj)[-1][0] if obj is not None else SYSTEM
    own = Q(object_type=own_type, object_id=obj.pk) if obj is not None else Q(object_type=SYSTEM)
    return (
        with_object_names(Permission.objects.filter(_on(obj)))
        .select_related("user", "group", "role")
        .annotate(inherited=Case(When(own, then=Value(False)), default=Value(True), output_field=BooleanField()))
        .order_by("inherited", "role__name", "created_at")
    )
