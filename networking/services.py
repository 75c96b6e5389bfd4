"""Write operations on MAC pools, logical networks, vNIC profiles and VM NICs.

Each function validates, writes in one transaction, records an audit Event and, when a
running VM must change (NIC hot-plug), opens a Job and enqueues its Celery task on commit.
"""

from django.core.exceptions import ValidationError
from django.db import transaction

from compute.statemachine import RUNNING
from inventory.audit import create_job, record_event
from inventory.exceptions import ConflictError
from inventory.models import Cluster, DataCenter, Job
from inventory.servicekit import apply_changes, locked, save_validated
from inventory.services import MANAGEMENT_NETWORK, enqueue, who

from .macs import mac_to_int, normalize_mac
from .models import ClusterNetwork, LogicalNetwork, MacPool, VmNic, VnicProfile

DEFAULT_MAC_POOL = "Default"

MAC_POOL_FIELDS = {"name", "description", "ranges", "allow_duplicates"}
NETWORK_FIELDS = {
    "name",
    "description",
    "vlan_tag",
    "mtu",
    "vm_network",
    "required",
    "is_management",
    "is_migration",
    "is_display",
}
# What hosts and running VMs already use: cannot change under their feet.
NETWORK_FIELDS_FIXED_WHILE_IN_USE = {"name", "vlan_tag", "mtu", "vm_network"}
VNIC_PROFILE_FIELDS = {"name", "description", "port_mirroring", "pass_through"}
NIC_FIELDS = {"name", "profile", "interface", "mac", "linked", "plugged"}


# MAC pools --------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_mac_pool(*, user, name, ranges, allow_duplicates=False, description="") -> MacPool:
    pool = save_validated(MacPool(name=name, ranges=ranges, allow_duplicates=allow_duplicates, description=description))
    record_event(
        "MAC_POOL_ADD_SUCCESS",
        f"MAC pool {pool.name} ({pool.size} addresses) was added by {who(user)}.",
        user=user,
        obj=pool,
    )
    return pool


@transaction.atomic(durable=True)
def update_mac_pool(pool: MacPool, *, user, **changes) -> MacPool:
    pool = locked(pool)
    changed = apply_changes(pool, changes, MAC_POOL_FIELDS)
    if "allow_duplicates" in changed and not pool.allow_duplicates:
        duplicated = _duplicated_macs(pool)
        if duplicated:
            raise ConflictError(
                f"MAC pool {pool.name} has NICs sharing MAC addresses ({', '.join(duplicated[:5])}); "
                "change those NICs before disallowing duplicates."
            )
    save_validated(pool)
    if "ranges" in changed and pool.cursor >= pool.size:
        pool.cursor = 0
        pool.save(update_fields=["cursor"])
    if changed:
        record_event(
            "MAC_POOL_EDIT_SUCCESS", f"MAC pool {pool.name} was updated ({', '.join(changed)}).", user=user, obj=pool
        )
    return pool


@transaction.atomic(durable=True)
def remove_mac_pool(pool: MacPool, *, user) -> None:
    pool = locked(pool)
    if pool.name == DEFAULT_MAC_POOL:
        raise ConflictError("The Default MAC pool is used for new clusters and cannot be removed.")
    clusters = list(pool.clusters.order_by("name").values_list("name", flat=True))
    if clusters:
        raise ConflictError(f"MAC pool {pool.name} is used by cluster(s) {', '.join(clusters)}.")
    nics = pool.nics.count()
    if nics:
        raise ConflictError(f"MAC pool {pool.name} still has {nics} NIC(s) holding its addresses.")
    record_event("MAC_POOL_REMOVE_SUCCESS", f"MAC pool {pool.name} was removed by {who(user)}.", user=user, obj=pool)
    pool.delete()


