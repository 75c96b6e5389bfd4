"""Who may watch what over the live websocket (portals.consumers.LiveConsumer).

The one switch between the live streams and object permissions: administrators (staff)
watch everything; anyone else watches an object only when `inventory.permissions`
grants them its view action group on it. Until that module exists nobody but staff
watches anything. The event and job streams are for administrators only for now (a user's
own events and jobs come with the VM portal).

Synchronous (it may read the database): call it through `database_sync_to_async`.
"""

from __future__ import annotations

import importlib
import uuid

# What a subscription may name: `<kind>.<id>`, or a stream of its own.
OBJECT_KINDS = ("vm", "host", "cluster", "storage")
STREAMS = ("events", "jobs")
# The action group a user needs on the object (inventory.choices.ActionGroup).
VIEW_ACTION = {"vm": "vm.view", "host": "inventory.view", "cluster": "inventory.view", "storage": "inventory.view"}

_permissions = None


def _permissions_module():
    """inventory.permissions when it exists (imported once), else None."""
    global _permissions
    if _permissions is None:
        try:
            _permissions = importlib.import_module("inventory.permissions")
        except ModuleNotFoundError as exc:
            if exc.name != "inventory.permissions":
                raise
            _permissions = False
    return _permissions or None


def _model(kind: str):
    if kind == "vm":
        from compute.models import VirtualMachine

        return VirtualMachine
    if kind == "storage":
        from storage.models import StorageDomain

        return StorageDomain
    from inventory.models import Cluster, Host

    return {"host": Host, "cluster": Cluster}[kind]


def parse(subscription) -> tuple[str, uuid.UUID | None] | None:
    """`vm.<uuid>` -> ("vm", UUID); `events` -> ("events", None); anything else -> None."""
    if not isinstance(subscription, str) or len(subscription) > 64:
        return None
    if subscription in STREAMS:
        return subscription, None
    kind, _, text = subscription.partition(".")
    if kind not in OBJECT_KINDS:
        return None
    try:
        return kind, uuid.UUID(text)
    except ValueError:
        return None


def can_watch(user, kind: str, obj_id=None) -> bool:
    """May `user` subscribe to `kind` (`vm`, `host`, `cluster`, `storage` with the object's id,
    or the `events` / `jobs` stream)? False for an object that does not exist."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_staff:
        return True
    if kind not in VIEW_ACTION or obj_id is None:
        return False
    permissions = _permissions_module()
    if permissions is None:
        return False
    obj = _model(kind).objects.filter(pk=obj_id).first()
    return obj is not None and bool(permissions.has_permission(user, VIEW_ACTION[kind], obj))
