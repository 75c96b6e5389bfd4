"""Small factory helpers for every app's tests: rows made directly, with unique names.

Data centers and clusters go through the services (so a data center has its `ovirtmgmt`
network and a cluster has it attached); hosts, storage domains, VMs and disks are plain
ORM rows in the state asked for. The seed rows the migrations create (the Default MAC
pool, the Blank template) are recreated when missing, so these also work in
`django_db(transaction=True)` tests after another test flushed the database.
"""

import itertools

from compute.choices import VmStatus
from compute.models import BLANK_TEMPLATE_ID, Template, VirtualMachine
from compute.statemachine import RUNNING
from inventory.models import Cluster, DataCenter, Host
from networking.models import MacPool
from storage.choices import DiskAllocation, DiskFormat, DiskStatus, StorageDomainStatus
from storage.models import GIB, Disk, StorageDomain

_numbers = itertools.count(1)


def _next() -> int:
    return next(_numbers)


def default_mac_pool() -> MacPool:
    pool, _ = MacPool.objects.get_or_create(
        name="Default",
        defaults={
            "description": "Default MAC pool",
            "ranges": [{"from": "56:6f:1a:2b:00:00", "to": "56:6f:1a:2b:ff:ff"}],
        },
    )
    return pool


def blank_template() -> Template:
    template, _ = Template.objects.get_or_create(
        id=BLANK_TEMPLATE_ID, defaults={"name": "Blank", "description": "Blank template"}
    )
    return template


def make_data_center(name: str | None = None, **fields) -> DataCenter:
    """A data center with its management network, made by inventory.services."""
    from inventory.services import create_data_center

    default_mac_pool()
    return create_data_center(user=None, name=name or f"dc{_next()}", **fields)


def make_cluster(dc: DataCenter | None = None, name: str | None = None, **fields) -> Cluster:
    """A cluster (management network attached), made by inventory.services."""
    from inventory.services import create_cluster

    default_mac_pool()
    return create_cluster(user=None, data_center=dc or make_data_center(), name=name or f"cluster{_next()}", **fields)


def make_host(
    cluster: Cluster | None = None,
    status: str = "up",
    simulated: bool = True,
    memory_mib: int = 65536,
    cpu_threads: int = 32,
    **fields,
) -> Host:
    n = _next()
    fields.setdefault("name", f"host{n}")
    fields.setdefault("address", f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")
    fields.setdefault("cpu_sockets", 2)
    fields.setdefault("cpu_cores", max(1, cpu_threads // 2))
    return Host.objects.create(
        cluster=cluster or make_cluster(),
        status=status,
        simulated=simulated,
        memory_mib=memory_mib,
        cpu_threads=cpu_threads,
        **fields,
    )


def make_storage_domain(
    dc: DataCenter | None = None, total: int = 1024 * GIB, free: int = 512 * GIB, **fields
) -> StorageDomain:
    """An active data domain of `total` bytes with `free` bytes free, attached to `dc` (a new one if None)."""
    n = _next()
    fields.setdefault("name", f"sd{n}")
    fields.setdefault("path", f"/srv/olvm/sd{n}")
    fields.setdefault("status", StorageDomainStatus.ACTIVE)
    return StorageDomain.objects.create(
        data_center=dc or make_data_center(), total_bytes=total, free_bytes=free, **fields
    )


def make_vm(cluster: Cluster | None = None, status: str = VmStatus.DOWN, **kw) -> VirtualMachine:
    """A VM row; a running status gets an Up simulated host of its cluster unless run_on_host is given."""
    cluster = cluster or make_cluster()
    kw.setdefault("name", f"vm{_next()}")
    kw.setdefault("template", blank_template())
    if status in RUNNING and "run_on_host" not in kw:
        kw["run_on_host"] = make_host(cluster)
    return VirtualMachine.objects.create(cluster=cluster, data_center_id=cluster.data_center_id, status=status, **kw)


def make_disk(
    storage_domain: StorageDomain | None = None,
    provisioned_size: int = 10 * GIB,
    allocation: str = DiskAllocation.THIN,
    **fields,
) -> Disk:
    """A disk row in status ok, its size counted in the domain's committed (and free, if preallocated) bytes."""
    from django.db.models import F

    sd = storage_domain or make_storage_domain()
    fields.setdefault("alias", f"disk{_next()}")
    fields.setdefault("format", DiskFormat.RAW if allocation == DiskAllocation.PREALLOCATED else DiskFormat.QCOW2)
    fields.setdefault("status", DiskStatus.OK)
    disk = Disk.objects.create(storage_domain=sd, provisioned_size=provisioned_size, allocation=allocation, **fields)
    updates = {"committed_bytes": F("committed_bytes") + provisioned_size}
    if allocation == DiskAllocation.PREALLOCATED:
        updates["free_bytes"] = F("free_bytes") - provisioned_size
    StorageDomain.objects.filter(pk=sd.pk).update(**updates)
    sd.refresh_from_db()
    return disk


def role(name: str):
    """A predefined role (inventory.constants.PREDEFINED_ROLES), recreated when a flush removed it."""
    from inventory.constants import PREDEFINED_ROLES
    from inventory.models import Role, RoleAction

    found = Role.objects.filter(name=name).first()
    if found is not None:
        return found
    administrative, description, actions = PREDEFINED_ROLES[name]
    found = Role.objects.create(name=name, administrative=administrative, description=description)
    RoleAction.objects.bulk_create([RoleAction(role=found, action=action) for action in actions])
    return found


def make_user(username: str | None = None, *, password: str = "user-password-123", groups=(), **fields):
    """An active user who is not staff (a VM portal user)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username or f"user{_next()}", password=password, **fields)
    if groups:
        user.groups.set(groups)
    return user


def grant(principal, role_name: str, obj=None):
    """Give `principal` (a user or a group) the predefined role `role_name` on `obj` (None: the system)."""
    from inventory.services import grant_permission

    return grant_permission(user=None, principal=principal, role=role(role_name), obj=obj)


SEED_MIGRATIONS = (
    "networking.migrations.0002_seed_default_mac_pool",
    "compute.migrations.0003_seed_blank_and_instance_types",
    "inventory.migrations.0004_seed_roles",
)


def ensure_seed_data() -> None:
    """The rows the data migrations seed (Default MAC pool, Blank template, instance types,
    roles), again after a transactional test's flush emptied the tables. Idempotent."""
    import importlib

    from django.apps import apps

    for module in SEED_MIGRATIONS:
        importlib.import_module(module).seed(apps, None)