def allocate_mac(pool: MacPool) -> str:
    """The next free MAC of `pool`, from its cursor on; locks the pool row until commit.

    Call inside the transaction that stores the NIC, so no other transaction can hand out
    the same address in between.
    """
    with transaction.atomic():
        pool = MacPool.objects.select_for_update().get(pk=pool.pk)
        size = pool.size
        used = set(VmNic.objects.filter(mac_pool=pool).values_list("mac", flat=True))
        for step in range(size):
            index = (pool.cursor + step) % size
            mac = pool.mac_at(index)
            if mac not in used:
                MacPool.objects.filter(pk=pool.pk).update(cursor=(index + 1) % size)
                return mac
        raise ValidationError({"mac": f"MAC pool {pool.name} is exhausted: all {size} of its addresses are in use."})


def _duplicated_macs(pool: MacPool) -> list[str]:
    from django.db.models import Count

    return list(
        VmNic.objects.filter(mac_pool=pool)
        .values("mac")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("mac")
        .values_list("mac", flat=True)
    )


def _check_manual_mac(pool: MacPool, mac: str, *, exclude_nic: VmNic | None = None) -> str:
    """A MAC typed by the user: any unicast address, unique in the pool unless it allows duplicates."""
    try:
        mac = normalize_mac(mac)
    except ValueError as exc:
        raise ValidationError({"mac": str(exc)}) from None
    if mac_to_int(mac) >> 40 & 1:
        raise ValidationError({"mac": f"{mac} is a multicast address; a NIC needs a unicast MAC."})
    pool = MacPool.objects.select_for_update().get(pk=pool.pk)
    if not pool.allow_duplicates:
        others = VmNic.objects.filter(mac_pool=pool, mac=mac)
        if exclude_nic is not None:
            others = others.exclude(pk=exclude_nic.pk)
        other = others.select_related("vm").first()
        if other is not None:
            raise ValidationError(
                {"mac": f"MAC {mac} is already used by NIC {other.name} of VM {other.vm.name} (pool {pool.name})."}
            )
    return mac


# Logical networks -------------------------------------------------------------------------


def create_management_network(dc: DataCenter) -> LogicalNetwork:
    """The data center's `ovirtmgmt` network and its vNIC profile (inside create_data_center)."""
    with transaction.atomic():
        network = save_validated(
            LogicalNetwork(
                data_center=dc,
                name=MANAGEMENT_NETWORK,
                description="Management Network",
                is_management=True,
                vm_network=True,
                required=True,
            )
        )
        save_validated(VnicProfile(network=network, name=network.name))
    return network


@transaction.atomic(durable=True)
def create_network(
    *,
    user,
    data_center: DataCenter,
    name,
    vlan_tag=None,
    mtu=0,
    vm_network=True,
    required=True,
    is_migration=False,
    is_display=False,
    description="",
    clusters=(),
) -> LogicalNetwork:
    network = LogicalNetwork(
        data_center=data_center,
        name=name,
        vlan_tag=vlan_tag,
        mtu=mtu,
        vm_network=vm_network,
        required=required,
        is_migration=is_migration,
        is_display=is_display,
        description=description,
    )
    _check_network_unique(network)
    clusters = list(clusters)
    foreign = [c.name for c in clusters if c.data_center_id != data_center.pk]
    if foreign:
        raise ValidationError(
            {"clusters": f"Cluster(s) {', '.join(foreign)} are not in data center {data_center.name}."}
        )
    save_validated(network)
    if network.vm_network:
        save_validated(VnicProfile(network=network, name=network.name))
    for cluster in sorted(clusters, key=lambda c: c.pk):
        ClusterNetwork.objects.create(cluster=cluster, network=network, required=required)
    attached = f" and attached to cluster(s) {', '.join(sorted(c.name for c in clusters))}" if clusters else ""
    record_event(
        "USER_ADD_NETWORK",
        f"Network {network.name} was added to data center {data_center.name}{attached} by {who(user)}.",
        user=user,
        obj=network,
    )
    return network


@transaction.atomic(durable=True)
def update_network(network: LogicalNetwork, *, user, **changes) -> LogicalNetwork:
    network = locked(network)
    was_management, was_vm_network = network.is_management, network.vm_network
    changed = apply_changes(network, changes, NETWORK_FIELDS)
    if "is_management" in changed:
        if was_management:
            raise ConflictError(f"Network {network.name} is the management network; it cannot lose that role.")
        other = LogicalNetwork.objects.filter(data_center_id=network.data_center_id, is_management=True).first()
        if other is not None:
            raise ValidationError(
                {"is_management": f"Data center already has a management network ({other.name}); only one is allowed."}
            )
    _check_network_unique(network)
    fixed = sorted(NETWORK_FIELDS_FIXED_WHILE_IN_USE & set(changed))
    if fixed:
        running = _running_vm_names(VmNic.objects.filter(profile__network=network))
        if running:
            raise ConflictError(
                f"Network {network.name} is used by running VM(s) {', '.join(running)}; "
                f"{', '.join(fixed)} cannot change while they run."
            )
    if was_vm_network and not network.vm_network:
        nics = VmNic.objects.filter(profile__network=network)
        if nics.exists():
            raise ConflictError(f"Network {network.name} carries {_nic_list(nics)}; it must stay a VM network.")
    save_validated(network)
    if was_vm_network and not network.vm_network:
        network.vnic_profiles.all().delete()
    elif network.vm_network and not network.vnic_profiles.exists():
        save_validated(VnicProfile(network=network, name=network.name))
    if changed:
        record_event(
            "USER_UPDATE_NETWORK",
            f"Network {network.name} was updated ({', '.join(changed)}) by {who(user)}.",
            user=user,
            obj=network,
        )
    return network


@transaction.atomic(durable=True)
def remove_network(network: LogicalNetwork, *, user) -> None:
    network = locked(network)
    if network.is_management:
        raise ConflictError(f"Network {network.name} is the management network of its data center.")
    nics = VmNic.objects.filter(profile__network=network)
    if nics.exists():
        raise ConflictError(f"Network {network.name} is used by {_nic_list(nics)}; remove or change those first.")
    record_event("USER_REMOVE_NETWORK", f"Network {network.name} was removed by {who(user)}.", user=user, obj=network)
    network.vnic_profiles.all().delete()
    network.delete()


def _check_network_unique(network: LogicalNetwork) -> None:
    others = LogicalNetwork.objects.filter(data_center_id=network.data_center_id).exclude(pk=network.pk)
    errors = {}
    if others.filter(name=network.name).exists():
        errors["name"] = f"The data center already has a network named {network.name}."
    if network.vlan_tag is not None:
        clash = others.filter(vlan_tag=network.vlan_tag).first()
        if clash is not None:
            errors["vlan_tag"] = f"VLAN {network.vlan_tag} is already used by network {clash.name} of the data center."
    if errors:
        raise ValidationError(errors)


# Networks on clusters ---------------------------------------------------------------------


@transaction.atomic(durable=True)
def attach_network_to_cluster(network: LogicalNetwork, cluster: Cluster, *, user, required=True) -> ClusterNetwork:
    network = locked(network)
    if cluster.data_center_id != network.data_center_id:
        raise ValidationError(
            {"cluster": f"Cluster {cluster.name} is not in the data center of network {network.name}."}
        )
    if ClusterNetwork.objects.filter(cluster=cluster, network=network).exists():
        raise ConflictError(f"Network {network.name} is already attached to cluster {cluster.name}.")
    attachment = ClusterNetwork.objects.create(cluster=cluster, network=network, required=required)
    record_event(
        "NETWORK_ATTACH_NETWORK_TO_CLUSTER",
        f"Network {network.name} was attached to cluster {cluster.name} by {who(user)}.",
        user=user,
        obj=network,
        cluster_id=cluster.pk,
    )
    return attachment


@transaction.atomic(durable=True)
def detach_network_from_cluster(attachment: ClusterNetwork, *, user) -> None:
    attachment = locked(attachment)
    network, cluster = attachment.network, attachment.cluster
    if network.is_management:
        raise ConflictError(f"Network {network.name} is the management network; it stays on every cluster.")
    nics = VmNic.objects.filter(profile__network=network, vm__cluster=cluster)
    if nics.exists():
        raise ConflictError(
            f"Network {network.name} is used in cluster {cluster.name} by {_nic_list(nics)}; remove those first."
        )
    record_event(
        "NETWORK_DETACH_NETWORK_FROM_CLUSTER",
        f"Network {network.name} was detached from cluster {cluster.name} by {who(user)}.",
        user=user,
        obj=network,
        cluster_id=cluster.pk,
    )
    attachment.delete()


# vNIC profiles ----------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_vnic_profile(
    *, user, network: LogicalNetwork, name, port_mirroring=False, pass_through=False, description=""
) -> VnicProfile:
    profile = VnicProfile(
        network=network,
        name=name,
        port_mirroring=port_mirroring,
        pass_through=pass_through,
        description=description,
    )
    _check_profile_unique(profile)
    save_validated(profile)
    record_event(
        "ADD_VNIC_PROFILE",
        f"vNIC profile {profile.name} was added to network {network.name} by {who(user)}.",
        user=user,
        obj=profile,
    )
    return profile


@transaction.atomic(durable=True)
def update_vnic_profile(profile: VnicProfile, *, user, **changes) -> VnicProfile:
    profile = locked(profile)
    changed = apply_changes(profile, changes, VNIC_PROFILE_FIELDS)
    if {"port_mirroring", "pass_through"} & set(changed):
        running = _running_vm_names(profile.nics.all())
        if running:
            raise ConflictError(
                f"vNIC profile {profile.name} is used by running VM(s) {', '.join(running)}; "
                "port mirroring and pass-through cannot change while they run."
            )
    _check_profile_unique(profile)
    save_validated(profile)
    if changed:
        record_event(
            "UPDATE_VNIC_PROFILE",
            f"vNIC profile {profile.name} was updated ({', '.join(changed)}) by {who(user)}.",
            user=user,
            obj=profile,
        )
    return profile


@transaction.atomic(durable=True)
def remove_vnic_profile(profile: VnicProfile, *, user) -> None:
    profile = locked(profile)
    nics = profile.nics.all()
    if nics.exists():
        raise ConflictError(f"vNIC profile {profile.name} is used by {_nic_list(nics)}.")
    record_event(
        "REMOVE_VNIC_PROFILE",
        f"vNIC profile {profile.name} was removed from network {profile.network.name} by {who(user)}.",
        user=user,
        obj=profile,
    )
    profile.delete()


def _check_profile_unique(profile: VnicProfile) -> None:
    if VnicProfile.objects.filter(network_id=profile.network_id, name=profile.name).exclude(pk=profile.pk).exists():
        raise ValidationError({"name": f"Network {profile.network.name} already has a vNIC profile {profile.name}."})


# VM NICs ----------------------------------------------------------------------------------


def is_running(vm) -> bool:
    """The VM has a qemu process somewhere: devices change through hot-plug."""
    return vm.status in RUNNING


@transaction.atomic(durable=True)
def create_nic(
    vm, *, user, name=None, profile=None, interface="virtio", mac=None, linked=True, plugged=True
) -> tuple[VmNic, Job | None]:
    vm = locked(vm)
    names = set(vm.nics.values_list("name", flat=True))
    if name is None:
        name = next(f"nic{n}" for n in range(1, len(names) + 2) if f"nic{n}" not in names)
    elif name in names:
        raise ValidationError({"name": f"VM {vm.name} already has a NIC named {name}."})
    if profile is not None:
        _check_profile_on_cluster(profile, vm)
    pool = vm.cluster.mac_pool
    mac = _check_manual_mac(pool, mac) if mac else allocate_mac(pool)
    nic = save_validated(
        VmNic(
            vm=vm,
            name=name,
            profile=profile,
            mac_pool=pool,
            mac=mac,
            interface=interface,
            linked=linked,
            plugged=plugged,
        )
    )
    job = None
    if plugged and is_running(vm):
        job = _nic_job(nic, "plug", user=user)
    record_event(
        "NETWORK_ADD_VM_INTERFACE",
        f"Interface {nic.name} ({nic.interface}, {nic.mac}) was added to VM {vm.name} by {who(user)}"
        + (" and is being hot-plugged." if job else "."),
        user=user,
        obj=nic,
        correlation_id=job.correlation_id if job else "",
    )
    return nic, job


@transaction.atomic(durable=True)
def update_nic(nic: VmNic, *, user, **changes) -> tuple[VmNic, Job | None]:
    """Change a NIC. On a running VM: plug/unplug and link/profile changes run as a Job."""
    vm = locked(nic.vm)
    nic = locked(nic)
    was_plugged = nic.plugged
    changed = apply_changes(nic, changes, NIC_FIELDS)
    running = is_running(vm)
    if running and was_plugged and {"interface", "mac"} & set(changed):
        raise ConflictError(
            f"NIC {nic.name} is plugged into running VM {vm.name}: unplug first to change its interface or MAC."
        )
    if "name" in changed and vm.nics.filter(name=nic.name).exclude(pk=nic.pk).exists():
        raise ValidationError({"name": f"VM {vm.name} already has a NIC named {nic.name}."})
    if "profile" in changed and nic.profile is not None:
        _check_profile_on_cluster(nic.profile, vm)
    if "mac" in changed:
        nic.mac = _check_manual_mac(nic.mac_pool, nic.mac, exclude_nic=nic)
    save_validated(nic)
    job = None
    if running:
        if "plugged" in changed:
            job = _nic_job(nic, "plug" if nic.plugged else "unplug", user=user)
        elif nic.plugged and {"linked", "profile"} & set(changed):
            job = _nic_job(nic, "update", user=user)
    if changed:
        record_event(
            "NETWORK_UPDATE_VM_INTERFACE",
            f"Interface {nic.name} of VM {vm.name} was updated ({', '.join(changed)}) by {who(user)}.",
            user=user,
            obj=nic,
            correlation_id=job.correlation_id if job else "",
        )
    return nic, job


@transaction.atomic(durable=True)
def remove_nic(nic: VmNic, *, user) -> None:
    vm = locked(nic.vm)
    nic = locked(nic)
    if nic.plugged and is_running(vm):
        raise ConflictError(f"NIC {nic.name} is plugged into running VM {vm.name}: unplug first.")
    record_event(
        "NETWORK_REMOVE_VM_INTERFACE",
        f"Interface {nic.name} ({nic.mac}) was removed from VM {vm.name} by {who(user)}.",
        user=user,
        obj=nic,
    )
    nic.delete()


_NIC_JOBS = {
    # what: (action type, description, step, task)
    "plug": ("ActivateVmNic", "Hot-plugging NIC {nic} into VM {vm}", "Plug the NIC", "hotplug_nic_task"),
    "unplug": ("DeactivateVmNic", "Hot-unplugging NIC {nic} from VM {vm}", "Unplug the NIC", "hotunplug_nic_task"),
    "update": ("UpdateVmInterface", "Updating NIC {nic} of running VM {vm}", "Update the NIC", "hotplug_nic_task"),
}


def _nic_job(nic: VmNic, what: str, *, user) -> Job:
    action, description, step, task = _NIC_JOBS[what]
    job = create_job(action, description.format(nic=nic.name, vm=nic.vm.name), user=user, obj=nic, steps=[step])
    enqueue(f"networking.tasks.{task}", str(job.pk), str(nic.pk))
    return job


def _check_profile_on_cluster(profile: VnicProfile, vm) -> None:
    if not ClusterNetwork.objects.filter(cluster_id=vm.cluster_id, network_id=profile.network_id).exists():
        raise ValidationError(
            {
                "profile": f"Network {profile.network.name} of profile {profile.name} is not attached to "
                f"cluster {vm.cluster.name} of VM {vm.name}."
            }
        )


def _running_vm_names(nics) -> list[str]:
    return sorted(set(nics.filter(vm__status__in=RUNNING).values_list("vm__name", flat=True)))


def _nic_list(nics, limit: int = 5) -> str:
    rows = list(nics.select_related("vm").order_by("vm__name", "name")[: limit + 1])
    text = ", ".join(f"{nic.vm.name}/{nic.name}" for nic in rows[:limit])
    return f"NIC(s) {text}" + (" and more" if len(rows) > limit else "")
